"""Helpers of the seed-table integration tests: rows, a raw dump of a job's keys, a reply-dropping proxy,
and the commit loop that the concurrency test runs in 8 processes (importable, so ``spawn`` can run it)."""

from __future__ import annotations

import json
import random
import socket
import struct
import threading

from germinator_dist.records import N_SEEDS, CommitOutcome, LayerEntry
from germinator_dist.table import SeedTable

SPEC = json.dumps({"model": "mlp", "sizes": [64, 32, 10], "rank": 4, "seed_bits": 63})


def initial_rows(n_layers: int = 3, n_floats: int = 6) -> list[LayerEntry]:
    return [
        LayerEntry(layer=i, seeds=tuple(range(i, i + N_SEEDS)), floats=tuple([1.0] * n_floats))
        for i in range(n_layers)
    ]


def f32(values) -> tuple[float, ...]:
    """Values rounded to float32, as the table stores them."""
    return struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values))


def dump_job(client, job: str) -> dict:
    """Every key of the job (type and DUMP payload) plus its registry membership: equal dumps, equal table."""
    out = {}
    for key in sorted(client.scan_iter(match=f"germ:{{{job}}}:*", count=1000)):
        out[key] = (client.type(key), client.dump(key))
    out["registered"] = client.sismember("germ:jobs", job)
    return out


def offer_commits(url: str, job: str, n_layers: int, n_offers: int, seed: int, barrier) -> dict:
    """Read a layer, then offer a random commit against the version read (10 % on purpose stale by one).

    Losses drift down with noise, so many offers win, many lose and many race. Returns every accepted
    commit (layer, new version, seeds, floats, loss) and the outcome counts.
    """
    rng = random.Random(seed)
    writer = f"proc-{seed}"
    accepted, counts = [], {o.value: 0 for o in CommitOutcome}
    with SeedTable(url) as table:
        barrier.wait(60)
        for i in range(n_offers):
            layer = rng.randrange(n_layers)
            version = table.entry(job, layer).version
            if rng.random() < 0.1 and version > 0:
                version -= 1
            seeds = [rng.getrandbits(63) for _ in range(N_SEEDS)]
            floats = f32([rng.uniform(-2, 2) for _ in range(4)])
            loss = 1000.0 - 0.5 * i + rng.uniform(0, 20)
            outcome = table.commit_seeds(job, layer, version, seeds, floats, loss, writer)
            counts[outcome.value] += 1
            if outcome is CommitOutcome.ACCEPTED:
                accepted.append((layer, version + 1, tuple(seeds), floats, loss, writer))
    return {"accepted": accepted, "counts": counts}


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
