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


def upsample_taps(factor: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(factor + 2, 3) 0/1 matrix T with ``conv(nearest_upsample(x, factor), w, padding=1)`` equal to
    ``conv_transpose(x, T @ w, stride=factor, padding=1)`` (derivation in :func:`upsample_conv`)."""
    k = torch.arange(factor + 2, device=device)[:, None]
    u = torch.arange(3, device=device)[None, :]
    return ((k - 2 + u >= 0) & (k - 2 + u < factor)).to(dtype)


def upsample_conv(x: Tensor, weight: Tensor, bias: Tensor | None, factor: int = 2) -> Tensor:
    """``conv(nearest_upsample(x, factor), weight, bias, padding=1)`` for a 3-tap (1-D) or 3x3 (2-D)
    kernel, computed without building the up-sampled tensor.

    Output sample ``p = factor * i + r`` of the convolution reads up-sampled samples ``p - 1, p, p + 1``,
    which are input samples ``floor((p + u - 1) / factor)`` for tap ``u`` in 0..2: input ``i``
    reaches outputs ``r`` in ``-1 .. factor`` with the summed weight ``c(r) = sum of w[u] over the u
    with 0 <= r + u - 1 < factor``. That is a transposed convolution with stride ``factor``, padding
    1 and the ``factor + 2``-tap kernel ``c`` (for 2x: ``(w2, w1 + w2, w0 + w1, w0)``): per input
    sample ``(factor + 2)`` multiply-adds instead of ``3 factor`` (per dimension), and no up-sampled
    intermediate. The parameters (and checkpoints) stay those of the 3-tap convolution; equal to
    the two-step form up to float rounding (tests/test_unet.py).
    """
    if weight.ndim == 3:
        # As a 2-D transposed convolution of height 1: on CPUs torch runs the 1-D one by a slower path
        # (measured 1.6-1.9x the time on WaveGrad's up-sampling shapes, one thread), the 2-D one by oneDNN.
        return upsample_conv_rows(x[:, :, None], weight, bias, factor)[:, :, 0]
    taps = upsample_taps(factor, weight.dtype, weight.device)
    kernel = torch.einsum("ku,oiuv,lv->iokl", taps, weight, taps)
    return F.conv_transpose2d(x, kernel.to(x.dtype), bias, stride=factor, padding=1)


def upsample_conv_rows(x: Tensor, weight: Tensor, bias: Tensor | None, factor: int = 2) -> Tensor:
    """:func:`upsample_conv` of a 1-D signal stored as an image of height 1, (B, C, 1, L), with the
    3-tap kernel ``weight`` (out, in, 3) of a ``Conv1d``; the result keeps the input's memory format."""
    taps = upsample_taps(factor, weight.dtype, weight.device)
    kernel = torch.einsum("ku,oiu->iok", taps, weight)[:, :, None].to(x.dtype)  # (in, out, 1, factor + 2)
    if x.is_contiguous(memory_format=torch.channels_last):
        kernel = kernel.contiguous(memory_format=torch.channels_last)  # oneDNN then returns channels-last too
    return F.conv_transpose2d(x, kernel, bias, stride=(1, factor), padding=(0, 1))


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
