"""A Hugging Face CLIP model from a local folder behind the interface of difflab's own :class:`~.clip.CLIP`.

A folder written by ``transformers.CLIPModel.save_pretrained`` (``config.json`` with
``model_type: clip`` and the weights) plus its tokenizer's ``save_pretrained`` (``tokenizer.json``,
or ``vocab.json`` and ``merges.txt``) and optionally its image processor's
(``preprocessor_config.json``) loads, offline, as an :class:`HFCLIP`::

    clip = difflab.load("models/clip-vit-b32")          # or difflab.methods.clip.load_clip(folder)
    img = clip.encode_image(x)                          # x (B, 3, S, S) in [-1, 1] -> (B, E), unit norm
    txt = clip.encode_captions(["a red sneaker at the top left"])
    emb = clip.text_tower(*clip.tokenizer(["a red bag"]))  # TextEmbedding: last hidden states, EOS state

Images in ``[-1, 1]`` are resized to the model's input size (antialiased bicubic, as CLIP's
processor resamples) and normalised with the folder's ``image_mean`` / ``image_std`` (CLIP's own
without a ``preprocessor_config.json``); embeddings go through the model's projections and are
L2-normalised. The model is frozen: no gradients into its weights, eval mode for good (gradients
still reach the input images, e.g. for CLIP guidance).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .text import TextEmbedding, TextEncoder, Tokenizer, _transformers

# the normalisation CLIP was trained with (OpenAI's image mean and std of RGB in [0, 1])
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_TOKENIZER_FILES = "tokenizer.json, or vocab.json and merges.txt"


def hf_model_type(path: str | Path) -> str | None:
    """The ``model_type`` of a Hugging Face model folder (``config.json``, no difflab ``format.json``);
    None for anything else. A folder whose config.json cannot be read gives ""."""
    p = Path(path)
    if not p.is_dir() or not (p / "config.json").is_file() or (p / "format.json").exists():
        return None
    try:
        return str(json.loads((p / "config.json").read_text()).get("model_type") or "")
    except (OSError, ValueError, AttributeError):
        return ""


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


@dataclass(frozen=True)
class HFCLIPConfig:
    """What users of a CLIP model read: input ``image_size`` and ``channels``, ``embed_dim`` (the
    projection width), the text tower's ``max_tokens``, the image normalisation and the ``source`` folder."""

    image_size: int
    channels: int
    embed_dim: int
    max_tokens: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class HFCLIPTextTower(TextEncoder):
    """The frozen text transformer of an :class:`HFCLIP`: ``tokens`` are its last hidden states
    (zero at padding), ``pooled`` its pooled output (the state at the end-of-text token)."""

    def __init__(self, text_model: nn.Module, tokenizer: Tokenizer, source: str) -> None:
        super().__init__()
        self.model = text_model
        self.tokenizer = tokenizer
        self.token_dim = self.pooled_dim = int(text_model.config.hidden_size)
        self.spec = {"kind": "hf-clip", "path": source, "max_tokens": tokenizer.max_tokens}
        self.freeze()

    def forward(self, ids: Tensor, mask: Tensor | None = None) -> TextEmbedding:
        """As :meth:`TextEncoder.forward`; a default mask keeps the end token where padding reuses it."""
        if mask is None and ids.ndim == 2 and not ids.dtype.is_floating_point:
            mask = ids != self.tokenizer.pad_id
            eos = self.tokenizer.hf.eos_token_id
            if eos == self.tokenizer.pad_id:  # CLIP pads with <|endoftext|>: its first one is a real token
                first = (ids == eos).int().argmax(dim=1)
                rows = (ids == eos).any(dim=1)
                mask[rows.nonzero()[:, 0], first[rows]] = True
        return super().forward(ids, mask)

    def encode_ids(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        # The text transformer is causal: the padding after a batch's last real token changes no real
        # token's state, so it is left out (the output keeps the full length).
        used = int(mask.any(dim=0).nonzero().max()) + 1 if mask.any() else 1
        out = self.model(input_ids=ids[:, :used], attention_mask=mask[:, :used].long())
        tokens = out.last_hidden_state.float() * mask[:, :used, None]
        return F.pad(tokens, (0, 0, 0, ids.shape[1] - used)), out.pooler_output.float()


def _normalisation(folder: Path, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` per channel from ``preprocessor_config.json`` (CLIP's without one)."""
    mean, std = CLIP_MEAN, CLIP_STD
    f = folder / "preprocessor_config.json"
    if f.is_file():
        try:
            pre = json.loads(f.read_text())
        except ValueError as e:
            raise ValueError(f"{f}: unreadable image processor config ({_one_line(e)})") from None
        if pre.get("do_normalize", True) is False:
            mean, std = (0.0,) * channels, (1.0,) * channels
        else:
            mean, std = pre.get("image_mean", mean), pre.get("image_std", std)
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise ValueError(f"{f}: image_mean / image_std must give {channels} values (std > 0), got {mean}, {std}")
    return mean, std


class HFCLIP(nn.Module):
    """A frozen ``transformers.CLIPModel`` from a local folder (see the module doc).

    ``HFCLIP(folder, max_tokens=None)``: captions are padded / cut to ``max_tokens`` tokens (default
    and maximum: the text model's positions, 77 for OpenAI's models). Offers what difflab's
    :class:`~.clip.CLIP` does: ``config`` (:class:`HFCLIPConfig`), ``encode_image``,
    ``encode_text``, ``encode_captions``, ``tokenizer``, ``text_tower``, ``scale()`` and
    ``forward(x, ids, mask)`` -> (B images, B' texts) logits.
    """

    def __init__(self, folder: str | Path, max_tokens: int | None = None) -> None:
        super().__init__()
        folder = Path(folder)
        kind = hf_model_type(folder)
        if kind is None:
            raise ValueError(f"no Hugging Face model at {folder}: the folder needs config.json and the weights")
        if kind != "clip":
            raise ValueError(
                f"{folder} holds a Hugging Face {kind or 'unknown'!r} model, not a CLIP one "
                "(config.json model_type must be 'clip')"
            )
        if not (folder / "tokenizer.json").is_file() and not all(
            (folder / n).is_file() for n in ("vocab.json", "merges.txt")
        ):
            raise ValueError(
                f"{folder} has no tokenizer ({_TOKENIZER_FILES}): save it there with tokenizer.save_pretrained"
            )
        transformers = _transformers()
        try:
            model = transformers.CLIPModel.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot load the CLIP model in {folder}: {_one_line(e)}") from None
        self.model = model.float().eval().requires_grad_(False)
        limit = int(model.config.text_config.max_position_embeddings)
        max_tokens = limit if max_tokens is None else int(max_tokens)
        if not 1 <= max_tokens <= limit:
            raise ValueError(f"max_tokens must lie in [1, {limit}] (the text model's positions), got {max_tokens}")
        vision = model.config.vision_config
        channels = int(getattr(vision, "num_channels", 3))
        mean, std = _normalisation(folder, channels)
        self.config = HFCLIPConfig(
            int(vision.image_size), channels, int(model.config.projection_dim), max_tokens, mean, std, str(folder)
        )
        self.source = folder
        self.register_buffer("_mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        # held outside the module tree: its weights are self.model.text_model's, in the state dict once
        self._tower = [HFCLIPTextTower(model.text_model, Tokenizer(folder, max_tokens), str(folder))]

    # -- parts -------------------------------------------------------------------------------------------
    @property
    def text_tower(self) -> HFCLIPTextTower:
        """The frozen text encoder (a :class:`~.text.TextEncoder` over the model's text transformer)."""
        return self._tower[0]

    @property
    def tokenizer(self) -> Tokenizer:
        return self.text_tower.tokenizer

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    @property
    def trainable(self) -> bool:
        return False

    def train(self, mode: bool = True) -> HFCLIP:
        """Frozen: stays in eval mode (``train()`` is accepted and changes nothing)."""
        return super().train(False)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> HFCLIP:
        super()._apply(fn, *args, **kwargs)
        self.text_tower.clear_cache()  # cached rows would keep the old device and dtype
        return self

    def scale(self) -> Tensor:
        """The logit scale ``exp(logit_scale)``, as ``CLIPModel`` applies it."""
        return self.model.logit_scale.exp()

    def num_parameters(self, trainable_only: bool = False) -> int:
        return 0 if trainable_only else sum(p.numel() for p in self.parameters())

    def summary(self) -> str:
        c, v = self.config, self.model.config.vision_config
        return (
            f"Hugging Face CLIP from {c.source}: ViT {c.channels}x{c.image_size}x{c.image_size} "
            f"patch {v.patch_size}, text {c.max_tokens} tokens, embed {c.embed_dim}, "
            f"{self.num_parameters() / 1e6:.2f}M params (frozen)"
        )

    # -- embeddings --------------------------------------------------------------------------------------
    def pixels(self, x: Tensor) -> Tensor:
        """The model's input of images (B, C, S, S) in [-1, 1]: resized to ``image_size`` (antialiased
        bicubic, clamped to [-1, 1]) when S differs, mapped to [0, 1] and normalised by mean / std."""
        c = self.config
        if x.ndim != 4 or x.shape[1] != c.channels or x.shape[2] != x.shape[3]:
            raise ValueError(f"CLIP images must be (B, {c.channels}, S, S) in [-1, 1], got {tuple(x.shape)}")
        x = x.float()
        if x.shape[-1] != c.image_size:
            x = F.interpolate(x, size=(c.image_size, c.image_size), mode="bicubic", antialias=True, align_corners=False)
            x = x.clamp(-1.0, 1.0)
        return ((x + 1) / 2 - self._mean) / self._std

    def encode_image(self, x: Tensor) -> Tensor:
        """(B, embed_dim) float32 unit-norm embeddings of images (B, C, S, S) in [-1, 1] (see :meth:`pixels`)."""
        pooled = self.model.vision_model(pixel_values=self.pixels(x)).pooler_output
        return F.normalize(self.model.visual_projection(pooled).float(), dim=-1)

    def encode_text(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, embed_dim) unit-norm embeddings of token ids (B, L) with mask (B, L) (default: ids != pad)."""
        pooled = self.text_tower(ids, mask).pooled
        return F.normalize(self.model.text_projection(pooled).float(), dim=-1)

    def encode_captions(self, captions: Sequence[str], batch_size: int = 1024) -> Tensor:
        """Tokenize and embed captions (in batches of ``batch_size``) on the model's device."""
        from .clip import encode_captions

        return encode_captions(self, captions, batch_size)

    def forward(self, x: Tensor, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        """Image->text logits (B images, B' texts): ``scale * image_emb @ text_emb.T``."""
        return self.scale() * self.encode_image(x) @ self.encode_text(ids, mask).T
