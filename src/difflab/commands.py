"""What ``difflab train``, ``difflab sample`` and ``difflab eval`` do (the CLI parses, these run).

Each function takes the parsed ``argparse`` namespace and returns an exit status; bad input is
raised as ValueError / OSError / CheckpointError with a one-line message (``difflab.cli`` prints it).
``train`` runs the method the recipe names; ``sample`` and ``eval`` take one diffusion stage, or
several (a cascade, base first). Each command NAME has ``add_NAME(parser)`` (its arguments) and
``run_NAME(args)`` here; torch is imported only inside the run functions, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .argtypes import (
    DEVICES,
    SAMPLERS,
    add_train_arguments,
    flatten,
    float_at_least,
    int_at_least,
    int_list,
    run_or_model,
)

if TYPE_CHECKING:
    from torch import Tensor

    from .train.stage import LoadedStage


DEMO_STEPS = (2, 4, 8, 16, 64)  # the same as difflab.demo.DEFAULT_STEPS (a test checks), without torch


def add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="outputs/demo", metavar="DIR", help="output folder (default: %(default)s)")
    p.add_argument("--n", type=int_at_least(10), default=2000, help="samples per run (default: %(default)s)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="random seed (default: %(default)s)")
    default_steps = " ".join(map(str, DEMO_STEPS))
    p.add_argument("--steps", type=int_list(1), nargs="+", metavar="N", help=f"step counts (default: {default_steps})")
    p.add_argument("--samplers", nargs="+", metavar="NAME", help="samplers to run (default: all of SAMPLERS)")
    p.add_argument(
        "--spacing", choices=("auto", "t", "lam"), default="auto", help="grid uniform in t or in log-SNR: "
        "CosineSchedule().lams(steps, SPACING); auto: t, but lam for heun (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG figure (no matplotlib needed)")


def run_demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig
    from .demo import run_demo as demo

    config = DemoConfig(
        out=args.out, n=args.n, seed=args.seed, spacing=args.spacing, progress=args.progress, plot=not args.no_plot
    )
    if args.steps is not None:
        config.steps = flatten(args.steps)
    if args.samplers is not None:
        config.samplers = args.samplers
    demo(config)
    return 0


def add_train(p: argparse.ArgumentParser) -> None:
    add_train_arguments(p, "configs/digits.yaml (its method: diffusion, ardm or wavegrad)")
    p.add_argument("--seed", type=int_at_least(0), help="the one seed of data order, noise and samples (train.seed)")


def add_sampling(p: argparse.ArgumentParser, n_default: int) -> None:
    p.add_argument(
        "run", nargs="+", metavar="RUN", type=run_or_model,
        help="run folder (or its checkpoint folder, or a diffusers UNet2DModel folder); several: a cascade, base first",
    )  # fmt: skip
    p.add_argument("--prompt", action="append", metavar="TEXT", help="caption-conditioned runs: a prompt "
                   "(repeat for several; cycled over the samples)")  # fmt: skip
    add_sampling_options(p, n_default)


def add_sampling_options(p: argparse.ArgumentParser, n_default: int) -> None:
    p.add_argument(
        "--sampler", choices=SAMPLERS, nargs="+", metavar="NAME",
        help=f"sampler ({', '.join(SAMPLERS)}); one for every stage of a cascade or one per stage "
        "(default: each stage's sample.sampler)",
    )  # fmt: skip
    p.add_argument("--steps", type=int_at_least(1), help="sampling steps (default: the run's sample.steps)")
    p.add_argument("--spacing", choices=("t", "lam"), help="grid uniform in t or log-SNR (default: sample.spacing)")
    p.add_argument(
        "--guidance", type=float_at_least(0.0), nargs="+", metavar="W",
        help="CFG weight w, uncond + w (cond - uncond); one for every stage of a cascade or one per stage "
        "(default: each stage's sample.guidance)",
    )  # fmt: skip
    p.add_argument("--n", type=int_at_least(1), default=n_default, help="number of samples (default: %(default)s)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="noise seed (default: %(default)s)")
    p.add_argument("--labels", nargs="+", metavar="Y", help="class labels to cycle through, e.g. --labels 3 or 0,1,2")
    p.add_argument("--weights", choices=("ema", "model"), default="ema", help="which weights (default: %(default)s)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="device (default: %(default)s)")
    p.add_argument(
        "--aug", type=float_at_least(0.0), help="cascade: noise level of the low-resolution input, a fraction of t "
        "(default: the stage's sample.lowres_aug)"
    )  # fmt: skip
    p.add_argument(
        "--threshold", choices=("none", "static", "dynamic"), nargs="+", help="clip the prediction of x at every "
        "step: static to [-1, 1], dynamic by its per-sample quantile; one for all stages or one per stage "
        "(default: each stage's sample.threshold)"
    )  # fmt: skip
    p.add_argument("--bf16", action="store_true", help="sample under bf16 autocast")
    p.add_argument(
        "--batch-size", type=int_at_least(1), help="samples per batch (default: 500 on GPU, by image size on CPU)"
    )
    p.add_argument("--progress", action="store_true", help="show a progress bar per batch")


def add_sample(p: argparse.ArgumentParser) -> None:
    add_sampling(p, 64)
    p.add_argument("--out", metavar="PNG", help="grid file (default: RUN/samples/SAMPLER_STEPSsteps_seedSEED.png)")
    p.add_argument("--nrow", type=int_at_least(1), help="images per grid row (default: square, or one per class)")
    p.add_argument("--save", metavar="FILE", help="also write the samples as .npz or .pt (float in [-1, 1], labels)")


def add_eval(p: argparse.ArgumentParser) -> None:
    add_sampling(p, 1000)
    p.add_argument("--samples", metavar="FILE", help="score these saved samples (.npz/.pt) instead of sampling")
    p.add_argument(
        "--split", default="test", choices=("test", "unseen", "paraphrase"),
        help="caption-conditioned runs on the captioned scenes: the prompts are the first --n captions of this "
        "split, scored by alignment and scene FD (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--out", metavar="JSON", help="also write the result to this file")


def add_distill(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "run",
        metavar="RUN",
        type=run_or_model,
        help="teacher: a run of 'difflab train', an earlier distill stage or a diffusers folder",
    )
    p.add_argument("--to-steps", type=int_at_least(1), help="sampling steps of the last student (default: 4)")
    p.add_argument("--from-steps", type=int_at_least(2), help="teacher DDIM steps the first student halves (256)")
    p.add_argument("--updates", type=int_at_least(1), help="optimizer updates per halving (default: 1000)")
    p.add_argument("--batch-size", type=int_at_least(1), help="batch size (default: the teacher's)")
    p.add_argument("--lr", type=float_at_least(0.0), help="learning rate, decayed linearly to 0 per halving (1e-4)")
    p.add_argument("--weighting", choices=("truncated-snr", "snr+1"), help="loss weighting (default: truncated-snr)")
    p.add_argument("--parameterization", choices=("eps", "x", "v", "both"), help="student's (default: teacher's)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--guidance", type=float_at_least(0.0), metavar="W", help="distil the CFG teacher at fixed w")
    g.add_argument(
        "--guidance-range",
        type=float_at_least(0.0),
        nargs=2,
        metavar=("LO", "HI"),
        help="student takes w in [LO, HI] as an input (Meng et al. 2023)",
    )
    p.add_argument("--config", metavar="YAML", help="a DistillConfig recipe (flags and key=value override it)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="DistillConfig overrides, e.g. ckpt_every=200")
    p.add_argument("--out", metavar="DIR", help="output folder (default: RUN-distilled); one run folder per halving")
    p.add_argument("--resume", action="store_true", help="skip finished halvings and continue an interrupted one")
    p.add_argument("--seed", type=int_at_least(0), help="seed (default: 0)")
    p.add_argument("--device", choices=DEVICES, help="device (default: auto)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), help="training precision (default: fp32)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_distill(args: argparse.Namespace) -> int:
    from .methods.distill import run_distill as distill

    return distill(args)


def run_train(args: argparse.Namespace) -> int:
    """``difflab train CONFIG [key=value ...] [--resume] [--out RUN]``: exit 0, 130/143 if interrupted."""
    from .config import ConfigKeyError
    from .methods import get_method
    from .train.config import config_from_args
    from .train.trainer import NonFiniteLossError, train

    cfg, run_dir = config_from_args(args)
    try:
        result = train(cfg, run_dir, method=get_method(cfg.method)(cfg), resume=args.resume, time_limit=args.time_limit)
    except NonFiniteLossError as e:
        print(f"difflab: error: {e}", file=sys.stderr)
        return 1
    except ConfigKeyError as e:  # e.g. model.channels=abc, found when the method checks its model section
        raise e.located(args.config, args.overrides) from None
    return result.exit_code


def _stages(args: argparse.Namespace) -> tuple[Any, LoadedStage]:
    """(a Cascade, its last stage) of the ``RUN ...`` folders (one folder: a cascade of one stage)."""
    from .methods import load
    from .train.distributed import resolve_device

    device = resolve_device(args.device)
    _share_cpu(device)
    cascade = load(list(args.run), weights=args.weights, device=device)
    return cascade, cascade.stages[-1]


def _share_cpu(device: Any) -> None:
    """On the CPU, sample with as many threads as the cores other processes leave free (difflab.threads)."""
    if getattr(device, "type", str(device)) == "cpu":
        from .threads import ThreadGovernor

        ThreadGovernor()


def _labels(args: argparse.Namespace, cascade: Any, n: int) -> Tensor | None:
    import torch

    if not args.labels:
        return None
    if not cascade.stages[0].net.config.num_classes:
        raise ValueError("--labels given but this model is not class-conditional")
    labels = [int(v) for part in args.labels for v in str(part).split(",") if v.strip()]
    return torch.tensor(labels, dtype=torch.long).repeat(n // len(labels) + 1)[:n]


def _one_or_per_stage(values: list[Any] | None) -> Any:
    """A repeated option's values: None, one value for every stage, or a list with one per stage."""
    return values[0] if values is not None and len(values) == 1 else values


def _draw(args: argparse.Namespace, cascade: Any, n: int) -> tuple[Tensor, Tensor | None]:
    import torch

    stage = cascade.stages[0]
    built_in = (stage.meta.get("distill") or {}).get("guidance")
    guidance = _one_or_per_stage(args.guidance)
    if built_in is not None and guidance not in (None, 1.0):
        print(
            f"difflab: warning: this student was distilled with guidance w={built_in} built in; "
            f"--guidance {guidance} applies classifier-free guidance on top of it",
            file=sys.stderr,
        )
    classes = int(stage.meta.get("num_classes") or 0)
    labels = _labels(args, cascade, n)
    labels = torch.arange(n) % classes if classes and labels is None else labels
    prompts = getattr(args, "prompt", None)
    if prompts:
        prompts = [prompts[i % len(prompts)] for i in range(n)]
    x = cascade.sample(
        n, sampler=_one_or_per_stage(args.sampler), steps=args.steps, spacing=args.spacing, guidance=guidance,
        labels=labels,
        prompts=prompts or None, aug=args.aug, threshold=_one_or_per_stage(args.threshold), seed=args.seed,
        precision="bf16" if args.bf16 else "fp32", batch_size=args.batch_size, progress=args.progress,
    )[-1]  # fmt: skip
    return x, labels


def save_samples(path: Path, samples: Tensor, labels: Tensor | None) -> Path:
    """Write samples (and labels) as ``.npz`` (keys samples, labels) or ``.pt`` (a dict of tensors)."""
    import torch

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


SAMPLES_FORMATS = (
    "accepted: what 'difflab sample --save' writes, a .npz of arrays 'samples' (N, C, H, W) and optionally "
    "'labels', or a .pt of {'samples': tensor, 'labels': tensor} that torch.load(weights_only=True) reads "
    "(tensors, dicts, lists and numbers only)"
)


def load_samples(path: Path) -> tuple[Tensor, Tensor | None]:
    """Read what :func:`save_samples` wrote; a missing or unreadable file is a one-line error (no code in a
    ``.pt`` file runs: ``torch.load(weights_only=True)``; ``.npz`` files are read without pickle)."""
    import pickle
    import re

    import torch

    if not path.is_file():
        raise FileNotFoundError(f"samples file not found: {path}")
    if path.suffix not in (".npz", ".pt"):
        raise ValueError(f"{path}: samples must be a .npz or .pt file ({SAMPLES_FORMATS})")
    try:
        if path.suffix == ".npz":
            import numpy as np

            with np.load(path) as f:
                samples = torch.from_numpy(f["samples"])
                labels = torch.from_numpy(f["labels"]) if "labels" in f else None
        else:
            d = torch.load(path, map_location="cpu", weights_only=True)
            samples, labels = d["samples"], d.get("labels")
        if not isinstance(samples, torch.Tensor) or not isinstance(labels, torch.Tensor | None):
            raise TypeError("'samples' and 'labels' must be tensors")
    except pickle.UnpicklingError as e:  # torch.load refused a Python object: nothing of it ran
        m = re.search(r"WeightsUnpickler error:\s*(.*?)(?: by default|\.\s|\n\n|$)", str(e), re.S)
        why = " ".join(m.group(1).split()) if m else "not a torch.save file"
        raise ValueError(f"{path}: not a plain tensor file, so it was not loaded ({why}); {SAMPLES_FORMATS}") from None
    except (OSError, KeyError, IndexError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: cannot read samples ({type(e).__name__}: {e}); {SAMPLES_FORMATS}") from None
    return samples.float(), labels


def run_sample(args: argparse.Namespace) -> int:
    """``difflab sample RUN``: a PNG grid (and optionally .npz/.pt samples) from the EMA weights."""
    from .data import save_grid
    from .train.stage import upscale_for_grid

    cascade, stage = _stages(args)
    t0 = time.perf_counter()
    x, labels = _draw(args, cascade, args.n)
    seconds = time.perf_counter() - t0
    s = stage.config.sample
    sampler, steps = "-".join(args.sampler) if args.sampler else s.sampler, args.steps or s.steps
    from .pretrained import output_home

    out = (
        Path(args.out)
        if args.out
        else output_home(args.run[-1]) / "samples" / f"{sampler}_{steps}steps_seed{args.seed}.png"
    )
    classes = int(cascade.stages[0].meta.get("num_classes") or 0)
    nrow = args.nrow or (classes if classes and labels is not None and args.labels is None else None)
    save_grid(upscale_for_grid(x), out, nrow=nrow or max(1, round(args.n**0.5)))
    print(f"wrote {out} ({args.n} samples, {sampler} {steps} steps, {seconds:.1f} s)")
    if args.save:
        print(f"wrote {save_samples(Path(args.save), x, labels)}")
    return 0


def _scene_prompts(args: argparse.Namespace, dataset: str) -> Tensor:
    """Set ``args.prompt`` to the first ``--n`` captions of ``--split``; return their labels."""
    import torch

    from .data import get_dataset

    if dataset != "scenes":
        raise ValueError(
            f"difflab eval scores caption-conditioned runs on the captioned scenes (their labels give alignment); "
            f"this run trained on {dataset!r}: sample with difflab generate and score the images yourself"
        )
    if getattr(args, "prompt", None):
        raise ValueError("difflab eval draws the captions of --split itself: drop --prompt")
    data = get_dataset("scenes", args.split, n=args.n) if args.n <= 1000 else None
    if data is None:
        raise ValueError(f"--n {args.n}: a test split of the captioned scenes holds 1,000 captions")
    conds = [data[i][1] for i in range(args.n)]
    args.prompt = [c["caption"] for c in conds]
    return torch.stack([c["labels"] for c in conds])


def _prepare_scoring(args: argparse.Namespace, cfg: Any, stage: LoadedStage, n: int) -> None:
    """Read the real data and load (or train, once) the feature net before any sample is drawn."""
    import torch

    from .eval import prepare_evaluation
    from .train.stage import crop_padding

    shape = tuple(crop_padding(torch.zeros(1, *stage.image_shape), cfg).shape[1:])
    if len(shape) != 3:
        raise ValueError(f"difflab eval scores image stages; this one makes {shape} items (videos: see docs/video.md)")
    done = prepare_evaluation(
        cfg.data.name, cfg.data.options, n_samples=n, sample_shape=shape, progress=True if args.progress else None
    )
    if done.get("trained_now"):
        print(
            f"difflab: trained a feature net on this run's data in {done['train_seconds']} s (task accuracy "
            f"{done['task_accuracy']}); cached in {done['feature_net_path']}",
            file=sys.stderr,
        )


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
    captioned = "caption" in cascade.stages[0].conditions
    if captioned:
        scene_labels = _scene_prompts(args, cfg.data.name)
        info["split"] = args.split
    if args.samples:
        x, labels = load_samples(Path(args.samples))
        info["samples_file"] = str(args.samples)
    if not captioned:  # everything that can fail (data, feature net) before sampling
        _prepare_scoring(args, cfg, stage, len(x) if args.samples else args.n)
    if not args.samples:
        t0 = time.perf_counter()
        x, labels = _draw(args, cascade, args.n)
        info.update(
            sampler=_one_or_per_stage(args.sampler) or s.sampler, steps=args.steps or s.steps,
            spacing=args.spacing or s.spacing,
            guidance=s.guidance if args.guidance is None else _one_or_per_stage(args.guidance), seed=args.seed,
            weights=args.weights, sample_seconds=round(time.perf_counter() - t0, 2),
        )  # fmt: skip
    if captioned:
        from .eval.alignment import alignment_rates, scene_fd

        if len(x) != len(scene_labels):
            raise ValueError(f"{len(x)} samples for the {len(scene_labels)} captions of --split {args.split}")
        rates = alignment_rates(x, scene_labels)
        scores = {k: rates[k] for k in ("alignment", "item", "colour", "position")}
        scores["scene_fd"] = scene_fd(x, args.split)
    else:
        conditional = "class" in cascade.stages[0].conditions
        scores = evaluate(x, cfg.data.name, labels=labels if conditional else None, options=cfg.data.options)
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


def add_generate(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", nargs="+", metavar="PROMPT", help='what to draw, e.g. "a red bag at the top left"')
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument(
        "--cascade", nargs="+", metavar="RUN", type=run_or_model,
        help="the caption-conditioned base run, then its super-resolution runs (Imagen-style)",
    )  # fmt: skip
    model.add_argument(
        "--unclip", nargs="+", metavar="RUN", type=run_or_model,
        help="unCLIP: an unclip-prior run, an unclip-decoder run, then super-resolution runs",
    )  # fmt: skip
    model.add_argument(
        "--pretrained", metavar="NAME", help="a shipped text-to-image or unCLIP model (difflab models lists them)"
    )
    p.add_argument("--prior-guidance", type=float_at_least(0.0), metavar="W", help="unCLIP prior CFG weight")
    p.add_argument(
        "--best-of", type=int_at_least(1), default=2, help="unCLIP: prior candidates per image (default: %(default)s)"
    )
    add_sampling_options(p, 4)
    p.add_argument("--out", metavar="PNG", default="generated.png", help="grid file, one row per prompt (%(default)s)")
    p.add_argument("--save", metavar="FILE", help="also write the samples as .npz or .pt (float in [-1, 1])")


def run_generate(args: argparse.Namespace) -> int:
    """``difflab generate PROMPT ... --cascade RUN ...``: ``--n`` images per prompt, one grid row each."""
    from .data import save_grid
    from .train.stage import upscale_for_grid

    prompts = list(args.prompt)
    per_prompt = args.n
    if args.pretrained:
        _pretrained_pipeline(args)
    if args.unclip:
        return _generate_unclip(args, prompts)
    args.run = args.cascade
    args.prompt = [p for p in prompts for _ in range(per_prompt)]
    cascade, _ = _stages(args)
    if not any("caption" in stage.conditions for stage in cascade.stages):
        raise ValueError(f"{args.cascade[0]} is not caption-conditioned (data.conditions lacks caption)")
    t0 = time.perf_counter()
    x, _ = _draw(args, cascade, len(args.prompt))
    seconds = time.perf_counter() - t0
    out = Path(args.out)
    save_grid(upscale_for_grid(x), out, nrow=per_prompt)
    print(f"wrote {out} ({len(prompts)} prompt(s) x {per_prompt} samples, {seconds:.1f} s)")
    if args.save:
        print(f"wrote {save_samples(Path(args.save), x, None)}")
    return 0


def _pretrained_pipeline(args: argparse.Namespace) -> None:
    """``--pretrained NAME``: its parts become ``--cascade`` (text-to-image) or ``--unclip``."""
    from .pretrained import get

    info = get(args.pretrained)
    if info.method not in ("text-to-image", "unclip"):
        raise ValueError(
            f"pretrained:{info.name} is a {info.method!r} model; generate draws with text-to-image or unclip ones"
        )
    parts = [str(p) for p in info.parts]
    if info.method == "unclip":
        args.unclip = parts
    else:
        args.cascade = parts


def _generate_unclip(args: argparse.Namespace, prompts: list[str]) -> int:
    """``difflab generate PROMPT ... --unclip PRIOR DECODER [SR ...]``."""
    from .data import save_grid
    from .methods.unclip.pipeline import UnCLIP
    from .pretrained import expand
    from .train.distributed import resolve_device
    from .train.stage import upscale_for_grid

    args.unclip = expand(args.unclip)
    if len(args.unclip) < 2:
        raise ValueError("--unclip takes a prior run, a decoder run, then any super-resolution runs")
    if args.labels:
        raise ValueError("--labels does not apply to unCLIP: it draws from captions")
    device = resolve_device(args.device)
    _share_cpu(device)
    pipe = UnCLIP.load(*args.unclip, weights=args.weights, device=device)
    every = [p for p in prompts for _ in range(args.n)]
    t0 = time.perf_counter()
    x = pipe.sample(
        every, prior_guidance=args.prior_guidance, best_of=args.best_of, seed=args.seed,
        sampler=_one_or_per_stage(args.sampler),
        steps=args.steps, spacing=args.spacing, guidance=_one_or_per_stage(args.guidance), aug=args.aug,
        threshold=_one_or_per_stage(args.threshold), precision="bf16" if args.bf16 else "fp32",
        batch_size=args.batch_size, progress=args.progress,
    )[-1]  # fmt: skip
    seconds = time.perf_counter() - t0
    out = Path(args.out)
    save_grid(upscale_for_grid(x), out, nrow=args.n)
    print(f"wrote {out} ({len(prompts)} prompt(s) x {args.n} samples, {seconds:.1f} s)")
    if args.save:
        print(f"wrote {save_samples(Path(args.save), x, None)}")
    return 0


def add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "run",
        metavar="RUN_OR_MODEL",
        type=run_or_model,
        help="a run folder, an exported model folder or pretrained:NAME",
    )
    p.add_argument("--out", metavar="HTML", help="page to write (default: RUN_OR_MODEL/report.html)")
    p.add_argument(
        "--max-samples", type=int_at_least(0), default=12, metavar="N",
        help="sample files shown over training, latest first (default: %(default)s)",
    )  # fmt: skip


def run_report(args: argparse.Namespace) -> int:
    """``difflab report``: see :mod:`difflab.report`."""
    from .pretrained import output_home
    from .report import write_report

    out = write_report(args.run, args.out or output_home(args.run) / "report.html", max_samples=args.max_samples)
    print(f"wrote {out} ({out.stat().st_size / 1024:.1f} KB)")
    return 0


def add_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def run_models(args: argparse.Namespace) -> int:
    """``difflab models``: the shipped pretrained models with their size and card metric."""
    from .pretrained import list_models

    models = list_models()
    rows = [
        {
            "name": m.name, "method": m.method, "params": m.params, "bytes": m.bytes,
            "metric": m.metric.get("name", ""), "value": m.metric.get("value"),
            "description": m.card.get("description", ""), "path": str(m.path),
        }
        for m in models
    ]  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("no pretrained models found")
        return 0
    print(f"{'name':<24} {'method':<14} {'params':>8} {'size':>8}  metric")
    for r in rows:
        value = r["value"]
        metric = f"{r['metric']} {value:.4g}" if isinstance(value, (int, float)) else str(r["metric"])
        print(f"{r['name']:<24} {r['method']:<14} {r['params'] / 1e6:7.2f}M {r['bytes'] / 2**20:6.1f}MB  {metric}")
    total = sum(r["bytes"] for r in rows)
    print(f"{len(rows)} models, {total / 2**20:.1f} MB; use one as pretrained:NAME wherever a run folder goes")
    return 0
