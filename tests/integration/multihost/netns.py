"""Hosts on one machine: network namespaces joined by veth pairs to a bridge in a "switch" namespace.

``Topology({"redis": "10.213.0.1", ...}).create()`` makes one namespace per host (``lo`` up, ``eth0`` with
its address on a private /24) and one switch namespace holding the bridge, so nothing is added to the
machine's own (root) namespace: no interface, no address, no route. Traffic between the hosts never
leaves the namespaces.

Everything is named ``gmh<pid>-...`` after the test process's pid: ``destroy`` kills every process
inside the namespaces (``ip netns pids``, not by name: processes are visible across namespaces) and
deletes them (the veths and the bridge go with them), and ``remove_stale`` does the same for the
leftovers of an earlier run whose process is gone. Nothing here waits without a time limit.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

PREFIX = "gmh"
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def _ip(*args: str, timeout: float = 10.0, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: exit {out.returncode}: {out.stderr.strip()}")
    return out


def namespaces_unavailable() -> str | None:
    """Why this machine does not let the test make network namespaces, or None when it does."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root (run the tests as root)"
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        _ip("netns", "add", probe)
        _ip("-n", probe, "link", "add", "br0", "type", "bridge")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"network namespaces are not allowed here ({exc})"
    finally:
        _ip("netns", "delete", probe, check=False)
    return None


def list_namespaces() -> list[str]:
    out = _ip("netns", "list", check=False)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def namespace_pids(ns: str) -> list[int]:
    out = _ip("netns", "pids", ns, check=False)
    me = os.getpid()
    return [int(p) for p in out.stdout.split() if p.isdigit() and int(p) != me]


def kill_namespace_processes(namespaces: Sequence[str], grace_s: float = 2.0) -> int:
    """SIGTERM every process whose network namespace is one of ``namespaces``, SIGKILL what is left
    after ``grace_s``. Returns how many processes there were."""

    def pids() -> list[int]:
        return [p for ns in namespaces for p in namespace_pids(ns)]

    found = pids()
    left = found
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        for pid in left:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        left = pids()
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = pids()
        if not left:
            break
    return len(found)


def delete_namespaces(namespaces: Sequence[str]) -> None:
    kill_namespace_processes(namespaces)
    for ns in namespaces:
        _ip("netns", "delete", ns, check=False)


def remove_stale(base_tmp: Path = Path("/tmp")) -> list[str]:
    """Delete namespaces (and their processes) and temp dirs left by earlier runs whose process is gone."""
    removed = []
    pat = re.compile(rf"^{PREFIX}(\d+)-")
    for ns in list_namespaces():
        m = pat.match(ns)
        if m and not _alive(int(m.group(1))):
            removed.append(ns)
    delete_namespaces(removed)
    for d in base_tmp.glob(f"{PREFIX}*"):
        m = re.fullmatch(rf"{PREFIX}(\d+)", d.name)
        if m and d.is_dir() and not _alive(int(m.group(1))):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(str(d))
    return removed


def _enter(path: str) -> None:
    """Move the calling thread (only it) into the network namespace mounted at ``path``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


class Topology:
    """Hosts (name -> address) on one /24 behind a bridge in a switch namespace."""

    def __init__(self, hosts: dict[str, str], prefix_len: int = 24) -> None:
        self.hosts = dict(hosts)
        self.prefix_len = prefix_len
        self.tag = f"{PREFIX}{os.getpid()}"
        self.switch = f"{self.tag}-sw"
        self._executors: dict[str, cf.ThreadPoolExecutor] = {}
        self._procs: list[subprocess.Popen] = []

    def ns(self, host: str) -> str:
        return f"{self.tag}-{host}"

    def namespaces(self) -> list[str]:
        return [self.ns(h) for h in self.hosts] + [self.switch]

    # ---- lifecycle ----------------------------------------------------------------------------------
    def create(self) -> Topology:
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "set", "lo", "up")
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for i, (host, addr) in enumerate(self.hosts.items()):
            ns, port = self.ns(host), f"p{i}"
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            # both ends are created inside namespaces: the root namespace never sees them
            _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", self.switch, "link", "set", port, "master", "br0")
            _ip("-n", self.switch, "link", "set", port, "up")
            _ip("-n", ns, "addr", "add", f"{addr}/{self.prefix_len}", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
        return self

    def destroy(self) -> None:
        """Kill every process in the hosts' namespaces, then delete all namespaces. Safe to call twice."""
        for ex in self._executors.values():
            ex.shutdown(wait=True, cancel_futures=True)
        self._executors.clear()
        existing = set(list_namespaces())
        delete_namespaces([ns for ns in self.namespaces() if ns in existing])
        for p in self._procs:  # killed above; reap them (a process not in a namespace yet gets killed here)
            if p.poll() is None:
                p.kill()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self._procs.clear()

    def __enter__(self) -> Topology:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # ---- running things on a host ------------------------------------------------------------------
    def argv(self, host: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns(host), *argv]

    def run(
        self, host: str, argv: Sequence[str], *, timeout: float, env: dict | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        out = subprocess.run(self.argv(host, argv), capture_output=True, text=True, timeout=timeout, env=env)
        if check and out.returncode != 0:
            raise AssertionError(
                f"[{host}] {' '.join(argv)}: exit {out.returncode}\n"
                f"{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
            )
        return out

    def popen(
        self, host: str, argv: Sequence[str], *, log: Path, env: dict | None = None
    ) -> subprocess.Popen:
        """Start a long-running process on ``host`` in its own process group, output to ``log``."""
        with open(log, "ab") as f:
            p = subprocess.Popen(
                self.argv(host, argv), stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self._procs.append(p)
        return p

    def call(self, host: str, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run ``fn`` in this process, on a thread that lives in ``host``'s network namespace (so its
        sockets are ``host``'s; the rest of the process stays in the root namespace)."""
        ex = self._executors.get(host)
        if ex is None:
            path = f"/run/netns/{self.ns(host)}"
            ex = cf.ThreadPoolExecutor(
                1, thread_name_prefix=f"netns-{host}", initializer=_enter, initargs=(path,)
            )
            self._executors[host] = ex
        return ex.submit(fn).result(timeout=timeout)

    def link(self, host: str, up: bool) -> None:
        """Plug (``up``) or unplug the host's only network interface."""
        _ip("-n", self.ns(host), "link", "set", "eth0", "up" if up else "down")
