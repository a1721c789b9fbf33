"""The typed configuration of :class:`difflab.nets.UNet` (one U-Net for 1-D, 2-D and 3-D data).

A config is a plain dataclass, built directly or from a dict (e.g. a YAML recipe) with
:meth:`UNetConfig.from_dict`, where an unknown key is a ValueError naming the valid keys.
Every check on values happens here, so a bad recipe fails before any weight is allocated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Conditions that have a learned null embedding (classifier-free guidance), and the
# sampling group of each: conditions in one group are dropped by the same random draw
# in training, so the text tokens and their pooled vector vanish together. "text" (token
# ids) is droppable for null_cond / keep_cond only: difflab.nets.TextConditioned encodes it
# into "tokens" and "pooled" and copies its flag to theirs; the UNet itself never takes it,
# so it is in no config's ``droppable``.
DROPPABLE = ("class", "vector", "tokens", "pooled", "text")
DROP_GROUP = {"class": "class", "vector": "vector", "tokens": "text", "pooled": "text", "text": "text"}
LOWRES_MODES = ("nearest", "bilinear")


@dataclass
class UNetConfig:
    """Hyperparameters of the U-Net (Ronneberger et al. 2015; Ho et al. 2020; Dhariwal & Nichol 2021).

    Architecture:
        dims: 1 (audio, (B, C, L)), 2 (images, (B, C, H, W)) or 3 (video, (B, C, F, H, W)).
        channels, channel_mult: level ``i`` has ``channels * channel_mult[i]`` channels.
        num_blocks: residual blocks per level, an int or one per level; Imagen's Efficient
            U-Net (Saharia et al. 2022, appendix B) puts more blocks at low resolution, e.g. (1, 2, 4).
        attn_levels: levels (0 = full resolution) with self-attention after each block; the
            middle block always has attention. ``heads`` heads per attention layer.
        temporal_levels: 3-D only, levels with temporal attention after the spatial one
            (None: the same as ``attn_levels``); ``max_frame_offset`` clips the relative
            position bias of temporal attention (Ho et al. 2022, "Video Diffusion Models").
        scale_skip: multiply the encoder-to-decoder skip connections by 1/sqrt(2) (Efficient U-Net).
        resample_first: down-sample at the start of every encoder level and up-sample at the
            end of every decoder level, so that all residual blocks run at reduced resolution
            (Efficient U-Net); otherwise (DDPM) level 0 runs at full resolution.
        lam_scale: the log-SNR is clamped to [-lam_clip, lam_clip] and multiplied by this
            before the sinusoidal embedding (25 maps lam in [-20, 20] to about the range of
            DDPM's step index).
    Conditioning (all off when zero; see :mod:`difflab.nets.conditioning` for the cond dict):
        num_classes: class labels, cond["class"].
        vector_dim, vector_tokens: a vector such as a CLIP image embedding, cond["vector"],
            added to the embedding and projected to ``vector_tokens`` context tokens (unCLIP).
        token_dim: text token embeddings cond["tokens"] for attention (GLIDE, Imagen).
        pooled_dim: a pooled text vector cond["pooled"] added to the embedding (Imagen).
        context_dim: width of the context tokens (0: the embedding width).
        lowres_channels, lowres_mode: a low-resolution image cond["lowres"] is up-sampled and
            concatenated to the input; its noise-augmentation level cond["aug_lam"] is embedded.
        cond_drop: probability of dropping each condition in training, e.g. {"class": 0.1}.
        guidance_embed: the network takes the guidance weight w as an input, cond["guidance"]
            (B,) float, embedded like lam and added to the embedding; its last layer starts at
            zero, so a copy of a trained net still computes the same function (guided
            distillation, Meng et al. 2023, "On Distillation of Guided Diffusion Models").
    """

    dims: int = 2
    in_channels: int = 3
    out_channels: int = 3
    channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_blocks: int | tuple[int, ...] = 2
    attn_levels: tuple[int, ...] = ()
    heads: int = 4
    dropout: float = 0.0
    norm_groups: int = 32
    emb_mult: int = 4
    scale_skip: bool = False
    resample_first: bool = False
    temporal_levels: tuple[int, ...] | None = None
    max_frame_offset: int = 32
    lam_scale: float = 25.0
    lam_clip: float = 30.0
    num_classes: int = 0
    vector_dim: int = 0
    vector_tokens: int = 0
    token_dim: int = 0
    pooled_dim: int = 0
    context_dim: int = 0
    lowres_channels: int = 0
    lowres_mode: str = "bilinear"
    cond_drop: dict[str, float] = field(default_factory=dict)
    guidance_embed: bool = False

    def __post_init__(self) -> None:
        for name in ("channel_mult", "attn_levels", "temporal_levels"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, tuple(int(v) for v in value))
        if isinstance(self.num_blocks, int):
            self.num_blocks = (self.num_blocks,) * len(self.channel_mult)
        self.num_blocks = tuple(int(n) for n in self.num_blocks)
        self.cond_drop = {str(k): float(v) for k, v in dict(self.cond_drop).items()}
        self._validate()

    # -- construction ---------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> UNetConfig:
        """Build a config from a mapping; an unknown key raises a ValueError naming the valid keys."""
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ValueError(f"unknown UNet config key(s) {unknown}; valid keys: {', '.join(valid)}")
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (lists, not tuples) for YAML or JSON; ``from_dict`` inverts it."""
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    # -- derived quantities -----------------------------------------------------------
    @property
    def levels(self) -> int:
        return len(self.channel_mult)

    @property
    def emb_dim(self) -> int:
        return self.emb_mult * self.channels

    @property
    def ctx_dim(self) -> int:
        """Width of the context tokens; 0 when there is no cross-attention context."""
        if self.token_dim == 0 and self.vector_tokens == 0:
            return 0
        return self.context_dim or self.emb_dim

    @property
    def num_down(self) -> int:
        """How many times the spatial size is halved."""
        return self.levels if self.resample_first else self.levels - 1

    @property
    def temporal(self) -> tuple[int, ...]:
        if self.dims != 3:
            return ()
        return self.attn_levels if self.temporal_levels is None else self.temporal_levels

    # -- checks ---------------------------------------------------------------------
    def _validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"invalid UNet config: {msg}")

        need(self.dims in (1, 2, 3), f"dims must be 1, 2 or 3, got {self.dims}")
        need(self.in_channels >= 1 and self.out_channels >= 1, "in_channels and out_channels must be >= 1")
        need(self.channels >= 1 and self.emb_mult >= 1, "channels and emb_mult must be >= 1")
        need(len(self.channel_mult) >= 1 and min(self.channel_mult) >= 1, "channel_mult needs >= 1 positive entries")
        need(
            len(self.num_blocks) == self.levels and min(self.num_blocks) >= 1,  # type: ignore[arg-type]
            f"num_blocks must be an int >= 1 or one per level ({self.levels}), got {self.num_blocks}",
        )
        for name in ("attn_levels", "temporal_levels"):
            bad = [i for i in getattr(self, name) or () if not 0 <= i < self.levels]
            need(not bad, f"{name} {bad} out of range: levels are 0..{self.levels - 1}")
        for mult in self.channel_mult:
            ch = self.channels * mult
            need(ch % self.heads == 0, f"heads={self.heads} must divide every level's channels, not {ch}")
        need(0.0 <= self.dropout < 1.0, f"dropout must lie in [0, 1), got {self.dropout}")
        need(self.norm_groups >= 1, "norm_groups must be >= 1")
        need(self.max_frame_offset >= 1, "max_frame_offset must be >= 1")
        need(self.lam_scale > 0 and self.lam_clip > 0, "lam_scale and lam_clip must be > 0")
        for name in ("num_classes", "vector_dim", "vector_tokens", "token_dim", "pooled_dim", "context_dim"):
            need(getattr(self, name) >= 0, f"{name} must be >= 0")
        need(self.lowres_channels >= 0, "lowres_channels must be >= 0")
        need(self.vector_tokens == 0 or self.vector_dim > 0, "vector_tokens needs vector_dim > 0")
        need(self.lowres_mode in LOWRES_MODES, f"lowres_mode must be one of {LOWRES_MODES}, got {self.lowres_mode!r}")
        configured = self.droppable
        for k, p in self.cond_drop.items():
            need(k in DROPPABLE, f"cond_drop key {k!r} is not droppable; droppable conditions: {', '.join(DROPPABLE)}")
            need(k != "text", f"cond_drop['text']: the UNet drops encoded text as 'tokens', use {{'tokens': {p}}}")
            need(k in configured, f"cond_drop[{k!r}] is set but the net is not configured for {k!r}")
            need(0.0 <= p <= 1.0, f"cond_drop[{k!r}] must lie in [0, 1], got {p}")

    @property
    def droppable(self) -> tuple[str, ...]:
        """The configured conditions that have a null embedding."""
        sizes = {"class": self.num_classes, "vector": self.vector_dim, "tokens": self.token_dim}
        sizes["pooled"] = self.pooled_dim
        sizes["text"] = 0  # token ids reach the UNet encoded, as "tokens" / "pooled"
        return tuple(k for k in DROPPABLE if sizes[k] > 0)
