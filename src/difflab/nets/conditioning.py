"""Conditioning of the U-Net: noise-level embedding, conditions, null embeddings for guidance.

The network is called as ``net(z, lam, cond)`` with ``lam`` the (B,) log-SNR and ``cond``
None or a dict with these optional keys (B = batch size):

===================  ==================  ==========================================================
key                  shape               meaning
===================  ==================  ==========================================================
"class"              (B,) long           class labels (Ho & Salimans 2021)
"vector"             (B, Dv)             e.g. a CLIP image embedding: added to the embedding and
                                         projected to extra context tokens (Ramesh et al. 2022)
"tokens"             (B, L, Dt)          text token embeddings for attention (Nichol et al. 2022,
                                         GLIDE; Saharia et al. 2022, Imagen)
"token_mask"         (B, L) bool         True for real tokens (default: all True)
"pooled"             (B, Dp)             pooled text vector added to the embedding (Imagen)
"text", "text_mask"  (B, L) long, bool   token ids and their mask: only for a UNet wrapped in
                                         ``difflab.nets.TextConditioned``, which encodes them
                                         into "tokens", "token_mask" and "pooled"
"lowres"             (B, C, ...)         low-resolution image, up-sampled and concatenated
"aug_lam"            (B,)                log-SNR of the noise augmentation of "lowres" (Imagen;
                                         default: clean, i.e. lam_clip)
"frame_is_image"     (B, F) bool         3-D: frame is an independent image (Ho et al. 2022)
"guidance"           (B,) float          the guidance weight w of a guidance-distilled student
                                         (Meng et al. 2023); required when guidance_embed is set
"<k>_drop"           (B,) bool           for k in class, vector, tokens, pooled: use the learned
                                         null embedding of k for these samples; "text_drop" is
                                         copied to "tokens_drop" and "pooled_drop"
===================  ==================  ==========================================================

A configured droppable condition that is absent from ``cond`` uses its null embedding, so
``cond=None`` is the unconditional model. In training mode each condition is also dropped
with probability ``config.cond_drop[k]``; "tokens" and "pooled" share one random draw so the
text and its pooled vector vanish together. For classifier-free guidance both halves of the
batch need the same keys (``difflab.diffusion.cat_cond``), so write::

    cond = keep_cond({"class": y})          # every *_drop flag present and False
    guided = cfg(denoiser, 3.0, null_cond)  # null_cond sets every *_drop flag True
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .unet_config import DROP_GROUP, DROPPABLE, UNetConfig

Cond = dict[str, Any]
COND_KEYS = (
    "class", "vector", "tokens", "token_mask", "pooled", "text", "text_mask", "lowres", "aug_lam",
    "frame_is_image", "guidance", *(k + "_drop" for k in DROPPABLE),
)  # fmt: skip


def _batch_size(cond: Cond) -> int:
    for v in cond.values():
        if isinstance(v, Tensor) and v.ndim >= 1:
            return v.shape[0]
    raise ValueError("cannot infer the batch size: cond holds no tensor; pass the condition tensors")


def per_sample(value: Any, batch: int, what: str, **to: Any) -> Tensor:
    """``value`` (a scalar or (B,)) as a (B,) tensor (``to``: device, dtype); else a ValueError naming ``what``."""
    v = torch.as_tensor(value, **to)
    v = v.expand(batch) if v.ndim == 0 else v
    if v.shape != (batch,):
        raise ValueError(f"{what} must be a scalar or have shape ({batch},), got {tuple(v.shape)}")
    return v


def _with_flags(cond: Cond | None, value: bool) -> Cond:
    cond = dict(cond or {})
    if not any(k in cond or k + "_drop" in cond for k in DROPPABLE):
        return cond  # nothing to flag: absent conditions already use their null embeddings
    n = _batch_size(cond)
    device = next(v.device for v in cond.values() if isinstance(v, Tensor))
    for k in DROPPABLE:
        if k in cond or k + "_drop" in cond:
            old = cond.get(k + "_drop")
            new = torch.full((n,), value, dtype=torch.bool, device=device)
            cond[k + "_drop"] = new if value or old is None else old
    return cond


def keep_cond(cond: Cond | None) -> Cond:
    """A copy of ``cond`` in which every present condition has a ``*_drop`` flag (False if unset)."""
    return _with_flags(cond, False)


def null_cond(cond: Cond | None) -> Cond:
    """A copy of ``cond`` with every ``*_drop`` flag True: the unconditional half of CFG."""
    return _with_flags(cond, True)


def check_cond(cond: Cond, config: UNetConfig) -> None:
    """Reject unknown keys and conditions the network was not configured for."""
    unknown = sorted(set(cond) - set(COND_KEYS))
    if unknown:
        raise ValueError(f"unknown cond key(s) {unknown}; valid keys: {', '.join(COND_KEYS)}")
    text = [k for k in ("text", "text_mask", "text_drop") if k in cond]
    if text:
        raise ValueError(
            f"cond[{text[0]!r}] is for token ids: wrap the UNet in difflab.nets.TextConditioned, which encodes them"
        )
    needs = {
        "class": ("num_classes", config.num_classes),
        "vector": ("vector_dim", config.vector_dim),
        "tokens": ("token_dim", config.token_dim),
        "token_mask": ("token_dim", config.token_dim),
        "pooled": ("pooled_dim", config.pooled_dim),
        "lowres": ("lowres_channels", config.lowres_channels),
        "aug_lam": ("lowres_channels", config.lowres_channels),
        "frame_is_image": ("dims=3", int(config.dims == 3)),
        "guidance": ("guidance_embed", int(config.guidance_embed)),
    }
    needs.update({k + "_drop": needs[k] for k in DROPPABLE if k in needs})
    for k in cond:
        name, value = needs[k]
        if not value:
            raise ValueError(f"cond[{k!r}] given but this UNet is not configured for it (set {name})")


def sinusoidal_embedding(x: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features of a (B,) tensor (Vaswani et al. 2017, as for DDPM's step in Ho et al. 2020).

    Frequencies run geometrically from 1 to ``1 / max_period``; computed in float32.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) / half * torch.arange(half, device=x.device, dtype=torch.float32))
    args = x.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


class ConditionEmbedder(nn.Module):
    """Turns ``(lam, cond)`` into the embedding added in every residual block and the context tokens.

    The embedding is ``MLP(sin(lam_scale * lam)) + MLP(sin(lam_scale * aug_lam)) + E[class]
    + W_v vector + W_p pooled`` (ADM adds the class embedding the same way, Dhariwal & Nichol
    2021). The context is ``[null text token, text tokens, vector tokens]``, layer-normed; the
    null text token is visible only where "tokens" is dropped, and text tokens only where kept.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        c, e = config, config.emb_dim
        self.config = c
        self.drop_p = dict(c.cond_drop)
        self.time = nn.Sequential(nn.Linear(c.channels, e), nn.SiLU(), nn.Linear(e, e))
        self.aug = nn.Sequential(nn.Linear(c.channels, e), nn.SiLU(), nn.Linear(e, e)) if c.lowres_channels else None
        # one extra row of the class table is the learned null class
        self.label = nn.Embedding(c.num_classes + 1, e) if c.num_classes else None
        self.vector = nn.Linear(c.vector_dim, e) if c.vector_dim else None
        self.null_vector = nn.Parameter(torch.randn(c.vector_dim) / math.sqrt(c.vector_dim)) if c.vector_dim else None
        d = c.ctx_dim
        self.vector_tokens = nn.Linear(c.vector_dim, c.vector_tokens * d) if c.vector_tokens else None
        self.pooled = nn.Linear(c.pooled_dim, e) if c.pooled_dim else None
        self.null_pooled = nn.Parameter(torch.randn(c.pooled_dim) / math.sqrt(c.pooled_dim)) if c.pooled_dim else None
        self.tokens = nn.Linear(c.token_dim, d) if c.token_dim else None
        self.null_token = nn.Parameter(torch.randn(d) / math.sqrt(d)) if c.token_dim else None
        self.ctx_norm = nn.LayerNorm(d) if d else None
        self.guidance = None
        if c.guidance_embed:
            self.guidance = nn.Sequential(nn.Linear(c.channels, e), nn.SiLU(), nn.Linear(e, e))
            nn.init.zeros_(self.guidance[2].weight)
            nn.init.zeros_(self.guidance[2].bias)

    def embed_lam(self, lam: Tensor) -> Tensor:
        """Sinusoidal features of the clamped, scaled log-SNR (finite even for lam = +-inf)."""
        c = self.config
        return sinusoidal_embedding(lam.float().clamp(-c.lam_clip, c.lam_clip) * c.lam_scale, c.channels)

    def drop_flags(self, cond: Cond, batch: int, device: torch.device) -> dict[str, Tensor]:
        """Per configured condition, a (B,) bool: True where its null embedding is used."""
        flags, draws = {}, {}
        for k in self.config.droppable:
            flag = cond.get(k + "_drop")
            if k not in cond:
                flag = torch.ones(batch, dtype=torch.bool, device=device)
            elif flag is None:
                flag = torch.zeros(batch, dtype=torch.bool, device=device)
            elif tuple(flag.shape) != (batch,):
                raise ValueError(f"cond[{k + '_drop'!r}] must have shape ({batch},), got {tuple(flag.shape)}")
            p = self.drop_p.get(k, 0.0)
            if self.training and p > 0:
                group = DROP_GROUP[k]
                if group not in draws:
                    draws[group] = torch.rand(batch, device=device)
                flag = flag.bool() | (draws[group] < p)
            flags[k] = flag.bool()
        return flags

    def _vector_or_null(self, cond: Cond, key: str, null: Tensor, flag: Tensor) -> Tensor:
        if key not in cond:
            return null.expand(flag.shape[0], -1)
        v = cond[key]
        if v.ndim != 2 or v.shape != (flag.shape[0], null.shape[0]):
            raise ValueError(f"cond[{key!r}] must have shape ({flag.shape[0]}, {null.shape[0]}), got {tuple(v.shape)}")
        return torch.where(flag[:, None], null.to(v.dtype), v)

    def forward(self, lam: Tensor, cond: Cond) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Return ``(emb (B, E), context (B, S, D) or None, context mask (B, S) bool or None)``."""
        b, device = lam.shape[0], lam.device
        flags = self.drop_flags(cond, b, device)
        emb = self.time(self.embed_lam(lam))
        if self.aug is not None:
            aug_lam = cond.get("aug_lam")
            aug_lam = self.config.lam_clip if aug_lam is None else aug_lam
            emb = emb + self.aug(self.embed_lam(per_sample(aug_lam, b, "cond['aug_lam']", device=device)))
        if self.guidance is not None:
            w = cond.get("guidance")
            if w is None:
                raise ValueError("this network takes the guidance weight as input: pass cond['guidance'] (B,) float")
            w = per_sample(w, b, "cond['guidance']", device=device, dtype=torch.float32)
            # w in [0, ~10]: scaled like lam so that the sinusoid's low frequencies resolve it
            emb = emb + self.guidance(sinusoidal_embedding(w * self.config.lam_scale, self.config.channels))
        if self.label is not None:
            labels = cond.get("class")
            labels = torch.zeros(b, dtype=torch.long, device=device) if labels is None else labels.long()
            emb = emb + self.label(torch.where(flags["class"], self.config.num_classes, labels))
        ctx: list[Tensor] = []
        mask: list[Tensor] = []
        if self.pooled is not None:
            emb = emb + self.pooled(self._vector_or_null(cond, "pooled", self.null_pooled, flags["pooled"]))
        if self.tokens is not None:
            keep = ~flags["tokens"]
            ctx.append(self.null_token.expand(b, 1, -1))
            mask.append(flags["tokens"][:, None])
            if "tokens" in cond:
                tokens = cond["tokens"]
                if tokens.ndim != 3 or tokens.shape[0] != b or tokens.shape[2] != self.config.token_dim:
                    raise ValueError(
                        f"cond['tokens'] must be (B, L, {self.config.token_dim}), got {tuple(tokens.shape)}"
                    )
                token_mask = cond.get("token_mask")
                if token_mask is None:
                    token_mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=device)
                ctx.append(self.tokens(tokens))
                mask.append(token_mask.bool() & keep[:, None])
        if self.vector is not None:
            vec = self._vector_or_null(cond, "vector", self.null_vector, flags["vector"])
            emb = emb + self.vector(vec)
            if self.vector_tokens is not None:
                ctx.append(self.vector_tokens(vec).view(b, self.config.vector_tokens, -1))
                mask.append(torch.ones(b, self.config.vector_tokens, dtype=torch.bool, device=device))
        if not ctx:
            return emb, None, None
        return emb, self.ctx_norm(torch.cat(ctx, dim=1)), torch.cat(mask, dim=1)  # cat promotes dtypes
