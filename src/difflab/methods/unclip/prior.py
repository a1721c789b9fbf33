"""The unCLIP priors (Ramesh et al. 2022): the ``unclip-prior`` method of the one trainer.

A prior maps a caption to a CLIP image embedding ``z_i``; a decoder then maps ``z_i`` to an image.
:class:`PriorMethod` trains one of the two priors of :mod:`difflab.nets.prior` on a frozen CLIP
model (``clip.path``, held by the method, outside the prior's module tree): its data are the
items ``(z_i (E,), {"caption": str})`` of a captioned data set (``data.name``, e.g. ``scenes``),
``z_i`` the cached CLIP image embedding of the item (:class:`~.embeddings.ImageEmbedded`). The
loss encodes the batch's captions with the CLIP text tower (no gradient) and is

- ``kind: diffusion``: :func:`difflab.diffusion.training_loss` of the ``diffusion:`` section on
  ``sqrt(E) * z_i`` (the recipes: parameterization x, constant weighting: the paper's MSE);
- ``kind: autoregressive``: the cross-entropy of the quantised PCA codes (the PCA is fitted on the
  training embeddings when the network is built, deterministically, and saved with it).

Every ``train.sample_every`` updates the EMA prior samples embeddings for the first 64 test
captions; the mean cosine to the true image embeddings is logged and written to
``RUN/samples/step_N.json``::

    difflab train configs/unclip-prior.yaml --out runs/unclip/prior-diffusion
    prior = difflab.load("runs/unclip/prior-diffusion")        # a LoadedPrior, with its CLIP
    z = prior.sample(["a red sneaker at the top left"], guidance=2.0, best_of=2)   # (1, E), unit norm
    prior_cosine(prior, "test"); text_baseline_cosine(prior.clip, "test")

A checkpoint records the CLIP model's identity (:func:`~.embeddings.clip_identity`); loading it
with another CLIP model is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ...cache import cache_dir
from ...nets.clip import CLIP
from ...nets.prior import ARPrior, DiffusionPrior, PriorConfig, build_prior
from ...train.config import RunConfig
from ...train.method import Method
from ...train.stage import make_schedule
from .embeddings import ImageEmbedded, clip_identity, data_key, safe_name

EVAL_CAPTIONS = 64  # test captions scored at every sample_every


# -- data -------------------------------------------------------------------------------------------------------
def captions_of(data: Any, key: str | None = None) -> list[str]:
    """The captions of a data set's items, in order; with ``key`` cached on disk (as JSON) by it."""
    path = None
    if key is not None:
        digest = hashlib.sha256(f"{key}|{len(data)}".encode()).hexdigest()[:12]
        path = cache_dir() / "captions" / f"{safe_name(key)}-{digest}.json"
        try:
            captions = json.loads(path.read_text())
            if isinstance(captions, list) and len(captions) == len(data):
                return captions
        except (OSError, ValueError):
            pass
    captions = [data[i][1]["caption"] for i in range(len(data))]
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(json.dumps(captions))
            tmp.replace(path)
        except OSError:
            pass
    return captions


class EmbeddedCaptions(torch.utils.data.Dataset):
    """Items ``(z_i (E,) float32 unit norm, {"caption": str})`` held in memory: ``vectors`` (N, E), ``captions``."""

    cond_keys = ("caption",)

    def __init__(self, vectors: Tensor, captions: list[str]) -> None:
        if len(vectors) != len(captions):
            raise ValueError(f"{len(vectors)} embeddings for {len(captions)} captions")
        self.vectors, self.captions = vectors, list(captions)

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        return self.vectors[index], {"caption": self.captions[index]}


def embedded_captions(
    clip: Any, name: str, split: str, options: dict[str, Any], n: int | None = None, progress: bool | None = False
) -> EmbeddedCaptions:
    """The (first ``n`` of the) items of ``get_dataset(name, split, **options)`` as image embeddings of
    ``clip`` and captions (both cached on disk; see :class:`~.embeddings.ImageEmbedded`)."""
    from ...data import get_dataset

    data = get_dataset(name, split, **options)
    if "caption" not in getattr(data, "cond_keys", ()):
        raise ValueError(f"an unCLIP prior needs captioned data (e.g. data.name: scenes); {name!r} has no captions")
    key = data_key(name, split, options)
    vectors = ImageEmbedded(data, clip, key=key, progress=progress).vectors
    captions = captions_of(data, key)
    if n is not None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        vectors, captions = vectors[:n], captions[:n]
    return EmbeddedCaptions(vectors, captions)


@torch.no_grad()
def text_condition(clip: Any, captions: list[str]) -> dict[str, Tensor]:
    """The prior's text condition of captions, on the CLIP model's device: ``tokens`` (B, L, D) and
    ``token_mask`` (B, L) of its text tower (L: the longest caption's tokens), ``text_embed`` (B, E)
    (``clip.encode_text``) and ``text_drop`` (all False)."""
    ids, mask = clip.tokenizer(list(captions))
    ids, mask = ids.to(clip.device), mask.to(clip.device).bool()
    out = clip.text_tower(ids, mask)
    n = max(1, int(mask.sum(1).max()))
    if isinstance(clip, CLIP):  # what its encode_text computes, from the same pass of the text tower
        embed = F.normalize(clip.text_projection(out.pooled).float(), dim=-1)
    else:
        embed = clip.encode_text(ids, mask).float()
    drop = torch.zeros(len(captions), dtype=torch.bool, device=clip.device)
    return {"tokens": out.tokens[:, :n].float(), "token_mask": mask[:, :n], "text_embed": embed, "text_drop": drop}


# -- sampling ---------------------------------------------------------------------------------------------------
def pick_best(candidates: Tensor, text_embed: Tensor) -> Tensor:
    """(B, E): of candidates (B, k, E), per caption the one with the largest cosine to its text embedding (B, E)."""
    cos = torch.einsum("bke,be->bk", F.normalize(candidates.float(), dim=-1), F.normalize(text_embed.float(), dim=-1))
    return candidates[torch.arange(len(candidates)), cos.argmax(1)]


@torch.no_grad()
def draw_candidates(
    net: Any,
    cfg: RunConfig,
    clip: Any,
    captions: list[str],
    k: int = 1,
    *,
    sampler: str | None = None,
    steps: int | None = None,
    spacing: str | None = None,
    guidance: float | None = None,
    temperature: float | None = None,
    seed: int = 0,
    **options: Any,
) -> tuple[Tensor, Tensor]:
    """``(candidates (B, k, E), text_embed (B, E))``: ``k`` unit-norm embeddings per caption from a
    prior network and their CLIP text embeddings (float32, CPU). Arguments left None come from
    ``cfg.sample``; ``guidance`` is the CFG weight (1: conditional). The diffusion prior uses the
    sampler of ``cfg.diffusion``'s schedule (``options``: the sampler's, e.g. eta); the
    autoregressive one takes ``temperature`` (default ``sample.options.temperature`` or 1).
    The same captions, ``k`` and ``seed`` give the same candidates."""
    from ...diffusion import cfg as cfg_guidance
    from ...diffusion import make_denoiser, sample
    from ...nets import keep_cond, null_cond

    if k < 1:
        raise ValueError(f"the number of candidates per caption must be >= 1, got {k}")
    captions = [captions] if isinstance(captions, str) else list(captions)
    s = cfg.sample
    guidance = s.guidance if guidance is None else float(guidance)
    options = {**s.options, **options}
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    try:
        cond = text_condition(clip, captions)
        text_embed = cond["text_embed"].float().cpu()
        cond = {key: v.repeat_interleave(k, 0).to(device) for key, v in cond.items()}
        gen = torch.Generator(device=device).manual_seed(seed)
        recipe_temperature = options.pop("temperature", None)  # the recipe's sample.options, or passed
        if isinstance(net, ARPrior):
            temperature = temperature if temperature is not None else recipe_temperature
            temperature = 1.0 if temperature is None else float(temperature)
            if options:
                raise ValueError(f"the autoregressive prior takes no sampler options: {', '.join(options)}")
            out = net.sample(cond, guidance=guidance, temperature=temperature, generator=gen)
        else:
            if temperature is not None or recipe_temperature is not None:
                raise ValueError("temperature is for the autoregressive prior; the diffusion prior has none")
            lams = make_schedule(cfg).lams(steps or s.steps, spacing or s.spacing)
            denoiser = make_denoiser(net, cfg.diffusion.parameterization)
            if guidance != 1.0:
                denoiser = cfg_guidance(denoiser, guidance, null_cond)
            z = torch.randn((len(captions) * k, net.config.embed_dim), generator=gen, device=device)
            x = sample(sampler or s.sampler, denoiser, z, lams, cond=keep_cond(cond), generator=gen, **options)
            out = net.from_diffusion(x)
    finally:
        net.train(was_training)
    return out.float().cpu().view(len(captions), k, -1), text_embed


# -- the method -------------------------------------------------------------------------------------------------
class PriorMethod(Method):
    """An unCLIP prior trained on a frozen CLIP model's embeddings (see the module doc)."""

    name = "unclip-prior"
    model_config_class = PriorConfig
    sections = ("diffusion", "sample", "clip")

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        d = cfg.data
        if not cfg.clip.path:
            raise ValueError(
                "invalid run config: method 'unclip-prior' needs clip.path (a CLIP run, e.g. runs/clip-scenes)"
            )
        if set(d.conditions) - {"caption"}:
            raise ValueError(
                f"invalid run config: method 'unclip-prior' is conditioned on captions; data.conditions must be "
                f"[caption], got {list(d.conditions)}"
            )
        if d.shrink != 1 or d.lowres_factor or d.image_frames:
            raise ValueError(
                "invalid run config: method 'unclip-prior' takes no data.shrink / lowres_factor / image_frames"
            )
        d.conditions = ("caption",)
        PriorConfig.from_dict(cfg.model)  # fail before the CLIP and the data are read
        self.schedule = make_schedule(cfg)
        self._clip: Any = None
        self._train_vectors: Tensor | None = None
        self._eval: EmbeddedCaptions | None = None
        self._scores: dict[str, Any] = {}

    @property
    def clip(self) -> Any:
        """The frozen CLIP model of ``clip.path`` (eval mode, no gradients; loaded once)."""
        if self._clip is None:
            from ..clip import load_clip

            self._clip = load_clip(self.cfg.clip.path).requires_grad_(False)
        return self._clip

    def _clip_on(self, device: torch.device) -> Any:
        if self.clip.device != device:
            self._clip = self._clip.to(device)
        return self._clip

    # -- hooks --
    def dataset(self, split: str = "train") -> EmbeddedCaptions:
        d = self.cfg.data
        data = embedded_captions(
            self.clip, d.name, split, dict(d.options), progress=None if self.cfg.train.progress else False
        )
        if split == "train":
            self._train_vectors = data.vectors
        return data

    def resolve_model_config(self, dataset: Any) -> dict[str, Any]:
        model = dict(self.cfg.model)
        clip = self.clip
        fixed = {"embed_dim": int(clip.config.embed_dim), "token_dim": int(clip.text_tower.token_dim),
                 "max_tokens": int(clip.config.max_tokens)}  # fmt: skip
        for key, value in fixed.items():
            if key in model and model[key] != value:
                raise ValueError(f"invalid run config: model.{key}={model[key]!r}, but the CLIP model's is {value}")
            model[key] = value
        return PriorConfig.from_dict(model).to_dict()

    def build(self, model_config: dict[str, Any]) -> torch.nn.Module:
        net = build_prior(model_config)
        if isinstance(net, ARPrior):
            vectors = self._train_vectors if self._train_vectors is not None else self.dataset("train").vectors
            net.fit_pca(vectors)
        return net

    def loss(self, net: Any, x: Tensor, cond: dict[str, Any], generator: torch.Generator) -> Tensor:
        from ...diffusion import training_loss

        inner = getattr(net, "module", net)  # net may be DDP-wrapped
        text = text_condition(self._clip_on(x.device), cond["caption"])
        if isinstance(inner, ARPrior):
            codes = inner.quantize(x)
            logits = net(codes[:, :-1], text)
            return F.cross_entropy(logits.float().flatten(0, 1), codes.flatten())
        d = self.cfg.diffusion
        return training_loss(
            net, inner.to_diffusion(x), self.schedule, parameterization=d.parameterization,
            weighting=d.weighting, norm=d.norm, time_sampling=d.time_sampling, n_discrete=d.n_discrete,
            gamma=d.gamma, cond=text, generator=generator,
        )  # fmt: skip

    def meta(self) -> dict[str, Any]:
        return {
            "method": self.name,
            "prior_kind": str(self.cfg.model.get("kind", "diffusion")),
            "clip_identity": clip_identity(self.clip),
            "clip_path": str(Path(self.cfg.clip.path).resolve()),
        }

    def sample_grid(self, trainer: Any, monitor: Any = None) -> Path | None:
        """Score the EMA prior on the first 64 test captions: ``samples/step_N.json`` and the log hold
        the mean cosine to the true image embeddings of one sample and of the best of 2, and the CLIP
        text embeddings' own cosine (the baseline a prior should beat)."""
        if self._eval is None:
            d = self.cfg.data
            self._eval = embedded_captions(self.clip, d.name, "test", dict(d.options), n=EVAL_CAPTIONS)
        data = self._eval
        net = trainer.ema.module
        cands, text = draw_candidates(net, self.cfg, self._clip_on(trainer.device), data.captions, 2, seed=0)
        true = data.vectors.float()
        scores = {
            "step": trainer.step,
            "cosine": round(float((cands[:, 0] * true).sum(-1).mean()), 4),
            "cosine_best_of_2": round(float((pick_best(cands, text) * true).sum(-1).mean()), 4),
            "text_baseline": round(float((text * true).sum(-1).mean()), 4),
        }
        self._scores = {f"test_{k}": v for k, v in scores.items() if k != "step"}
        path = trainer.run_dir / "samples" / f"step_{trainer.step:07d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(scores, indent=1))
        if monitor is not None:
            monitor.write(f"prior eval on {len(data)} test captions: {json.dumps(scores)}")
        return path

    def summary(self) -> dict[str, Any]:
        return dict(self._scores)

    @classmethod
    def load(cls, path: str | Path, weights: str = "ema", device: Any = "cpu") -> LoadedPrior:
        return load_prior(path, weights=weights, device=device)


# -- a trained prior --------------------------------------------------------------------------------------------
@dataclass
class LoadedPrior:
    """A prior restored from a run (what ``difflab.load`` returns for it), with the CLIP model it was
    trained on: ``prior.sample(captions)`` draws unit-norm CLIP image embeddings."""

    config: RunConfig
    net: DiffusionPrior | ARPrior
    meta: dict[str, Any]
    path: Path
    clip: Any

    @property
    def clip_identity(self) -> str:
        """The identity of the CLIP model the prior was trained on (and is loaded with)."""
        return str(self.meta["clip_identity"])

    @property
    def kind(self) -> str:
        return self.net.config.kind

    def candidates(self, captions: list[str], k: int = 2, **options: Any) -> tuple[Tensor, Tensor]:
        """``(candidates (B, k, E), text_embed (B, E))``; options as for :func:`draw_candidates`."""
        return draw_candidates(self.net, self.config, self.clip, captions, k, **options)

    def sample(
        self,
        captions: list[str],
        *,
        guidance: float | None = None,
        steps: int | None = None,
        sampler: str | None = None,
        best_of: int = 2,
        seed: int = 0,
        **options: Any,
    ) -> Tensor:
        """(B, E) unit-norm image embeddings, float32 on the CPU: per caption the best (largest cosine to
        its CLIP text embedding) of ``best_of`` draws, as the paper. Left None: the run's ``sample:``
        section; ``options``: temperature (autoregressive) or sampler options (diffusion)."""
        cands, text = self.candidates(
            captions, best_of, guidance=guidance, steps=steps, sampler=sampler, seed=seed, **options
        )
        return pick_best(cands, text)


def load_prior(path: str | Path, *, weights: str = "ema", device: Any = "cpu", clip: Any = None) -> LoadedPrior:
    """A trained prior with its CLIP model: that of the run's ``clip.path`` (else the absolute path its
    checkpoint recorded), or ``clip`` (a CLIP run, or a CLIP model in eval mode). A CLIP model other
    than the one the prior was trained on is refused (ValueError)."""
    from ...config import load_yaml
    from ...train.checkpoint import CheckpointError, checkpoint_path, load_network
    from ..clip import load_clip

    where = checkpoint_path(path)
    try:
        cfg = RunConfig.from_dict(load_yaml(where / "config.yaml"))
    except (ValueError, FileNotFoundError) as e:
        raise CheckpointError(f"{where / 'config.yaml'}: {e}") from None
    net, meta, ckpt_dir = load_network(where, build_prior, weights, method=PriorMethod.name)
    source = clip
    if clip is None:
        source = cfg.clip.path if Path(cfg.clip.path).exists() else meta.get("clip_path", cfg.clip.path)
    if isinstance(source, (str, Path)):
        clip = load_clip(source, device=device).requires_grad_(False)
    ident, want = clip_identity(clip), meta.get("clip_identity")
    if ident != want:
        name = source if isinstance(source, (str, Path)) else "the CLIP model given"
        raise ValueError(
            f"{ckpt_dir}: this prior was trained on CLIP {want} ({meta.get('clip_path')}), but {name} is CLIP "
            f"{ident}; load it with the CLIP model it was trained on"
        )
    return LoadedPrior(cfg, net.to(device), meta, ckpt_dir, clip)


# -- evaluation -------------------------------------------------------------------------------------------------
def prior_cosine(prior: LoadedPrior, split: str = "test", n: int = 256, **sample_options: Any) -> float:
    """The mean cosine between the sampled embedding of each of the first ``n`` captions of a split (of
    the prior's data set) and its image's CLIP embedding; ``sample_options`` go to :meth:`LoadedPrior.sample`."""
    d = prior.config.data
    data = embedded_captions(prior.clip, d.name, split, dict(d.options), n=n)
    z = prior.sample(data.captions, **sample_options)
    return float((z * data.vectors.float()).sum(-1).mean())


def text_baseline_cosine(
    clip: Any, split: str = "test", n: int = 256, *, data: str = "scenes", options: dict[str, Any] | None = None
) -> float:
    """The mean cosine between the CLIP text embedding of each of the first ``n`` captions of a split
    and its image's CLIP embedding: the baseline a prior should beat. ``data`` and ``options`` name
    the data set (default: the scenes at size 64, as the recipes)."""
    items = embedded_captions(clip, data, split, {"size": 64} if options is None else dict(options), n=n)
    text = text_condition(clip, items.captions)["text_embed"].float().cpu()
    return float((text * items.vectors.float()).sum(-1).mean())
