"""The OA-ARDM objective, likelihood estimates, per-step losses and sampling (Hoogeboom et al. 2022).

A *model* here is any callable ``model(x, known, stage) -> (B, D)`` log-probabilities of every
variable's digit of ``stage`` given the state (see :class:`.model.ImageARDM`), with attributes
``D`` and ``num_stages`` and, for sampling and coding, ``digit_probs(x, known, stage, idx)``.

Training (section 3, eq. 5): draw ``t ~ U{1..D}``, a random order sigma and (Upscale ARDMs) a
stage ``s ~ U{0..S-1}``; the ``t - 1`` variables first in sigma are known; the loss
``-D / (D - t + 1) * sum_{unknown k} log p(x_k | known)`` (times ``S``) is an unbiased estimate of
the negative log-likelihood bound averaged over orders. Bits per dimension = NLL / (D ln 2).

A *plan* is the list of segment boundaries ``0 = t_0 < t_1 < ... < t_m = D`` of one stage: the
variables at order positions ``t_j .. t_{j+1}-1`` are produced by one network call (section 4,
parallel generation). ``None`` is the full plan (one variable per call).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

Plan = Sequence[int] | None


def random_ranks(b: int, d: int, generator: torch.Generator | None, device: Any) -> Tensor:
    """(B, D) ranks: ``ranks[i, k]`` is the position of variable ``k`` in a uniform random order."""
    noise = torch.rand(b, d, generator=generator, device=device)
    return noise.argsort(1).argsort(1)


def oa_loss(
    model: Any,
    x: Tensor,
    *,
    num_stages: int = 1,
    generator: torch.Generator | None = None,
    t: Tensor | None = None,
    ranks: Tensor | None = None,
    stage: Tensor | None = None,
) -> Tensor:
    """Per-example unbiased estimate (B,) of the NLL in nats of ``x`` (B, D) under the ARDM ``model``.

    ``t`` (B,) in 1..D, ``ranks`` (B, D) and ``stage`` (B,) are drawn when not given (tests pass them
    to enumerate the expectation exactly).
    """
    b, d = x.shape
    dev = x.device
    if t is None:
        t = torch.randint(1, d + 1, (b,), generator=generator, device=dev)
    if ranks is None:
        ranks = random_ranks(b, d, generator, dev)
    if stage is None:
        stage = torch.randint(0, num_stages, (b,), generator=generator, device=dev)
    known = ranks < (t - 1)[:, None]
    logp = model(x, known, stage)
    nll = -(logp * (~known)).sum(1)
    return nll * (d / (d - t + 1).to(nll.dtype)) * num_stages


def bpd(nats: Tensor | float, d: int) -> Tensor | float:
    """Nats per example -> bits per dimension."""
    return nats / (d * math.log(2))


def full_plan(d: int) -> list[int]:
    return list(range(d + 1))


def plan_nll(
    model: Any,
    x: Tensor,
    plans: Sequence[Plan] | None = None,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Unbiased per-example estimate (B,) of the NLL in nats when stage ``s`` follows ``plans[s]``.

    One network call: pick a step uniformly among all ``S * D``, take the segment that contains it,
    and scale the segment's summed loss by ``S * D / length`` (a random order per example). With
    full plans this is the training objective's estimator at ``t`` = the step.
    """
    b, d = x.shape
    s_count = model.num_stages
    plans = [full_plan(d) if p is None else list(p) for p in (plans or [None] * s_count)]
    dev = x.device
    step = torch.randint(0, s_count * d, (b,), generator=generator)
    stage, pos = step // d, step % d
    starts, ends = torch.empty(b, dtype=torch.long), torch.empty(b, dtype=torch.long)
    for s, plan in enumerate(plans):
        bounds = torch.tensor(plan)
        sel = stage == s
        j = torch.searchsorted(bounds, pos[sel], right=True) - 1
        starts[sel], ends[sel] = bounds[j], bounds[j + 1]
    ranks = random_ranks(b, d, generator, "cpu").to(dev)
    starts, ends, stage = starts.to(dev), ends.to(dev), stage.to(dev)
    known = ranks < starts[:, None]
    target = known.logical_not() & (ranks < ends[:, None])
    logp = model(x, known, stage)
    seg = -(logp * target).sum(1)
    return seg * (s_count * d) / (ends - starts).to(seg.dtype)


@torch.no_grad()
def estimate_nll(
    model: Any,
    images: Tensor,
    *,
    orders: int = 4,
    batch_size: int = 256,
    plans: Sequence[Plan] | None = None,
    seed: int = 0,
    device: Any = "cpu",
) -> dict[str, float]:
    """NLL in bits per dimension of ``images`` (N, D) levels: mean and standard error over
    ``orders`` random (order, step) draws per image (:func:`plan_nll`)."""
    gen = torch.Generator().manual_seed(seed)
    vals = []
    model.eval()
    for _ in range(orders):
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device).long()
            vals.append(plan_nll(model, x, plans, generator=gen).double().cpu())
    v = torch.cat(vals) / (images.shape[1] * math.log(2))
    return {"bpd": float(v.mean()), "se": float(v.std() / math.sqrt(len(v))), "draws": len(v)}


@torch.no_grad()
def step_losses(
    model: Any, images: Tensor, *, grid: int = 64, batch_size: int = 256, seed: int = 0, device: Any = "cpu"
) -> list[list[float]]:
    """Per-step losses ``L_t`` (nats per variable, t = 0..D-1 known variables) of every stage, estimated
    on ``images`` at ``grid`` values of t, linearly interpolated, and sorted non-increasing (section 4)."""
    d, s_count = images.shape[1], model.num_stages
    ts = np.unique(np.linspace(0, d - 1, min(grid, d)).round().astype(int))
    gen = torch.Generator().manual_seed(seed)
    out = []
    model.eval()
    for s in range(s_count):
        vals = []
        for t in ts:
            tot, cnt = 0.0, 0
            for start in range(0, len(images), batch_size):
                x = images[start : start + batch_size].to(device).long()
                ranks = random_ranks(len(x), d, gen, "cpu").to(device)
                known = ranks < int(t)
                stage = torch.full((len(x),), s, dtype=torch.long, device=device)
                logp = model(x, known, stage)
                tot += float(-(logp * ~known).sum())
                cnt += len(x) * (d - int(t))
            vals.append(tot / cnt)
        full = np.interp(np.arange(d), ts, np.asarray(vals))
        out.append(np.sort(full)[::-1].tolist())
    return out


def orders_from_seed(seed: int, d: int, stages: int) -> list[np.ndarray]:
    """The fixed coding order of each stage: a permutation of 0..D-1 from numpy's PCG64 seeded with (seed, s)."""
    return [np.random.default_rng([seed, s]).permutation(d) for s in range(stages)]


def walk(orders: Sequence[np.ndarray], plans: Sequence[Plan], d: int) -> Iterator[tuple[int, Tensor, Tensor]]:
    """The network calls of a generation: (stage, known mask (D,) bool, positions (n,) produced)."""
    for s, (order, plan) in enumerate(zip(orders, plans, strict=True)):
        bounds = full_plan(d) if plan is None else list(plan)
        order_t = torch.as_tensor(order, dtype=torch.long)
        for a, z in zip(bounds[:-1], bounds[1:], strict=True):
            known = torch.zeros(d, dtype=torch.bool)
            known[order_t[:a]] = True
            yield s, known, order_t[a:z]


@torch.no_grad()
def sample(
    model: Any,
    n: int,
    *,
    plans: Sequence[Plan] | None = None,
    seed: int = 0,
    device: Any = "cpu",
) -> Tensor:
    """Draw ``n`` samples (n, D) of levels in a random order per stage (one order for the batch);
    ``plans`` gives the parallel segments of each stage (``None``: D calls per stage)."""
    d, s_count = model.D, model.num_stages
    gen = torch.Generator().manual_seed(seed)
    orders = [torch.randperm(d, generator=gen).numpy() for _ in range(s_count)]
    plans = list(plans) if plans is not None else [None] * s_count
    x = torch.zeros(n, d, dtype=torch.long, device=device)
    model.eval()
    for s, known, idx in walk(orders, plans, d):
        probs = model.digit_probs(x, known.expand(n, d), s, idx)
        digit = torch.multinomial(probs.reshape(-1, probs.shape[-1]).float(), 1, generator=gen)
        x[:, idx.to(device)] += digit.view(n, -1).to(device) * model.R[s + 1]
    return x
