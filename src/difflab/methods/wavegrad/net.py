"""The WaveGrad network (Chen et al. 2021, "WaveGrad: Estimating Gradients for Waveform
Generation", section 3 and figures 3-5).

The log-mel (B, n_mels, T) goes through up-sampling blocks (UBlock) whose factors multiply to the
hop length, ending at the waveform rate; the noisy waveform (B, 1, T * hop) goes through
down-sampling blocks (DBlock, factors reversed). At each resolution a FiLM module turns the DBlock
features plus a sinusoidal encoding of the continuous noise level ``sqrt(alpha_bar)`` into a scale
and shift that modulate the matching UBlock. The output is the predicted noise eps.

The network is called like every difflab network, ``net(z, lam, mel)`` with log-SNR ``lam``;
the noise level is ``sqrt(sigmoid(lam))``, so one model serves any schedule.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...nets.unet_blocks import upsample_conv_rows
from .audio import MelConfig


@dataclass
class WaveGradConfig:
    """Network, front end and prior. ``factors`` up-sample the mel (their product must be ``mel.hop``);
    ``up_channels`` are the UBlock widths; ``down_channels`` the widths of the first conv and the
    DBlocks (one per factor). ``prior`` is "standard" or "priorgrad" (Lee et al. 2022)."""

    factors: tuple[int, ...] = (4, 4, 4, 2, 2)
    in_channels: int = 768
    up_channels: tuple[int, ...] = (512, 512, 256, 128, 128)
    down_channels: tuple[int, ...] = (32, 128, 128, 256, 512)
    dilations: tuple[int, ...] = (1, 2, 4, 8)
    mel: dict[str, Any] = field(default_factory=dict)
    prior: str = "standard"
    prior_std_min: float = 0.1
    prior_energy_ref: float = 0.0  # set from the training data by the trainer (PriorGrad normaliser)

    def __post_init__(self) -> None:
        self.factors, self.up_channels = tuple(self.factors), tuple(self.up_channels)
        self.down_channels, self.dilations = tuple(self.down_channels), tuple(self.dilations)
        hop = self.mel_config.hop
        if math.prod(self.factors) != hop:
            raise ValueError(
                f"up-sampling factors {list(self.factors)} multiply to {math.prod(self.factors)}, "
                f"but the mel hop length is {hop}; choose factors whose product is {hop}"
            )
        if len(self.up_channels) != len(self.factors) or len(self.down_channels) != len(self.factors):
            raise ValueError(
                f"need one up_channels and one down_channels per factor ({len(self.factors)}), "
                f"got {len(self.up_channels)} and {len(self.down_channels)}"
            )
        if self.prior not in ("standard", "priorgrad"):
            raise ValueError(f"unknown prior {self.prior!r}; valid: standard, priorgrad")

    @property
    def mel_config(self) -> MelConfig:
        return MelConfig(**self.mel)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("factors", "up_channels", "down_channels", "dilations"):
            d[k] = list(d[k])
        d["mel"] = self.mel_config.to_dict()
        return d


def as_rows(x: Tensor) -> Tensor:
    """A signal (B, C, L) as the layout the blocks compute in: an image of height 1, (B, C, 1, L),
    stored channels-last (each time step's channels contiguous). oneDNN convolves this layout without
    reordering it, which on this network's long, narrow signals (16-128 channels) is where most of
    the speed-up measured by benchmarks/wavegrad_speed.py comes from."""
    return x[:, :, None].contiguous(memory_format=torch.channels_last)


def conv_rows(x: Tensor, conv: nn.Conv1d) -> Tensor:
    """``conv(x)`` of a ``Conv1d`` on a signal in the :func:`as_rows` layout (the parameters, and
    so the checkpoints, stay the ``Conv1d``'s)."""
    # A channels-last weight makes oneDNN choose (and return) the channels-last layout; where both
    # layouts coincide (one input channel, as the noisy waveform has) the output is made so here.
    weight = conv.weight[:, :, None].contiguous(memory_format=torch.channels_last)
    out = F.conv2d(x, weight, conv.bias, (1, conv.stride[0]), (0, conv.padding[0]), (1, conv.dilation[0]))
    return out.contiguous(memory_format=torch.channels_last)


def modulate(h: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """``leaky_relu(scale * h + shift)`` into one new tensor (fused multiply-add, then the activation
    in place, which autograd allows: neither needs the overwritten values for its gradient). Fewer
    fresh buffers matter on these long signals: unless the process keeps freed memory
    (:mod:`difflab.allocator`), each large one costs page faults on first touch."""
    return F.leaky_relu(torch.addcmul(shift, scale, h), 0.2, inplace=True)


def noise_encoding(level: Tensor, dim: int, scale: float = 5000.0) -> Tensor:
    """Sinusoidal encoding of the continuous noise level (WaveGrad eq. 9 style): (B,) -> (B, dim, 1, 1)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=level.device, dtype=torch.float32) / half)
    arg = scale * level.float()[:, None] * freqs[None]
    enc = torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)
    if dim % 2:
        enc = F.pad(enc, (0, 1))
    return enc[:, :, None, None]


class FiLM(nn.Module):
    """Feature-wise linear modulation from DBlock features + noise encoding -> (scale, shift)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.c_in = c_in
        self.inp = nn.Conv1d(c_in, c_in, 3, padding=1)
        self.scale = nn.Conv1d(c_in, c_out, 3, padding=1)
        self.shift = nn.Conv1d(c_in, c_out, 3, padding=1)

    def forward(self, h: Tensor, level: Tensor) -> tuple[Tensor, Tensor]:
        h = F.leaky_relu(conv_rows(h + noise_encoding(level, self.c_in).to(h.dtype), self.inp), 0.2, inplace=True)
        return conv_rows(h, self.scale), conv_rows(h, self.shift)


class UBlock(nn.Module):
    """Up-sampling block: nearest up-sampling, four dilated convs in two residual halves, FiLM after each first conv.
    Inputs and outputs in the :func:`as_rows` layout."""

    def __init__(self, c_in: int, c_out: int, factor: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.factor = factor
        self.skip = nn.Conv1d(c_in, c_out, 1)
        d = dilations
        self.convs = nn.ModuleList(
            [nn.Conv1d(c_in, c_out, 3, dilation=d[0], padding=d[0])]
            + [nn.Conv1d(c_out, c_out, 3, dilation=k, padding=k) for k in d[1:]]
        )

    def forward(self, x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
        first = self.convs[0]
        if first.dilation[0] == 1:
            # The leaky ReLU and the 1x1 skip commute with nearest up-sampling, so both run at the
            # input rate, and the first conv reads the up-sampled signal through one transposed
            # convolution (upsample_conv): the same function with a fraction of the work.
            h = upsample_conv_rows(F.leaky_relu(x, 0.2), first.weight, first.bias, self.factor)
            skip = F.interpolate(conv_rows(x, self.skip), scale_factor=(1, self.factor), mode="nearest")
        else:
            x = F.interpolate(x, scale_factor=(1, self.factor), mode="nearest")
            h, skip = conv_rows(F.leaky_relu(x, 0.2), first), conv_rows(x, self.skip)
        # In-place sums write into convolution outputs, whose values no gradient needs.
        x = conv_rows(modulate(h, scale, shift), self.convs[1]).add_(skip)
        h = conv_rows(modulate(x, scale, shift), self.convs[2])
        return conv_rows(modulate(h, scale, shift), self.convs[3]).add_(x)


class DBlock(nn.Module):
    """Down-sampling block: strided conv, then three dilated convs, with a 1x1 residual (the :func:`as_rows` layout)."""

    def __init__(self, c_in: int, c_out: int, factor: int) -> None:
        super().__init__()
        self.down = nn.Conv1d(c_in, c_in, 2 * factor + 1, stride=factor, padding=factor)
        self.skip = nn.Conv1d(c_in, c_out, 1)
        self.convs = nn.ModuleList(
            [nn.Conv1d(c_in, c_out, 3, padding=1)] + [nn.Conv1d(c_out, c_out, 3, dilation=k, padding=k) for k in (2, 4)]
        )

    def forward(self, x: Tensor) -> Tensor:
        x = conv_rows(x, self.down)
        h = conv_rows(F.leaky_relu(x, 0.2), self.convs[0])
        for conv in self.convs[1:]:
            h = conv_rows(F.leaky_relu(h, 0.2, inplace=True), conv)  # in place on a conv output
        return h.add_(conv_rows(x, self.skip))


class WaveGrad(nn.Module):
    """eps-prediction network ``net(z, lam, mel)``: z (B, 1, T * hop), lam (B,), mel (B, n_mels, T)."""

    def __init__(self, config: WaveGradConfig | dict[str, Any]) -> None:
        super().__init__()
        self.config = config if isinstance(config, WaveGradConfig) else WaveGradConfig(**config)
        c = self.config
        self.n_mels, self.hop = c.mel_config.n_mels, c.mel_config.hop
        self.mel_in = nn.Conv1d(self.n_mels, c.in_channels, 3, padding=1)
        widths = (c.in_channels, *c.up_channels)
        self.ups = nn.ModuleList(UBlock(widths[i], widths[i + 1], f, c.dilations) for i, f in enumerate(c.factors))
        self.wave_in = nn.Conv1d(1, c.down_channels[0], 5, padding=2)
        downs_f = list(reversed(c.factors[1:]))  # resolutions of UBlocks n-1 .. 1, finest first
        dc = c.down_channels
        self.downs = nn.ModuleList(DBlock(dc[i], dc[i + 1], f) for i, f in enumerate(downs_f))
        # FiLM k serves UBlock n-1-k (finest first), from the DBlock features at that resolution.
        self.films = nn.ModuleList(FiLM(w, c.up_channels[-1 - k]) for k, w in enumerate(dc))
        self.out = nn.Conv1d(c.up_channels[-1], 1, 3, padding=1)

    def summary(self) -> str:
        c = self.config
        return f"WaveGrad factors {list(c.factors)}, up {list(c.up_channels)}, prior {c.prior}"

    def check_mel(self, mel: Tensor) -> None:
        if mel.dim() != 3 or mel.shape[1] != self.n_mels:
            raise ValueError(
                f"mel has shape {tuple(mel.shape)}; expected (batch, {self.n_mels}, frames) "
                f"log-mel with {self.n_mels} bins"
            )

    def forward(self, z: Tensor, lam: Tensor, mel: Any) -> Tensor:
        if isinstance(mel, dict):
            mel = mel["mel"]
        self.check_mel(mel)
        if z.shape[-1] != mel.shape[-1] * self.hop:
            raise ValueError(f"waveform length {z.shape[-1]} != mel frames {mel.shape[-1]} x hop {self.hop}")
        level = torch.sigmoid(lam.float()).sqrt()
        feats = [conv_rows(as_rows(z), self.wave_in)]
        for down in self.downs:
            feats.append(down(feats[-1]))
        x = conv_rows(as_rows(mel.to(z.dtype)), self.mel_in)
        n = len(self.ups)
        for i, up in enumerate(self.ups):
            scale, shift = self.films[n - 1 - i](feats[n - 1 - i], level)
            x = up(x, scale, shift)
        return conv_rows(F.leaky_relu(x, 0.2), self.out)[:, :, 0].contiguous()
