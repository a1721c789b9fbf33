"""The Distilled vs teacher tab: a distilled student and its teacher draw the same labels from the same
seed, side by side, each with its sampling wall time.

The student samples with its own sampler and steps (e.g. 4 DDIM steps); the teacher with its own
sampler and steps unless ``teacher_steps`` is given, and with the student's built-in guidance weight
when the student was distilled under guidance (so both aim at the same distribution).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import limits as check
from .limits import DEFAULT_LIMITS, Limits
from .models import Catalog, Entry, Models
from .outputs import job_folder
from .sample import MAX_SEED, parse_labels


@dataclass
class Comparison:
    """Both grids, both wall times (seconds) and a one-line summary."""

    student: Path
    teacher: Path
    student_seconds: float
    teacher_seconds: float
    summary: str


def _draw(cascade: Any, n: int, label: str, seed: int, progress: bool, **opts: Any) -> tuple[Any, float]:
    base = cascade.stages[0]
    classes = int(base.meta.get("num_classes") or 0) if "class" in base.conditions else 0
    labels = parse_labels(label, classes, n) if classes else None
    t0 = time.perf_counter()
    x = cascade.sample(n, labels=labels, seed=seed, progress=progress, **opts)[-1]
    return x, time.perf_counter() - t0


def compare(
    catalog: Catalog,
    models: Models,
    entry: Entry,
    *,
    n: Any = 4,
    label: Any = "",
    seed: Any = 0,
    teacher_steps: Any = None,
    out: str | Path,
    limits: Limits = DEFAULT_LIMITS,
    progress: bool = False,
) -> Comparison:
    """Sample ``n`` images with the student ``entry`` and with its teacher; grids under ``out/distilled/``."""
    from ..data import save_grid
    from ..train.stage import upscale_for_grid

    count = check.whole("number of images", n, 1, limits.images)
    seed = check.whole("seed", seed, 0, MAX_SEED, optional=True) or 0
    t_steps = check.whole("teacher steps", teacher_steps, 1, limits.steps, optional=True)
    label = check.text("label", label, limits.text_chars)
    teacher_entry = catalog.teacher(entry)
    student = models.cascade(entry)
    teacher = models.cascade(teacher_entry)
    built_in = (student.stages[0].meta.get("distill") or {}).get("guidance")
    xs, s_secs = _draw(student, count, label, seed, progress)
    xt, t_secs = _draw(teacher, count, label, seed, progress, steps=t_steps, guidance=built_in)
    folder = job_folder(out, "distilled")
    nrow = math.ceil(count**0.5)
    s_path = save_grid(upscale_for_grid(xs, 128), folder / "student.png", nrow=nrow)
    t_path = save_grid(upscale_for_grid(xt, 128), folder / "teacher.png", nrow=nrow)
    s_cfg, t_cfg = student.stages[0].config.sample, teacher.stages[0].config.sample
    s_steps = student.stages[0].meta.get("sampling_steps") or s_cfg.steps
    summary = (
        f"student {entry.name}: {s_cfg.sampler} {s_steps} steps, {s_secs:.2f} s; teacher {teacher_entry.name}: "
        f"{t_cfg.sampler} {t_steps or t_cfg.steps} steps, {t_secs:.2f} s ({t_secs / max(s_secs, 1e-9):.1f}x the "
        f"student's time); {count} image(s), seed {seed}"
    )
    return Comparison(s_path, t_path, s_secs, t_secs, summary)
