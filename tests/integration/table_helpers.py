"""Helpers of the seed-table integration tests: rows, a raw dump of a job's keys, a reply-dropping proxy,
and the loops that the concurrency tests run in separate processes (importable, so ``spawn`` can run them)."""

from __future__ import annotations

import json
import random
import socket
import struct
import threading

from germinator_dist.records import CommitOutcome, LayerEntry, SwapCommit, n_seeds
from germinator_dist.table import SeedTable

SPEC = json.dumps({"model": "mlp", "sizes": [64, 32, 10], "rank": 4, "seed_bits": 63})
RANK = 4


def n_floats(rank: int = RANK, experts: int = 0) -> int:
    """Floats of a layer: alpha, beta, g (rank), then ``experts`` expert rows of ``rank``."""
    return 2 + rank * (1 + experts)


def layer_seeds(i: int, rank: int = RANK) -> tuple[int, ...]:
    """Distinct component seeds ``100 i + k``, then the layer seeds ``i, i, i + 1, i + 2`` (may repeat)."""
    return (*(100 * i + k for k in range(rank)), i, i, i + 1, i + 2)


def initial_rows(n_layers: int = 3, rank: int = RANK, experts: int = 0) -> list[LayerEntry]:
    return [
        LayerEntry(layer=i, seeds=layer_seeds(i, rank), floats=(1.0,) * n_floats(rank, experts))
        for i in range(n_layers)
    ]


def f32(values) -> tuple[float, ...]:
    """Values rounded to float32, as the table stores them."""
    return struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values))


def slot_at(rank: int, count: int, slot: int) -> list[int]:
    """Indices of component slot ``slot``'s floats in a list of ``count``: g, then one per expert row."""
    return [2 + j * rank + slot for j in range((count - 2) // rank)]


def dump_job(client, job: str) -> dict:
    """Every key of the job (type and DUMP payload) plus its registry membership: equal dumps, equal table."""
    out = {}
    for key in sorted(client.scan_iter(match=f"germ:{{{job}}}:*", count=1000)):
        out[key] = (client.type(key), client.dump(key))
    out["registered"] = client.sismember("germ:jobs", job)
    return out


def offer_commits(url: str, job: str, n_layers: int, n_offers: int, seed: int, barrier) -> dict:
    """Read a layer, then offer a random whole-vector commit against the version read (10 % on purpose stale
    by one). Losses drift down with noise, so many offers win, many lose and many race. Returns every
    accepted commit (layer, new version, seeds, floats, loss, writer) and the outcome counts."""
    rng = random.Random(seed)
    writer = f"proc-{seed}"
    accepted, counts = [], {o.value: 0 for o in CommitOutcome}
    with SeedTable(url) as table:
        barrier.wait(60)
        for i in range(n_offers):
            layer = rng.randrange(n_layers)
            entry = table.entry(job, layer)
            version = entry.version
            if rng.random() < 0.1 and version > 0:
                version -= 1
            seeds = [rng.getrandbits(63) for _ in range(n_seeds(entry.rank))]
            floats = f32([rng.uniform(-2, 2) for _ in entry.floats])
            loss = 1000.0 - 0.5 * i + rng.uniform(0, 20)
            outcome = table.commit_seeds(job, layer, version, seeds, floats, loss, writer)
            counts[outcome.value] += 1
            if outcome is CommitOutcome.ACCEPTED:
                accepted.append((layer, version + 1, tuple(seeds), floats, loss, writer))
    return {"accepted": accepted, "counts": counts}


def offer_swaps(
    url: str, job: str, n_layers: int, n_offers: int, seed: int, barrier, trainer_done, tail: int
) -> dict:
    """Read a layer, then offer a swap of a random slot against the generation read: 10 % stale on purpose,
    15 % not better, seeds from a small pool so that some are already held by another slot. The last two
    component slots are never offered. After ``n_offers``, wait for ``trainer_done`` and offer ``tail``
    more. Each swap's writer id is unique. Returns every accepted swap (writer, layer, slot, seed, slot
    floats) and the outcome counts."""
    rng = random.Random(seed)
    accepted, counts = [], {o.value: 0 for o in CommitOutcome}
    with SeedTable(url) as table:
        barrier.wait(60)
        for i in range(n_offers + tail):
            if i == n_offers:
                trainer_done.wait(60)
            layer = rng.randrange(n_layers)
            entry = table.entry(job, layer)
            slot = rng.randrange(entry.rank - 2)
            gen = entry.generations[slot]
            if rng.random() < 0.1 and gen > 0:
                gen -= 1
            per = (len(entry.floats) - 2) // entry.rank
            incumbent = rng.uniform(1, 10)
            swap = SwapCommit(
                layer=layer,
                slot=slot,
                expected_gen=gen,
                seed=rng.randrange(3 * entry.rank),
                slot_floats=f32([rng.uniform(-2, 2) for _ in range(per)]),
                loss=incumbent * (1.5 if rng.random() < 0.15 else 0.5),
                incumbent_loss=incumbent,
                evaluator_id=f"swap-{seed}-{i}",
            )
            outcome = table.commit_swap(job, swap)
            counts[outcome.value] += 1
            if outcome is CommitOutcome.ACCEPTED:
                accepted.append((swap.evaluator_id, layer, slot, swap.seed, swap.slot_floats))
    return {"accepted": accepted, "counts": counts}


def publish_loop(
    url: str, job: str, n_layers: int, n_publishes: int, seed: int, barrier, done
) -> list[tuple]:
    """A trainer: publish random floats to each layer in turn, each time with the generations read just
    before, ``n_publishes`` times; then set ``done``. Returns (writer, layer, floats, outcome, kept) per
    publish; writers are unique."""
    rng = random.Random(seed)
    out = []
    with SeedTable(url) as table:
        barrier.wait(60)
        for i in range(n_publishes):
            layer = i % n_layers
            entry = table.entry(job, layer)
            floats = f32([rng.uniform(-2, 2) for _ in entry.floats])
            writer = f"trainer-{i}"
            res = table.publish_floats(
                job, layer, floats, rng.uniform(1, 10), entry.generations, writer=writer
            )
            out.append((writer, layer, floats, res.outcome.value, res.kept))
    done.set()
    return out


class DropReplyProxy:
    """A TCP proxy to a Redis server that, when armed, forwards the next request containing ``marker`` and
    then closes the client's connection as the reply comes back: the command ran, the client never hears.
    """

    def __init__(self, upstream_port: int, marker: bytes = b"EVALSHA") -> None:
        self.upstream_port, self.marker = upstream_port, marker
        self.armed = False
        self.dropped = 0
        self._drop_next_reply = False
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump_up, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump_down, args=(upstream, client), daemon=True).start()

    def _pump_up(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while data := client.recv(65536):
                if self.armed and self.marker in data:
                    self.armed, self._drop_next_reply = False, True
                upstream.sendall(data)
        except OSError:
            pass
        _close(client, upstream)

    def _pump_down(self, upstream: socket.socket, client: socket.socket) -> None:
        try:
            while data := upstream.recv(65536):
                if self._drop_next_reply:
                    self._drop_next_reply = False
                    self.dropped += 1
                    break
                client.sendall(data)
        except OSError:
            pass
        _close(client, upstream)

    def close(self) -> None:
        self._closed = True
        self._server.close()


def _close(*socks: socket.socket) -> None:
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()
