"""Fixtures of the integration tests: real services, started by the tests themselves (no fakes).

Redis: ``redis_server`` (one per session, no AOF, shared by tests that only need a server), ``redis_factory``
(dedicated servers with chosen durability, for tests that kill or restart them; stopped after the test),
``job_id`` (a fresh job namespace) and ``table`` (a SeedTable on ``redis_server``; the job is deleted after).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator

import pytest
from redis_server import RedisServer, redis_server_binary

from germinator_dist.table import SeedTable

# --- Redis ---------------------------------------------------------------------------------------------


def _need_redis() -> None:
    if redis_server_binary() is None:
        pytest.skip("redis-server is not on PATH (install redis-server or set GERMINATOR_REDIS_SERVER)")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server for the whole session (appendonly no: tests here don't restart it)."""
    _need_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis-session")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., RedisServer]]:
    """``make(**RedisServer kwargs)`` -> a started dedicated server; all are stopped after the test."""
    _need_redis()
    servers: list[RedisServer] = []

    def make(**kwargs) -> RedisServer:
        server = RedisServer(tmp_path_factory.mktemp("redis"), **kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def job_id(request: pytest.FixtureRequest) -> str:
    """A job id no other test uses: the test's name and a random suffix."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.name)[:40].strip("-_.") or "job"
    return f"t-{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def table(redis_server: RedisServer, job_id: str) -> Iterator[SeedTable]:
    """A SeedTable on the session server; ``job_id``'s keys are deleted afterwards."""
    with SeedTable(redis_server.url, retries=2, backoff=0.05) as t:
        yield t
        t.delete_job(job_id)
