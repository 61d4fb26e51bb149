"""``germinator-dist plot``: a job's history from its event stream, as series (JSON) or a PNG.

The series come from the table alone, so a running job and a finished one plot the same way:

- ``layers``: per layer, the table's loss after every stream entry of that layer (``init``/``import``,
  each accepted swap, seed commit and trainer publish) against seconds since the job's first entry;
- ``swaps``, ``commits``, ``publishes``: the accepted swaps, whole-vector seed commits and trainer float
  publishes (time, layer, loss; a swap's slot, a publish's kept slots);
- ``trainer``: the scale trainer's curve where it recorded one (the ``trainer_curve`` document:
  fitness and validation loss per publish round, timed by the trainer's clock).

Works with any object with ``SeedTable``'s ``events``, ``get_doc`` and ``job_info`` (imports no Redis);
drawing uses matplotlib's Agg backend (no display).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from germinator_dist.errors import SpecError

CURVE_DOC = "trainer_curve"  # written by distributed/trainer_actor.py TrainerActor
MARK_KINDS = {"swap": "swaps", "seeds": "commits", "floats": "publishes"}


def _loss(v: float) -> float | None:
    return v if math.isfinite(v) else None  # inf (never measured) is JSON null


def job_series(table, job: str) -> dict:
    """The job's series (module docstring) as one JSON-ready dict. Raises JobNotFound, TableError."""
    info = table.job_info(job)
    events = table.events(job)
    t0 = min((e.time for e in events), default=0.0)
    layers: dict[str, dict[str, list]] = {}
    marks: dict[str, list[dict]] = {name: [] for name in MARK_KINDS.values()}
    for e in events:
        t = round(e.time - t0, 3)
        row = layers.setdefault(str(e.layer), {"time": [], "loss": [], "kind": []})
        row["time"].append(t)
        row["loss"].append(_loss(e.loss))
        row["kind"].append(e.kind)
        if e.kind in MARK_KINDS:
            mark = {"time": t, "layer": e.layer, "loss": _loss(e.loss)}
            if e.kind == "swap":
                mark["slot"] = e.slot
            if e.kind == "floats":
                mark["kept"] = list(e.kept)
            marks[MARK_KINDS[e.kind]].append(mark)
    trainer = {"time": [], "steps": [], "fitness_loss": [], "validation_loss": []}
    raw = table.get_doc(job, CURVE_DOC)
    if raw is not None:
        curve = json.loads(raw)
        trainer = {k: list(curve.get(k, [])) for k in trainer}
        trainer["time"] = [round(t - t0, 3) for t in trainer["time"]]
    return {"job_id": job, "state": info.state.value, "t0": t0, "layers": layers, **marks, "trainer": trainer}


def _finite(ts: list, vs: list) -> tuple[list, list]:
    pairs = [(t, v) for t, v in zip(ts, vs) if v is not None]
    return [t for t, _ in pairs], [v for _, v in pairs]


def plot_series(series: dict, out: str | Path) -> Path:
    """Draw the series into a PNG at ``out``: the table's loss per layer against time (steps), swaps and
    seed commits marked on their layer's line, the trainer's fitness and validation loss, and below a
    strip of when swaps, commits and publishes landed. Returns the path. Raises SpecError when ``out``
    cannot be written."""
    import matplotlib

    matplotlib.use("Agg")  # no display
    import matplotlib.pyplot as plt

    out = Path(out)
    fig, (ax, strip) = plt.subplots(
        2, 1, figsize=(10, 6.5), sharex=True, gridspec_kw={"height_ratios": [4, 1]}, constrained_layout=True
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (k, row) in enumerate(sorted(series["layers"].items(), key=lambda kv: int(kv[0]))):
        ts, vs = _finite(row["time"], row["loss"])
        ax.step(ts, vs, where="post", color=colors[i % len(colors)], lw=1.2, label=f"layer {k}")
    for name, marker, label in (("swaps", "^", "seed swap"), ("commits", "o", "seed commit")):
        pts = [m for m in series[name] if m["loss"] is not None]
        if pts:
            cs = [colors[m["layer"] % len(colors)] for m in pts]
            ax.scatter([m["time"] for m in pts], [m["loss"] for m in pts], marker=marker, s=18, c=cs,
                       edgecolors="black", linewidths=0.4, zorder=3, label=label)  # fmt: skip
    tr = series["trainer"]
    for key, style, label in (("fitness_loss", "--", "trainer fitness loss"),
                              ("validation_loss", ":", "trainer validation loss")):  # fmt: skip
        ts, vs = _finite(tr["time"], tr[key])
        if vs:
            ax.plot(ts, vs, style, color="black", lw=1.0, label=label)
    ax.set_ylabel("loss")
    ax.set_title(f"job {series['job_id']} [{series['state']}]", loc="left")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    rows = [("publishes", "trainer publishes"), ("commits", "seed commits"), ("swaps", "seed swaps")]
    strip.eventplot([[m["time"] for m in series[name]] for name, _ in rows], colors=["tab:gray", "C1", "C0"],
                    lineoffsets=range(len(rows)), linelengths=0.8, linewidths=0.8)  # fmt: skip
    strip.set_yticks(range(len(rows)), [label for _, label in rows], fontsize=8)
    strip.set_xlabel("seconds since the job was created")
    try:
        fig.savefig(out, dpi=110)
    except OSError as exc:
        raise SpecError(f"-o: cannot write {str(out)!r} ({exc.strerror})") from None
    finally:
        plt.close(fig)
    return out


def plot_job(table, job: str, out: str | Path) -> tuple[Path, dict]:
    """Read the job's series and draw them into ``out``. Returns (path, series)."""
    series = job_series(table, job)
    return plot_series(series, out), series
