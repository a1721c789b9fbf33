"""ARDM networks for images: the U-Net with a mask channel, an output distribution, and stages.

Hoogeboom et al. 2022, "Autoregressive Diffusion Models" (ARDM). A variable (one channel of one
pixel) takes one of ``K`` levels. An order-agnostic ARDM (OA-ARDM) reveals variables one by one;
an *Upscale ARDM* (section 4) reveals them in ``S`` stages, stage ``s`` giving the next base-``b``
digit of every variable (``b = 2``: bit by bit; ``b = 4``: two bits per stage). One mixed-radix
description covers both: OA-ARDM is the single stage with branching ``K``.

With ``R[s] = b ** (S - s)``, a variable whose first ``n`` digits are known lies in the level
range ``[x // R[n] * R[n], x // R[n] * R[n] + R[n] - 1]`` (clipped to ``K - 1`` when ``K`` is not a
power of ``b``). The network sees, per variable, the midpoint of that range and ``n / S`` (the mask
channel; 0 is the absorbing state), plus a one-hot stage indicator, and predicts a distribution
over all ``K`` levels. The probability of the stage's digit is the mass of its sub-range divided
by the mass of the known range (the paper's "data parameterization" of Upscale ARDMs). Heads:

- ``softmax``: ``K`` logits per variable (small ``K``: digits' 17 levels, binary images);
- ``logistic``: a discretized logistic mixture (Salimans et al. 2017, PixelCNN++) with
  ``mixtures`` components; range masses are differences of logistic CDFs, so it needs
  ``3 * mixtures`` outputs per variable whatever ``K`` is.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

HEADS = ("softmax", "logistic")


def radix(levels: int, branching: int) -> list[int]:
    """``R[0..S]``: ``R[s]`` is how many levels one value of the first ``s`` digits spans.

    ``branching`` 0 (or >= levels) gives the OA-ARDM single stage ``[levels, 1]``.
    """
    if branching <= 0 or branching >= levels:
        return [levels, 1]
    if branching < 2:
        raise ValueError(f"branching must be 0 (OA-ARDM) or >= 2, got {branching}")
    stages = math.ceil(math.log(levels) / math.log(branching) - 1e-9)
    return [branching ** (stages - s) for s in range(stages + 1)]


def _log1mexp(a: Tensor) -> Tensor:
    """``log(1 - exp(a))`` for ``a <= 0``, stable on both sides of ``-log 2`` (Maechler 2012)."""
    return torch.where(a > -0.6931, torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


def logistic_log_mass(params: Tensor, lo: Tensor, hi: Tensor, levels: int) -> Tensor:
    """log P(lo <= level <= hi) under a discretized logistic mixture (PixelCNN++ binning of [-1, 1]).

    ``params`` (*B, 3M): mixture logits, means, log-scales; ``lo``/``hi`` (*B, J) integer levels.
    The outer edges are +-1e4 (finite, so gradients stay finite; log-scales are clamped to
    [-7, 5], which makes the first and last bins reach +-infinity to float64 precision).
    """
    m = params.shape[-1] // 3
    logit, mu, log_s = params[..., None, :m], params[..., None, m : 2 * m], params[..., None, 2 * m :]
    inv_s = torch.exp(-log_s.clamp(-7.0, 5.0))
    half = 1.0 / (levels - 1)
    big = torch.full_like(lo, 1e4, dtype=params.dtype)
    lower = torch.where(lo <= 0, -big, lo.to(params.dtype) * (2 * half) - 1 - half)[..., None]
    upper = torch.where(hi >= levels - 1, big, hi.to(params.dtype) * (2 * half) - 1 + half)[..., None]
    u, low = (upper - mu) * inv_s, (lower - mu) * inv_s
    flip = (u + low) > 0  # use the tail where the sigmoids are small: sigma(u) - sigma(l) = sigma(-l) - sigma(-u)
    u, low = torch.where(flip, -low, u), torch.where(flip, -u, low)
    lsu, lsl = F.logsigmoid(u), F.logsigmoid(low)
    log_comp = lsu + _log1mexp(torch.minimum(lsl - lsu, torch.full_like(lsu, -1e-30)))
    return torch.logsumexp(F.log_softmax(logit, dim=-1) + log_comp, dim=-1)


def softmax_log_mass(params: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """log P(lo <= level <= hi) under a categorical with logits ``params`` (*B, K); ``lo``/``hi`` (*B, J)."""
    k = torch.arange(params.shape[-1], device=params.device)
    inside = (k >= lo[..., None]) & (k <= hi[..., None])
    logp = F.log_softmax(params, dim=-1)[..., None, :]
    return torch.logsumexp(logp.masked_fill(~inside, -math.inf), dim=-1)


def fingerprint(module: nn.Module, config: dict[str, Any], step_losses: Any = None) -> bytes:
    """16 bytes of sha256 over the weights (as float32, sorted by name), the config and the per-step
    losses: what the codec stores so that a file is only decoded by the model that coded it."""
    import hashlib
    import json

    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    if step_losses is not None:
        h.update(json.dumps(step_losses).encode())
    return h.digest()[:16]


class Fingerprinted:
    """Mixin: ``step_losses`` (per-stage sorted per-step losses, or None) and ``fingerprint``."""

    step_losses: list[list[float]] | None = None

    @property
    def fingerprint(self) -> bytes:
        return fingerprint(self, self.config, self.step_losses)  # type: ignore[arg-type, attr-defined]


class ImageARDM(Fingerprinted, nn.Module):
    """OA-ARDM / Upscale ARDM over (C, H, W) images with ``levels`` levels (Hoogeboom et al. 2022).

    ``config`` keys: ``shape`` [C, H, W], ``levels``, ``branching`` (0: OA-ARDM), ``head``
    (softmax | logistic), ``mixtures``, ``unet`` (a :class:`difflab.nets.UNetConfig` dict whose
    ``in_channels`` / ``out_channels`` are filled in here). ``forward(x, known, stage)`` returns the
    log-probability (B, D) of every variable's digit of ``stage`` given the state, where ``x``
    (B, D) holds levels (only the digits the state knows are read), ``known`` (B, D) marks the
    variables whose digit of this stage is revealed, and ``stage`` (B,) is the stage index.
    """

    kind = "image"

    def __init__(self, config: dict[str, Any]) -> None:
        from ...nets import UNet

        super().__init__()
        self.config = dict(config)
        c = self.config
        self.shape = tuple(int(v) for v in c["shape"])
        self.levels = int(c["levels"])
        self.head = str(c.get("head", "softmax"))
        if self.head not in HEADS:
            raise ValueError(f"unknown ARDM head {self.head!r}; valid: {', '.join(HEADS)}")
        self.mixtures = int(c.get("mixtures", 10))
        self.R = radix(self.levels, int(c.get("branching", 0)))
        self.num_stages = len(self.R) - 1
        self.D = math.prod(self.shape)
        self.register_buffer("_R", torch.tensor(self.R, dtype=torch.long), persistent=False)
        self.net = UNet(self.unet_config(c))

    @staticmethod
    def unet_config(c: dict[str, Any]) -> dict[str, Any]:
        """The U-Net dict of an ARDM config: inputs value + mask (+ stage one-hot), outputs the head's."""
        ch = int(c["shape"][0])
        stages = len(radix(int(c["levels"]), int(c.get("branching", 0)))) - 1
        per = int(c["levels"]) if c.get("head", "softmax") == "softmax" else 3 * int(c.get("mixtures", 10))
        u = dict(c.get("unet", {}))
        u["in_channels"] = 2 * ch + (stages if stages > 1 else 0)
        u["out_channels"] = ch * per
        return u

    def summary(self) -> str:
        kind = "OA-ARDM" if self.num_stages == 1 else f"Upscale ARDM ({self.num_stages} stages of {self.R[-2]})"
        return f"{kind}, {self.levels} levels, {self.head} head; {self.net.summary()}"

    # -- the state the network sees -------------------------------------------------------
    def known_range(self, x: Tensor, n: Tensor) -> tuple[Tensor, Tensor]:
        """Level range (lo, hi) of variables whose first ``n`` digits are known (``n`` broadcasts)."""
        r = self._R[n]
        lo = torch.div(x, r, rounding_mode="floor") * r
        return lo, torch.clamp(lo + r - 1, max=self.levels - 1)

    def params(self, x: Tensor, known: Tensor, stage: Tensor) -> Tensor:
        """Head parameters (B, D, P) of every variable for the state (x, known, stage)."""
        b, s_count = x.shape[0], self.num_stages
        n = stage[:, None] + known.long()
        lo, hi = self.known_range(x, n)
        value = (lo + hi).float() / (self.levels - 1) - 1.0
        frac = n.float() / s_count
        c, h, w = self.shape
        inp = [value.view(b, c, h, w), frac.view(b, c, h, w)]
        if s_count > 1:
            inp.append(F.one_hot(stage, s_count).float()[:, :, None, None].expand(b, s_count, h, w))
        progress = (stage.float() + known.float().mean(1)) / s_count
        out = self.net(torch.cat(inp, 1), 20.0 * progress - 10.0)
        return out.float().view(b, c, -1, h * w).permute(0, 1, 3, 2).reshape(b, self.D, -1)

    def log_mass(self, params: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
        if self.head == "softmax":
            return softmax_log_mass(params, lo, hi)
        return logistic_log_mass(params, lo, hi, self.levels)

    def forward(self, x: Tensor, known: Tensor, stage: Tensor) -> Tensor:
        params = self.params(x, known, stage)  # the U-Net runs under the caller's autocast, the head in fp32
        with torch.autocast(x.device.type, enabled=False):
            lo_p, hi_p = self.known_range(x, stage[:, None])
            lo_d, hi_d = self.known_range(x, stage[:, None] + 1)
            lo, hi = torch.stack([lo_d, lo_p], -1), torch.stack([hi_d, hi_p], -1)
            lm = self.log_mass(params.float(), lo, hi)
            return lm[..., 0] - lm[..., 1]

    @torch.no_grad()
    def digit_probs(self, x: Tensor, known: Tensor, stage: int, idx: Tensor) -> Tensor:
        """float64 probabilities (B, n, b) of the digit of ``stage`` at positions ``idx`` (n,).

        The network runs in float32 on the model's device; the head in float64; the result is on the CPU
        (what the entropy coder and the sampler use).
        """
        dev = self._R.device
        x, known, idx = x.to(dev), known.to(dev), idx.to(dev)
        st = torch.full((x.shape[0],), stage, dtype=torch.long, device=dev)
        params = self.params(x, known, st)[:, idx].double()
        xs = x[:, idx]
        r_s, r_d = self.R[stage], self.R[stage + 1]
        base = torch.div(xs, r_s, rounding_mode="floor") * r_s
        lo = base[..., None] + torch.arange(r_s // r_d, device=x.device) * r_d
        hi = torch.clamp(lo + r_d - 1, max=self.levels - 1)
        lm = self.log_mass(params, lo.clamp(max=self.levels - 1), hi)
        lm = lm.masked_fill(lo > self.levels - 1, -math.inf)
        return torch.softmax(lm, dim=-1).cpu()

    def branching(self, stage: int) -> int:
        return self.R[stage] // self.R[stage + 1]
