"""Image diffusion, the trainer's default :class:`~.method.Method`, and its trained *stage*.

A stage is a network + diffusion process, built from a run config, sampled and reloaded. The
trainer and the ``difflab sample`` / ``difflab eval`` commands share these functions, so a sample
grid drawn during training and one drawn later from the checkpoint are the same code. Conditions
travel as a dict: the data's keys named in ``data.conditions`` reach the network unchanged, and a
super-resolution stage's ``lowres`` gets noise-conditioning augmentation (:func:`augment_lowres`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import from_dict
from .checkpoint import CheckpointError, load_network
from .config import RunConfig
from .data import mix_seed
from .method import Method

_SAMPLE = 4  # the trainer's stream id for sample grids (mix_seed)


def resolve_model_config(
    cfg: RunConfig,
    channels: int,
    num_classes: int | None,
    lowres_channels: int = 0,
    text: Any = None,
    vector_dim: int = 0,
) -> dict[str, Any]:
    """The UNet config dict of a run: ``cfg.model`` plus what the data and diffusion fix.

    Fills in ``in_channels`` (data channels), ``out_channels`` (``output_channels`` of the
    parameterization), for a class-conditional run ``num_classes`` and ``cond_drop: {class: p}``,
    for a super-resolution stage ``lowres_channels``, and for a caption-conditioned one the text
    encoder's (``text``) ``token_dim`` and ``pooled_dim`` with ``cond_drop: {tokens: p, pooled: p}``
    (one draw drops both), and for a ``vector``-conditioned one (an unCLIP decoder) ``vector_dim``
    with ``cond_drop: {vector: p}``, each ``p`` being ``train.cond_drop`` unless ``model.cond_drop`` sets
    that condition's own rate (e.g. ``{vector: 0.1, tokens: 0.5, pooled: 0.5}``, as the unCLIP decoder
    drops its caption more often than its image embedding). A value set in ``cfg.model`` that
    contradicts them is a ValueError.
    """
    from ..diffusion import output_channels
    from ..nets import UNetConfig

    early = dict(cfg.model)
    early.pop("cond_drop", None)  # its keys are checked against the run's conditions below
    if "vector" in cfg.data.conditions:  # vector_tokens needs a vector_dim, fixed below
        early.setdefault("vector_dim", max(1, vector_dim))
    from_dict(UNetConfig, early, "model")  # unknown keys and bad values, named
    fixed: dict[str, Any] = {
        "in_channels": channels,
        "out_channels": output_channels(cfg.diffusion.parameterization, channels),
    }
    if "lowres" in cfg.data.conditions:
        fixed["lowres_channels"] = int(lowres_channels)
    droppable = []
    if "class" in cfg.data.conditions:
        if not num_classes:
            raise ValueError(f"data.conditions has 'class' but dataset {cfg.data.name!r} has no class labels")
        fixed["num_classes"] = int(num_classes)
        droppable.append("class")
    if "caption" in cfg.data.conditions:
        if text is None:
            raise ValueError("data.conditions has 'caption': pass the stage's text encoder (text=) to size the U-Net")
        fixed["token_dim"], fixed["pooled_dim"] = int(text.token_dim), int(text.pooled_dim)
        droppable += ["tokens", "pooled"]
    if "vector" in cfg.data.conditions:
        if vector_dim < 1:
            raise ValueError("data.conditions has 'vector': pass its size (vector_dim=) to size the U-Net")
        fixed["vector_dim"] = int(vector_dim)
        droppable.append("vector")
    if droppable:
        rates = dict(cfg.model.get("cond_drop") or {})  # per-condition rates set in the recipe win
        stray = sorted(set(rates) - set(droppable))
        if stray:
            raise ValueError(
                f"model.cond_drop has {stray}, which this run does not condition on; its droppable conditions: "
                f"{', '.join(droppable)}"
            )
        rates = {k: float(rates.get(k, cfg.train.cond_drop)) for k in droppable}
        fixed["cond_drop"] = {k: p for k, p in rates.items() if p > 0}
    out = dict(cfg.model)
    for key, value in fixed.items():
        if key in out and key != "cond_drop" and out[key] != value:
            raise ValueError(f"model.{key}={out[key]} contradicts the data/diffusion config, which needs {value}")
        out[key] = value
    return UNetConfig.from_dict(out).to_dict()


def make_schedule(cfg: RunConfig) -> Any:
    from ..diffusion import get_schedule

    return get_schedule(cfg.diffusion.schedule, **cfg.diffusion.schedule_options)


def autocast(device: torch.device, precision: str) -> Any:
    """The autocast context of ``precision`` (bf16 / fp16) on ``device``; a no-op for fp32."""
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def crop_padding(x: Tensor, cfg: RunConfig) -> Tensor:
    """Remove the border that ``data.options.pad`` added (samples of a padded dataset -> original size)."""
    pad = int(cfg.data.options.get("pad", 0) or 0)
    if pad <= 0:
        return x
    return x[..., pad:-pad, pad:-pad]


def upscale_for_grid(x: Tensor, min_size: int = 32) -> Tensor:
    """Nearest-neighbour enlarge tiny images (8x8 digits) by an integer factor so a PNG grid is legible."""
    factor = max(1, -(-min_size // max(int(x.shape[-1]), 1)))
    if factor == 1:
        return x
    return x.repeat_interleave(factor, dim=-1).repeat_interleave(factor, dim=-2)


def check_precision(precision: str, device: torch.device) -> None:
    """bf16 autocast on CPU and CUDA, fp16 (with a GradScaler) on CUDA only; fp32 everywhere."""
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"train.precision=fp16 needs CUDA (a GradScaler); on {device.type} use train.precision=bf16 or fp32"
        )
    if precision == "bf16" and device.type not in ("cpu", "cuda"):
        raise ValueError(f"train.precision=bf16 is supported on cpu and cuda, not {device.type}; use fp32")


def augment_lowres(
    lowres: Tensor, level: Tensor | float, schedule: Any, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Noise-conditioning augmentation (Ho et al. 2022, "Cascaded Diffusion Models"; Imagen):
    ``(alpha_s lowres + sigma_s eps, lam_s)`` at level ``s`` (a fraction of the schedule's time t,
    a scalar or (B,)). ``s = 0`` leaves ``lowres`` as it is (lam = +inf, which the network clamps)."""
    from ..diffusion._util import alpha_sigma, bcast

    b = lowres.shape[0]
    s = torch.as_tensor(level, dtype=torch.float32, device=lowres.device).expand(b)
    lam = torch.where(s > 0, schedule.lam(s.clamp_min(1e-6)).float(), torch.full_like(s, math.inf))
    a, sig = (bcast(v, lowres) for v in alpha_sigma(lam))
    eps = torch.randn(lowres.shape, generator=generator, device=lowres.device, dtype=lowres.dtype)
    return a * lowres + sig * eps, lam


def guided_denoiser(net: torch.nn.Module, cfg: RunConfig, guidance: float) -> tuple[Any, bool]:
    """(the denoiser of ``net`` under classifier-free guidance of weight ``guidance``, whether the net
    takes w as an input instead -- a guidance-distilled student, which is not wrapped): what sampling
    and DDIM inversion run."""
    from ..diffusion import cfg as cfg_guidance
    from ..diffusion import make_denoiser
    from ..nets import null_cond

    denoiser = make_denoiser(net, cfg.diffusion.parameterization)
    net_config = getattr(net, "config", None)
    takes_w = bool(getattr(net_config, "guidance_embed", False))
    if getattr(net_config, "droppable", ()) and guidance != 1.0 and not takes_w:
        denoiser = cfg_guidance(denoiser, guidance, null_cond)
    return denoiser, takes_w


@torch.no_grad()
def generate(
    net: torch.nn.Module,
    cfg: RunConfig,
    image_shape: tuple[int, ...],
    n: int,
    *,
    sampler: str | None = None,
    steps: int | None = None,
    spacing: str | None = None,
    guidance: float | None = None,
    labels: Tensor | None = None,
    prompts: list[str] | None = None,
    cond: dict[str, Tensor] | None = None,
    aug: float | None = None,
    threshold: str | None = None,
    threshold_quantile: float | None = None,
    known: Tensor | None = None,
    known_mask: Tensor | None = None,
    known_method: str = "reconstruction",
    known_weight: float = 2.0,
    noise: Tensor | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    batch_size: int | None = None,
    progress: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Draw ``n`` samples (float32 on the CPU, (n, *image_shape)) from ``net`` with the run's sampler.

    Arguments left None come from ``cfg.sample``. A class-conditional net samples ``labels``
    (default: ``arange(n) % num_classes``) with classifier-free guidance of weight ``guidance``
    (``uncond + w (cond - uncond)``; w = 1 is plain conditional sampling). The noise comes from a
    generator seeded with ``seed``, so the same seed gives the same samples on the same machine.
    A caption-conditioned net (:class:`difflab.nets.TextConditioned`) draws image i for
    ``prompts[i]`` (n prompts; guided the same way; none: unconditional samples).
    ``cond`` holds further per-sample conditions ((n, ...) tensors) such as a super-resolution
    stage's ``lowres``, which gets noise-conditioning augmentation at level ``aug`` (a fraction of
    t; None: ``sample.lowres_aug``) from the same generator. Guidance applies whenever the net
    takes a droppable condition (class, text, ...) and w != 1; ``threshold`` none|static|dynamic
    (None: ``sample.threshold``) acts on the guided prediction of x, dynamic thresholding at the
    ``threshold_quantile`` of |x| (None: ``sample.threshold_quantile``).
    ``known`` (n, *image_shape) with the bool ``known_mask`` (broadcastable to it) fixes coordinates
    of the samples, e.g. the first frames of a video (Ho et al. 2022): ``known_method``
    "reconstruction" (reconstruction guidance of weight ``known_weight``) or "replacement".
    ``noise`` (n, *image_shape) is the starting noise in place of a draw from the seeded generator
    (e.g. DDIM-inverted latents, :func:`difflab.diffusion.ddim_invert`); the generator still
    supplies any other randomness.
    ``batch_size`` None picks 500 on GPUs and, on CPUs, about 65536 / pixels (at most 500): larger
    CPU batches make activations so big that every allocation is a fresh ``mmap`` (measured: twice
    the wall time for 28x28 images at 500 per batch).
    """
    from ..diffusion import (
        dynamic_threshold,
        get_sampler,
        reconstruction_guidance,
        replacement,
        static_threshold,
    )
    from ..nets import keep_cond

    s = cfg.sample
    sampler, steps = sampler or s.sampler, steps or s.steps
    spacing = spacing or s.spacing
    guidance = s.guidance if guidance is None else guidance
    aug = s.lowres_aug if aug is None else aug
    threshold = s.threshold if threshold is None else threshold
    if threshold not in ("none", "static", "dynamic"):
        raise ValueError(f"threshold must be none, static or dynamic, got {threshold!r}")
    sample_fn = get_sampler(sampler)
    if (known is None) != (known_mask is None):
        raise ValueError("known and known_mask go together: give both or neither")
    if known is not None:
        if known_method not in ("reconstruction", "replacement"):
            raise ValueError(f"known_method must be reconstruction or replacement, got {known_method!r}")
        if tuple(known.shape) != (n, *image_shape):
            raise ValueError(f"known must be (n, *image_shape) = {(n, *image_shape)}, got {tuple(known.shape)}")
        known_mask = torch.as_tensor(known_mask, dtype=torch.bool).expand(known.shape)
    if noise is not None and tuple(noise.shape) != (n, *image_shape):
        raise ValueError(f"noise must be (n, *image_shape) = {(n, *image_shape)}, got {tuple(noise.shape)}")
    device = torch.device(device)
    schedule = make_schedule(cfg)
    lams = schedule.lams(steps, spacing)
    extra = dict(cond or {})
    for k, v in extra.items():
        if len(v) != n:
            raise ValueError(f"cond[{k!r}] holds {len(v)} items for {n} samples")
    num_classes = int(getattr(getattr(net, "config", None), "num_classes", 0) or 0)
    if prompts is not None:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not hasattr(net, "text_cond"):
            raise ValueError("prompts were given but the model is not caption-conditioned")
        if len(prompts) != n:
            raise ValueError(f"{len(prompts)} prompts for {n} samples: give one prompt per sample")
    if num_classes and labels is None:
        labels = torch.arange(n) % num_classes
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long).flatten()
        if not num_classes:
            raise ValueError("labels were given but the model is not class-conditional")
        if labels.numel() != n or int(labels.min()) < 0 or int(labels.max()) >= num_classes:
            raise ValueError(f"labels must be {n} class indices in 0..{num_classes - 1}")
    was_training = net.training
    net.eval()
    denoiser, takes_w = guided_denoiser(net, cfg, guidance)
    if threshold == "static":
        denoiser = static_threshold(denoiser)
    elif threshold == "dynamic":
        quantile = s.threshold_quantile if threshold_quantile is None else threshold_quantile
        denoiser = dynamic_threshold(denoiser, quantile)
    if batch_size is None:
        pixels = math.prod(image_shape[1:])
        batch_size = 500 if device.type != "cpu" else max(8, min(500, 65536 // max(pixels, 1)))
    gen = torch.Generator(device=device).manual_seed(seed)
    out = []
    try:
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            z = torch.randn((b, *image_shape), generator=gen, device=device)
            if noise is not None:
                z = noise[start : start + b].to(device=device, dtype=z.dtype)
            cond = {k: v[start : start + b].to(device) for k, v in extra.items()}
            if num_classes:
                cond = {**cond, "class": labels[start : start + b].to(device)}
            if prompts is not None:
                cond.update(net.text_cond(prompts[start : start + b]))
            cond = keep_cond(cond)
            guided = denoiser
            if known is not None:
                part = known[start : start + b].to(device), known_mask[start : start + b].to(device)
                guided = (
                    reconstruction_guidance(denoiser, *part, weight=known_weight, generator=gen)
                    if known_method == "reconstruction"
                    else replacement(denoiser, *part, generator=gen)
                )
            if "lowres" in cond:
                cond["lowres"], cond["aug_lam"] = augment_lowres(cond["lowres"].float(), aug, schedule, gen)
            cond = cond or None
            if takes_w:  # a guidance-distilled student takes w as an input (Meng et al. 2023)
                cond = {**(cond or {}), "guidance": torch.full((b,), float(guidance), device=device)}
            with autocast(device, precision):
                x = sample_fn(guided, z, lams, cond=cond, generator=gen, progress=progress, **s.options)
            out.append(x.float().cpu())
    finally:
        net.train(was_training)
    return torch.cat(out), labels


@torch.no_grad()
def invert(
    net: torch.nn.Module,
    cfg: RunConfig,
    x: Tensor,
    *,
    cond: dict[str, Tensor] | None = None,
    steps: int | None = None,
    spacing: str | None = None,
    guidance: float | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """The DDIM-inverted noise (float32, CPU) of samples ``x`` (n, *image_shape) under a stage:
    ``generate(net, cfg, shape, n, sampler="ddim", noise=z, cond=cond, steps=..., guidance=...)``
    with the same ``cond``, ``steps``, ``spacing`` and ``guidance`` returns about ``x``
    (:func:`difflab.diffusion.ddim_invert`; None: ``cfg.sample``'s). Guidance inverts the same
    guided prediction that sampling uses; no thresholding (it is not invertible)."""
    from ..diffusion import ddim_invert
    from ..nets import keep_cond

    s = cfg.sample
    steps, spacing = steps or s.steps, spacing or s.spacing
    guidance = s.guidance if guidance is None else guidance
    device = torch.device(device)
    extra = {k: v.to(device) for k, v in (cond or {}).items()}
    for k, v in extra.items():
        if len(v) != len(x):
            raise ValueError(f"cond[{k!r}] holds {len(v)} items for {len(x)} samples")
    was_training = net.training
    net.eval()
    denoiser, _ = guided_denoiser(net, cfg, guidance)
    try:
        lams = make_schedule(cfg).lams(steps, spacing)
        z = ddim_invert(denoiser, x.float().to(device), lams, cond=keep_cond(extra) or None)
    finally:
        net.train(was_training)
    return z.float().cpu()


@dataclass
class LoadedStage:
    """A diffusion stage restored from a run folder (or a checkpoint folder): what
    ``difflab.load`` returns for it. ``stage.sample(16, labels=...)`` draws images."""

    config: RunConfig
    net: torch.nn.Module
    meta: dict[str, Any]
    path: Path

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The shape of one sample (a video stage's clip, without the images it trained beside)."""
        return tuple(int(v) for v in self.meta.get("sample_shape", self.meta["image_shape"]))

    @property
    def conditions(self) -> tuple[str, ...]:
        """The condition keys the network takes (older checkpoints: class when it has classes)."""
        old = ("class",) if self.meta.get("num_classes") else ()
        return tuple(self.meta.get("conditions", old))

    def sample(self, n: int, **options: Any) -> Tensor:
        """``n`` samples (float32, CPU, padding cropped) on the device of the weights; ``options``
        as for :func:`generate` (sampler, steps, guidance, labels, cond, aug, noise, seed, ...)."""
        device = next(self.net.parameters()).device
        return crop_padding(
            generate(self.net, self.config, self.image_shape, n, device=device, **options)[0], self.config
        )

    def invert(self, x: Tensor, **options: Any) -> Tensor:
        """The DDIM-inverted noise of samples ``x`` (:func:`invert`; ``options``: cond, steps,
        spacing, guidance): ``sample(len(x), sampler="ddim", noise=z, ...)`` gives about ``x`` back."""
        if int(self.config.data.options.get("pad", 0) or 0) or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"invert takes samples of shape (n, *{self.image_shape}) of an unpadded stage")
        return invert(self.net, self.config, x, device=next(self.net.parameters()).device, **options)


def load_stage(path: str | Path, weights: str = "ema", device: torch.device | str = "cpu") -> LoadedStage:
    """Rebuild the network of a diffusion run and load its ``ema`` (default) or ``model`` weights."""
    return ImageDiffusion.load(path, weights, device)


class ImageDiffusion(Method):
    """Diffusion on images (or any arrays a data set yields): the trainer's default method.

    Data: ``data.name`` with ``data.options``, shrunk / paired with a low-resolution copy as
    ``data.shrink`` and ``data.lowres_factor`` say (:class:`difflab.data.Rescaled`). Network: the
    U-Net of ``model:`` (:class:`difflab.nets.UNetConfig`). Loss: :func:`difflab.diffusion.training_loss`
    with the ``diffusion:`` section, the batch's ``data.conditions`` keys as the condition.
    """

    name = "diffusion"
    sections = ("diffusion", "sample", "text")

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        self.schedule = make_schedule(cfg)
        self._grid_cond: dict[str, Tensor] = {}
        self._grid_prompts: list[str] | None = None
        self._text: Any = None
        self._shape: tuple[int, ...] | None = None

    def text_encoder(self) -> Any:
        """The ``text:`` section's encoder (built once; a caption-conditioned stage's network holds it)."""
        if self._text is None:
            from ..nets import get_text_encoder

            self._text = get_text_encoder(self.cfg.text.spec())
        return self._text

    def dataset(self, split: str = "train") -> Any:
        from ..data import Rescaled, get_dataset

        d = self.cfg.data
        options = dict(d.options)
        if d.name == "image-folder" and "size" not in options:  # inferred: a size the U-Net takes
            options.setdefault("size_multiple", self.size_multiple())
        data = get_dataset(d.name, split, **options)
        for key, value in getattr(data, "inferred", {}).items():  # written to config.yaml: the same images later
            d.options.setdefault(key, value)
        data = self.add_conditions(data, split)
        if d.shrink > 1 or d.lowres_factor >= 1:
            data = Rescaled(data, d.shrink, d.lowres_factor)
        if d.image_frames > 0:
            from ..data import AppendImageFrames

            if data[0][0].ndim != 4:
                raise ValueError(f"data.image_frames needs video data (C, F, H, W); {d.name!r} yields images")
            data = AppendImageFrames(data, d.image_frames, seed=self.cfg.train.seed)
        missing = [k for k in d.conditions if k not in getattr(data, "cond_keys", ())]
        if missing:
            hint = " (vector: the CLIP image embedding that method unclip-decoder adds)" if "vector" in missing else ""
            raise ValueError(
                f"data.conditions asks for {', '.join(missing)}, but data set {d.name!r} provides only "
                f"{', '.join(getattr(data, 'cond_keys', ())) or 'no conditions'}{hint}"
            )
        return data

    def add_conditions(self, data: Any, split: str) -> Any:
        """The data set with conditions computed from its full-resolution items (before ``data.shrink``);
        plain diffusion adds none. An unCLIP decoder adds each image's CLIP embedding (``vector``)."""
        return data

    def size_multiple(self) -> int:
        """What an image's side must divide by: ``2 ** num_down`` of the U-Net, times ``data.shrink``
        (and a multiple of ``data.lowres_factor`` after shrinking)."""
        from ..nets import UNetConfig

        d = self.cfg.data
        down = 2 ** from_dict(UNetConfig, self.cfg.model, "model").num_down
        return d.shrink * math.lcm(down, max(1, d.lowres_factor))

    def resolve_model_config(self, dataset: Any) -> dict[str, Any]:
        x, cond = dataset[0]
        try:
            num_classes = dataset.info.num_classes
        except (AttributeError, NotImplementedError):
            num_classes = None
        lowres = int(cond["lowres"].shape[0]) if "lowres" in cond else 0
        text = self.text_encoder() if "caption" in self.cfg.data.conditions else None
        vector = int(cond["vector"].shape[-1]) if "vector" in cond else 0
        return resolve_model_config(self.cfg, int(x.shape[0]), num_classes, lowres, text, vector)

    def build(self, model_config: dict[str, Any]) -> torch.nn.Module:
        from ..nets import TextConditioned, UNet
        from ..nets.diffusers_unet import DiffusersUNet, is_diffusers_config

        if is_diffusers_config(model_config):  # a wrapped diffusers UNet2DModel (a distilled student of one)
            return DiffusersUNet.from_model_config(model_config)
        unet = UNet(model_config)
        return TextConditioned(unet, self.text_encoder()) if "caption" in self.cfg.data.conditions else unet

    def network_cond(self, cond: dict[str, Any], device: torch.device) -> dict[str, Any]:
        """The batch's ``data.conditions`` as the network takes them: captions become token ids
        (``text``, ``text_mask``) that the network's text encoder embeds; the rest pass unchanged."""
        keys = (*self.cfg.data.conditions, *(("frame_is_image",) if "frame_is_image" in cond else ()))
        cond = {k: cond[k] for k in keys}
        if "caption" in cond:
            ids, mask = self.text_encoder().tokenizer(cond.pop("caption"))
            cond["text"], cond["text_mask"] = ids.to(device), mask.to(device)
        return cond

    def loss(self, net: Any, x: Tensor, cond: dict[str, Tensor], generator: torch.Generator) -> Tensor:
        from ..diffusion import training_loss

        d = self.cfg.diffusion
        cond = self.network_cond(cond, x.device)
        if "lowres" in cond and d.lowres_aug > 0:
            level = d.lowres_aug * torch.rand(x.shape[0], generator=generator, device=x.device)
            if d.lowres_aug_clean > 0:
                clean = torch.rand(x.shape[0], generator=generator, device=x.device) < d.lowres_aug_clean
                level = level.masked_fill(clean, 0.0)
            cond["lowres"], cond["aug_lam"] = augment_lowres(cond["lowres"], level, self.schedule, generator)
        return training_loss(
            net, x, self.schedule, parameterization=d.parameterization, weighting=d.weighting, norm=d.norm,
            time_sampling=d.time_sampling, n_discrete=d.n_discrete, gamma=d.gamma, cond=cond or None,
            generator=generator,
        )  # fmt: skip

    def sample_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape samples are drawn at: the data's, less a video stage's appended image frames."""
        k = self.cfg.data.image_frames
        return (data_shape[0], data_shape[1] - k, *data_shape[2:]) if k else tuple(data_shape)

    def meta(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.name}
        lowres = self._grid_cond.get("lowres")  # a super-resolution stage records what it up-samples
        if lowres is not None:
            out["lowres_shape"] = list(lowres.shape[1:])
        if self._shape is not None and self.cfg.data.image_frames:
            out["sample_shape"] = list(self._shape)
        return out

    def attach(self, trainer: Any) -> None:
        """Keep the ``lowres`` / ``vector`` inputs and captions of the first ``sample.n`` training
        items for the sample grids."""
        self._shape = self.sample_shape(tuple(trainer.image_shape))
        conditions = self.cfg.data.conditions
        if {"lowres", "vector", "caption"} & set(conditions):
            from ..data import collate

            n = min(self.cfg.sample.n, len(trainer.dataset))
            first = collate([trainer.dataset[i] for i in range(n)])[1]
            self._grid_cond = {k: first[k] for k in ("lowres", "vector") if k in conditions}
            self._grid_prompts = list(first["caption"]) if "caption" in conditions else None

    def sample_grid(self, trainer: Any, monitor: Any = None) -> Path | None:
        """Sample ``sample.n`` images with the EMA weights and write ``samples/step_NNNNNNN.png``."""
        from ..data import make_grid, save_grid

        cfg, n = self.cfg, self.cfg.sample.n
        cond = {k: v[:n] for k, v in self._grid_cond.items()}
        n = min(n, *(len(v) for v in cond.values())) if cond else n
        prompts = self._grid_prompts[:n] if self._grid_prompts is not None else None
        n = min(n, len(prompts)) if prompts is not None else n
        x, _ = generate(
            trainer.ema.module, cfg, self.sample_shape(tuple(trainer.image_shape)), n, cond=cond or None,
            prompts=prompts,
            seed=mix_seed(cfg.train.seed, _SAMPLE), device=trainer.device, precision=cfg.train.precision,
        )  # fmt: skip
        x = upscale_for_grid(crop_padding(x, cfg))
        classes = trainer.num_classes if "class" in cfg.data.conditions else 0
        nrow = classes or max(1, round(math.sqrt(n)))
        if x.ndim == 5:  # video: one row of frames per clip
            nrow, x = x.shape[2], x.transpose(1, 2).flatten(0, 1)
        path = save_grid(x, trainer.run_dir / "samples" / f"step_{trainer.step:07d}.png", nrow=nrow)
        if monitor is not None:
            monitor.image("samples", make_grid(x, nrow=nrow), trainer.step)
        return path

    @classmethod
    def load(cls, path: str | Path, weights: str = "ema", device: Any = "cpu") -> LoadedStage:
        from ..config import load_yaml
        from .checkpoint import checkpoint_path

        where = checkpoint_path(path)
        try:
            cfg = RunConfig.from_dict(load_yaml(where / "config.yaml"))
        except (ValueError, FileNotFoundError) as e:
            raise CheckpointError(f"{where / 'config.yaml'}: {e}") from None
        method = cls(dataclasses.replace(cfg, method=""))  # the network of any diffusion stage
        net, meta, ckpt_dir = load_network(where, method.build, weights, method=cls.name)
        if "image_shape" not in meta:
            raise CheckpointError(
                f"{ckpt_dir / 'format.json'}: missing 'image_shape'; not a difflab training checkpoint"
            )
        return LoadedStage(cfg, net.to(device), meta, ckpt_dir)
