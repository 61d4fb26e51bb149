"""Where a search worker or the trainer computes: the one place that picks the torch device."""

from __future__ import annotations

import torch


def pick_device(use_gpu: bool) -> str:
    """``"cuda"`` when the process was given a GPU (``workers.gpus`` > 0, or the trainer's GPU) and torch
    sees one, else ``"cpu"``; the process computes on one thread (Ray gives each worker its own CPU)."""
    torch.set_num_threads(1)
    return "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
