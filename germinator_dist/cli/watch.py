"""``status --watch``: a live rich display of a job's progress until it ends."""

from __future__ import annotations

import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from germinator_dist.service.operations import status


def render(doc: dict) -> Table:
    best = "-" if doc["best_loss"] is None else f"{doc['best_loss']:.4f}"
    t = Table(title=f"job {doc['job_id']}  [{doc['state']}]  best loss {best}", title_justify="left")
    swap = doc.get("swaps") is not None
    cols = ["evaluations", "evals/s", "accepted", "stale", "workers", "per call", "trainer"]
    if swap:  # candidates considered, swaps accepted, candidates screened per second, fitness loss gained
        cols = ["candidates", "per s", "swaps", "stale", "workers", "trainer", "screened/s", "gain"]
    for col in cols:
        t.add_column(col, justify="right")
    workers = f"{doc['workers_live']}/{doc['workers_desired']}"
    trainer = "yes" if doc["trainer"] else "no"
    if swap:
        t.add_row(
            str(doc["evaluations"]), f"{doc['evals_per_s']:.0f}", str(doc["swaps"]), str(doc["stale"]),
            workers, trainer, f"{doc['screened_per_s']:.0f}", f"{doc['swap_gain']:.3f}",
        )  # fmt: skip
    else:
        t.add_row(
            str(doc["evaluations"]),
            f"{doc['evals_per_s']:.1f}",
            str(doc["accepted"]),
            str(doc["stale"]),
            workers,
            "-" if doc.get("candidates_per_call") is None else str(doc["candidates_per_call"]),
            trainer,
        )
    layers = Table(show_header=True)
    for col in ("layer", "loss", "version", "last writer"):
        layers.add_column(col, justify="right")
    for layer in doc["layers"]:
        loss = "-" if layer["loss"] is None else f"{layer['loss']:.4f}"
        layers.add_row(str(layer["layer"]), loss, str(layer["version"]), layer["writer"][-30:])
    outer = Table.grid()
    outer.add_row(t)
    if doc.get("error"):  # why the job's runner failed
        outer.add_row(f"error: {doc['error']}")
    if doc.get("workers_waiting"):  # why a desired worker is not running
        outer.add_row(f"workers: {doc['workers_waiting']}")
    outer.add_row(layers)
    return outer


def watch(
    table, job: str, interval: float = 0.5, console: Console | None = None, timeout: float | None = None
) -> dict:
    """Refresh until the job is SUCCEEDED, FAILED or CANCELLED (or ``timeout``); returns the last status."""
    console = console or Console()
    doc = status(table, job)
    t0 = time.monotonic()
    with Live(render(doc), console=console, refresh_per_second=4, transient=False) as live:
        while doc["state"] not in ("SUCCEEDED", "FAILED", "CANCELLED"):
            if timeout is not None and time.monotonic() - t0 > timeout:
                break
            time.sleep(interval)
            doc = status(table, job)
            live.update(render(doc))
    return doc
