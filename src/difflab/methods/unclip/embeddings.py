"""CLIP image embeddings of a data set's items: what an unCLIP decoder is conditioned on and a prior predicts.

:class:`ImageEmbedded` wraps a data set of ``(x, cond)`` items and adds ``cond["vector"]``, the
unit-norm CLIP image embedding of ``x`` (resized to the CLIP model's input size). Every embedding
is computed once, in batches, when the wrapper is built -- the CLIP model then stays in the main
process, and DataLoader workers only index a tensor -- and, given a ``key`` naming the data (data
set, options, split), cached on disk under :func:`difflab.cache.cache_dir` by that key and the
CLIP model's :func:`clip_identity`::

    clip = difflab.load("runs/clip-scenes")
    data = ImageEmbedded(CaptionedScenes("train"), clip, key="scenes-train-size64")
    x, cond = data[0]            # cond["vector"]: (embed_dim,) float32, unit norm

:func:`clip_identity` is a short hash of the model's weights: a decoder and a prior record the one
they were built on, so that they are only combined when it is the same model.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...cache import cache_dir
from ..clip import clip_input, image_embeddings

EMBED_BATCH = 256

__all__ = ["ImageEmbedded", "clip_identity", "clip_input", "data_key", "image_embeddings", "safe_name"]


def clip_identity(clip: Any) -> str:
    """A 16-hex-digit sha256 of a CLIP model's state (names, shapes, dtypes and values, in order)."""
    cached = getattr(clip, "_difflab_identity", None)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    for name, t in clip.state_dict().items():
        t = t.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    ident = h.hexdigest()[:16]
    try:
        clip._difflab_identity = ident  # the weights of a loaded model do not change
    except AttributeError:
        pass
    return ident


def data_key(name: str, split: str, options: dict[str, Any]) -> str:
    """The cache key naming a data set exactly, e.g. ``scenes-train-size=64``."""
    return f"{name}-{split}-" + ",".join(f"{k}={options[k]}" for k in sorted(options))


def safe_name(key: str) -> str:
    """``key`` as a short file-name part (other characters become ``_``)."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", key)[:80]


class ImageEmbedded(torch.utils.data.Dataset):
    """``data`` with ``cond["vector"]``: the CLIP image embedding of each item (see the module doc).

    ``key`` (optional) names the data exactly (data set, options, split); with it the embeddings
    are cached in ``cache / "embeddings"`` (default :func:`difflab.cache.cache_dir`). ``progress``
    shows a bar while embedding (None: only on a terminal).
    """

    def __init__(
        self,
        data: Any,
        clip: Any,
        *,
        key: str | None = None,
        cache: str | Path | None = None,
        batch_size: int = EMBED_BATCH,
        progress: bool | None = None,
    ) -> None:
        self.data = data
        self.identity = clip_identity(clip)
        self.cond_keys = (*getattr(data, "cond_keys", ()), "vector")
        self.embed_dim = int(clip.config.embed_dim)
        self.cache_file: Path | None = None
        if key is not None:
            folder = Path(cache) if cache is not None else cache_dir()
            digest = hashlib.sha256(f"{key}|{len(data)}".encode()).hexdigest()[:12]
            self.cache_file = folder / "embeddings" / f"{safe_name(key)}-{digest}-clip{self.identity}.pt"
        self.vectors = self._load() if self.cache_file is not None else None
        if self.vectors is None:
            self.vectors = self._compute(clip, batch_size, progress)
            self._save()
        if hasattr(data, "tensors"):
            self.tensors = self._tensors

    def _load(self) -> Tensor | None:
        path = self.cache_file
        if path is None or not path.is_file():
            return None
        try:
            v = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a corrupt or partial file: compute again
            return None
        if not isinstance(v, Tensor) or tuple(v.shape) != (len(self.data), self.embed_dim):
            return None
        return v.float()

    def _save(self) -> None:
        path = self.cache_file
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            torch.save(self.vectors, tmp)
            tmp.replace(path)
        except OSError:  # a read-only cache is not an error: the embeddings are in memory
            pass

    def _compute(self, clip: Any, batch_size: int, progress: bool | None) -> Tensor:
        n = len(self.data)
        bar = None
        if progress is not False:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc="CLIP image embeddings (once; cached)", unit="image", leave=False,
                       disable=None if progress is None else False)  # fmt: skip
        out = []
        try:
            if hasattr(self.data, "tensors"):
                x, _ = self.data.tensors()
                out.append(image_embeddings(clip, x, batch_size))
                if bar is not None:
                    bar.update(n)
            else:
                for start in range(0, n, batch_size):
                    batch = [self.data[i][0] for i in range(start, min(n, start + batch_size))]
                    out.append(image_embeddings(clip, batch, batch_size))
                    if bar is not None:
                        bar.update(len(batch))
        finally:
            if bar is not None:
                bar.close()
        return torch.cat(out) if out else torch.zeros(0, self.embed_dim)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        x, cond = self.data[index]
        return x, {**cond, "vector": self.vectors[index]}

    def _tensors(self) -> tuple[Tensor, dict[str, Tensor]]:
        x, cond = self.data.tensors()
        return x, {**cond, "vector": self.vectors}

    def __getattr__(self, name: str) -> Any:  # info, levels, ... of the wrapped data
        if name == "data":
            raise AttributeError(name)
        return getattr(self.data, name)
