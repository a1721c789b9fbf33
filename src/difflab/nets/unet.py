"""One U-Net for 1-D audio, 2-D images and 3-D video (docs/math.md sections 0, 7, 8, 9).

The architecture is the diffusion U-Net of DDPM (Ho et al. 2020) with the improvements of
ADM (Dhariwal & Nichol 2021: scale-shift conditioning, multi-head attention), the options of
Imagen's Efficient U-Net (Saharia et al. 2022, appendix B: more blocks at low resolution,
skip connections scaled by 1/sqrt(2), down-sampling before and up-sampling after the
convolutions), GLIDE / unCLIP style attention to context tokens (Nichol et al. 2022;
Ramesh et al. 2022), Imagen's super-resolution conditioning with noise augmentation, and
the factorised space-time U-Net of Video Diffusion Models (Ho et al. 2022).

Data flow (``resample_first=False``; with it, every level starts with a down-sampling and
every decoder level ends with an up-sampling, so no residual block runs at full resolution)::

    x (+ up-sampled lowres) -> stem conv
      encoder level i: [down] -> num_blocks[i] x (ResBlock [-> attention] [-> temporal]) -> skips
      middle: ResBlock -> attention [-> temporal] -> ResBlock
      decoder level i: num_blocks[i] x (concat skip -> block) -> [up]
    -> GroupNorm -> SiLU -> zero-initialised conv -> output

The network knows nothing of noise schedules: it sees the log-SNR ``lam`` and a cond dict
(see :mod:`difflab.nets.conditioning`); wrap it with ``difflab.diffusion.make_denoiser``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import frame_attention_mask, group_norm
from .conditioning import Cond, ConditionEmbedder, check_cond, per_sample
from .unet_blocks import Downsample, Frames, UNetBlock, Upsample, conv
from .unet_config import UNetConfig


class UNet(nn.Module):
    """The U-Net: ``UNet(config)(z, lam, cond) -> output`` with ``config.out_channels`` channels.

    Input layouts: (B, C, L) for ``dims=1``, (B, C, H, W) for 2, (B, C, F, H, W) for 3. Every
    spatial size (not the frame count) must be divisible by ``2 ** config.num_down``.
    """

    def __init__(self, config: UNetConfig | Mapping[str, Any]) -> None:
        super().__init__()
        c = config if isinstance(config, UNetConfig) else UNetConfig.from_dict(config)
        self.config = c
        conv_dims = 1 if c.dims == 1 else 2  # video folds frames into the batch
        chans = [c.channels * m for m in c.channel_mult]
        self.embed = ConditionEmbedder(c)

        def block(cin: int, cout: int, attention: bool, temporal: bool) -> UNetBlock:
            return UNetBlock(
                conv_dims, cin, cout, c.emb_dim, c.norm_groups, c.dropout, c.heads,
                attention, c.ctx_dim, temporal, c.max_frame_offset,
            )  # fmt: skip

        self.stem = conv(conv_dims, c.in_channels + c.lowres_channels, c.channels)
        self.downs, self.encoder = nn.ModuleList(), nn.ModuleList()
        ch = c.channels
        for i, (cout, n) in enumerate(zip(chans, c.num_blocks, strict=True)):
            self.downs.append(Downsample(conv_dims, ch) if i > 0 or c.resample_first else nn.Identity())
            level = nn.ModuleList()
            for _ in range(n):
                level.append(block(ch, cout, i in c.attn_levels, i in c.temporal))
                ch = cout
            self.encoder.append(level)

        self.middle = nn.ModuleList([block(ch, ch, True, c.dims == 3), block(ch, ch, False, False)])

        self.decoder, self.ups = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(c.levels)):
            level = nn.ModuleList()
            for _ in range(c.num_blocks[i]):
                level.append(block(ch + chans[i], chans[i], i in c.attn_levels, i in c.temporal))
                ch = chans[i]
            self.decoder.append(level)
            self.ups.append(Upsample(conv_dims, ch) if i > 0 or c.resample_first else nn.Identity())

        self.out_norm = group_norm(ch, c.norm_groups)
        self.out = conv(conv_dims, ch, c.out_channels)
        nn.init.zeros_(self.out.weight)  # start as the zero function (common practice since DDPM)
        nn.init.zeros_(self.out.bias)
        self.skip_scale = 1 / math.sqrt(2) if c.scale_skip else 1.0

    # -- reporting ----------------------------------------------------------------------
    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def summary(self) -> str:
        """One line for logs, e.g. ``UNet 2-D, 2.05M params: 32 ch x (1, 2, 2), ...``."""
        c = self.config
        conds = [
            f"{name}({dim})"
            for name, dim in (
                ("class", c.num_classes), ("vector", c.vector_dim), ("tokens", c.token_dim),
                ("pooled", c.pooled_dim), ("lowres", c.lowres_channels),
            )
            if dim
        ]  # fmt: skip
        extras = [k for k in ("scale_skip", "resample_first") if getattr(c, k)]
        return (
            f"UNet {c.dims}-D, {self.num_parameters() / 1e6:.2f}M params: {c.channels} ch x {c.channel_mult}, "
            f"blocks {c.num_blocks}, attention at levels {c.attn_levels} ({c.heads} heads), "
            f"{c.in_channels}->{c.out_channels} channels, cond [{', '.join(conds) or 'none'}]"
            + (f", drop {c.cond_drop}" if c.cond_drop else "")
            + (f", {' '.join(extras)}" if extras else "")
        )

    # -- forward ------------------------------------------------------------------------
    def _check_input(self, x: Tensor) -> None:
        c = self.config
        if x.ndim != c.dims + 2 or x.shape[1] != c.in_channels:
            want = {1: "(B, C, L)", 2: "(B, C, H, W)", 3: "(B, C, F, H, W)"}[c.dims]
            raise ValueError(
                f"UNet ({c.dims}-D) expects input {want} with C={c.in_channels}, got shape {tuple(x.shape)}"
            )
        spatial = x.shape[3:] if c.dims == 3 else x.shape[2:]
        k = 2**c.num_down
        if any(s % k for s in spatial):
            raise ValueError(
                f"UNet with {c.num_down} down-samplings needs every spatial size divisible by {k}; "
                f"got {tuple(spatial)}: pad or crop the input, or use fewer levels"
            )

    def _lowres(self, cond: Cond, x: Tensor) -> Tensor:
        """The low-resolution conditioning image up-sampled to ``x``'s size (Imagen, SR3)."""
        c = self.config
        if "lowres" not in cond:
            raise ValueError(
                f"this UNet is a super-resolution model: cond['lowres'] (B, {c.lowres_channels}, ...) is required"
            )
        lr = cond["lowres"]
        if lr.shape[:2] != (x.shape[0], c.lowres_channels) or lr.ndim != x.ndim:
            raise ValueError(
                f"cond['lowres'] must be (B, {c.lowres_channels}, ...) like the input, got {tuple(lr.shape)}"
            )
        if c.dims == 3:
            if lr.shape[2] != x.shape[2]:
                raise ValueError(f"cond['lowres'] has {lr.shape[2]} frames, the input {x.shape[2]}")
            lr = lr.transpose(1, 2).flatten(0, 1)
        size = x.shape[-1:] if c.dims == 1 else x.shape[-2:]
        mode = "nearest" if c.lowres_mode == "nearest" else ("linear" if c.dims == 1 else "bilinear")
        return F.interpolate(lr.to(x.dtype), size=tuple(size), mode=mode)

    def forward(self, x: Tensor, lam: Tensor, cond: Cond | None = None) -> Tensor:
        """``x`` noisy data, ``lam`` (B,) log-SNR (or a scalar), ``cond`` None or a dict."""
        c = self.config
        self._check_input(x)
        cond = {} if cond is None else cond
        check_cond(cond, c)
        b = x.shape[0]
        emb, ctx, ctx_mask = self.embed(per_sample(lam, b, "lam", device=x.device), cond)

        frames = Frames()
        h = x
        if c.dims == 3:  # (B, C, F, H, W) -> (B F, C, H, W): frames become batch
            frames = Frames(x.shape[2])
            if "frame_is_image" in cond:
                fi = cond["frame_is_image"]
                if tuple(fi.shape) != (b, frames.count):
                    raise ValueError(f"cond['frame_is_image'] must be ({b}, {frames.count}), got {tuple(fi.shape)}")
                frames.allowed = frame_attention_mask(fi.to(x.device))
            h = h.transpose(1, 2).flatten(0, 1)
            emb = emb.repeat_interleave(frames.count, dim=0)
            if ctx is not None:
                ctx = ctx.repeat_interleave(frames.count, dim=0)
                ctx_mask = ctx_mask.repeat_interleave(frames.count, dim=0)
        if c.lowres_channels:
            h = torch.cat([h, self._lowres(cond, x)], dim=1)

        emb = F.silu(emb)
        h = self.stem(h)
        skips = []
        for down, level in zip(self.downs, self.encoder, strict=True):
            h = down(h)
            for blk in level:
                h = blk(h, emb, ctx, ctx_mask, frames)
                skips.append(h)
        for blk in self.middle:
            h = blk(h, emb, ctx, ctx_mask, frames)
        for level, up in zip(self.decoder, self.ups, strict=True):
            for blk in level:
                skip = skips.pop()
                if c.scale_skip:  # Efficient U-Net: skip connections scaled by 1/sqrt(2)
                    skip = skip * self.skip_scale
                h = blk(torch.cat([h, skip], dim=1), emb, ctx, ctx_mask, frames)
            h = up(h)
        out = self.out(F.silu(self.out_norm(h)))
        if c.dims == 3:
            out = out.view(b, frames.count, *out.shape[1:]).transpose(1, 2)
        return out.to(x.dtype)
