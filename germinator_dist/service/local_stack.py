"""The embedded local default: a Ray head and a redis-server on 127.0.0.1, started by ``germinator-dist up``.

Both run as background processes with their data under a per-user directory (``GERMINATOR_HOME``, else
``$XDG_DATA_HOME/germinator-dist``, else ``~/.local/share/germinator-dist``). Their addresses and pids are
recorded in ``local.json`` there, so later commands find them, and ``down`` stops exactly what ``up``
started (processes whose command line names this directory), never another Ray or Redis.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from germinator_dist.endpoints import STATE_FILE, read_local_state
from germinator_dist.endpoints import local_home as home
from germinator_dist.errors import ConnectionFailed, GerminatorError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_state(data: dict) -> None:
    path = home() / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _wait_port(port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise ConnectionFailed(f"{what}: nothing answers on 127.0.0.1:{port} after {timeout:.0f}s")


def _ray_env() -> dict:
    env = dict(os.environ)
    env.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    env["RAY_AUTH_MODE"] = "disabled"  # the local stack listens on loopback only
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return env


def ray_bin() -> str:
    cand = Path(sys.executable).parent / "ray"
    return str(cand) if cand.exists() else (shutil.which("ray") or "ray")


def up(num_cpus: int | None = None) -> dict:
    """Start redis-server (AOF always) and a Ray head on loopback; returns the recorded state.

    A stack that is already up is returned as is. Raises GerminatorError when a component cannot start.
    """
    state = read_local_state()
    if state and _alive(state):
        return state
    base = home()
    (base / "redis").mkdir(parents=True, exist_ok=True)
    (base / "ray").mkdir(parents=True, exist_ok=True)
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        raise GerminatorError(
            "redis-server: not found on PATH; install it (sudo apt-get install -y redis-server)"
        )
    rport, gport, dport, cport, aport = (free_port() for _ in range(5))
    subprocess.run(
        [
            redis_bin,
            "--port",
            str(rport),
            "--bind",
            "127.0.0.1",
            "--protected-mode",
            "yes",
            "--dir",
            str(base / "redis"),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--daemonize",
            "yes",
            "--pidfile",
            str(base / "redis" / "redis.pid"),
            "--logfile",
            str(base / "redis" / "redis.log"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    _wait_port(rport, 20, "redis-server")
    cmd = [
        ray_bin(),
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={gport}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dport}",
        f"--ray-client-server-port={cport}",
        f"--dashboard-agent-listen-port={aport}",
        f"--temp-dir={base / 'ray'}",
        "--disable-usage-stats",
    ]
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    out = subprocess.run(cmd, capture_output=True, text=True, env=_ray_env(), timeout=180)
    if out.returncode != 0:
        raise GerminatorError(f"ray start: failed (exit {out.returncode}): {out.stderr.strip()[-300:]}")
    _wait_port(dport, 60, "Ray dashboard (job submission)")
    state = {
        "redis_url": f"redis://127.0.0.1:{rport}/0",
        "ray_address": f"127.0.0.1:{gport}",
        "dashboard_url": f"http://127.0.0.1:{dport}",
        "home": str(base),
        "redis_pidfile": str(base / "redis" / "redis.pid"),
        "started": time.time(),
    }
    _write_state(state)
    return state


def _alive(state: dict) -> bool:
    try:
        port = int(state["redis_url"].rsplit(":", 1)[1].split("/")[0])
        dport = int(state["dashboard_url"].rsplit(":", 1)[1])
    except (KeyError, ValueError, IndexError):
        return False
    ok = True
    for p in (port, dport):
        with socket.socket() as s:
            s.settimeout(0.5)
            ok &= s.connect_ex(("127.0.0.1", p)) == 0
    return ok


def _our_pids(*markers: str) -> list[int]:
    """Pids of processes whose command line holds one of ``markers`` (never this process)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(m in cmdline for m in markers):
            pids.append(int(d.name))
    return pids


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) of a process from /proc, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # after "pid (comm)": the name may hold spaces
    return fields[0], int(fields[1])


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a zombie has exited; only its parent can reap it)."""
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def _with_descendants(pids: list[int]) -> list[int]:
    """``pids`` and every process started under them (Ray's agents rename themselves ``ray::...``, so
    only their parentage marks them)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and (st := _stat(int(d.name))) is not None:
            children.setdefault(st[1], []).append(int(d.name))
    found, todo = set(pids), list(pids)
    while todo:
        for kid in children.get(todo.pop(), ()):
            if kid not in found and kid != os.getpid():
                found.add(kid)
                todo.append(kid)
    return sorted(found)


def _markers(state: dict | None, base: Path) -> list[str]:
    """What marks a process of this stack's Ray: its temp dir in the command line, or (Ray's client
    server and anything else started with ``--address``) the head's GCS address on loopback."""
    markers = [str(base / "ray")]
    gcs = state.get("ray_address") if state else None
    if isinstance(gcs, str) and gcs.startswith("127.0.0.1:") and gcs[len("127.0.0.1:") :].isdigit():
        markers.append(f"--address={gcs}")
    return markers


def down() -> list[str]:
    """Stop the Ray head and redis-server that ``up`` started. Returns what was stopped."""
    state = read_local_state()
    stopped = []
    base = home()
    pids = _with_descendants(_our_pids(*_markers(state, base)))
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_running(p) for p in pids):
        time.sleep(0.2)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if pids:
        stopped.append(f"ray ({len(pids)} processes)")
    pidfile = Path(state["redis_pidfile"]) if state else base / "redis" / "redis.pid"
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, signal.SIGTERM)  # redis flushes its AOF and exits
        stopped.append(f"redis-server (pid {pid})")
    except (OSError, ValueError):
        pass
    (base / STATE_FILE).unlink(missing_ok=True)
    return stopped
