"""Attention layers of the U-Net, all through ``torch.nn.functional.scaled_dot_product_attention``.

- :class:`Attention`: multi-head self-attention over the positions of a feature map
  (Vaswani et al. 2017; in diffusion U-Nets since Ho et al. 2020), optionally also attending
  to context tokens whose keys and values are concatenated to the positions' own, as in
  GLIDE (Nichol et al. 2022) and the unCLIP decoder (Ramesh et al. 2022).
- :class:`TemporalAttention`: attention across the frames of a video at each spatial
  position, with a learned relative position bias over frame offsets and a mask that keeps
  appended independent images to themselves (Ho et al. 2022, "Video Diffusion Models", sec. 3).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm (Wu & He 2018) with the largest group count <= ``groups`` that divides ``channels``."""
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class Attention(nn.Module):
    """Pre-norm residual self-attention over all positions of ``x`` (B, C, *spatial).

    With ``context_dim > 0`` the layer takes context tokens (B, S, context_dim) and a mask
    (B, S) (True = visible); their projected keys and values are prepended to the positions'.
    The positions always see themselves, so a sample with no visible token is well defined.
    """

    def __init__(self, channels: int, heads: int, groups: int, context_dim: int = 0) -> None:
        super().__init__()
        self.heads = heads
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.kv_context = nn.Linear(context_dim, 2 * channels) if context_dim else None
        self.out = nn.Linear(channels, channels)

    def forward(self, x: Tensor, context: Tensor | None = None, context_mask: Tensor | None = None) -> Tensor:
        b, c = x.shape[:2]
        h = self.norm(x).flatten(2).transpose(1, 2)  # (B, N, C)
        n, heads = h.shape[1], self.heads
        q, k, v = self.qkv(h).view(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)  # (B, heads, N, d) each
        mask = None
        if self.kv_context is not None and context is not None:
            s = context.shape[1]
            kc, vc = self.kv_context(context).view(b, s, 2, heads, c // heads).permute(2, 0, 3, 1, 4)
            k, v = torch.cat([kc.to(k.dtype), k], dim=2), torch.cat([vc.to(v.dtype), v], dim=2)
            if context_mask is not None:
                own = torch.ones(b, n, dtype=torch.bool, device=x.device)
                mask = torch.cat([context_mask, own], dim=1)[:, None, None, :]  # (B, 1, 1, S + N)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, heads, N, d)
        o = self.out(o.transpose(1, 2).reshape(b, n, c))
        return x + o.transpose(1, 2).reshape(x.shape)


def frame_attention_mask(frame_is_image: Tensor) -> Tensor:
    """(B, F, F) bool, True where frame i may attend to frame j: video frames see video frames,
    each independent image sees only itself (joint image-video training, Ho et al. 2022)."""
    video = ~frame_is_image.bool()
    eye = torch.eye(frame_is_image.shape[1], dtype=torch.bool, device=frame_is_image.device)
    return (video[:, :, None] & video[:, None, :]) | eye


class TemporalAttention(nn.Module):
    """Pre-norm residual attention across frames; ``x`` is (B * F, C, H, W) with frames as batch.

    Each spatial position is a separate sequence of F frames. The logits get a learned
    per-head bias indexed by the frame offset ``j - i`` clipped to ``[-max_offset, max_offset]``
    (a relative position embedding in the spirit of Shaw et al. 2018 and T5, as used by
    Video Diffusion Models); the normalisation is per frame so that frames interact only here.
    """

    def __init__(self, channels: int, heads: int, groups: int, max_offset: int = 32) -> None:
        super().__init__()
        self.heads, self.max_offset = heads, max_offset
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)
        self.rel_bias = nn.Parameter(torch.zeros(heads, 2 * max_offset + 1))

    def bias(self, frames: int, device: torch.device) -> Tensor:
        """(heads, F, F) learned bias of offset ``j - i``."""
        pos = torch.arange(frames, device=device)
        offset = (pos[None, :] - pos[:, None]).clamp(-self.max_offset, self.max_offset) + self.max_offset
        return self.rel_bias[:, offset]

    def forward(self, x: Tensor, frames: int, allowed: Tensor | None = None) -> Tensor:
        """``allowed``: optional (B, F, F) bool from :func:`frame_attention_mask`."""
        bf, c = x.shape[:2]
        b, heads = bf // frames, self.heads
        h = self.norm(x).flatten(2)  # (B F, C, N)
        n = h.shape[2]
        h = h.view(b, frames, c, n).permute(0, 3, 1, 2)  # (B, N, F, C)
        qkv = self.qkv(h).view(b, n, frames, 3, heads, c // heads).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv.unbind(0)  # (B, N, heads, F, d): SDPA takes any leading batch dimensions
        bias = self.bias(frames, x.device)  # (heads, F, F), broadcast over B and N
        if allowed is not None:
            bias = bias.masked_fill(~allowed[:, None, None], float("-inf"))  # (B, 1, heads, F, F)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))  # (B, N, heads, F, d)
        o = self.out(o.transpose(2, 3).reshape(b, n, frames, c))  # (B, N, F, C)
        return x + o.permute(0, 2, 3, 1).reshape(x.shape)
