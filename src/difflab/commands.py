"""What ``difflab train``, ``difflab sample`` and ``difflab eval`` do (the CLI parses, these run).

Each function takes the parsed ``argparse`` namespace and returns an exit status; bad input is
raised as ValueError / OSError / CheckpointError with a one-line message (``difflab.cli`` prints it).
``train`` runs the method the recipe names; ``sample`` and ``eval`` take one diffusion stage, or
several (a cascade, base first).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .train.config import config_from_args
from .train.distributed import resolve_device
from .train.stage import LoadedStage, upscale_for_grid


def run_train(args: argparse.Namespace) -> int:
    """``difflab train CONFIG [key=value ...] [--resume] [--out RUN]``: exit 0, 130/143 if interrupted."""
    from .methods import get_method
    from .train.trainer import NonFiniteLossError, train

    cfg, run_dir = config_from_args(args)
    try:
        result = train(cfg, run_dir, method=get_method(cfg.method)(cfg), resume=args.resume, time_limit=args.time_limit)
    except NonFiniteLossError as e:
        print(f"difflab: error: {e}", file=sys.stderr)
        return 1
    return result.exit_code


def _stages(args: argparse.Namespace) -> tuple[Any, LoadedStage]:
    """(a Cascade, its last stage) of the ``RUN ...`` folders (one folder: a cascade of one stage)."""
    from .methods.cascade import Cascade

    cascade = Cascade.load(args.run, weights=args.weights, device=resolve_device(args.device))
    return cascade, cascade.stages[-1]


def _labels(args: argparse.Namespace, cascade: Any, n: int) -> Tensor | None:
    if not args.labels:
        return None
    if not cascade.stages[0].net.config.num_classes:
        raise ValueError("--labels given but this model is not class-conditional")
    labels = [int(v) for part in args.labels for v in str(part).split(",") if v.strip()]
    return torch.tensor(labels, dtype=torch.long).repeat(n // len(labels) + 1)[:n]


def _draw(args: argparse.Namespace, cascade: Any, n: int) -> tuple[Tensor, Tensor | None]:
    stage = cascade.stages[0]
    built_in = (stage.meta.get("distill") or {}).get("guidance")
    if built_in is not None and args.guidance not in (None, 1.0):
        print(
            f"difflab: warning: this student was distilled with guidance w={built_in} built in; "
            f"--guidance {args.guidance} applies classifier-free guidance on top of it",
            file=sys.stderr,
        )
    classes = int(stage.meta.get("num_classes") or 0)
    labels = _labels(args, cascade, n)
    labels = torch.arange(n) % classes if classes and labels is None else labels
    x = cascade.sample(
        n, sampler=args.sampler, steps=args.steps, spacing=args.spacing, guidance=args.guidance, labels=labels,
        aug=args.aug, seed=args.seed, precision="bf16" if args.bf16 else "fp32", batch_size=args.batch_size,
        progress=args.progress,
    )[-1]  # fmt: skip
    return x, labels


def save_samples(path: Path, samples: Tensor, labels: Tensor | None) -> Path:
    """Write samples (and labels) as ``.npz`` (keys samples, labels) or ``.pt`` (a dict of tensors)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npz":
        import numpy as np

        arrays = {"samples": samples.numpy()}
        if labels is not None:
            arrays["labels"] = labels.numpy()
        np.savez_compressed(path, **arrays)
    elif path.suffix == ".pt":
        torch.save({"samples": samples, **({"labels": labels} if labels is not None else {})}, path)
    else:
        raise ValueError(f"--save {path}: use a .npz or .pt file name")
    return path


def load_samples(path: Path) -> tuple[Tensor, Tensor | None]:
    """Read what :func:`save_samples` wrote; a missing or unreadable file is a one-line error."""
    if not path.is_file():
        raise FileNotFoundError(f"samples file not found: {path}")
    try:
        if path.suffix == ".npz":
            import numpy as np

            with np.load(path) as f:
                samples = torch.from_numpy(f["samples"])
                labels = torch.from_numpy(f["labels"]) if "labels" in f else None
        elif path.suffix == ".pt":
            d = torch.load(path, map_location="cpu", weights_only=True)
            samples, labels = d["samples"], d.get("labels")
        else:
            raise ValueError(f"{path}: samples must be a .npz or .pt file")
    except (OSError, KeyError, RuntimeError, EOFError) as e:
        raise ValueError(f"{path}: cannot read samples ({type(e).__name__}: {e})") from None
    return samples.float(), labels


def run_sample(args: argparse.Namespace) -> int:
    """``difflab sample RUN``: a PNG grid (and optionally .npz/.pt samples) from the EMA weights."""
    from .data import save_grid

    cascade, stage = _stages(args)
    t0 = time.perf_counter()
    x, labels = _draw(args, cascade, args.n)
    seconds = time.perf_counter() - t0
    s = stage.config.sample
    sampler, steps = args.sampler or s.sampler, args.steps or s.steps
    run = Path(args.run[-1])
    out = Path(args.out) if args.out else run / "samples" / f"{sampler}_{steps}steps_seed{args.seed}.png"
    classes = int(cascade.stages[0].meta.get("num_classes") or 0)
    nrow = args.nrow or (classes if classes and labels is not None and args.labels is None else None)
    save_grid(upscale_for_grid(x), out, nrow=nrow or max(1, round(args.n**0.5)))
    print(f"wrote {out} ({args.n} samples, {sampler} {steps} steps, {seconds:.1f} s)")
    if args.save:
        print(f"wrote {save_samples(Path(args.save), x, labels)}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """``difflab eval RUN``: sample (or read ``--samples``) and score with ``difflab.eval.evaluate``."""
    try:
        from .eval import evaluate
    except ImportError:
        raise ValueError("difflab.eval is not available in this installation") from None
    cascade, stage = _stages(args)
    cfg = stage.config
    s = cfg.sample
    info: dict[str, Any] = {"run": " ".join(map(str, args.run)), "dataset": cfg.data.name}
    if args.samples:
        x, labels = load_samples(Path(args.samples))
        info["samples_file"] = str(args.samples)
    else:
        t0 = time.perf_counter()
        x, labels = _draw(args, cascade, args.n)
        info.update(
            sampler=args.sampler or s.sampler, steps=args.steps or s.steps, spacing=args.spacing or s.spacing,
            guidance=s.guidance if args.guidance is None else args.guidance, seed=args.seed,
            weights=args.weights, sample_seconds=round(time.perf_counter() - t0, 2),
        )  # fmt: skip
    scores = evaluate(x, cfg.data.name, labels=labels if "class" in cascade.stages[0].conditions else None)
    result = {**scores, **info}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>20}: {v:.4g}" if isinstance(v, float) else f"{k:>20}: {v}")
    return 0
