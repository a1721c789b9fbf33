"""The typed run config: one YAML recipe describes a whole training run (docs/design.md, "Conventions").

Sections: ``model`` (a dict for :class:`difflab.nets.UNetConfig`), ``data``, ``diffusion``,
``text``, ``clip``, ``train`` and ``sample``. Every key is checked (a typo names the valid keys) and every value is
type-checked and range-checked here, before any data is read or weight allocated::

    cfg = load_run_config("configs/digits.yaml", ["train.steps=500", "train.lr=1e-3"])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..config import ConfigKeyError, apply_overrides, from_dict, load_yaml, to_dict

if TYPE_CHECKING:
    import argparse

Decay = Literal["none", "linear", "cosine"]
Precision = Literal["fp32", "bf16", "fp16"]
Device = Literal["auto", "cpu", "cuda", "mps"]


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(f"invalid run config: {message}")


@dataclass
class DataConfig:
    """What to train on. ``batch_size`` is per process and per micro-step: the batch of one
    optimizer step is ``batch_size * train.grad_accum * world_size``.

    ``options`` go to ``difflab.data.get_dataset(name, "train", **options)`` (e.g. ``pad: 4``).
    ``conditions`` are the condition keys of the data the model is conditioned on, e.g.
    ``[class]`` (class-conditional), ``[class, lowres]`` (a super-resolution stage), ``[caption]``
    (text-to-image: captions, encoded by the ``text:`` section's encoder) or ``[vector]`` (an unCLIP
    decoder: the CLIP image embedding of each image, added by method ``unclip-decoder`` from the
    ``clip:`` section's model); the data set must provide them. ``shrink`` > 1 trains on the images
    shrunk by that factor (a cascade's base stage); ``lowres_factor`` > 1 adds ``lowres``, the training
    image shrunk by that factor more.
    ``image_frames`` > 0 (video data sets) appends that many independent frames of other videos to
    every clip as images (joint image-video training, Ho et al. 2022: the temporal attention keeps
    each to itself, through the ``frame_is_image`` condition); samples are clips without them.
    """

    name: str = "digits"
    options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 128
    conditions: tuple[Literal["class", "lowres", "caption", "vector"], ...] = ()
    shrink: int = 1
    lowres_factor: int = 0
    num_workers: int = 0
    image_frames: int = 0

    def __post_init__(self) -> None:
        _need(self.image_frames >= 0, f"data.image_frames must be >= 0, got {self.image_frames}")
        _need(self.batch_size >= 1, f"data.batch_size must be >= 1, got {self.batch_size}")
        _need(self.num_workers >= 0, f"data.num_workers must be >= 0, got {self.num_workers}")
        _need(self.shrink >= 1, f"data.shrink must be >= 1, got {self.shrink}")
        _need(self.lowres_factor >= 0, f"data.lowres_factor must be >= 0 (0: none), got {self.lowres_factor}")
        _need(len(set(self.conditions)) == len(self.conditions), f"data.conditions repeats a key: {self.conditions}")
        _need(
            ("lowres" in self.conditions) == (self.lowres_factor >= 1),
            "data.conditions has 'lowres' exactly when data.lowres_factor is set (>= 1)",
        )


@dataclass
class TextConfig:
    """The text encoder of a caption-conditioned stage (``data.conditions`` has ``caption``).

    ``encoder``: ``minilm`` (the frozen pretrained all-MiniLM-L6-v2 of the ``text`` extra),
    ``pretrained`` (any frozen Hugging Face encoder, e.g. T5, from the folder ``path``), ``scratch``
    (a small transformer of ``dim`` x ``layers`` x ``heads`` trained jointly with the diffusion
    model) or ``clip`` (the text tower of a CLIP run, frozen: ``path`` is the run folder or its
    ``text_encoder.safetensors``).
    Captions are cut to ``max_tokens`` tokens (with a warning).
    """

    encoder: Literal["minilm", "pretrained", "scratch", "clip"] = "minilm"
    path: str = ""
    max_tokens: int = 32
    dim: int = 128
    layers: int = 2
    heads: int = 4

    def __post_init__(self) -> None:
        _need(self.max_tokens >= 1, f"text.max_tokens must be >= 1, got {self.max_tokens}")
        for k in ("dim", "layers", "heads"):
            _need(getattr(self, k) >= 1, f"text.{k} must be >= 1, got {getattr(self, k)}")
        _need(self.dim % self.heads == 0, f"text.dim ({self.dim}) must be a multiple of text.heads ({self.heads})")
        _need(
            bool(self.path) or self.encoder not in ("pretrained", "clip"),
            f"text.encoder={self.encoder} needs text.path (a Hugging Face folder or a text-encoder file)",
        )

    def spec(self) -> dict[str, Any]:
        """The argument of :func:`difflab.nets.get_text_encoder` for this section."""
        spec: dict[str, Any] = {"kind": self.encoder, "max_tokens": self.max_tokens}
        if self.encoder in ("pretrained", "clip"):
            spec["path"] = self.path
        if self.encoder == "scratch":
            spec.update(dim=self.dim, layers=self.layers, heads=self.heads)
        return spec


@dataclass
class ClipConfig:
    """The CLIP model an unCLIP part is built on (Ramesh et al. 2022): ``path``, a CLIP run or
    exported folder (``method: clip``). An ``unclip-decoder`` is conditioned on its image
    embeddings; an ``unclip-prior`` predicts them from its text embeddings. Both record the model's
    identity, so a prior and a decoder built on different CLIP models are refused together."""

    path: str = ""


@dataclass
class DiffusionConfig:
    """The diffusion process and loss (docs/math.md sections 1 and 2).

    ``schedule`` and ``schedule_options`` go to ``difflab.diffusion.get_schedule``;
    ``parameterization`` eps|x|v|both; ``weighting`` snr|truncated-snr|snr+1|min-snr|constant;
    ``norm`` l2|l1; ``time_sampling`` continuous|discrete (``n_discrete`` levels);
    ``gamma`` is the min-SNR gamma (Hang et al. 2023). ``lowres_aug`` is noise-conditioning
    augmentation of a super-resolution stage: its ``lowres`` input is noised to a level drawn
    uniformly in [0, lowres_aug] (a fraction of the schedule's time t) and the level is given to the
    network (0: the input stays clean). ``lowres_aug_clean`` is the fraction of each batch left clean
    (level 0), so that the stage also learns to trust a clean input.
    """

    schedule: str = "cosine"
    schedule_options: dict[str, Any] = field(default_factory=dict)
    parameterization: Literal["eps", "x", "v", "both"] = "v"
    weighting: Literal["snr", "truncated-snr", "snr+1", "min-snr", "constant"] = "snr+1"
    norm: Literal["l2", "l1"] = "l2"
    time_sampling: Literal["continuous", "discrete"] = "continuous"
    n_discrete: int = 1000
    gamma: float = 5.0
    lowres_aug: float = 0.0
    lowres_aug_clean: float = 0.0

    def __post_init__(self) -> None:
        _need(self.n_discrete >= 1, f"diffusion.n_discrete must be >= 1, got {self.n_discrete}")
        _need(self.gamma > 0, f"diffusion.gamma must be > 0, got {self.gamma}")
        _need(0.0 <= self.lowres_aug <= 1.0, f"diffusion.lowres_aug must lie in [0, 1], got {self.lowres_aug}")
        _need(
            0.0 <= self.lowres_aug_clean <= 1.0,
            f"diffusion.lowres_aug_clean must lie in [0, 1], got {self.lowres_aug_clean}",
        )


@dataclass
class TrainConfig:
    """Optimisation (AdamW), precision, device, seed and the logging / sampling / checkpoint cadence.

    The learning rate warms up linearly over ``warmup`` steps, then follows ``decay`` down to
    ``final_lr_ratio * lr`` at ``steps``. ``grad_clip`` 0 turns clipping off (the norm is still
    logged). ``ema_decay`` 0 makes the EMA a copy of the weights; with ``ema_warmup`` the decay at
    update t is ``min(ema_decay, (1 + t) / (10 + t))``. ``cond_drop`` is the probability of
    dropping the class label (classifier-free guidance; used when ``data.conditions`` has ``class``).
    ``sample_every`` / ``ckpt_every`` / ``log_every`` 0 means only at the end. ``threads`` > 0 fixes
    ``torch.set_num_threads``; 0 (the default) uses as many threads as the cores other processes leave
    free, re-measured every few seconds (:mod:`difflab.threads`: on a shared CPU a thread per core
    would wait on the cores that others hold). ``init`` starts a new run from the weights of another run, checkpoint
    or exported model folder (its EMA weights when it has them) or a ``.safetensors`` file, with a
    fresh optimizer: e.g. to continue on a CPU a model trained elsewhere whose optimizer state was
    not kept. ``--resume`` ignores it. With ``init_strict: false`` the tensors whose names and shapes
    match are loaded and the others keep their fresh initialisation (a model that gains a condition,
    e.g. an unCLIP decoder given captions); the trainer prints what was new and what was left out.
    """

    steps: int = 2000
    lr: float = 2e-4
    warmup: int = 0
    decay: Decay = "none"
    final_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 1.0
    grad_accum: int = 1
    ema_decay: float = 0.999
    ema_warmup: bool = True
    precision: Precision = "fp32"
    device: Device = "auto"
    seed: int = 0
    log_every: int = 50
    sample_every: int = 1000
    ckpt_every: int = 1000
    cond_drop: float = 0.1
    threads: int = 0
    progress: bool = True
    init: str = ""
    init_strict: bool = True

    def __post_init__(self) -> None:
        _need(self.steps >= 1, f"train.steps must be >= 1, got {self.steps}")
        _need(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        _need(0 <= self.warmup, f"train.warmup must be >= 0, got {self.warmup}")
        _need(0.0 <= self.final_lr_ratio <= 1.0, f"train.final_lr_ratio must lie in [0, 1], got {self.final_lr_ratio}")
        _need(self.weight_decay >= 0, f"train.weight_decay must be >= 0, got {self.weight_decay}")
        _need(all(0.0 <= b < 1.0 for b in self.betas), f"train.betas must lie in [0, 1), got {list(self.betas)}")
        _need(self.grad_clip >= 0, f"train.grad_clip must be >= 0 (0: off), got {self.grad_clip}")
        _need(self.grad_accum >= 1, f"train.grad_accum must be >= 1, got {self.grad_accum}")
        _need(0.0 <= self.ema_decay < 1.0, f"train.ema_decay must lie in [0, 1), got {self.ema_decay}")
        _need(self.seed >= 0, f"train.seed must be >= 0, got {self.seed}")
        for k in ("log_every", "sample_every", "ckpt_every"):
            _need(getattr(self, k) >= 0, f"train.{k} must be >= 0 (0: only at the end), got {getattr(self, k)}")
        _need(self.threads >= 0, f"train.threads must be >= 0 (0: torch's default), got {self.threads}")
        _need(0.0 <= self.cond_drop <= 1.0, f"train.cond_drop must lie in [0, 1], got {self.cond_drop}")


@dataclass
class SampleConfig:
    """How the trainer's sample grids (and ``difflab sample`` by default) are drawn.

    ``sampler`` ddpm|ddim|dpmpp_2m|heun with ``steps`` steps on a grid uniform in ``spacing``
    (t or lam); ``guidance`` is the CFG weight w (``uncond + w (cond - uncond)``; 1 = plain
    conditional), used when the model is conditional; ``n`` images per grid; ``options`` go to
    the sampler (e.g. ``eta``). ``threshold`` none|static|dynamic acts on the (guided) prediction
    of x at every step: static clips it to [-1, 1], dynamic (Imagen) divides by the per-sample
    ``threshold_quantile`` of |x| when that exceeds 1 and clips.
    """

    sampler: Literal["ddpm", "ddim", "dpmpp_2m", "heun"] = "ddim"
    steps: int = 50
    spacing: Literal["t", "lam"] = "t"
    guidance: float = 1.0
    n: int = 64
    options: dict[str, Any] = field(default_factory=dict)
    lowres_aug: float = 0.0
    threshold: Literal["none", "static", "dynamic"] = "none"
    threshold_quantile: float = 0.995

    def __post_init__(self) -> None:
        _need(self.steps >= 1, f"sample.steps must be >= 1, got {self.steps}")
        _need(
            0.0 < self.threshold_quantile <= 1.0,
            f"sample.threshold_quantile must lie in (0, 1], got {self.threshold_quantile}",
        )
        _need(self.n >= 1, f"sample.n must be >= 1, got {self.n}")
        _need(0.0 <= self.lowres_aug <= 1.0, f"sample.lowres_aug must lie in [0, 1], got {self.lowres_aug}")


@dataclass
class RunConfig:
    """A whole training run: ``out_dir/name`` is the run folder unless ``--out`` says otherwise.

    ``method`` names the :class:`difflab.train.Method` that trains it (diffusion, ardm, wavegrad;
    empty: diffusion, or the method of the command or function that runs the recipe, such as
    ``difflab ardm-train``); ``model`` is that method's typed network config, checked by the method.
    """

    name: str = "run"
    out_dir: str = "runs"
    method: str = ""
    model: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RunConfig:
        data = dict(data or {}) if isinstance(data, dict) or data is None else data
        section = data.get("data") if isinstance(data, dict) else None
        if isinstance(section, dict) and "conditional" in section:  # recipes and runs of difflab <= 0.1
            section = dict(section)
            flag = section.pop("conditional")
            section.setdefault("conditions", ["class"] if flag else [])
            data["data"] = section
        return from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


def load_run_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML recipe, apply ``key.sub=value`` overrides, and check it (errors name the file, or the
    override that set a bad key)."""
    data = load_yaml(path)
    try:
        data = apply_overrides(data, overrides)
    except ConfigKeyError as e:  # a key of the file that holds no section (or of an earlier override)
        raise e.located(path) from None
    try:
        return RunConfig.from_dict(data)
    except ConfigKeyError as e:
        raise e.located(path, overrides) from None
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def config_from_args(args: argparse.Namespace) -> tuple[RunConfig, Path]:
    """The run config and run folder of a train command: ``args.config`` with ``args.overrides`` and
    the ``--seed`` / ``--device`` / ``--no-progress`` flags (those a command has), ``--out`` or the
    config's own ``out_dir/name``. Shared by ``train``, ``ardm-train`` and ``wavegrad-train``."""
    overrides = list(args.overrides)
    if getattr(args, "seed", None) is not None:
        overrides.append(f"train.seed={args.seed}")
    if getattr(args, "device", None):
        overrides.append(f"train.device={args.device}")
    if getattr(args, "no_progress", False):
        overrides.append("train.progress=false")
    cfg = load_run_config(args.config, overrides)
    run_dir = Path(args.out) if args.out else cfg.run_dir
    cfg.out_dir, cfg.name = str(run_dir.parent), run_dir.name  # the run folder's config.yaml points at itself
    return cfg, run_dir
