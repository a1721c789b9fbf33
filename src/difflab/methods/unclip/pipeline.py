"""The unCLIP pipeline: caption -> prior -> CLIP image embedding -> decoder (-> super-resolution).

Ramesh et al. 2022: ``p(x | y) = p(x | z_i, y) p(z_i | y)``. The decoder and any super-resolution
stages after it form a :class:`~..cascade.Cascade` whose base stage takes ``cond["vector"]``; the
prior (``unclip-prior`` run) samples ``z_i`` from the caption. Because the decoder inverts CLIP's
image embedding, an image can also be *encoded* (its embedding, and its DDIM-inverted decoder
noise) and decoded again, which gives the paper's manipulations::

    pipe = UnCLIP.load("runs/unclip/prior", "runs/unclip/decoder", "runs/imagen/sr-aug")
    images = pipe(["a red bag at the top left"], n=4)            # text to image
    pipe.variations(image, n=8)                                  # same embedding, other noise
    pipe.interpolate(image_a, image_b, frames=5, mode="noise")   # slerp of embeddings (and noise)
    pipe.text_diff(image, "a red bag at the top left", "a blue bag at the top left")

Images are (N, 3, H, W) or (3, H, W) float tensors in [-1, 1], best at :attr:`UnCLIP.source_shape`
(the decoder's training images before shrinking; the scenes: 64x64): the CLIP model embeds them as
in the decoder's training, and DDIM inversion sees them shrunk to the decoder's size.
A prior and a decoder built on different CLIP models are refused (their recorded identities).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ...data import resize_images
from ..cascade import Cascade
from .decoder import check_same_clip
from .embeddings import image_embeddings

DEFAULT_AMOUNTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def slerp(a: Tensor, b: Tensor, t: float) -> Tensor:
    """Spherical interpolation between ``a`` and ``b`` (same shape; flattened per row) at ``t`` in
    [0, 1], exact at both ends; nearly parallel rows fall back to linear interpolation."""
    fa, fb = a.flatten(1).double(), b.flatten(1).double()
    cos = (F.normalize(fa, dim=1) * F.normalize(fb, dim=1)).sum(1).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)[:, None]
    so = torch.sin(omega)
    safe = so.abs() > 1e-6
    wa = torch.where(safe, torch.sin((1 - t) * omega) / so.clamp_min(1e-12), torch.full_like(so, 1 - t))
    wb = torch.where(safe, torch.sin(t * omega) / so.clamp_min(1e-12), torch.full_like(so, t))
    return (wa * fa + wb * fb).view(a.shape).to(a.dtype)


class UnCLIP:
    """A prior, a decoder and optional super-resolution stages (see the module doc)."""

    def __init__(self, prior: Any, decoder: Any, *upsamplers: Any) -> None:
        """``prior`` may be None: image manipulations need only the decoder and its CLIP model
        (loaded from the path the decoder recorded); text to image needs the prior."""
        if "vector" not in decoder.conditions:
            raise ValueError(f"{decoder.path} is not an unCLIP decoder (it takes no CLIP image embedding)")
        if prior is None:
            from ..clip import load_clip
            from .embeddings import clip_identity

            clip = load_clip(decoder.meta.get("clip_path", ""), device=next(decoder.net.parameters()).device)
            parts = [
                ("the CLIP model at " + str(decoder.meta.get("clip_path")), {"clip_identity": clip_identity(clip)})
            ]
        else:
            clip = prior.clip
            parts = [("the prior", {"clip_identity": prior.clip_identity})]
        self.clip_identity = check_same_clip(*parts, ("the decoder", decoder.meta))
        self.prior, self.decoder, self.clip = prior, decoder, clip
        self.cascade = Cascade([decoder, *upsamplers])

    @classmethod
    def load(
        cls,
        prior: str | Path | None,
        decoder: str | Path,
        *upsamplers: str | Path,
        weights: str = "ema",
        device: Any = "cpu",
    ) -> UnCLIP:
        """The pipeline from run folders: an ``unclip-prior`` (or None), an ``unclip-decoder``, then
        diffusion super-resolution stages (e.g. the text-to-image one)."""
        from .. import load

        return cls(
            load(prior, weights, device, "unclip-prior") if prior is not None else None,
            load(decoder, weights, device, "unclip-decoder"),
            *(load(p, weights, device, "diffusion") for p in upsamplers),
        )

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self.cascade.image_shape

    # -- text to image ------------------------------------------------------------------------------------
    def __call__(self, prompts: str | Sequence[str], n: int = 1, **options: Any) -> Tensor:
        """``n`` final images per prompt (prompt-major); ``options`` as for :meth:`sample`."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if n < 1 or not prompts:
            raise ValueError("give at least one prompt and n >= 1 images per prompt")
        return self.sample([p for p in prompts for _ in range(n)], **options)[-1]

    def sample(
        self,
        prompts: Sequence[str],
        *,
        prior_guidance: float | None = None,
        prior_steps: int | None = None,
        best_of: int = 2,
        seed: int = 0,
        **options: Any,
    ) -> list[Tensor]:
        """One image per prompt: the prior's embedding (guidance ``prior_guidance``, best of
        ``best_of`` candidates by CLIP similarity to the caption), then :meth:`decode` with
        ``options`` (guidance, steps, threshold, aug per stage ...). Returns every stage's output."""
        if self.prior is None:
            raise ValueError("text to image needs a prior: build the pipeline with an unclip-prior run")
        prior_options: dict[str, Any] = {"best_of": best_of, "seed": seed}
        if prior_guidance is not None:
            prior_options["guidance"] = prior_guidance
        if prior_steps is not None:
            prior_options["steps"] = prior_steps
        emb = self.prior.sample(list(prompts), **prior_options)
        return self.decode(emb, seed=seed, prompts=prompts, **options)

    @property
    def takes_captions(self) -> bool:
        """Whether a stage (a decoder trained with ``data.conditions: [vector, caption]``, as the paper's,
        or a caption-conditioned super-resolution stage) reads the caption as well."""
        return any("caption" in stage.conditions for stage in self.cascade.stages)

    def decode(
        self, embeddings: Tensor, *, seed: int = 0, noise: Tensor | None = None,
        prompts: Sequence[str] | None = None, **options: Any,
    ) -> list[Tensor]:  # fmt: skip
        """Every stage's output for CLIP image embeddings (N, E); ``noise`` is the decoder's starting
        noise (e.g. from :meth:`invert`); ``prompts`` (one per embedding) go to the stages that read
        captions and are ignored by the others (without them such stages see the null caption, as
        in the manipulations, which start from images); ``options`` as for :meth:`Cascade.sample`."""
        embeddings = self._check_embeddings(embeddings)
        if prompts is not None and len(prompts) != len(embeddings):
            raise ValueError(f"{len(prompts)} prompts for {len(embeddings)} embeddings: give one per embedding")
        prompts = list(prompts) if prompts is not None and self.takes_captions else None
        return self.cascade.sample(
            len(embeddings), cond={"vector": embeddings}, noise=noise, seed=seed, prompts=prompts, **options
        )

    # -- images in ----------------------------------------------------------------------------------------
    @property
    def source_shape(self) -> tuple[int, ...]:
        """The shape of the images the decoder's embeddings were computed from: its training images
        before ``data.shrink`` (the scenes: (3, 64, 64)). Images to encode are best given at it."""
        c, h, w = self.decoder.image_shape
        k = int(self.decoder.config.data.shrink)
        return (c, h * k, w * k)

    def _images(self, images: Tensor) -> Tensor:
        """Images (N, C, H, W) (or one (C, H, W)) as float in [-1, 1], checked, at their own size."""
        images = images[None] if images.ndim == 3 else images
        c = self.image_shape[0]
        if images.ndim != 4 or images.shape[1] != c:
            raise ValueError(f"images must be (N, {c}, H, W) in [-1, 1], got {tuple(images.shape)}")
        return images.float().clamp(-1.0, 1.0)

    def _check_embeddings(self, embeddings: Tensor) -> Tensor:
        dim = int(self.decoder.net.config.vector_dim) if hasattr(self.decoder.net, "config") else None
        if embeddings.ndim != 2 or (dim and embeddings.shape[1] != dim):
            raise ValueError(f"embeddings must be (N, {dim}), got {tuple(embeddings.shape)}")
        return embeddings.float()

    def embed(self, images: Tensor) -> Tensor:
        """(N, E) CLIP image embeddings of images at their own size (the CLIP model resizes them to its
        input as in the decoder's training; give them at :attr:`source_shape`)."""
        return image_embeddings(self.clip, self._images(images))

    def _ddim_decoder(self, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` with DDIM for the decoder (it decodes DDIM-inverted noise); the super-resolution
        stages keep what ``options`` (or their own config) chose."""
        sampler = options.get("sampler")
        rest = list(sampler[1:]) if isinstance(sampler, (list, tuple)) else [sampler] * (len(self.cascade.stages) - 1)
        return {**options, "sampler": ["ddim", *rest]}

    def invert(self, images: Tensor, embeddings: Tensor | None = None, **options: Any) -> Tensor:
        """The decoder's DDIM-inverted noise for ``images`` (shrunk to its size) given their
        embeddings (default: their own); ``options``: steps, guidance (as decoding will use)."""
        images = self._images(images)
        embeddings = self.embed(images) if embeddings is None else self._check_embeddings(embeddings)
        small = resize_images(images, self.decoder.image_shape[-2:])
        return self.decoder.invert(small, cond={"vector": embeddings}, **options)

    # -- manipulations ------------------------------------------------------------------------------------
    def variations(self, image: Tensor, n: int = 4, *, seed: int = 0, **options: Any) -> Tensor:
        """``n`` images decoded from the embedding of ``image`` (3, S, S) with different noise."""
        emb = self.embed(image)
        if len(emb) != 1:
            raise ValueError("variations takes one image")
        return self.decode(emb.expand(n, -1), seed=seed, **options)[-1]

    def interpolate(
        self, image_a: Tensor, image_b: Tensor, frames: int = 5, *, mode: str = "embedding", seed: int = 0,
        **options: Any,
    ) -> Tensor:  # fmt: skip
        """``frames`` images from ``image_a`` to ``image_b``: their embeddings slerped, decoded from one
        fixed noise (``mode="embedding"``) or from the slerp of both images' DDIM-inverted decoder
        noise (``mode="noise"``; decoded with DDIM). An image interpolated with itself is returned as
        it is (at the output size), every frame."""
        if mode not in ("embedding", "noise"):
            raise ValueError(f"mode must be embedding or noise, got {mode!r}")
        if frames < 2:
            raise ValueError(f"frames must be >= 2, got {frames}")
        a, b = self._images(image_a), self._images(image_b)
        if len(a) != 1 or len(b) != 1:
            raise ValueError("interpolate takes one image at each end")
        if torch.equal(a, b):
            return resize_images(a, self.image_shape[-2:]).expand(frames, -1, -1, -1).clone()
        ea, eb = self.embed(a), self.embed(b)
        ts = [i / (frames - 1) for i in range(frames)]
        emb = torch.cat([F.normalize(slerp(ea, eb, t), dim=-1) for t in ts])
        if mode == "noise":
            inv = {k: options[k] for k in ("steps", "guidance") if k in options and not isinstance(options[k], list)}
            za, zb = self.invert(a, ea, **inv), self.invert(b, eb, **inv)
            noise = torch.cat([slerp(za, zb, t) for t in ts])
            return self.decode(emb, seed=seed, noise=noise, **self._ddim_decoder(options))[-1]
        return self.decode(emb, seed=seed, noise=self._fixed_noise(frames, seed), **options)[-1]

    def text_diff(
        self, image: Tensor, source: str, target: str, amounts: Sequence[float] = DEFAULT_AMOUNTS, *,
        seed: int = 0, **options: Any,
    ) -> Tensor:  # fmt: skip
        """Move ``image``'s embedding toward the text diff ``normalize(text(target) - text(source))``
        by slerp at each of ``amounts`` (0: the image's own embedding), decoding every frame from
        the image's DDIM-inverted noise so that what the captions do not change stays (the paper's
        text diffs)."""
        if not amounts:
            raise ValueError("give at least one amount")
        x = self._images(image)
        if len(x) != 1:
            raise ValueError("text_diff takes one image")
        emb = self.embed(x)
        with torch.no_grad():
            texts = self.clip.encode_captions([source, target]).float().cpu()
        diff = texts[1] - texts[0]
        if float(diff.norm()) < 1e-6:
            raise ValueError("the two captions have the same CLIP text embedding: nothing to move toward")
        d = F.normalize(diff, dim=0)[None]
        frames = torch.cat([F.normalize(slerp(emb, d, float(t)), dim=-1) for t in amounts])
        inv = {k: options[k] for k in ("steps", "guidance") if k in options and not isinstance(options[k], list)}
        z = self.invert(x, emb, **inv).expand(len(frames), *([-1] * (x.ndim - 1)))
        return self.decode(frames, seed=seed, noise=z.contiguous(), **self._ddim_decoder(options))[-1]

    def _fixed_noise(self, n: int, seed: int) -> Tensor:
        """One draw of decoder noise, repeated ``n`` times."""
        shape = self.decoder.image_shape
        z = torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed + 7919))
        return z.expand(n, *shape).contiguous()
