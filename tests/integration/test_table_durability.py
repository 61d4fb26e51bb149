"""Durability is Redis's own AOF. A writer commits as fast as it can while the server is killed with
SIGKILL; after a restart on the same directory we compare what came back with what was acknowledged.

* ``appendfsync always``: every acknowledged commit is back (Redis fsyncs the AOF before it replies).
* ``appendfsync everysec``: Redis write(2)s the AOF before it replies (unless a slow fsync makes it
  postpone that write, by up to 2 s) and fsyncs once a second, so a crash of the Redis *process* normally
  loses nothing acknowledged, while a crash of the machine (power loss, kernel panic) can lose the last
  ~1 s of acknowledged commits (up to ~2 s when fsync stalls). A test cannot pull the plug, so for
  everysec it asserts the guarantee that holds either way: what comes back is a consistent prefix of the
  acknowledged history (no torn commit, table == stream), and nothing older than the loss window is
  missing.
"""

from __future__ import annotations

import threading
import time

import pytest
from table_helpers import SPEC, initial_rows

from germinator_dist.errors import ConnectionFailed
from germinator_dist.records import CommitOutcome
from germinator_dist.table import SeedTable

pytestmark = pytest.mark.integration

LAYERS = 3
EVERYSEC_WINDOW_S = 2.0


def _commit_until_the_server_dies(url: str, job: str) -> list[tuple[int, int, float, float]]:
    """Commit improving rows round-robin until a call fails; return (layer, version, loss, acked_at)."""
    acked = []
    versions = [0] * LAYERS
    with SeedTable(url, retries=0) as table:
        i = 0
        while True:
            layer = i % LAYERS
            loss = 1e6 - i
            try:
                seeds = [i, i + 1, i + 2, i + 3, 0, 0, 0, 0]
                out = table.commit_seeds(job, layer, versions[layer], seeds, [float(i)] * 6, loss, "writer")
            except ConnectionFailed:
                return acked
            assert out is CommitOutcome.ACCEPTED
            versions[layer] += 1
            acked.append((layer, versions[layer], loss, time.monotonic()))
            i += 1


def _crash_while_committing(server) -> tuple[list, float]:
    with SeedTable(server.url) as table:
        table.create_job("job", SPEC, initial_rows(LAYERS))
    acked: list = []
    writer = threading.Thread(target=lambda: acked.extend(_commit_until_the_server_dies(server.url, "job")))
    writer.start()
    time.sleep(0.6)
    killed_at = time.monotonic()
    server.kill()
    writer.join(30)
    assert not writer.is_alive()
    server.start()
    assert len(acked) > 20, "the writer should have committed for a while before the crash"
    return acked, killed_at


def _check_consistent_prefix(table: SeedTable, acked: list) -> list:
    """The recovered table is a prefix of the acknowledged history (plus at most the one unacknowledged
    commit that was in flight); the table equals its stream. Returns the acknowledged commits lost."""
    snap = table.snapshot("job")
    events = [(ev.layer, ev.version, ev.loss) for ev in table.events("job") if ev.kind == "seeds"]
    history = [(layer, v, loss) for layer, v, loss, _ in acked]
    n = min(len(events), len(history))
    assert events[:n] == history[:n]  # in order, nothing torn, reordered or duplicated
    assert len(events) <= len(history) + 1  # at most the in-flight commit whose reply never came
    assert snap.epoch == len(events)
    assert table.rebuild_from_stream("job") == snap
    return acked[len(events) :]


def test_appendfsync_always_keeps_every_acknowledged_commit(redis_factory) -> None:
    server = redis_factory(appendonly=True, appendfsync="always")
    acked, _ = _crash_while_committing(server)
    with SeedTable(server.url) as table:
        assert _check_consistent_prefix(table, acked) == []
        snap = table.snapshot("job")
        for layer in range(LAYERS):
            last = max(a for a in acked if a[0] == layer)
            assert snap.layers[layer].version >= last[1]


def test_appendfsync_everysec_comes_back_as_a_consistent_prefix(redis_factory) -> None:
    server = redis_factory(appendonly=True, appendfsync="everysec")
    acked, killed_at = _crash_while_committing(server)
    with SeedTable(server.url) as table:
        lost = _check_consistent_prefix(table, acked)
    # only commits from the last fsync window may be missing (after a process crash, in practice none are)
    assert all(killed_at - acked_at <= EVERYSEC_WINDOW_S for *_, acked_at in lost)
