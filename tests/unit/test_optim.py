"""ADOPT against a hand-written reference of the paper's algorithm, and convergence on a quadratic."""

import math

import pytest
import torch

from germinator_dist.train.optimizers import ADOPT, default_clip

GRADS = [  # a fixed gradient sequence for a 3-element parameter (steps 0..5)
    [0.5, -2.0, 0.0],
    [0.4, 1.5, 1e-3],
    [-0.3, -1.0, 2.0],
    [0.2, 0.5, -0.7],
    [0.1, -0.2, 0.05],
    [3.0, 0.0, -0.01],
]


def reference(theta, grads, lr, b1, b2, eps, wd=0.0, decoupled=False, clip=True):
    """The paper's ADOPT, element by element, in plain Python floats."""
    theta = list(theta)
    m = [0.0] * len(theta)
    v = None
    for t, g in enumerate(grads):  # t = 0 is the initialization step
        if wd and not decoupled:
            g = [gi + wd * th for gi, th in zip(g, theta)]
        if v is None:
            v = [gi * gi for gi in g]
            continue
        c = t**0.25
        for i, gi in enumerate(g):
            x = gi / max(math.sqrt(v[i]), eps)
            if clip:
                x = min(max(x, -c), c)
            m[i] = b1 * m[i] + (1 - b1) * x
            if wd and decoupled:
                theta[i] *= 1 - lr * wd
            theta[i] -= lr * m[i]
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
    return theta


@pytest.mark.parametrize(
    "clip,wd,decoupled", [(True, 0.0, False), (False, 0.0, False), (True, 0.1, False), (True, 0.1, True)]
)
def test_adopt_matches_hand_written_reference(clip, wd, decoupled):
    theta0 = [1.0, -0.5, 0.25]
    p = torch.nn.Parameter(torch.tensor(theta0, dtype=torch.float64))
    opt = ADOPT(
        [p], lr=0.1, betas=(0.8, 0.95), eps=1e-6, weight_decay=wd, decoupled=decoupled,
        clip_lambda=default_clip if clip else None,
    )  # fmt: skip
    for g in GRADS:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    want = reference(theta0, GRADS, 0.1, 0.8, 0.95, 1e-6, wd, decoupled, clip)
    torch.testing.assert_close(p.detach(), torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    assert opt.state[p]["step"] == len(GRADS) - 1


def test_clipping_bounds_the_normalized_gradient():
    # v_0 = 0 for the last element, so its normalized gradient is g / eps: clipping caps it at t ** 0.25
    p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = ADOPT([p], lr=1.0, betas=(0.0, 0.5))
    for g in GRADS[:2]:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    assert p[2].item() == pytest.approx(-1.0)  # beta1 = 0: m = clip(1e-3 / 1e-6, 1) = 1
    unclipped = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = ADOPT([unclipped], lr=1.0, betas=(0.0, 0.5), clip_lambda=None)
    for g in GRADS[:2]:
        unclipped.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    assert unclipped[2].item() == pytest.approx(-1e3)


def test_step_zero_only_initializes():
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = ADOPT([p], lr=0.5, weight_decay=0.1, decoupled=True)
    p.grad = torch.tensor([3.0, -4.0])
    opt.step()
    assert p.tolist() == [1.0, 2.0]
    assert opt.state[p]["exp_avg_sq"].tolist() == [9.0, 16.0]
    assert opt.state[p]["exp_avg"].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("clip", [True, False])
def test_adopt_converges_on_a_quadratic(clip):
    torch.manual_seed(0)
    a = torch.tensor([1.0, 10.0, 0.1, 3.0])  # curvatures
    c = torch.tensor([2.0, -1.0, 0.5, 3.0])  # the minimum
    x = torch.nn.Parameter(torch.zeros(4))
    opt = ADOPT([x], lr=0.05, clip_lambda=default_clip if clip else None)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 800, eta_min=1e-4)
    for _ in range(800):
        loss = 0.5 * (a * (x - c) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    assert torch.allclose(x.detach(), c, atol=0.02), x


def test_state_dict_round_trip_continues_identically():
    def run(grads, p=None, state=None):
        p = torch.nn.Parameter(torch.tensor([1.0, -1.0]) if p is None else p.clone())
        opt = ADOPT([p], lr=0.1)
        if state is not None:
            opt.load_state_dict(state)
        for g in grads:
            p.grad = torch.tensor(g[:2])
            opt.step()
        return p.detach(), opt.state_dict()

    full, _ = run(GRADS[:4])
    half, state = run(GRADS[:2])
    resumed, _ = run(GRADS[2:4], half, state)
    torch.testing.assert_close(resumed, full)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"lr": 0.0}, "lr"),
        ({"eps": -1.0}, "eps"),
        ({"betas": (0.9, 1.0)}, "betas"),
        ({"weight_decay": -1}, "weight_decay"),
    ],
)
def test_invalid_hyperparameters_are_refused(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ADOPT([torch.nn.Parameter(torch.zeros(1))], **kwargs)
