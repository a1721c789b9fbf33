"""A trained *stage*: network + diffusion process, built from a run config, sampled and reloaded.

The trainer and the ``difflab sample`` / ``difflab eval`` commands share these functions, so a
sample grid drawn during training and one drawn later from the checkpoint are the same code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import unknown_key_message
from .checkpoint import CheckpointError, load_checkpoint, load_into
from .config import RunConfig

CHECKPOINT_DIR = "checkpoint"


def resolve_model_config(cfg: RunConfig, channels: int, num_classes: int | None) -> dict[str, Any]:
    """The UNet config dict of a run: ``cfg.model`` plus what the data and diffusion fix.

    Fills in ``in_channels`` (data channels), ``out_channels`` (``output_channels`` of the
    parameterization), and for a conditional run ``num_classes`` and ``cond_drop: {class: p}``.
    A value set in ``cfg.model`` that contradicts them is a ValueError.
    """
    from ..diffusion import output_channels
    from ..nets import UNetConfig

    valid = [f for f in UNetConfig.__dataclass_fields__]
    for key in cfg.model:
        if key not in valid:
            raise ValueError(unknown_key_message(key, valid, "model"))
    fixed: dict[str, Any] = {
        "in_channels": channels,
        "out_channels": output_channels(cfg.diffusion.parameterization, channels),
    }
    if cfg.data.conditional:
        if not num_classes:
            raise ValueError(f"data.conditional is true but dataset {cfg.data.name!r} has no class labels")
        fixed["num_classes"] = int(num_classes)
        fixed["cond_drop"] = {"class": cfg.train.cond_drop} if cfg.train.cond_drop > 0 else {}
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
    ``batch_size`` None picks 500 on GPUs and, on CPUs, about 65536 / pixels (at most 500): larger
    CPU batches make activations so big that every allocation is a fresh ``mmap`` (measured: twice
    the wall time for 28x28 images at 500 per batch).
    """
    from ..diffusion import cfg as cfg_guidance
    from ..diffusion import get_sampler, make_denoiser
    from ..nets import keep_cond, null_cond

    s = cfg.sample
    sampler, steps = sampler or s.sampler, steps or s.steps
    spacing = spacing or s.spacing
    guidance = s.guidance if guidance is None else guidance
    sample_fn = get_sampler(sampler)
    device = torch.device(device)
    lams = make_schedule(cfg).lams(steps, spacing)
    num_classes = int(getattr(getattr(net, "config", None), "num_classes", 0) or 0)
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
    denoiser = make_denoiser(net, cfg.diffusion.parameterization)
    takes_w = bool(getattr(getattr(net, "config", None), "guidance_embed", False))
    if num_classes and guidance != 1.0 and not takes_w:
        denoiser = cfg_guidance(denoiser, guidance, null_cond)
    if batch_size is None:
        pixels = math.prod(image_shape[1:])
        batch_size = 500 if device.type != "cpu" else max(8, min(500, 65536 // max(pixels, 1)))
    gen = torch.Generator(device=device).manual_seed(seed)
    out = []
    try:
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            z = torch.randn((b, *image_shape), generator=gen, device=device)
            cond = keep_cond({"class": labels[start : start + b].to(device)}) if num_classes else None
            if takes_w:  # a guidance-distilled student takes w as an input (Meng et al. 2023)
                cond = {**(cond or {}), "guidance": torch.full((b,), float(guidance), device=device)}
            with autocast(device, precision):
                x = sample_fn(denoiser, z, lams, cond=cond, generator=gen, progress=progress, **s.options)
            out.append(x.float().cpu())
    finally:
        net.train(was_training)
    return torch.cat(out), labels


@dataclass
class LoadedStage:
    """A network restored from a run folder (or a checkpoint folder) for sampling."""

    config: RunConfig
    net: torch.nn.Module
    meta: dict[str, Any]
    path: Path

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.meta["image_shape"])


def checkpoint_path(path: str | Path) -> Path:
    """The checkpoint folder of a run folder (``RUN/checkpoint``), or ``path`` if it is one."""
    p = Path(path)
    if (p / "format.json").is_file():
        return p
    if (p / CHECKPOINT_DIR / "format.json").is_file():
        return p / CHECKPOINT_DIR
    if not p.exists():
        raise FileNotFoundError(f"run folder not found: {p}")
    raise CheckpointError(f"{p}: no checkpoint here (expected {p / CHECKPOINT_DIR / 'format.json'})")


def load_stage(path: str | Path, weights: str = "ema", device: torch.device | str = "cpu") -> LoadedStage:
    """Rebuild the network of a run and load its ``ema`` (default) or ``model`` weights."""
    from ..nets import UNet

    ckpt_dir = checkpoint_path(path)
    ckpt = load_checkpoint(ckpt_dir, with_state=False)
    try:
        cfg = RunConfig.from_dict(ckpt.config)
    except ValueError as e:
        raise CheckpointError(f"{ckpt_dir / 'config.yaml'}: {e}") from None
    for key in ("model_config", "image_shape"):
        if key not in ckpt.meta:
            raise CheckpointError(f"{ckpt_dir / 'format.json'}: missing {key!r}; not a difflab training checkpoint")
    net = UNet(ckpt.meta["model_config"])
    if weights == "ema":
        if ckpt.ema is None:
            raise CheckpointError(f"{ckpt_dir / 'ema.safetensors'}: file not found (use the model weights instead)")
        load_into(net, ckpt.ema, ckpt_dir / "ema.safetensors")
    elif weights == "model":
        load_into(net, ckpt.model, ckpt_dir / "model.safetensors")
    else:
        raise ValueError(f"unknown weights {weights!r}; valid: ema, model")
    return LoadedStage(cfg, net.to(device).eval(), ckpt.meta, ckpt_dir)
