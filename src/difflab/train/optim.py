"""Optimiser pieces of the trainer: AdamW, the learning-rate schedule and the EMA of the weights.

The learning rate is a pure function of the step (:func:`lr_at`), so resuming needs only the
step number; the EMA keeps its own update counter.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .config import TrainConfig


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019) with the config's lr, betas, eps and weight decay."""
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of update ``step`` (0-based): linear warm-up, then ``cfg.decay``.

    Warm-up: ``lr * (step + 1) / warmup`` for ``step < warmup``. Afterwards, with progress
    ``p = (step - warmup) / (steps - warmup)`` in [0, 1) and ``f = final_lr_ratio``:
    ``none`` keeps ``lr``; ``linear`` gives ``lr (1 - (1 - f) p)``; ``cosine`` gives
    ``lr (f + (1 - f)(1 + cos(pi p)) / 2)``. Past ``steps`` (training extended on resume) the
    rate stays at its final value.
    """
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.decay == "none":
        return cfg.lr
    span = max(cfg.steps - cfg.warmup, 1)
    p = min(max(step - cfg.warmup, 0) / span, 1.0)
    f = cfg.final_lr_ratio
    if cfg.decay == "linear":
        return cfg.lr * (1.0 - (1.0 - f) * p)
    return cfg.lr * (f + (1.0 - f) * 0.5 * (1.0 + math.cos(math.pi * p)))


class EMA:
    """Exponential moving average of a model's weights (Polyak averaging; as in DDPM, Ho et al. 2020).

    After each optimiser update ``t`` (0-based), ``ema = d_t ema + (1 - d_t) theta`` with
    ``d_t = decay``, or ``min(decay, (1 + t) / (10 + t))`` with ``warmup`` (so that early
    averages are not dominated by the random initialisation). Buffers are copied.
    ``self.module`` is a frozen copy of the model in eval mode: sample from it directly.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, t: int) -> float:
        """The decay used for update ``t`` (0-based)."""
        return min(self.decay, (1.0 + t) / (10.0 + t)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.decay_at(self.updates)
        ema_p = [p for p in self.module.parameters()]
        new_p = [p.detach() for p in model.parameters()]
        if len(ema_p) != len(new_p):
            raise ValueError("EMA: the model's parameters changed since the EMA was created")
        torch._foreach_lerp_(ema_p, new_p, 1.0 - d)
        for b_ema, b in zip(self.module.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()
