"""A real ``redis-server`` process for integration tests.

It listens on a free loopback port only (``--bind 127.0.0.1 --protected-mode yes``), keeps its AOF and log
in its own directory, and can be killed with SIGKILL and restarted on the same port and directory (what a
crash and a restart look like to clients). No fakes: this is the server CI installs from its packages.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path


def redis_server_binary() -> str | None:
    """``$GERMINATOR_REDIS_SERVER`` or ``redis-server`` on PATH, or None."""
    return os.environ.get("GERMINATOR_REDIS_SERVER") or shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """One redis-server process: ``start``, ``kill`` (SIGKILL), ``restart``, ``stop``; a context manager.

    ``appendonly`` / ``appendfsync`` set Redis's AOF durability; RDB snapshots are off (``save ""``) so that
    what survives a restart is exactly what the AOF kept. ``password`` sets ``requirepass``; ``tls`` serves
    TLS only (a throwaway self-signed certificate made with openssl).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        appendonly: bool = False,
        appendfsync: str = "everysec",
        password: str | None = None,
        tls: bool = False,
    ) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise FileNotFoundError("redis-server is not on PATH (or set GERMINATOR_REDIS_SERVER)")
        if appendfsync not in ("always", "everysec", "no"):
            raise ValueError(f"appendfsync: {appendfsync!r}")
        self.binary = binary
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.appendonly, self.appendfsync, self.password, self.tls = appendonly, appendfsync, password, tls
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "redis.log"
        if tls:
            self._make_cert()

    # --- addresses ------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server's URL, without the password (pass it separately or through the environment)."""
        if self.tls:
            ca = self.dir / "cert.pem"
            return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={ca}&ssl_cert_reqs=required"
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self):
        """A plain redis-py client for what the tests do behind the table's back (writing junk, CONFIG)."""
        import redis

        return redis.Redis.from_url(self.url, password=self.password)

    # --- lifecycle ------------------------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> RedisServer:
        """Start on a free port (or, after the first start, the same port); wait until it answers PING."""
        for _ in range(5):
            port = self.port or free_port()
            self._spawn(port)
            try:
                self._wait_ready(port, timeout)
                self.port = port
                return self
            except OSError:
                self.kill()
                if self.port is not None:  # a restart must keep its port: nothing else to try
                    raise
        raise RuntimeError(f"redis-server did not start; log {self.log}:\n{self._tail()}")

    def kill(self) -> None:
        """SIGKILL the server (a crash: no shutdown, nothing flushed beyond what the AOF policy did)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self._reap()

    def restart(self, timeout: float = 15.0) -> None:
        """kill -9, then start again on the same port with the same directory (and AOF)."""
        self.kill()
        self.start(timeout)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM), escalating to SIGKILL after 10 s."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._reap()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- internals ------------------------------------------------------------------------------------------

    def _spawn(self, port: int) -> None:
        args = [self.binary, "--bind", "127.0.0.1", "--protected-mode", "yes", "--dir", str(self.dir)]
        args += ["--logfile", str(self.log), "--daemonize", "no", "--save", ""]
        args += ["--appendonly", "yes" if self.appendonly else "no", "--appendfsync", self.appendfsync]
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls:
            cert, key = self.dir / "cert.pem", self.dir / "key.pem"
            args += ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert)]
            args += ["--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
        else:
            args += ["--port", str(port)]
        self.proc = subprocess.Popen(args, cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _wait_ready(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise OSError(f"redis-server exited; log {self.log}:\n{self._tail()}")
            try:
                if self._ping(port):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise OSError(f"redis-server on port {port} not ready after {timeout}s:\n{self._tail()}")
            time.sleep(0.02)

    def _ping(self, port: int) -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as raw:
            sock = raw
            if self.tls:
                ctx = ssl.create_default_context(cafile=str(self.dir / "cert.pem"))
                sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
        # +PONG, or -NOAUTH with a password: both mean it serves; -LOADING means not yet.
        return reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH")

    def _reap(self) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def _tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return "(no log)"

    def _make_cert(self) -> None:
        cmd = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        cmd += ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
        cmd += ["-keyout", str(self.dir / "key.pem"), "-out", str(self.dir / "cert.pem")]
        subprocess.run(cmd, check=True, capture_output=True)
