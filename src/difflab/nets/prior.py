"""The two unCLIP priors (Ramesh et al. 2022, section 2.1): a caption's CLIP text -> a CLIP image embedding.

Both are causal (decoder-only) transformers whose sequence starts with the text: a learned start
token (always visible, so no query is left without a key), the CLIP text tower's token states
(projected, with learned positions) and the CLIP text embedding (projected). ``cond`` holds

=================  ===============  ===================================================================
key                shape            meaning
=================  ===============  ===================================================================
"tokens"           (B, L, D_text)   the CLIP text tower's token states (L <= ``max_tokens``)
"token_mask"       (B, L) bool      True for real tokens (default: all True)
"text_embed"       (B, E)           the unit-norm CLIP text embedding
"text_drop"        (B,) bool        use the learned null text (tokens hidden, null text embedding)
=================  ===============  ===================================================================

``tokens_drop`` (what :func:`difflab.nets.null_cond` sets for a cond holding "tokens") counts as
``text_drop``; a cond without text is the unconditional model. In training mode the text is also
dropped with probability ``text_drop`` (classifier-free guidance, Ho & Salimans 2021), so
``cfg(denoiser, w, null_cond)`` of :mod:`difflab.diffusion` guides the diffusion prior.

- :class:`DiffusionPrior` ``net(z, lam, cond) -> x_hat``: the sequence goes on with the log-SNR
  embedding, the noised embedding ``z`` and a learned query; the query's output, projected to E,
  predicts the clean embedding (parameterization "x", MSE, as the paper). Scale: a unit-norm
  embedding has per-component std ~ 1/sqrt(E), so the prior diffuses ``sqrt(E) * z_i``
  (:meth:`~DiffusionPrior.to_diffusion`), components of about unit variance, and a sample is
  mapped back by re-normalising (:meth:`~DiffusionPrior.from_diffusion`).
- :class:`ARPrior` ``net(codes, cond) -> logits``: the embedding is reduced by PCA to ``components``
  dimensions (mean, components and per-component ranges are buffers, fitted on the training
  embeddings with :meth:`~ARPrior.fit_pca`), each component quantised uniformly into ``bins``
  levels over its range, and the codes predicted in order of decreasing variance after the text.
  :meth:`~ARPrior.sample` draws codes with guidance on the logits and a temperature; the embedding
  is the inverse PCA of the bin centres, re-normalised to unit norm. (The paper also conditions on
  a quantised text-image dot product; here best-of-k sampling plays that part.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import from_dict, to_dict
from .conditioning import sinusoidal_embedding

KINDS = ("diffusion", "autoregressive")
LAM_CLIP, LAM_SCALE = 30.0, 25.0  # the log-SNR embedding of the U-Net (UNetConfig.lam_clip, lam_scale)


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(f"invalid prior config: {message}")


@dataclass
class PriorConfig:
    """A prior network (the ``model:`` section of a ``method: unclip-prior`` recipe).

    ``kind`` diffusion|autoregressive; a causal transformer of ``width`` x ``layers`` x ``heads``
    with ``dropout``; ``text_drop`` is the probability of training without the text (for
    classifier-free guidance). Autoregressive only: ``components`` PCA dimensions kept, each
    quantised into ``bins`` levels. ``embed_dim``, ``token_dim`` and ``max_tokens`` are the CLIP
    model's (the method sets them).
    """

    kind: Literal["diffusion", "autoregressive"] = "diffusion"
    width: int = 256
    layers: int = 4
    heads: int = 4
    dropout: float = 0.0
    text_drop: float = 0.1
    components: int = 32
    bins: int = 64
    embed_dim: int = 128
    token_dim: int = 128
    max_tokens: int = 32

    def __post_init__(self) -> None:
        _need(self.kind in KINDS, f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        for k in ("width", "layers", "heads", "embed_dim", "token_dim", "max_tokens"):
            _need(getattr(self, k) >= 1, f"{k} must be >= 1, got {getattr(self, k)}")
        _need(self.width % self.heads == 0, f"width ({self.width}) must be a multiple of heads ({self.heads})")
        _need(0.0 <= self.dropout < 1.0, f"dropout must lie in [0, 1), got {self.dropout}")
        _need(0.0 <= self.text_drop <= 1.0, f"text_drop must lie in [0, 1], got {self.text_drop}")
        _need(self.components >= 1, f"components must be >= 1, got {self.components}")
        _need(
            self.kind != "autoregressive" or self.components <= self.embed_dim,
            f"components must lie in [1, embed_dim={self.embed_dim}], got {self.components}",
        )  # only the autoregressive prior reduces the embedding
        _need(self.bins >= 2, f"bins must be >= 2, got {self.bins}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "model") -> PriorConfig:
        """Built from a plain dict (YAML): unknown keys name the valid ones, values are type-checked."""
        return from_dict(cls, data, where)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


# -- the causal transformer -----------------------------------------------------------------------------------
class _Block(nn.Module):
    """Pre-LayerNorm transformer block: masked self-attention, then a 4x GELU MLP."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.p = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        b, s, w = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(b, s, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.p if self.training else 0.0)
        h = h + self.drop(self.proj(a.transpose(1, 2).reshape(b, s, w)))
        return h + self.drop(self.mlp(self.norm2(h)))


class CausalTransformer(nn.Module):
    """``forward(h (B, S, W), visible (B, S) bool) -> (B, S, W)``: position i attends to the visible
    positions j <= i (position 0 must always be visible); a final LayerNorm."""

    def __init__(self, width: int, layers: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(_Block(width, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)

    def forward(self, h: Tensor, visible: Tensor) -> Tensor:
        s = h.shape[1]
        causal = torch.ones(s, s, dtype=torch.bool, device=h.device).tril()
        mask = causal[None, None] & visible[:, None, None, :]  # (B, 1, S, S)
        for block in self.blocks:
            h = block(h, mask)
        return self.norm(h)


class TextPrefix(nn.Module):
    """The text at the start of a prior's sequence (see the module doc): ``forward(cond, batch)``
    returns ``(h (B, 2 + L, W), visible (B, 2 + L) bool)``; dropped text is hidden and its
    embedding replaced by the learned null embedding."""

    def __init__(self, c: PriorConfig) -> None:
        super().__init__()
        w = c.width
        self.config = c
        self.start = nn.Parameter(torch.randn(w) * 0.02)
        self.tokens = nn.Linear(c.token_dim, w)
        self.positions = nn.Parameter(torch.randn(c.max_tokens, w) * 0.02)
        self.text_embed = nn.Linear(c.embed_dim, w)
        self.null_text = nn.Parameter(torch.randn(w) * 0.02)

    def dropped(self, cond: Mapping[str, Any], batch: int, device: torch.device) -> Tensor:
        """(B,) bool: where the null text is used (flags, missing text, and training-mode dropout)."""
        if "tokens" not in cond or "text_embed" not in cond:
            return torch.ones(batch, dtype=torch.bool, device=device)
        drop = torch.zeros(batch, dtype=torch.bool, device=device)
        for key in ("text_drop", "tokens_drop"):
            flag = cond.get(key)
            if flag is not None:
                if tuple(flag.shape) != (batch,):
                    raise ValueError(f"cond[{key!r}] must have shape ({batch},), got {tuple(flag.shape)}")
                drop = drop | flag.to(device).bool()
        if self.training and self.config.text_drop > 0:
            drop = drop | (torch.rand(batch, device=device) < self.config.text_drop)
        return drop

    def forward(self, cond: Mapping[str, Any] | None, batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
        c, cond = self.config, dict(cond or {})
        drop = self.dropped(cond, batch, device)
        start = self.start.expand(batch, 1, -1)
        if "tokens" in cond and "text_embed" in cond:
            tokens, embed = cond["tokens"].float(), cond["text_embed"].float()
            if tokens.ndim != 3 or tokens.shape[0] != batch or tokens.shape[2] != c.token_dim:
                raise ValueError(f"cond['tokens'] must be ({batch}, L, {c.token_dim}), got {tuple(tokens.shape)}")
            if tokens.shape[1] > c.max_tokens:
                raise ValueError(f"cond['tokens'] has {tokens.shape[1]} tokens; this prior takes <= {c.max_tokens}")
            if tuple(embed.shape) != (batch, c.embed_dim):
                raise ValueError(f"cond['text_embed'] must be ({batch}, {c.embed_dim}), got {tuple(embed.shape)}")
            mask = cond.get("token_mask")
            mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=device) if mask is None else mask.bool()
            tok = self.tokens(tokens) + self.positions[: tokens.shape[1]]
            emb = self.text_embed(embed * math.sqrt(c.embed_dim))  # unit-norm -> components of unit scale
        else:
            tok = torch.zeros(batch, 0, c.width, device=device)
            mask = torch.zeros(batch, 0, dtype=torch.bool, device=device)
            emb = self.null_text.expand(batch, -1)
        emb = torch.where(drop[:, None], self.null_text.to(emb.dtype), emb)
        h = torch.cat([start, tok, emb[:, None]], dim=1)
        ones = torch.ones(batch, 1, dtype=torch.bool, device=device)
        visible = torch.cat([ones, mask & ~drop[:, None], ones], dim=1)
        return h, visible


def _batch(cond: Mapping[str, Any] | None, fallback: int) -> int:
    for key in ("text_embed", "tokens"):
        if cond and key in cond:
            return int(cond[key].shape[0])
    return fallback


# -- the diffusion prior --------------------------------------------------------------------------------------
class DiffusionPrior(nn.Module):
    """``net(z (B, E), lam (B,), cond) -> x_hat (B, E)``: the prediction of the clean (scaled)
    embedding at the final learned query of [text..., log-SNR, z, query] (see the module doc)."""

    def __init__(self, config: PriorConfig | Mapping[str, Any]) -> None:
        super().__init__()
        c = config if isinstance(config, PriorConfig) else PriorConfig.from_dict(config)
        _need(c.kind == "diffusion", f"DiffusionPrior needs kind diffusion, got {c.kind!r}")
        self.config, w = c, c.width
        self.scale = math.sqrt(c.embed_dim)
        self.prefix = TextPrefix(c)
        self.time = nn.Sequential(nn.Linear(w, w), nn.SiLU(), nn.Linear(w, w))
        self.z_in = nn.Linear(c.embed_dim, w)
        self.slots = nn.Parameter(torch.randn(3, w) * 0.02)  # time, z and the final query
        self.transformer = CausalTransformer(w, c.layers, c.heads, c.dropout)
        self.out = nn.Linear(w, c.embed_dim)

    def to_diffusion(self, embedding: Tensor) -> Tensor:
        """The diffused variable ``sqrt(E) * z_i`` of unit-norm embeddings (B, E)."""
        return embedding * self.scale

    def from_diffusion(self, x: Tensor) -> Tensor:
        """Unit-norm embeddings (B, E) of samples of the diffused variable (undoes the scale)."""
        return F.normalize(x.float() / self.scale, dim=-1)

    def forward(self, z: Tensor, lam: Tensor, cond: Mapping[str, Any] | None = None) -> Tensor:
        b, e = z.shape[0], self.config.embed_dim
        if z.ndim != 2 or z.shape[1] != e:
            raise ValueError(f"the diffusion prior takes z of shape (B, {e}), got {tuple(z.shape)}")
        h, visible = self.prefix(cond, b, z.device)
        lam = torch.as_tensor(lam, device=z.device, dtype=torch.float32).expand(b)
        t = self.time(sinusoidal_embedding(lam.clamp(-LAM_CLIP, LAM_CLIP) * LAM_SCALE, self.config.width))
        tail = torch.stack([t, self.z_in(z.float()), torch.zeros_like(t)], dim=1) + self.slots
        h = torch.cat([h, tail], dim=1)
        ones = torch.ones(b, 3, dtype=torch.bool, device=z.device)
        h = self.transformer(h, torch.cat([visible, ones], dim=1))
        return self.out(h[:, -1]).to(z.dtype)

    def summary(self) -> str:
        c = self.config
        n = sum(p.numel() for p in self.parameters()) / 1e6
        return (
            f"diffusion prior: causal transformer {c.width} x {c.layers} ({c.heads} heads), "
            f"embed {c.embed_dim}, {n:.2f}M params"
        )


# -- the autoregressive prior ---------------------------------------------------------------------------------
class ARPrior(nn.Module):
    """``net(codes (B, n), cond) -> logits (B, n + 1, bins)`` of components 0..n given the text and
    the codes of components 0..n-1 (n < ``components``); see the module doc."""

    def __init__(self, config: PriorConfig | Mapping[str, Any]) -> None:
        super().__init__()
        c = config if isinstance(config, PriorConfig) else PriorConfig.from_dict(config)
        _need(c.kind == "autoregressive", f"ARPrior needs kind autoregressive, got {c.kind!r}")
        self.config, w, k = c, c.width, c.components
        self.register_buffer("pca_mean", torch.zeros(c.embed_dim))
        self.register_buffer("pca_components", torch.eye(c.embed_dim)[:k].clone())  # (K, E), orthonormal rows
        self.register_buffer("pca_low", -torch.ones(k))
        self.register_buffer("pca_high", torch.ones(k))
        self.prefix = TextPrefix(c)
        self.code_in = nn.Embedding(c.bins, w)
        self.component = nn.Parameter(torch.randn(k, w) * 0.02)
        self.transformer = CausalTransformer(w, c.layers, c.heads, c.dropout)
        self.out = nn.Linear(w, c.bins)

    # -- PCA and quantisation --
    @torch.no_grad()
    def fit_pca(self, embeddings: Tensor) -> None:
        """Fit the PCA buffers on embeddings (N, E) (deterministic: float64 eigendecomposition of the
        covariance, each component's sign fixed by its largest entry) and each kept component's range."""
        x = embeddings.detach().to("cpu", torch.float64)
        if x.ndim != 2 or x.shape[1] != self.config.embed_dim or x.shape[0] < 2:
            raise ValueError(f"fit_pca needs embeddings (N >= 2, {self.config.embed_dim}), got {tuple(x.shape)}")
        mean = x.mean(0)
        evals, evecs = torch.linalg.eigh((x - mean).T @ (x - mean) / (x.shape[0] - 1))
        comps = evecs.flip(1)[:, : self.config.components].T  # (K, E), decreasing variance
        sign = comps.gather(1, comps.abs().argmax(1, keepdim=True)).sign()
        comps = comps * sign
        proj = (x - mean) @ comps.T
        low, high = proj.min(0).values, proj.max(0).values
        high = torch.maximum(high, low + 1e-6)
        for buf, value in (
            (self.pca_mean, mean),
            (self.pca_components, comps),
            (self.pca_low, low),
            (self.pca_high, high),
        ):
            buf.copy_(value.to(buf.dtype))

    def quantize(self, embeddings: Tensor) -> Tensor:
        """Codes (B, K) long in [0, bins) of embeddings (B, E): PCA, then the uniform bin of each component."""
        p = (embeddings.float() - self.pca_mean) @ self.pca_components.T
        u = (p - self.pca_low) / (self.pca_high - self.pca_low)
        return (u * self.config.bins).floor().long().clamp(0, self.config.bins - 1)

    def dequantize(self, codes: Tensor, normalize: bool = True) -> Tensor:
        """Embeddings (B, E) of codes (B, K): the inverse PCA of the bin centres, re-normalised to unit norm."""
        centres = self.pca_low + (codes.float() + 0.5) * (self.pca_high - self.pca_low) / self.config.bins
        x = self.pca_mean + centres @ self.pca_components
        return F.normalize(x, dim=-1) if normalize else x

    # -- the network --
    def forward(self, codes: Tensor, cond: Mapping[str, Any] | None = None) -> Tensor:
        b = _batch(cond, codes.shape[0])
        n = codes.shape[1]
        if codes.ndim != 2 or codes.shape[0] != b or n >= self.config.components:
            raise ValueError(
                f"codes must be (B, n) with n < components={self.config.components} for a batch of {b}, "
                f"got {tuple(codes.shape)}"
            )
        device = self.component.device
        h, visible = self.prefix(cond, b, device)
        h = torch.cat([h, self.code_in(codes.to(device)) + self.component[:n]], dim=1)
        visible = torch.cat([visible, torch.ones(b, n, dtype=torch.bool, device=device)], dim=1)
        h = self.transformer(h, visible)
        return self.out(h[:, -(n + 1) :])

    def guided_logits(self, codes: Tensor, cond: Mapping[str, Any], guidance: float) -> Tensor:
        """Logits (B, bins) of the next component: ``uncond + w (cond - uncond)``, both halves in one
        batched call (the null half with every text flag set)."""
        from ..diffusion import cat_cond
        from .conditioning import keep_cond, null_cond

        flag = cond.get("text_drop")
        flag = torch.zeros(codes.shape[0], dtype=torch.bool, device=codes.device) if flag is None else flag
        cond = keep_cond({**cond, "text_drop": flag})
        logits = self(torch.cat([codes, codes]), cat_cond(cond, null_cond(cond)))[:, -1]
        lc, lu = logits.float().chunk(2)
        return torch.lerp(lu, lc, guidance)

    @torch.no_grad()
    def sample(
        self,
        cond: Mapping[str, Any],
        *,
        guidance: float = 1.0,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Unit-norm embeddings (B, E): codes drawn one component at a time from the guided logits
        divided by ``temperature`` (0: the most likely bin), then :meth:`dequantize`."""
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        b = _batch(cond, 0)
        if b == 0:
            raise ValueError("ARPrior.sample needs the text condition (tokens, token_mask, text_embed)")
        device = self.component.device
        codes = torch.zeros(b, 0, dtype=torch.long, device=device)
        for _ in range(self.config.components):
            if guidance == 1.0:
                logits = self(codes, cond)[:, -1].float()
            else:
                logits = self.guided_logits(codes, cond, guidance)
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator)
            codes = torch.cat([codes, nxt], dim=1)
        return self.dequantize(codes)

    def summary(self) -> str:
        c = self.config
        n = sum(p.numel() for p in self.parameters()) / 1e6
        return (
            f"autoregressive prior: causal transformer {c.width} x {c.layers} ({c.heads} heads) over "
            f"{c.components} PCA components x {c.bins} bins, embed {c.embed_dim}, {n:.2f}M params"
        )


def build_prior(config: PriorConfig | Mapping[str, Any]) -> DiffusionPrior | ARPrior:
    """The prior network of a config (dict or :class:`PriorConfig`): a DiffusionPrior or an ARPrior."""
    c = config if isinstance(config, PriorConfig) else PriorConfig.from_dict(config)
    return DiffusionPrior(c) if c.kind == "diffusion" else ARPrior(c)
