"""Building blocks of the U-Net, written once for 1-D and 2-D convolutions.

Video (3-D data) runs through the 2-D blocks with frames folded into the batch: a 2-D
3x3 convolution on (B * F, C, H, W) is exactly the factorised 1x3x3 space-only convolution
of Video Diffusion Models (Ho et al. 2022), and only :class:`TemporalAttention` mixes frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import Attention, TemporalAttention, group_norm


def conv(dims: int, cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Module:
    """A ``dims``-D convolution (1 or 2) with 'same' padding for odd kernels."""
    cls = nn.Conv1d if dims == 1 else nn.Conv2d
    return cls(cin, cout, kernel, stride=stride, padding=kernel // 2)


class ResBlock(nn.Module):
    """Residual block with scale-shift conditioning (Ho et al. 2020; "AdaGN" of Dhariwal & Nichol 2021).

    ``h = conv(SiLU(GN(x)))``; ``h = GN(h) * (1 + scale) + shift`` with ``(scale, shift)`` a
    linear function of ``SiLU(emb)``; ``out = skip(x) + conv(dropout(SiLU(h)))``; ``skip`` is a
    1x1 convolution when the channel count changes.
    """

    def __init__(self, dims: int, cin: int, cout: int, emb_dim: int, groups: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = group_norm(cin, groups)
        self.conv1 = conv(dims, cin, cout)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = group_norm(cout, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv(dims, cout, cout)
        self.skip = conv(dims, cin, cout, kernel=1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """``emb`` is the already activated embedding ``SiLU(e)`` of shape (B, E)."""
        h = self.conv1(F.silu(self.norm1(x)))
        ss = self.emb(emb).view(emb.shape[0], -1, *(1,) * (h.ndim - 2))
        scale, shift = ss.chunk(2, dim=1)
        h = F.silu(torch.addcmul(shift, self.norm2(h), 1 + scale))  # GN(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(self.dropout(h))


class Downsample(nn.Module):
    """Halve every spatial size with a stride-2 3x3 convolution (Ho et al. 2020)."""

    def __init__(self, dims: int, channels: int) -> None:
        super().__init__()
        self.conv = conv(dims, channels, channels, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


# Row u of a 3-tap kernel reaches the four taps of a stride-2 transposed convolution
# (padding 1) through this matrix: nearest-neighbour 2x up-sampling followed by a 3-tap
# 'same' convolution equals ``conv_transpose(x, TAPS @ w, stride=2, padding=1)`` (derivation
# in :func:`upsample_conv`).
_UPSAMPLE_TAPS = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0))


def upsample_conv(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``conv(nearest_upsample_2x(x), weight, bias, padding=1)`` for a 3-tap (1-D) or 3x3 (2-D)
    kernel, computed without building the up-sampled tensor.

    Output sample ``2i + a`` of the convolution sees input samples ``i - 1, i`` (a = 0, with
    weights ``w0`` and ``w1 + w2``) or ``i, i + 1`` (a = 1, with ``w0 + w1`` and ``w2``): two
    taps per output phase instead of three. A transposed convolution with stride 2, padding 1
    and the 4-tap kernel ``(w2, w1 + w2, w0 + w1, w0)`` computes exactly these sums, with
    (2/3)^dims of the multiply-adds and no 4x-sized intermediate; the parameters (and
    checkpoints) stay those of the 3x3 convolution. Equal to the two-step form up to float
    rounding (tests/test_unet.py).
    """
    taps = torch.tensor(_UPSAMPLE_TAPS, dtype=weight.dtype, device=weight.device)
    if weight.ndim == 3:
        kernel = torch.einsum("ku,oiu->iok", taps, weight)  # (in, out, 4): conv_transpose layout
        return F.conv_transpose1d(x, kernel.to(x.dtype), bias, stride=2, padding=1)
    kernel = torch.einsum("ku,oiuv,lv->iokl", taps, weight, taps)
    return F.conv_transpose2d(x, kernel.to(x.dtype), bias, stride=2, padding=1)


class Upsample(nn.Module):
    """Double every spatial size: nearest-neighbour up-sampling, then a 3x3 convolution,
    computed in one step by :func:`upsample_conv`."""

    def __init__(self, dims: int, channels: int) -> None:
        super().__init__()
        self.conv = conv(dims, channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return upsample_conv(x, self.conv.weight, self.conv.bias)


@dataclass
class Frames:
    """What the blocks need to know about video: frames per sample and the (B, F, F) temporal mask."""

    count: int = 1
    allowed: Tensor | None = None


class UNetBlock(nn.Module):
    """One step of a U-Net level: a :class:`ResBlock`, then optionally spatial self-attention
    (with context tokens) and, for video, temporal attention (Ho et al. 2022)."""

    def __init__(
        self, dims: int, cin: int, cout: int, emb_dim: int, groups: int, dropout: float, heads: int, attention: bool,
        context_dim: int = 0, temporal: bool = False, max_frame_offset: int = 32,
    ) -> None:  # fmt: skip
        super().__init__()
        self.res = ResBlock(dims, cin, cout, emb_dim, groups, dropout)
        self.attn = Attention(cout, heads, groups, context_dim) if attention else None
        self.temporal = TemporalAttention(cout, heads, groups, max_frame_offset) if temporal else None

    def forward(
        self, x: Tensor, emb: Tensor, context: Tensor | None, context_mask: Tensor | None, frames: Frames
    ) -> Tensor:
        x = self.res(x, emb)
        if self.attn is not None:
            x = self.attn(x, context, context_mask)
        if self.temporal is not None:
            x = self.temporal(x, frames.count, frames.allowed)
        return x
