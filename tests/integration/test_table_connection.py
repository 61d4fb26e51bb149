"""Connecting to Redis: URLs, passwords (never shown), TLS, retries with backoff, a Redis restart while the
client is connected, and Lua scripts that Redis forgot (NOSCRIPT after a restart or SCRIPT FLUSH)."""

from __future__ import annotations

import shutil
import threading
import time
import traceback

import pytest
from table_helpers import SPEC, initial_rows

from germinator_dist.errors import ConnectionFailed, SpecError
from germinator_dist.records import CommitOutcome, SeedCommit, SwapCommit
from germinator_dist.table import SeedTable
from germinator_dist.table.conn import PASSWORD_ENV, redact

pytestmark = pytest.mark.integration

SEEDS = [1, 2, 3, 4, 5, 6, 7, 8]
FL = [1.0] * 6  # rank 4: alpha, beta, g (4)
SECRET = "s3cr3t-Pa55word"


def _everything_said(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def test_redis_restart_while_connected_reconnects_and_reloads_scripts(redis_factory) -> None:
    server = redis_factory(appendonly=True, appendfsync="always")
    with SeedTable(server.url, retries=12, backoff=0.05, max_backoff=0.5) as table:
        table.create_job("job", SPEC, initial_rows(2))
        assert table.commit_seeds("job", 0, 0, SEEDS, FL, 2.0) is CommitOutcome.ACCEPTED
        sha = table._s["COMMIT_SEEDS"].sha
        server.kill()
        restarter = threading.Timer(0.4, server.start)
        restarter.start()
        start = time.monotonic()
        # the pooled connection is dead, the server is down for ~0.4 s, and its script cache is empty after
        assert table.commit_seeds("job", 0, 1, SEEDS, FL, 1.0) is CommitOutcome.ACCEPTED
        took = time.monotonic() - start
        restarter.join()
        assert 0.3 < took < 8.0  # within the retry budget: 0.05 + 0.1 + 0.2 + 0.4 + 8 x 0.5 s
        assert server.client().script_exists(sha) == [True]  # reloaded on NOSCRIPT
        assert table.snapshot("job").versions == (2, 0)  # the commit before the crash survived (AOF)


def test_scripts_are_reloaded_after_script_flush(table: SeedTable, job_id: str, redis_server) -> None:
    table.create_job(job_id, SPEC, initial_rows(1))
    raw = redis_server.client()
    raw.script_flush()
    assert table.commit_seeds(job_id, 0, 0, SEEDS, FL, 2.0) is CommitOutcome.ACCEPTED
    raw.script_flush()
    batch = [SeedCommit(layer=0, expected_version=1, seeds=SEEDS, floats=FL, loss=1.0)]
    assert table.commit_seeds_many(job_id, batch) == [CommitOutcome.ACCEPTED]
    raw.script_flush()
    swap = SwapCommit(layer=0, slot=0, expected_gen=1, seed=9, slot_floats=(0.5,), loss=0.5, incumbent_loss=1)
    assert table.commit_swap(job_id, swap) is CommitOutcome.ACCEPTED
    raw.script_flush()
    assert table.commit_swaps_many(job_id, [swap]) == [CommitOutcome.STALE]
    raw.script_flush()
    assert (
        table.publish_floats(job_id, 0, FL, 0.7, table.entry(job_id, 0).gens).outcome
        is CommitOutcome.ACCEPTED
    )
    raw.script_flush()
    assert table.snapshot(job_id).versions == (4,)


def test_retries_run_out_into_connection_failed(redis_factory) -> None:
    server = redis_factory()
    url = f"redis://:{SECRET}@127.0.0.1:{server.port}/0"
    with SeedTable(url, retries=3, backoff=0.05) as table:
        table.create_job("job", SPEC, initial_rows(1))
        server.kill()
        start = time.monotonic()
        with pytest.raises(ConnectionFailed) as err:
            table.snapshot("job")
        took = time.monotonic() - start
    assert 0.3 <= took < 3.0  # 0.05 + 0.1 + 0.2 s of backoff between 4 attempts
    said = _everything_said(err.value)
    assert f"redis://:***@127.0.0.1:{server.port}/0" in str(err.value) and "4 attempts" in str(err.value)
    assert SECRET not in said


def test_password_from_url_env_or_argument_and_never_shown(redis_factory, monkeypatch) -> None:
    server = redis_factory(password=SECRET)
    plain = f"redis://127.0.0.1:{server.port}/0"
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    with SeedTable(plain) as table, pytest.raises(ConnectionFailed, match="refused the credentials") as err:
        table.list_jobs()
    with SeedTable(plain, password="wrong-one") as table, pytest.raises(ConnectionFailed) as err:
        table.list_jobs()
    assert "wrong-one" not in _everything_said(err.value)

    with_pw = f"redis://:{SECRET}@127.0.0.1:{server.port}/0"
    for table in (
        SeedTable(with_pw),
        SeedTable(plain, password=SECRET),
        SeedTable(plain + f"?password={SECRET}"),
    ):
        with table:
            assert table.list_jobs() == []
            assert SECRET not in repr(table) and SECRET not in table.url
    monkeypatch.setenv(PASSWORD_ENV, SECRET)
    with SeedTable(plain) as table:
        table.create_job("job", SPEC, initial_rows(1))
        assert table.url == f"redis://:***@127.0.0.1:{server.port}/0"
        with SeedTable(table.url) as again:  # a redacted URL still connects: *** means "from elsewhere"
            assert again.job_info("job").n_layers == 1


def test_tls(redis_factory) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not on PATH: cannot make the test certificate")
    server = redis_factory(tls=True)
    assert server.url.startswith("rediss://")
    with SeedTable(server.url) as table:
        table.create_job("job", SPEC, initial_rows(1))
        assert table.commit_seeds("job", 0, 0, SEEDS, FL, 0.5) is CommitOutcome.ACCEPTED
    # the server's certificate is not trusted without its CA: a clear failure, not a hang
    with SeedTable(f"rediss://127.0.0.1:{server.port}/0", retries=1, backoff=0.01) as table:
        with pytest.raises(ConnectionFailed, match="rediss://127.0.0.1"):
            table.list_jobs()


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:6379", "redis://", "unix:///tmp/redis.sock", "redis://host:notaport/0", 42]
)
def test_malformed_urls(url) -> None:
    with pytest.raises(SpecError, match="redis url"):
        SeedTable(url)


def test_redact() -> None:
    assert redact("redis://user:pw@h:1/0") == "redis://user:***@h:1/0"
    assert redact("redis://:pw@h/0?password=pw2&db=1") == "redis://:***@h/0?password=***&db=1"
    assert redact("rediss://h:1/0") == "rediss://h:1/0"
    with pytest.raises(SpecError) as err:
        SeedTable(f"http://:{SECRET}@h:1/0")
    assert SECRET not in str(err.value)
