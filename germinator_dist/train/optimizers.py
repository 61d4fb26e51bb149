"""ADOPT (Taniguchi et al. 2024, "ADOPT: Modified Adam Can Converge with Any beta2 with the Optimal Rate").

Per parameter, with gradient ``g_t`` and ``t`` counting parameter updates (the paper's Algorithm):

    step 0:  v_0 = g_0^2                                   (initialization only: no parameter update)
    t >= 1:  m_t     = beta1 m_{t-1} + (1 - beta1) clip(g_t / max(sqrt(v_{t-1}), eps), c_t)
             theta_t = theta_{t-1} - lr m_t
             v_t     = beta2 v_{t-1} + (1 - beta2) g_t^2      (second moment updated AFTER the update)

``clip(x, c)`` clamps to ``[-c, c]``; ``c_t = clip_lambda(t)`` (default ``t ** 0.25`` as in the paper's
clipped variant; ``clip_lambda=None`` turns clipping off). Weight decay is L2 (added to the gradient) or,
with ``decoupled=True``, AdamW-style ``theta *= 1 - lr * weight_decay`` before each update. Differences
from the authors' reference code: step 0 changes nothing (no decay either), and ``t`` counts updates,
so the first update is clipped at ``1 ** 0.25 = 1`` rather than ``2 ** 0.25``.

Also here: the trainer's optimizer factory and learning-rate schedule. Pure: torch and the config only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.optim import Optimizer

from germinator_dist.config import TrainerConfig

DEFAULT_BETAS = {"adam": (0.9, 0.999), "adopt": (0.9, 0.9999)}
DEFAULT_EPS = {"adam": 1e-8, "adopt": 1e-6}


def default_clip(t: int) -> float:
    """The paper's clipping bound ``c_t = t ** 0.25`` (t = 1 for the first update)."""
    return t**0.25


class ADOPT(Optimizer):
    """ADOPT as a torch optimizer (see module docstring).

    Raises ValueError on a non-positive lr or eps, betas outside [0, 1), or a negative weight decay;
    RuntimeError on sparse gradients.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.9999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        *,
        decoupled: bool = False,
        clip_lambda: Callable[[int], float] | None = default_clip,
    ) -> None:
        if not lr > 0.0:
            raise ValueError(f"lr: expected > 0, got {lr!r}")
        if not eps > 0.0:
            raise ValueError(f"eps: expected > 0, got {eps!r}")
        if not all(0.0 <= b < 1.0 for b in betas) or len(betas) != 2:
            raise ValueError(f"betas: expected two values in [0, 1), got {betas!r}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay: expected >= 0, got {weight_decay!r}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, decoupled=decoupled)
        super().__init__(params, defaults)
        self.clip_lambda = clip_lambda

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        """One ADOPT step on every parameter that has a gradient; returns the closure's loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            wd, decoupled = group["weight_decay"], group["decoupled"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("ADOPT does not support sparse gradients")
                state = self.state[p]
                if wd != 0.0 and not decoupled:
                    grad = grad.add(p, alpha=wd)  # L2: part of the gradient, so of v as well
                if len(state) == 0:  # step 0: v_0 = g_0^2, no update
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = grad * grad
                    continue
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                normed = grad / v.sqrt().clamp_(min=eps)  # g_t / max(sqrt(v_{t-1}), eps)
                if self.clip_lambda is not None:
                    c = float(self.clip_lambda(t))
                    normed.clamp_(-c, c)
                m.lerp_(normed, 1.0 - beta1)  # m = beta1 m + (1 - beta1) normed
                if wd != 0.0 and decoupled:
                    p.mul_(1.0 - lr * wd)
                p.add_(m, alpha=-lr)
                v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)  # after the update
        return loss


def lr_at(config: TrainerConfig, step: int, elapsed_s: float = 0.0) -> float:
    """The learning rate of step ``step`` (0-based) after ``elapsed_s`` seconds of training.

    Annealing progress is the larger of the step and the wall-clock fraction (whichever budget is set).
    """
    if config.schedule == "constant":
        return config.lr
    warm = config.warmup_steps
    if step < warm:
        return config.lr * (step + 1) / warm
    fractions = [0.0]
    if config.total_steps is not None:
        fractions.append((step - warm) / max(1, config.total_steps - warm))
    if config.budget_s is not None:
        fractions.append(elapsed_s / config.budget_s)
    p = min(1.0, max(fractions))
    r = config.min_lr_ratio
    return config.lr * (r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * p)))


def make_optimizer(config: TrainerConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """torch Adam or ADOPT as the config says (betas/eps default per optimizer)."""
    betas = config.betas or DEFAULT_BETAS[config.optimizer]
    eps = config.eps if config.eps is not None else DEFAULT_EPS[config.optimizer]
    wd, dec = config.weight_decay, config.decoupled_weight_decay
    if config.optimizer == "adopt":
        clip = default_clip if config.adopt_clip else None
        return ADOPT(
            params, lr=config.lr, betas=betas, eps=eps, weight_decay=wd, decoupled=dec, clip_lambda=clip
        )
    return torch.optim.Adam(
        params, lr=config.lr, betas=betas, eps=eps, weight_decay=wd, decoupled_weight_decay=dec
    )
