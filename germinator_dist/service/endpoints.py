"""Where the seed table and the Ray cluster are: the one resolver every command uses.

Each address comes from its flag, then the environment (``GERMINATOR_REDIS_URL``, ``RAY_ADDRESS``), then
the local stack recorded by ``germinator-dist up``; an error names the one that was tried.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from germinator_dist.errors import ConnectionFailed
from germinator_dist.service import local_stack
from germinator_dist.service.redaction import redact_address


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
    state = local_stack.read_state()
    if redis:
        r, rs = redis, "--redis"
    elif os.environ.get("GERMINATOR_REDIS_URL"):
        r, rs = os.environ["GERMINATOR_REDIS_URL"], "GERMINATOR_REDIS_URL"
    elif state:
        r, rs = state["redis_url"], f"the local stack ({local_stack.home() / local_stack.STATE_FILE})"
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
