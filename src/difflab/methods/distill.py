"""Progressive distillation (Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of
Diffusion Models", Algorithm 2; docs/math.md section 5), with guided distillation (Meng et al. 2023,
"On Distillation of Guided Diffusion Models").

A student with N DDIM steps learns to do in one step what its teacher does in two: from
``z_t`` at ``t = i / N`` the teacher takes DDIM steps to ``t' = t - 0.5 / N`` and
``t'' = t - 1 / N``; the student's target is the ``x`` for which one DDIM step from ``z_t`` lands
exactly on the teacher's ``z_t''``::

    x_tilde = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t)

(at ``t'' = 0`` the grid's last point is ``lam = +inf`` and ``x_tilde`` is the teacher's second
``x_hat``). The loss is ``w(lam_t) ||x_tilde - x_hat_student(z_t)||^2`` with the truncated-SNR or
SNR+1 weighting; the learning rate falls linearly to 0 within each halving; then the student
becomes the teacher and N halves, down to the requested step count.

Guidance. A class-conditional teacher can be distilled *guided*: its ``x_hat`` is
``x_u + w (x_c - x_u)`` (one batched call). With a fixed ``w`` the student learns that guided
sampler and is then sampled without guidance. With a range of ``w`` the student takes ``w`` as an
input (``UNetConfig.guidance_embed``; ``cond["guidance"]``) and each example draws its own ``w``
(Meng et al.); in the first halving the teacher is the CFG teacher, later ones are the previous
w-conditioned student. Meng et al. first distil the guided teacher into a w-conditioned model at
the same step count and then halve; difflab merges that stage into the first halving (one
less pass; the target is the same guided two-step DDIM).

    from difflab.methods.distill import DistillConfig, distill
    stages = distill("runs/digits", "runs/digits-distilled", DistillConfig(from_steps=256, to_steps=4))
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import from_dict, to_dict
from ..diffusion import cfg as cfg_guidance
from ..diffusion import diffusion_loss, make_denoiser
from ..diffusion._util import alpha_sigma, bcast
from ..nets.diffusers_unet import diffusers_student_config, is_diffusers_config
from ..train.checkpoint import CHECKPOINT_DIR
from ..train.config import RunConfig
from ..train.stage import ImageDiffusion, LoadedStage
from ..train.trainer import Trainer, TrainResult
from . import load

DISTILL_WEIGHTINGS = ("truncated-snr", "snr+1")


# -- the math ------------------------------------------------------------------------------
def _ddim_to(z: Tensor, x_hat: Tensor, lam_t: Tensor, lam_s: Tensor) -> Tensor:
    """Deterministic DDIM step with per-sample log-SNRs (B,) (Song et al. 2021, eq. 12)."""
    a_t, s_t = (bcast(v, z) for v in alpha_sigma(lam_t))
    a_s, s_s = (bcast(v, z) for v in alpha_sigma(lam_s))
    return a_s * x_hat + (s_s / s_t) * (z - a_t * x_hat)


def distillation_target(
    teacher: Callable[[Tensor, Tensor, Any], Tensor],
    z: Tensor,
    lam_t: Tensor,
    lam_mid: Tensor,
    lam_s: Tensor,
    cond: Any = None,
) -> Tensor:
    """Algorithm 2's ``x_tilde``: two teacher DDIM steps ``lam_t -> lam_mid -> lam_s``, inverted
    through one DDIM step ``lam_t -> lam_s``. ``teacher`` is a denoiser ``f(z, lam, cond) -> x_hat``;
    ``lam_s`` may be ``+inf`` (the final, denoising step)."""
    x1 = teacher(z, lam_t, cond)
    z1 = _ddim_to(z, x1, lam_t, lam_mid)
    x2 = teacher(z1, lam_mid, cond)
    z2 = _ddim_to(z1, x2, lam_mid, lam_s)
    a_t, s_t = (bcast(v, z) for v in alpha_sigma(lam_t))
    a_s, s_s = (bcast(v, z) for v in alpha_sigma(lam_s))
    ratio = s_s / s_t
    return (z2 - ratio * z) / (a_s - ratio * a_t)


def student_grid(schedule: Any, n: int) -> Tensor:
    """(3, n) float64 log-SNRs of ``t = i / n``, ``t - 0.5 / n`` and ``t - 1 / n`` for ``i`` = 1..n;
    ``t = 0`` maps to ``+inf``, as in the samplers' grids (``Schedule.lams``). A table, so that
    drawing ``i`` on a GPU needs no copy back to the host."""
    i = torch.arange(1, n + 1, dtype=torch.float64)
    t = torch.stack([i / n, (i - 0.5) / n, (i - 1.0) / n])
    return torch.where(t <= 0, math.inf, schedule.lam(t).to(torch.float64))


def distillation_loss(
    student: Callable[[Tensor, Tensor, Any], Tensor],
    teacher: Callable[[Tensor, Tensor, Any], Tensor],
    x: Tensor,
    schedule: Any,
    n_student: int,
    parameterization: str,
    weighting: str = "truncated-snr",
    cond: Any = None,
    generator: torch.Generator | None = None,
    start_from_noise: bool = False,
) -> Tensor:
    """One Monte Carlo estimate of the distillation loss (a scalar) on a batch of data ``x``.

    ``student`` is the raw network ``net(z, lam, cond)`` with ``parameterization``; ``teacher`` a
    denoiser (already guided, if it should be). ``t = i / n_student`` with ``i`` uniform in 1..N.
    ``start_from_noise``: the sampler starts at ``t = 1`` from pure noise even though that level keeps
    some signal (WaveGrad's few-step schedules: Algorithm 2 starts from N(0, I) at a level whose alpha
    is far from 0); examples drawn at ``i = N`` then start from pure noise as well, so the student learns
    the map it will be asked for. For schedules whose ``t = 1`` has alpha ~ 0 it changes nothing.
    """
    if weighting not in DISTILL_WEIGHTINGS:
        raise ValueError(
            f"weighting {weighting!r} cannot distil (zero weight at SNR 0); valid: {', '.join(DISTILL_WEIGHTINGS)}"
        )
    b = x.shape[0]
    i = torch.randint(1, n_student + 1, (b,), generator=generator, device=x.device)
    lam_t, lam_mid, lam_s = student_grid(schedule, n_student).to(x.device, x.dtype)[:, i - 1]
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    a_t, s_t = (bcast(v, x) for v in alpha_sigma(lam_t))
    z = a_t * x + s_t * eps
    if start_from_noise:
        z = torch.where(bcast(i == n_student, z), eps, z)
    with torch.no_grad():
        x_tilde = distillation_target(teacher, z, lam_t, lam_mid, lam_s, cond).to(x.dtype)
    eps_tilde = (z - a_t * x_tilde) / s_t
    out = student(z, lam_t, cond)
    return diffusion_loss(out, x_tilde, eps_tilde, z, lam_t, parameterization, weighting).mean()


# -- configuration ---------------------------------------------------------------------------
def halvings(from_steps: int, to_steps: int) -> list[int]:
    """The student step counts ``from_steps / 2, ..., to_steps``; a ValueError names the valid targets."""
    if from_steps < 2 or from_steps & (from_steps - 1):
        raise ValueError(f"from_steps must be a power of two >= 2 (e.g. 256), got {from_steps}")
    valid = [from_steps >> k for k in range(1, from_steps.bit_length())]
    if to_steps not in valid:
        raise ValueError(
            f"cannot distil {from_steps} teacher steps to {to_steps}: each halving divides the steps by 2, "
            f"so --to-steps must be one of {', '.join(map(str, valid))}"
        )
    return valid[: valid.index(to_steps) + 1]


@dataclass
class DistillConfig:
    """Settings of a progressive distillation (defaults: the paper's, sized for a CPU).

    ``from_steps`` is the teacher's DDIM step count (uniform in t) that the first student halves;
    ``to_steps`` the last student's. Each halving runs ``updates`` AdamW updates at batch
    ``batch_size`` (None: the teacher's), ``lr`` decaying linearly to 0 (paper: Adam 5e-5, no
    EMA; ``ema_decay`` 0 keeps no average). ``parameterization`` None keeps the teacher's.
    ``guidance`` distils the CFG teacher at that fixed w; ``guidance_range`` [lo, hi] trains a
    student that takes w as input. ``data_options`` are merged into the teacher's data options
    (e.g. ``root`` of the data on another machine).
    """

    from_steps: int = 256
    to_steps: int = 4
    updates: int = 1000
    batch_size: int | None = None
    lr: float = 1e-4
    warmup: int = 0
    grad_clip: float = 1.0
    ema_decay: float = 0.0
    weighting: str = "truncated-snr"
    parameterization: str | None = None
    guidance: float | None = None
    guidance_range: tuple[float, float] | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    threads: int = 0
    log_every: int = 50
    ckpt_every: int = 500
    sample_n: int = 64
    progress: bool = True
    data_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        halvings(self.from_steps, self.to_steps)
        if self.updates < 1:
            raise ValueError(f"updates must be >= 1, got {self.updates}")
        if self.sample_n < 1:
            raise ValueError(f"sample_n must be >= 1 (samples in each halving's grid), got {self.sample_n}")
        if self.weighting not in DISTILL_WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(DISTILL_WEIGHTINGS)}, got {self.weighting!r}")
        if self.guidance is not None and self.guidance_range is not None:
            raise ValueError("give either guidance (a fixed w) or guidance_range (w as an input), not both")
        if self.guidance_range is not None:
            lo, hi = (float(v) for v in self.guidance_range)
            if not 0 <= lo <= hi:
                raise ValueError(f"guidance_range must be [lo, hi] with 0 <= lo <= hi, got {list(self.guidance_range)}")
            self.guidance_range = (lo, hi)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DistillConfig:
        return from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


# -- the trainer of one halving --------------------------------------------------------------
class Distillation(ImageDiffusion):
    """One halving, as a method of the one trainer: the student (a copy of the teacher) learns N
    steps from the teacher's 2N. Its checkpoints are diffusion stages ("diffusion")."""

    def __init__(
        self, cfg: RunConfig, *, teacher: LoadedStage, dcfg: DistillConfig, n_student: int, student_config: dict
    ) -> None:
        super().__init__(cfg)
        self.teacher_stage, self.dcfg, self.n_student = teacher, dcfg, n_student
        self.student_config = student_config
        self.teacher_takes_w = bool(teacher.meta["model_config"].get("guidance_embed"))
        # a student of an earlier guided halving has the guidance built in: guiding it again would
        # compound w at every halving
        built_in = (teacher.meta.get("distill") or {}).get("guidance") is not None
        guide = dcfg.guidance is not None or dcfg.guidance_range is not None
        self.guide_teacher = guide and not self.teacher_takes_w and not built_in

    def resolve_model_config(self, dataset: Any) -> dict[str, Any]:
        return dict(self.student_config)

    def build(self, model_config: dict[str, Any]) -> torch.nn.Module:
        net = super().build(model_config)
        own, src = net.state_dict(), self.teacher_stage.net.state_dict()
        # a new guidance embedding starts at zero and a new output head (other parameterization
        # with other channels) starts fresh: everything else is the teacher's
        net.load_state_dict({k: (src[k] if k in src and src[k].shape == v.shape else v) for k, v in own.items()})
        return net

    def attach(self, trainer: Any) -> None:
        self.device = trainer.device
        teacher_net = self.teacher_stage.net.to(trainer.device).eval().requires_grad_(False)
        self.teacher_denoiser = make_denoiser(teacher_net, self.teacher_stage.config.diffusion.parameterization)

    def meta(self) -> dict[str, Any]:
        t = self.teacher_stage
        return {
            "method": self.name,
            "sampling_steps": self.n_student,
            "distill": {
                "teacher": str(t.path),
                "teacher_steps": 2 * self.n_student,
                "student_steps": self.n_student,
                **self.dcfg.to_dict(),
            },
        }

    def _draw_w(self, b: int, generator: torch.Generator) -> Tensor:
        d = self.dcfg
        if d.guidance_range is not None:
            lo, hi = d.guidance_range
            u = torch.rand(b, generator=generator, device=self.device, dtype=torch.float32)
            return lo + (hi - lo) * u
        return torch.full((b,), float(d.guidance), device=self.device)

    def loss(self, net: Any, x: Tensor, cond: dict[str, Tensor], generator: torch.Generator) -> Tensor:
        from ..nets import keep_cond

        d, b = self.dcfg, x.shape[0]
        teacher: Callable[[Tensor, Tensor, Any], Tensor] = self.teacher_denoiser
        cond = keep_cond(self.network_cond(cond, x.device)) or None
        student_cond = dict(cond) if cond is not None else None
        if d.guidance is not None or d.guidance_range is not None:
            w = self._draw_w(b, generator)
            if self.guide_teacher:
                from ..nets import null_cond

                teacher = cfg_guidance(self.teacher_denoiser, w, null_cond)
            elif self.teacher_takes_w:  # a w-conditioned teacher (a previous halving)
                cond = {**cond, "guidance": w}
            # else: a previous fixed-w student, guidance built in: called as a conditional model
            if self.student_config.get("guidance_embed"):
                student_cond = {**student_cond, "guidance": w}
        return distillation_loss(
            lambda z, lam, _c: net(z, lam, student_cond),
            lambda z, lam, _c: teacher(z, lam, cond),
            x, self.schedule, self.n_student, self.cfg.diffusion.parameterization, d.weighting, generator=generator,
        )  # fmt: skip


# -- the driver: halve until to_steps --------------------------------------------------------
def stage_dir(out: str | Path, steps: int) -> Path:
    """The run folder of the ``steps``-step student: ``OUT/steps-0004``."""
    return Path(out) / f"steps-{steps:04d}"


def check_teacher(path: str | Path) -> dict[str, Any]:
    """The ``format.json`` metadata of a distillable checkpoint (or the like of a diffusers
    UNet2DModel folder); a one-line error otherwise."""
    from ..diffusion import PARAMETERIZATIONS
    from ..nets.diffusers_unet import is_diffusers_folder, stage_parts
    from ..train.checkpoint import checkpoint_path, read_meta

    meta = stage_parts(path)[1] if is_diffusers_folder(path) else read_meta(checkpoint_path(path))
    method = meta.get("method", "diffusion")
    if method != "diffusion" or "model_config" not in meta or "image_shape" not in meta:
        raise ValueError(
            f"{path} holds a {method!r} checkpoint, not a diffusion stage: distill needs a run made by "
            "'difflab train' (or an earlier 'difflab distill' stage)"
        )
    p = meta.get("parameterization")
    if p not in PARAMETERIZATIONS:
        raise ValueError(
            f"{path}: the teacher's parameterization {p!r} gives no x_hat to distil; "
            f"distillation needs one of {', '.join(PARAMETERIZATIONS)}"
        )
    return meta


def student_run_config(teacher: RunConfig, dcfg: DistillConfig, n: int, run_dir: Path) -> RunConfig:
    """The run config of the ``n``-step student: the teacher's, with distillation's training and
    an ``n``-step DDIM sampler (so ``difflab sample`` / ``eval`` use the student's step count)."""
    from ..train.config import TrainConfig

    c = copy.deepcopy(teacher)
    c.name, c.out_dir = run_dir.name, str(run_dir.parent)
    c.data.options = {**c.data.options, **dcfg.data_options}
    if dcfg.batch_size:
        c.data.batch_size = dcfg.batch_size
    if dcfg.parameterization:
        c.diffusion.parameterization = dcfg.parameterization  # type: ignore[assignment]
    c.diffusion.weighting = dcfg.weighting  # type: ignore[assignment]
    c.train = TrainConfig(
        steps=dcfg.updates, lr=dcfg.lr, warmup=dcfg.warmup, decay="linear", final_lr_ratio=0.0,
        grad_clip=dcfg.grad_clip, ema_decay=dcfg.ema_decay, ema_warmup=False, precision=dcfg.precision,  # type: ignore[arg-type]
        device=dcfg.device, seed=dcfg.seed, threads=dcfg.threads, log_every=dcfg.log_every,  # type: ignore[arg-type]
        sample_every=0, ckpt_every=dcfg.ckpt_every, cond_drop=0.0, progress=dcfg.progress,
    )  # fmt: skip
    c.sample.sampler, c.sample.steps, c.sample.spacing, c.sample.options = "ddim", n, "t", {}
    c.sample.n = dcfg.sample_n
    if dcfg.guidance_range is not None:  # the default w of the w-conditioned student
        lo, hi = dcfg.guidance_range
        c.sample.guidance = min(max(teacher.sample.guidance, lo), hi)
    else:  # a fixed-w student has the guidance built in; an unguided one never learnt the null class
        c.sample.guidance = 1.0
    return c


def student_model_config(teacher_meta: dict[str, Any], dcfg: DistillConfig, parameterization: str) -> dict[str, Any]:
    from ..diffusion import output_channels

    m = dict(teacher_meta["model_config"])
    if is_diffusers_config(m):  # a wrapped diffusers UNet2DModel: its student is a copy of it
        return diffusers_student_config(m, parameterization, dcfg.guidance, dcfg.guidance_range)
    conditional = m.get("num_classes") or m.get("token_dim") or m.get("pooled_dim")
    if (dcfg.guidance is not None or dcfg.guidance_range is not None) and not conditional:
        raise ValueError(
            "guided distillation needs a class- or caption-conditional teacher "
            "(trained with data.conditions: [class] or [caption])"
        )
    m["cond_drop"] = {}  # the student always sees the label / caption the teacher was guided with
    m["guidance_embed"] = bool(m.get("guidance_embed")) or dcfg.guidance_range is not None
    m["out_channels"] = output_channels(parameterization, int(m["in_channels"]))
    return m


def _finished(run_dir: Path, updates: int) -> bool:
    fmt = run_dir / CHECKPOINT_DIR / "format.json"
    if not fmt.is_file():
        return False
    try:
        return int(json.loads(fmt.read_text()).get("step", 0)) >= updates
    except (OSError, ValueError):
        return False


@dataclass
class DistillResult:
    """How :func:`distill` ended: the stage folders written so far (fewest steps last)."""

    stages: list[Path]
    status: str  # "done" or "interrupted"
    exit_code: int = 0


def distill(
    teacher: str | Path,
    out: str | Path,
    dcfg: DistillConfig | None = None,
    *,
    resume: bool = False,
    log: Callable[[str], None] = print,
) -> DistillResult:
    """Progressive distillation of the stage at ``teacher`` into ``out/steps-NNNN`` folders.

    Each folder is an ordinary run folder (``difflab sample`` / ``eval`` accept it). With
    ``resume`` finished halvings are skipped and an interrupted one continues from its checkpoint.
    """
    dcfg = dcfg or DistillConfig()
    out = Path(out)
    steps = halvings(dcfg.from_steps, dcfg.to_steps)
    meta = check_teacher(teacher)
    started = [n for n in steps if (stage_dir(out, n) / CHECKPOINT_DIR / "format.json").exists()]
    if started and not resume:
        raise ValueError(f"{out} already holds distilled stages: pass --resume, or choose another --out")
    parameterization = dcfg.parameterization or meta["parameterization"]
    student_model_config(meta, dcfg, parameterization)  # bad combinations fail before any output
    out.mkdir(parents=True, exist_ok=True)
    record = {"teacher": str(teacher), "config": dcfg.to_dict(), "stages": []}
    summary = out / "distill.json"
    if resume and summary.is_file():
        record["stages"] = json.loads(summary.read_text()).get("stages", [])
    source, source_meta, stages = Path(teacher), meta, []
    for k, n in enumerate(steps, 1):
        run_dir = stage_dir(out, n)
        if _finished(run_dir, dcfg.updates):
            log(f"halving {k}/{len(steps)}: {run_dir} is done ({2 * n} -> {n} steps), skipped")
        else:
            log(f"halving {k}/{len(steps)}: {2 * n} -> {n} steps, teacher {source}, student {run_dir}")
            stage = load(source, weights="ema", method="diffusion")
            cfg = student_run_config(stage.config, dcfg, n, run_dir)
            method = Distillation(
                cfg, teacher=stage, dcfg=dcfg, n_student=n,
                student_config=student_model_config(source_meta, dcfg, parameterization),
            )  # fmt: skip
            trainer = Trainer(cfg, run_dir, method=method, resume=(run_dir / CHECKPOINT_DIR / "format.json").exists())
            try:
                result: TrainResult = trainer.fit()
            finally:
                trainer.close()
            stages.append(run_dir)
            entry = {"steps": n, "dir": run_dir.name, "updates": result.step, "seconds": round(result.seconds, 2)}
            entry["loss"] = result.loss
            record["stages"] = [s for s in record["stages"] if s.get("steps") != n] + [entry]
            summary.write_text(json.dumps(record, indent=1))
            if result.status != "done":
                log(f"interrupted in halving {k}; continue with --resume")
                return DistillResult(stages, "interrupted", result.exit_code)
        if run_dir not in stages:
            stages.append(run_dir)
        source = run_dir
        source_meta = json.loads((run_dir / CHECKPOINT_DIR / "format.json").read_text())
    summary.write_text(json.dumps(record, indent=1))
    log(f"distilled to {steps[-1]} steps: {stage_dir(out, steps[-1])}")
    return DistillResult(stages, "done")


def run_distill(args: Any) -> int:
    """``difflab distill RUN --to-steps K ...``: exit 0, or 130/143 when interrupted (then --resume)."""
    from ..config import apply_overrides, load_yaml

    data: dict[str, Any] = load_yaml(args.config) if args.config else {}
    data = apply_overrides(data, list(args.overrides))
    flags = {
        "to_steps": args.to_steps, "from_steps": args.from_steps, "updates": args.updates,
        "batch_size": args.batch_size, "lr": args.lr, "weighting": args.weighting,
        "parameterization": args.parameterization, "guidance": args.guidance, "seed": args.seed,
        "device": args.device, "precision": args.precision,
        "guidance_range": list(args.guidance_range) if args.guidance_range else None,
    }  # fmt: skip
    data.update({k: v for k, v in flags.items() if v is not None})
    if args.no_progress:
        data["progress"] = False
    try:
        dcfg = DistillConfig.from_dict(data)
    except ValueError as e:
        where = f"{args.config}: " if args.config else ""
        raise ValueError(f"{where}{e}") from None
    from ..pretrained import output_home

    out = Path(args.out) if args.out else Path(str(output_home(args.run)).rstrip("/") + "-distilled")
    return distill(args.run, out, dcfg, resume=args.resume).exit_code
