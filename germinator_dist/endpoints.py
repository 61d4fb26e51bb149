"""Where the seed table and the Ray cluster are: the one resolver that the CLI, the job runner, the sweep
and the demo use.

Each address comes from its flag, then the environment (``GERMINATOR_REDIS_URL``, ``RAY_ADDRESS``), then
the local stack recorded by ``germinator-dist up`` (``local.json`` in ``local_home()``); an error names the
one that was tried. Pure: reads the environment and one JSON file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from germinator_dist.errors import ConnectionFailed
from germinator_dist.redaction import redact_address

STATE_FILE = "local.json"  # the local stack's record, in local_home()


def local_home() -> Path:
    """Where the local stack keeps its data and its record: ``GERMINATOR_HOME``, else
    ``$XDG_DATA_HOME/germinator-dist``, else ``~/.local/share/germinator-dist``."""
    env = os.environ.get("GERMINATOR_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "germinator-dist"


def read_local_state() -> dict | None:
    """The recorded local stack, or None when ``up`` has not run (or ``down`` has)."""
    path = local_home() / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "redis_url" in data else None


@dataclass
class Endpoints:
    """Where the seed table and the cluster are. The raw addresses may hold credentials: they are left
    out of the repr; show ``shown_dashboard`` (and ``SeedTable.url`` for Redis) instead."""

    redis_url: str = field(repr=False)
    redis_source: str
    dashboard: str | None = field(repr=False)
    ray_source: str
    # the address a process joins the cluster with (``ray.init``): the flag or RAY_ADDRESS as given, else
    # the local stack's GCS address; None: let Ray find it ("auto")
    ray_init: str | None = field(default=None, repr=False)

    @property
    def shown_dashboard(self) -> str | None:
        return redact_address(self.dashboard)


def resolve(redis: str | None = None, address: str | None = None, need_ray: bool = False) -> Endpoints:
    """Pick the Redis URL and Ray address: flag, then environment, then the recorded local stack."""
    state = read_local_state()
    if redis:
        r, rs = redis, "--redis"
    elif os.environ.get("GERMINATOR_REDIS_URL"):
        r, rs = os.environ["GERMINATOR_REDIS_URL"], "GERMINATOR_REDIS_URL"
    elif state:
        r, rs = state["redis_url"], f"the local stack ({local_home() / STATE_FILE})"
    else:
        raise ConnectionFailed(
            "redis: no seed table configured: pass --redis URL, set GERMINATOR_REDIS_URL, "
            "or run `germinator-dist up`"
        )
    if address:
        a, as_ = address, "--address"
    elif os.environ.get("RAY_ADDRESS"):
        a, as_ = os.environ["RAY_ADDRESS"], "RAY_ADDRESS"
    elif state:
        a, as_ = state["dashboard_url"], "the local stack"
    elif need_ray:
        raise ConnectionFailed(
            "ray: no cluster configured: pass --address, set RAY_ADDRESS, or run `germinator-dist up`"
        )
    else:
        a, as_ = None, ""
    ray_init = address or os.environ.get("RAY_ADDRESS") or (state.get("ray_address") if state else None)
    if a and not a.startswith("http"):
        a = f"http://{a}" if ":" in a else a
    return Endpoints(r, rs, a, as_, ray_init)
