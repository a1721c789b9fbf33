"""Progressive distillation of the WaveGrad vocoder itself (Salimans & Ho 2022 on Chen et al. 2021).

The teacher is a trained WaveGrad with an N-step schedule (its searched one, by default); the
student, a copy of it, learns to do in one deterministic DDIM step what the teacher does in two,
on the teacher's own log-SNR grid: N = 6 gives a 3-step student. It is the shared
:func:`difflab.methods.distill.distillation_loss` on WaveGrad's data, network and trainer, with two
vocoder specifics:

- the grid is the teacher schedule's (:class:`difflab.diffusion.BetaSchedule` of its betas: ``t = i / N``
  is exactly its ``i``-th noise level);
- WaveGrad's few-step schedules start from pure noise at a first level that still keeps signal
  (alpha about 0.6 for the searched 6 steps), so the student's first step is trained from pure noise
  too (``start_from_noise``).

The student is saved as a normal WaveGrad run whose ``format.json`` holds ``distill`` (teacher, its
betas, the student's betas and steps); :class:`.vocoder.Vocoder` samples such a model with DDIM on
those betas. The standard prior only: PriorGrad's noise is not N(0, I), which the shared loss assumes.

    difflab wavegrad-distill pretrained:wavegrad --out runs/wavegrad-3step --minutes 60
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...diffusion import BetaSchedule, make_denoiser
from ...train.config import RunConfig
from ...train.trainer import Trainer, train
from ..distill import distillation_loss
from .audio import log_mel
from .train import WaveGradMethod
from .vocoder import Vocoder


def student_betas(teacher_betas: list[float]) -> list[float]:
    """The betas of the halved schedule: the teacher's noise levels 2, 4, ..., N (N even)."""
    n = len(teacher_betas)
    if n < 2 or n % 2:
        raise ValueError(f"a teacher schedule of {n} steps cannot be halved: give an even step count (e.g. 6)")
    ab = torch.cumprod(1.0 - torch.tensor(teacher_betas, dtype=torch.float64), 0)[1::2]  # levels 2, 4, ..., N
    prev = torch.cat([ab.new_ones(1), ab[:-1]])
    return (1.0 - ab / prev).tolist()


class WaveGradDistillation(WaveGradMethod):
    """One halving of a WaveGrad vocoder as a method of the one trainer (see the module doc)."""

    def __init__(self, cfg: RunConfig, *, teacher: Vocoder, teacher_betas: list[float], fit_schedule: bool = False):
        super().__init__(cfg, fit_schedule=fit_schedule)
        if teacher.config.prior != "standard":
            raise ValueError(
                f"{teacher.path}: a {teacher.config.prior!r} prior; vocoder distillation supports the standard prior "
                "(PriorGrad's noise is not N(0, I))"
            )
        if teacher.meta.get("distill"):
            raise ValueError(
                f"{teacher.path} is already a distilled {len(teacher.meta['distill']['betas'])}-step student; "
                "distil from a model trained by difflab wavegrad-train"
            )
        self.teacher, self.teacher_betas = teacher, list(teacher_betas)
        self.betas = student_betas(self.teacher_betas)  # checks the count
        self.grid = BetaSchedule(self.teacher_betas)  # t = i / N is the teacher's i-th level
        self.n_student = len(self.betas)

    def resolve_model_config(self, dataset: Any) -> dict[str, Any]:
        own = super().resolve_model_config(dataset)
        teacher = self.teacher.config.to_dict()
        if own["mel"] != teacher["mel"]:
            raise ValueError(f"the run's mel front end {own['mel']} differs from the teacher's {teacher['mel']}")
        return teacher

    def build(self, model_config: dict[str, Any]) -> torch.nn.Module:
        net = super().build(model_config)
        net.load_state_dict(self.teacher.net.state_dict())
        return net

    def attach(self, trainer: Trainer) -> None:
        super().attach(trainer)
        net = self.teacher.net.to(trainer.device).eval().requires_grad_(False)
        self.teacher_denoiser = make_denoiser(net, "eps")

    def loss(self, net: Any, x: Tensor, cond: dict[str, Tensor], generator: torch.Generator) -> Tensor:
        ctx = self.mel.n_fft // 2
        with torch.autocast(x.device.type, enabled=False):
            mel = log_mel(x[:, 0].float(), self.mel, center=False)[..., :-1]
        return distillation_loss(
            net, self.teacher_denoiser, x[..., ctx:-ctx], self.grid, self.n_student, "eps", "truncated-snr",
            cond=mel, generator=generator, start_from_noise=True,
        )  # fmt: skip

    def meta(self) -> dict[str, Any]:
        distill = {
            "teacher": str(self.teacher.path),
            "teacher_betas": self.teacher_betas,
            "betas": self.betas,
            "steps": self.n_student,
            "sampler": "ddim",
        }
        # the teacher's training time counts: the student is the teacher's weights, trained further
        return {**super().meta(), "distilled": True, "distill": distill}


def distill_wavegrad(
    teacher_path: str | Path,
    run_dir: str | Path,
    overrides: list[str] | None = None,
    *,
    teacher_steps: int = 6,
    schedule: str = "auto",
    time_limit: float | None = None,
    fit_schedule: bool = False,
    resume: bool = False,
    device: str | None = None,
) -> tuple[Any, WaveGradDistillation]:
    """Distil the ``teacher_steps``-step schedule of a WaveGrad run into a student of half the steps.

    The run config is the teacher's (its data, batch size, mel, model; not its device, precision,
    threads or init), with the distillation's defaults (2,000 updates, lr 1e-4 decaying linearly to 0,
    no warm-up, EMA 0.995) and then ``overrides`` (KEY=VALUE). A teacher trained from a training
    cache that is not on this machine gets the default asterisk data (English). Returns (TrainResult, method)."""
    from ...config import ConfigKeyError, apply_overrides, load_yaml
    from ...train.checkpoint import checkpoint_path

    teacher = Vocoder.load(teacher_path)
    kind = teacher.resolve_schedule(teacher_steps, schedule)
    betas = teacher.schedule(teacher_steps, kind)
    base = load_yaml(checkpoint_path(teacher_path) / "config.yaml")
    # what belonged to the teacher's machine or run (device, precision, threads, init) goes back to the defaults
    machine = ("init", "steps", "device", "precision", "threads")
    base["train"] = {k: v for k, v in (base.get("train") or {}).items() if k not in machine}
    base["train"].update(lr=1e-4, warmup=0, decay="linear", final_lr_ratio=0.0, ema_decay=0.995, steps=2000)
    data = base.setdefault("data", {})
    if (data.get("options") or {}).get("source") == "cache" and not Path(data["options"].get("root", "")).is_file():
        data["options"] = {"source": "asterisk", "segment_frames": data["options"].get("segment_frames", 24)}
    extra = list(overrides or []) + ([f"train.device={device}"] if device else [])
    try:
        cfg = RunConfig.from_dict(apply_overrides(base, extra))
    except ConfigKeyError as e:
        raise e.located(f"the teacher's config ({teacher_path})", extra) from None
    run_dir = Path(run_dir)
    cfg.out_dir, cfg.name = str(run_dir.parent), run_dir.name
    method = WaveGradDistillation(cfg, teacher=teacher, teacher_betas=betas, fit_schedule=fit_schedule)
    return train(cfg, run_dir, method=method, resume=resume, time_limit=time_limit), method
