"""The Sample tab: class-conditional and text-to-image sampling into a PNG grid.

:func:`sample` draws as ``difflab sample`` and ``difflab generate`` do (:meth:`Cascade.sample
<difflab.methods.cascade.Cascade.sample>`, :meth:`UnCLIP.sample
<difflab.methods.unclip.pipeline.UnCLIP.sample>`, then :func:`difflab.data.save_grid`), after checking
every input against the :class:`~.limits.Limits`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import limits as check
from .limits import DEFAULT_LIMITS, AppError, Limits
from .models import Entry, Models
from .outputs import job_folder

SAMPLERS = ("ddpm", "ddim", "dpmpp_2m", "heun")
THRESHOLDS = ("none", "static", "dynamic")
MAX_GUIDANCE = 50.0
MAX_SEED = 2**32 - 1


@dataclass
class Grid:
    """A sampled grid: the PNG, the sampling wall time and a one-line summary."""

    path: Path
    seconds: float
    summary: str


def parse_labels(value: str, classes: int, n: int) -> Any:
    """The class labels of ``n`` samples: ``value`` is empty (every class in turn) or labels such as
    ``3`` or ``0,1,2`` (cycled); each must lie in ``0..classes-1``."""
    import torch

    parts = [p for p in str(value or "").replace(",", " ").split() if p]
    if not parts:
        return torch.arange(n) % classes
    labels = []
    for p in parts:
        try:
            y = int(p)
        except ValueError:
            raise AppError(f"label: {p!r} is not a class number (0 to {classes - 1})") from None
        if not 0 <= y < classes:
            raise AppError(f"label: {y} is not a class of this model (0 to {classes - 1})")
        labels.append(y)
    return torch.tensor(labels, dtype=torch.long).repeat(n // len(labels) + 1)[:n]


def options(sampler: Any, steps: Any, guidance: Any, threshold: Any, seed: Any, limits: Limits) -> dict[str, Any]:
    """The checked sampling options; empty ones (None) are the model's own."""
    return {
        "sampler": check.choice("sampler", sampler, SAMPLERS),
        "steps": check.whole("steps", steps, 1, limits.steps, optional=True),
        "guidance": check.real("guidance", guidance, 0.0, MAX_GUIDANCE, optional=True),
        "threshold": check.choice("thresholding", threshold, THRESHOLDS),
        "seed": check.whole("seed", seed, 0, MAX_SEED, optional=True) or 0,
    }


def sample(
    models: Models,
    entry: Entry,
    *,
    n: Any = 4,
    sampler: Any = None,
    steps: Any = None,
    guidance: Any = None,
    threshold: Any = None,
    seed: Any = 0,
    label_or_prompt: Any = "",
    out: str | Path,
    limits: Limits = DEFAULT_LIMITS,
    progress: bool = False,
) -> Grid:
    """Draw ``n`` images from ``entry`` (labels for a class-conditional model, the prompt for a
    text-to-image one) into a grid under ``out/sample/``."""
    from ..data import save_grid
    from ..train.stage import upscale_for_grid

    count = check.whole("number of images", n, 1, limits.images)
    opts = options(sampler, steps, guidance, threshold, seed, limits)
    words = check.text("label or prompt", label_or_prompt, limits.text_chars)
    note = ""
    if entry.method == "unclip":
        if not words:
            raise AppError("prompt: type what to draw, e.g. 'a red bag at the top left'")
        pipe = models.unclip(entry)
        base = pipe.cascade.stages[0]
        t0 = time.perf_counter()
        x = pipe.sample([words] * count, progress=progress, **opts)[-1]
    else:
        cascade = models.cascade(entry)
        base = cascade.stages[0]
        classes = int(base.meta.get("num_classes") or 0) if "class" in base.conditions else 0
        captions = any("caption" in s.conditions for s in cascade.stages)
        labels = prompts = None
        if captions:
            if not words:
                raise AppError("prompt: type what to draw, e.g. 'a red bag at the top left'")
            prompts = [words] * count
        elif classes:
            labels = parse_labels(words, classes, count)
            note = f", labels {' '.join(str(int(y)) for y in labels[: min(count, 10)])}" + (
                " ..." if count > 10 else ""
            )
        elif words:
            note = " (an unconditional model: the label was not used)"
        t0 = time.perf_counter()
        x = cascade.sample(count, labels=labels, prompts=prompts, progress=progress, **opts)[-1]
    seconds = time.perf_counter() - t0
    path = save_grid(upscale_for_grid(x, 128), job_folder(out, "sample") / "grid.png", nrow=math.ceil(count**0.5))
    own = base.config.sample
    how = f"{opts['sampler'] or own.sampler}, {opts['steps'] or base.meta.get('sampling_steps') or own.steps} steps"
    return Grid(path, seconds, f"{count} image(s) of {entry.name}, {how}, seed {opts['seed']}{note}: {seconds:.2f} s")
