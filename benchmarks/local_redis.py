"""The throwaway redis-server every benchmark starts: a free loopback port, a private temp dir, no RDB.

    from local_redis import local_redis, redis_url
    with local_redis(aof="always") as port: ...     # aof: "no" (default), "everysec" or "always"

Benchmarks are run as scripts (``python benchmarks/bench_x.py``), so this folder is on ``sys.path``.
The binary is ``$GERMINATOR_REDIS_SERVER`` or ``redis-server`` on PATH; a server that does not answer PING
within 15 s ends the benchmark with a one-line message.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager


def redis_url(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
            c.sendall(b"PING\r\n")
            return c.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def local_redis(aof: str = "no", timeout: float = 15.0) -> Iterator[int]:
    """Start redis-server (``appendonly no``, or ``appendonly yes`` with ``appendfsync aof``); yield its
    port; terminate it (kill after 10 s) on exit."""
    binary = os.environ.get("GERMINATOR_REDIS_SERVER") or shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not on PATH (install it or set GERMINATOR_REDIS_SERVER)")
    with tempfile.TemporaryDirectory(prefix="germ-bench-redis-") as d:
        port = _free_port()
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes", "--dir", d]
        args += ["--save", "", "--logfile", ""]
        args += ["--appendonly", "no"] if aof == "no" else ["--appendonly", "yes", "--appendfsync", aof]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + timeout
            while not _answers_ping(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"redis-server did not start on port {port}")
                time.sleep(0.02)
            yield port
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
