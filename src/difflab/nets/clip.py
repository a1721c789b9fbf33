"""A small CLIP: an image tower and a text tower trained contrastively into one embedding space.

Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision": the
image and text of a batch are embedded, L2-normalised, and the ``B x B`` matrix of their cosine
similarities times a learned temperature ``exp(logit_scale)`` (clamped at 100) is scored with a
symmetric cross-entropy whose targets are the diagonal (:func:`clip_loss`)::

    clip = CLIP(CLIPConfig(image_size=32))                  # scratch text tower
    ids, mask = clip.tokenizer(["a red sneaker at the top left", ...])
    logits = clip(x, ids, mask)                             # (B images, B texts)
    loss = clip_loss(logits)
    img = clip.encode_image(x)                              # (B, embed_dim), unit norm
    txt = clip.encode_captions(["a blue bag at the bottom right"])

Towers:

- image: a small ResNet-style CNN on ``[-1, 1]`` images (a 3x3 stem, per stage ``blocks``
  pre-activation residual blocks and a stride-2 3x3 convolution to the next width), then a
  global pool: ``attention`` (as CLIP's ResNets: the mean feature attends to all positions,
  with learned position embeddings, so the embedding knows *where* things are) or ``mean``;
- text: ``scratch`` -- a :class:`~.text.ScratchTextEncoder` trained jointly (its ``pooled``
  vector is projected), or ``minilm`` -- the frozen all-MiniLM-L6-v2, of which only the
  projection is trained. The frozen encoder is held outside the module tree (not in
  ``parameters()`` nor ``state_dict()``), as :class:`~.text.TextConditioned` holds one.

Later uses (an Imagen-style text encoder, unCLIP) take the whole model: ``difflab.load(run)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import from_dict, to_dict
from .text import HoldsTextEncoder, ScratchTextEncoder, TextEncoder, get_text_encoder

TEXT_TOWERS = ("scratch", "minilm")
POOLS = ("attention", "mean")


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(f"invalid CLIP config: {message}")


@dataclass
class CLIPConfig:
    """The CLIP network (the ``model:`` section of a ``method: clip`` recipe).

    Image tower: ``channels`` x ``image_size`` x ``image_size`` inputs (the trainer sets both from
    the data), stage ``widths`` (one stride-2 down-sampling between consecutive stages), ``blocks``
    residual blocks per stage, ``pool`` attention|mean (``pool_heads`` heads). Text tower:
    ``text`` scratch|minilm; a scratch tower has ``text_dim`` x ``text_layers`` x ``text_heads``;
    captions are cut to ``max_tokens`` tokens. Both project to ``embed_dim``; the temperature starts
    at ``init_temperature`` and the logit scale ``1 / temperature`` is clamped at ``max_logit_scale``.
    """

    image_size: int = 64
    channels: int = 3
    widths: tuple[int, ...] = (32, 64, 128)
    blocks: int = 1
    pool: Literal["attention", "mean"] = "attention"
    pool_heads: int = 4
    text: Literal["scratch", "minilm"] = "scratch"
    text_dim: int = 128
    text_layers: int = 2
    text_heads: int = 4
    max_tokens: int = 32
    embed_dim: int = 128
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0

    def __post_init__(self) -> None:
        self.widths = tuple(self.widths)
        _need(self.text in TEXT_TOWERS, f"text must be one of {', '.join(TEXT_TOWERS)}, got {self.text!r}")
        _need(self.pool in POOLS, f"pool must be one of {', '.join(POOLS)}, got {self.pool!r}")
        _need(self.channels >= 1, f"channels must be >= 1, got {self.channels}")
        _need(
            len(self.widths) >= 1 and all(isinstance(w, int) and w >= 1 for w in self.widths),
            f"widths must be a non-empty list of integers >= 1, got {list(self.widths)}",
        )
        factor = 2 ** (len(self.widths) - 1)
        _need(
            self.image_size >= factor and self.image_size % factor == 0,
            f"image_size must be a positive multiple of {factor} (2 ** (len(widths) - 1)), got {self.image_size}",
        )
        _need(self.blocks >= 0, f"blocks must be >= 0, got {self.blocks}")
        _need(
            self.pool_heads >= 1 and self.widths[-1] % self.pool_heads == 0,
            f"pool_heads must be >= 1 and divide the last width {self.widths[-1]}, got {self.pool_heads}",
        )
        for k in ("text_dim", "text_layers", "text_heads", "max_tokens", "embed_dim"):
            _need(getattr(self, k) >= 1, f"{k} must be >= 1, got {getattr(self, k)}")
        _need(
            self.text_dim % self.text_heads == 0,
            f"text_dim ({self.text_dim}) must be a multiple of text_heads ({self.text_heads})",
        )
        _need(
            self.text != "minilm" or self.max_tokens <= 512,
            f"max_tokens must be <= 512 (MiniLM's positions), got {self.max_tokens}",
        )
        _need(
            math.isfinite(self.init_temperature) and self.init_temperature > 0,
            f"init_temperature must be > 0, got {self.init_temperature}",
        )
        _need(
            math.isfinite(self.max_logit_scale) and self.max_logit_scale >= 1.0 / self.init_temperature,
            f"max_logit_scale must be >= 1 / init_temperature = {1.0 / self.init_temperature:g}, "
            f"got {self.max_logit_scale}",
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "model") -> CLIPConfig:
        """Built from a plain dict (YAML): unknown keys name the valid ones, values are type-checked."""
        return from_dict(cls, data, where)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def clip_loss(logits: Tensor) -> Tensor:
    """The symmetric contrastive loss of a (B, B) image-text logit matrix whose pairs are on the
    diagonal: the mean of the image->text and text->image cross-entropies (Radford et al. 2021)."""
    if logits.ndim != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"clip_loss needs a square (B, B) logit matrix, got {tuple(logits.shape)}")
    target = torch.arange(logits.shape[0], device=logits.device)
    logits = logits.float()
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def encode_captions(model: Any, captions: Sequence[str], batch_size: int = 1024) -> Tensor:
    """``model.encode_text`` of captions tokenized by ``model.tokenizer``, in batches, on ``model.device``:
    the ``encode_captions`` of every CLIP model (difflab's and :class:`~.hf_clip.HFCLIP`)."""
    out = []
    captions = list(captions)
    for start in range(0, max(len(captions), 1), batch_size):
        ids, mask = model.tokenizer(captions[start : start + batch_size])
        out.append(model.encode_text(ids.to(model.device), mask.to(model.device)))
    return torch.cat(out)


def _groups(channels: int) -> int:
    return math.gcd(8, channels)


class _ResBlock(nn.Module):
    """Pre-activation residual block: x + conv(silu(gn(conv(silu(gn(x))))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(channels), channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(channels), channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))


class _AttentionPool(nn.Module):
    """CLIP's attention pooling: the mean feature (plus learned position embeddings) attends to every
    position of the final feature map; returns (B, C)."""

    def __init__(self, channels: int, positions: int, heads: int) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.randn(positions + 1, channels) * channels**-0.5)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, h: Tensor) -> Tensor:
        t = h.flatten(2).transpose(1, 2)  # (B, HW, C)
        t = torch.cat([t.mean(1, keepdim=True), t], dim=1) + self.position.to(t.dtype)
        out, _ = self.attn(t[:, :1], t, t, need_weights=False)
        return out[:, 0]


class ImageTower(nn.Module):
    """The CNN of :class:`CLIP`: (B, C, S, S) images in [-1, 1] -> (B, widths[-1]) pooled features."""

    def __init__(self, c: CLIPConfig) -> None:
        super().__init__()
        self.stem = nn.Conv2d(c.channels, c.widths[0], 3, padding=1)
        layers: list[nn.Module] = []
        for i, w in enumerate(c.widths):
            layers += [_ResBlock(w) for _ in range(c.blocks)]
            if i + 1 < len(c.widths):
                layers.append(nn.Conv2d(w, c.widths[i + 1], 3, stride=2, padding=1))
        self.stages = nn.Sequential(*layers)
        self.norm = nn.GroupNorm(_groups(c.widths[-1]), c.widths[-1])
        side = c.image_size // 2 ** (len(c.widths) - 1)
        self.pool = _AttentionPool(c.widths[-1], side * side, c.pool_heads) if c.pool == "attention" else None
        self.out_dim = c.widths[-1]

    def forward(self, x: Tensor) -> Tensor:
        h = F.silu(self.norm(self.stages(self.stem(x))))
        return self.pool(h) if self.pool is not None else h.mean(dim=(2, 3))


class CLIP(HoldsTextEncoder):
    """Image and text towers projected into one L2-normalised space (see the module doc).

    ``CLIP(config)`` takes a :class:`CLIPConfig` or its dict. ``forward(x, ids, mask)`` returns the
    (B images, B' texts) logits ``exp(logit_scale) * image_emb @ text_emb.T``; the text->image logits
    are their transpose. ``text_tower`` is the text encoder (scratch: a trained submodule; minilm:
    frozen and outside the state dict) and ``tokenizer`` its tokenizer.
    """

    def __init__(self, config: CLIPConfig | Mapping[str, Any]) -> None:
        super().__init__()
        c = config if isinstance(config, CLIPConfig) else CLIPConfig.from_dict(config)
        self.config = c
        self.image_tower = ImageTower(c)
        self.image_projection = nn.Linear(self.image_tower.out_dim, c.embed_dim, bias=False)
        if c.text == "scratch":
            encoder: TextEncoder = ScratchTextEncoder(c.text_dim, c.text_layers, c.text_heads, c.max_tokens)
        else:
            encoder = get_text_encoder({"kind": "minilm", "max_tokens": c.max_tokens})
        self.hold_text_encoder(encoder)
        self.text_projection = nn.Linear(encoder.pooled_dim, c.embed_dim, bias=False)
        nn.init.normal_(self.image_projection.weight, std=self.image_tower.out_dim**-0.5)
        nn.init.normal_(self.text_projection.weight, std=encoder.pooled_dim**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / c.init_temperature)))

    # -- parts -------------------------------------------------------------------------------------------
    @property
    def text_tower(self) -> TextEncoder:
        """The text encoder: a trained :class:`~.text.ScratchTextEncoder`, or the frozen MiniLM."""
        return self.held_text_encoder

    @property
    def tokenizer(self) -> Any:
        return self.text_tower.tokenizer

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def scale(self) -> Tensor:
        """The logit scale ``exp(logit_scale)``, clamped at ``max_logit_scale`` (CLIP: 100)."""
        return self.logit_scale.clamp(max=math.log(self.config.max_logit_scale)).exp()

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clamp the parameter itself (after an optimizer step), as CLIP does."""
        self.logit_scale.clamp_(max=math.log(self.config.max_logit_scale))

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def summary(self) -> str:
        c = self.config
        img = sum(p.numel() for p in self.image_tower.parameters()) / 1e6
        txt = sum(p.numel() for p in self.text_tower.parameters()) / 1e6
        state = "trainable" if self.text_tower.trainable else "frozen"
        return (
            f"CLIP {c.channels}x{c.image_size}x{c.image_size}, image tower {list(c.widths)} x {c.blocks} "
            f"({c.pool} pool, {img:.2f}M params), text tower {c.text} ({state}, {txt:.2f}M params), "
            f"embed {c.embed_dim}"
        )

    # -- embeddings --------------------------------------------------------------------------------------
    def encode_image(self, x: Tensor) -> Tensor:
        """(B, embed_dim) unit-norm embeddings of images (B, C, S, S) in [-1, 1]."""
        c = self.config
        want = (c.channels, c.image_size, c.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"CLIP images must be (B, {', '.join(map(str, want))}), got {tuple(x.shape)}")
        return F.normalize(self.image_projection(self.image_tower(x)).float(), dim=-1)

    def encode_text(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, embed_dim) unit-norm embeddings of token ids (B, L) with mask (B, L) (default: ids != pad)."""
        pooled = self.text_tower(ids, mask).pooled
        return F.normalize(self.text_projection(pooled).float(), dim=-1)

    def encode_captions(self, captions: Sequence[str], batch_size: int = 1024) -> Tensor:
        """Tokenize and embed captions (in batches of ``batch_size``) on the model's device."""
        return encode_captions(self, captions, batch_size)

    def forward(self, x: Tensor, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        """Image->text logits (B images, B' texts): ``scale * image_emb @ text_emb.T``."""
        return self.scale() * self.encode_image(x) @ self.encode_text(ids, mask).T
