"""The unCLIP decoder: a diffusion stage conditioned on CLIP image embeddings (Ramesh et al. 2022).

It is the image diffusion method with one more condition: ``data.conditions: [vector]`` (and
optionally ``caption``) where ``vector`` is the CLIP image embedding of each training image --
added to the U-Net's time embedding and projected to ``model.vector_tokens`` extra context tokens
(see :mod:`difflab.nets.conditioning`). The embedding is of the *full-resolution* image (before
``data.shrink``), from the CLIP model of the ``clip:`` section, computed once per data set and
cached (:class:`~.embeddings.ImageEmbedded`). Classifier-free guidance drops the embedding with
probability ``train.cond_drop`` (the paper: 10%), so ``generate(..., guidance=w)`` guides on it.

Everything else -- training, sampling, super-resolution stages after it, ``difflab sample`` -- is
the plain diffusion stage's. ``format.json`` records the CLIP model's identity, so a prior built
on another CLIP model is refused (:func:`check_same_clip`)::

    difflab train configs/unclip-decoder.yaml --out runs/unclip/decoder
    stage = difflab.load("runs/unclip/decoder")       # a LoadedStage
    x = stage.sample(4, cond={"vector": embeddings})  # (4, 3, 16, 16)
"""

from __future__ import annotations

from typing import Any

from ...train.stage import ImageDiffusion


class UnCLIPDecoder(ImageDiffusion):
    """A diffusion stage on CLIP image embeddings (see the module doc)."""

    name = "unclip-decoder"
    sections = ("diffusion", "sample", "text", "clip")

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        if not cfg.clip.path:
            raise ValueError("invalid run config: an unclip-decoder needs clip.path (a CLIP run or folder)")
        if "vector" not in cfg.data.conditions:
            raise ValueError(
                "invalid run config: an unclip-decoder is conditioned on CLIP image embeddings: "
                "data.conditions must include 'vector'"
            )
        self._clip: Any = None

    def clip(self) -> Any:
        """The frozen CLIP model of ``clip.path`` (loaded once)."""
        if self._clip is None:
            from ..clip import load_clip

            self._clip = load_clip(self.cfg.clip.path)
            self._clip.requires_grad_(False)
        return self._clip

    def add_conditions(self, data: Any, split: str) -> Any:
        from .embeddings import ImageEmbedded, data_key

        d = self.cfg.data
        key = data_key(d.name, split, d.options)
        return ImageEmbedded(data, self.clip(), key=key, progress=self.cfg.train.progress)

    def meta(self) -> dict[str, Any]:
        from .embeddings import clip_identity

        return {**super().meta(), "clip_identity": clip_identity(self.clip()), "clip_path": self.cfg.clip.path}


def check_same_clip(*parts: tuple[str, dict[str, Any]]) -> str:
    """The CLIP identity shared by ``(name, meta)`` parts (a decoder's and a prior's format.json
    entries); a ValueError naming them when they were built on different CLIP models."""
    ids = {name: meta.get("clip_identity") for name, meta in parts}
    missing = [name for name, ident in ids.items() if not ident]
    if missing:
        raise ValueError(f"{', '.join(missing)} records no CLIP model (not an unCLIP part?)")
    if len(set(ids.values())) > 1:
        listed = ", ".join(f"{name} on {ident}" for name, ident in ids.items())
        raise ValueError(f"these unCLIP parts were built on different CLIP models ({listed}); train them on one")
    return next(iter(ids.values()))
