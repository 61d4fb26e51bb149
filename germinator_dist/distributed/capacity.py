"""What the Ray cluster can place: the ``workers.count: auto`` count, and why a desired worker waits.

Both read Ray's per-node resources (``ray._private.state``, Ray's developer API; the fallback is
``ray.nodes()``). Resources are the CPU/GPU bundles a worker or the trainer asks for
(``workers.cpus``/``workers.gpus``).
"""

from __future__ import annotations

import math

import ray

from germinator_dist.config import JobSpec


def _per_node(which: str) -> dict[str, dict[str, float]]:
    """Node id -> resources (``total`` or ``available``) of every live node."""
    try:
        from ray._private import state

        fn = state.total_resources_per_node if which == "total" else state.available_resources_per_node
        return {k: dict(v) for k, v in fn().items()}
    except (ImportError, AttributeError):  # an older or newer Ray without the developer API: totals only
        return {n["NodeID"]: dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")}


def bundle(cpus: float, gpus: float) -> dict[str, float]:
    """The resources one actor asks for (only the nonzero ones)."""
    return {k: v for k, v in (("CPU", cpus), ("GPU", gpus)) if v > 0}


def fits(free: dict[str, float], want: dict[str, float]) -> int:
    """How many bundles ``want`` fit into ``free`` (a large number for an empty bundle)."""
    if not want:
        return 1 << 30
    return min(int(math.floor(free.get(k, 0.0) / v + 1e-9)) for k, v in want.items())


def placeable(nodes: list[dict[str, float]], want: dict[str, float], reserve: list[dict[str, float]]) -> int:
    """Bundles ``want`` that the ``nodes`` hold beside the ``reserve`` bundles (each placed first, on the
    node with the most room for it). Pure: the nodes' resources are given."""
    free = [dict(n) for n in nodes]
    for r in reserve:
        room = [(fits(n, r), i) for i, n in enumerate(free)]
        best = max(room, default=(0, -1))
        if best[0] < 1:
            continue  # the reserved actor fits nowhere: it takes nothing from the workers either
        for k, v in r.items():
            free[best[1]][k] -= v
    return sum(fits(n, want) for n in free)


def auto_workers(spec: JobSpec) -> int:
    """``workers.count: auto``: the worker bundles the live nodes' total resources place beside the trainer
    (train/hybrid), clamped to [max(min, 1), max]. Needs a connected Ray."""
    w = spec.workers
    reserve = [bundle(w.cpus, w.gpus)] if spec.mode in ("train", "hybrid") else []
    n = placeable(list(_per_node("total").values()), bundle(w.cpus, w.gpus), reserve)
    return min(max(n, w.min, 1), w.max)


def _shown(res: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in res.items()) or "nothing"


def waiting_reason(cpus: float, gpus: float, waiting: int) -> str:
    """Why ``waiting`` workers asking for ``cpus``/``gpus`` each are not running, naming the resources:
    no node has that much at all, or every node's is in use now, or they are starting. Needs Ray."""
    want = bundle(cpus, gpus)
    what = f"{waiting} worker{'s' if waiting != 1 else ''}"
    total = _per_node("total")
    if not any(fits(r, want) >= 1 for r in total.values()):
        most = {k: max((r.get(k, 0.0) for r in total.values()), default=0.0) for k in want}
        return (
            f"{what} not running: no node can place {{{_shown(want)}}} at all "
            f"(the largest node has {_shown(most) if want else 'nothing'}; {len(total)} nodes)"
        )
    avail = _per_node("available")
    if not any(fits(r, want) >= 1 for r in avail.values()):
        free = {k: sum(r.get(k, 0.0) for r in avail.values()) for k in want}
        cap = {k: sum(r.get(k, 0.0) for r in total.values()) for k in want}
        used = ", ".join(f"{k} {cap[k] - free[k]:g} of {cap[k]:g} in use" for k in want)
        return f"{what} not running: no node can place {{{_shown(want)}}} now ({used}; waiting for room)"
    return f"{what} starting"


def live_node_resources(dashboard: str) -> list[dict[str, float]] | None:
    """The total resources of every live node (Ray's state API through the dashboard at ``dashboard``),
    or None when the cluster does not list them."""
    from ray.util.state import list_nodes

    try:
        nodes = list_nodes(address=dashboard, detail=False, raise_on_missing_output=False)
    except Exception:  # noqa: BLE001 - an older dashboard or a refused request: the job runner reports later
        return None
    return [dict(n.resources_total or {}) for n in nodes if n.state == "ALIVE"]
