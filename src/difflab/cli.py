"""The ``difflab`` command.

Each subcommand is one entry of :data:`COMMANDS`: a one-line help, a function that adds its
arguments to an ``argparse`` parser, and a function that runs it and returns an exit code.
Adding a subcommand (``train``, ``sample``, ``eval``, ``distill`` ...) means writing those
two functions and one dictionary entry. Heavy imports (torch, matplotlib, tqdm) happen
inside the run functions, so ``difflab --help`` stays fast.

Errors from bad input (``ValueError``, missing files ...) print one line,
``difflab: error: ...``, to stderr and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import __version__

PROG = "difflab"
USAGE_ERROR = 2


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise :class:`UsageError` instead of exiting, so that
    :func:`main` reports every kind of bad input the same way (and is testable)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


# -- argument types -------------------------------------------------------------------------
def _int_at_least(lo: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, got {v}")
        return v

    parse.__name__ = f"integer >= {lo}"
    return parse


def _int_list(lo: int) -> Callable[[str], list[int]]:
    """A comma-separated list of integers (``2,4,8``); used with ``nargs="+"`` so that
    ``--steps 2 4 8`` works too."""
    one = _int_at_least(lo)

    def parse(text: str) -> list[int]:
        return [one(p) for p in text.split(",") if p.strip()]

    return parse


def _flatten(lists: Sequence[Sequence[int]]) -> list[int]:
    return [v for part in lists for v in part]


# -- subcommands ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    """One subcommand: its help line, its arguments, and what it runs (returns an exit code)."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str = ""


DEMO_STEPS = (2, 4, 8, 16, 64)  # the same as difflab.demo.DEFAULT_STEPS (a test checks), without torch


def _add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="outputs/demo", metavar="DIR", help="output folder (default: %(default)s)")
    p.add_argument("--n", type=_int_at_least(10), default=2000, help="samples per run (default: %(default)s)")
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="random seed (default: %(default)s)")
    p.add_argument(
        "--steps",
        type=_int_list(1),
        nargs="+",
        default=None,
        metavar="N",
        help=f"step counts, e.g. --steps 2 4 8 or --steps 2,4,8 (default: {' '.join(map(str, DEMO_STEPS))})",
    )
    p.add_argument(
        "--samplers",
        nargs="+",
        default=None,
        metavar="NAME",
        help="samplers to run (default: every sampler in difflab.diffusion.SAMPLERS)",
    )
    p.add_argument(
        "--spacing",
        choices=("auto", "t", "lam"),
        default="auto",
        help="sampling grid uniform in t or in log-SNR: CosineSchedule().lams(steps, SPACING); "
        "auto: t, but lam for heun (default: %(default)s)",
    )
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG figure (no matplotlib needed)")


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, run_demo  # lazy: imports torch

    config = DemoConfig(
        out=args.out, n=args.n, seed=args.seed, spacing=args.spacing, progress=args.progress, plot=not args.no_plot
    )
    if args.steps is not None:
        config.steps = _flatten(args.steps)
    if args.samplers is not None:
        config.samplers = args.samplers
    run_demo(config)
    return 0


# -- train / sample / eval (the work happens in difflab.train.commands, imported lazily) ----------
SAMPLERS = ("ddpm", "ddim", "dpmpp_2m", "heun")  # difflab.diffusion.SAMPLERS, without importing torch
DEVICES = ("auto", "cpu", "cuda", "mps")


def _float_at_least(lo: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not v >= lo:
            raise argparse.ArgumentTypeError(f"must be a number >= {lo}, got {v}")
        return v

    parse.__name__ = f"number >= {lo}"
    return parse


def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="CONFIG", help="YAML recipe, e.g. configs/digits.yaml")
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.steps=500 model.channels=64"
    )
    p.add_argument("--out", metavar="RUN", help="run folder (default: OUT_DIR/NAME from the config)")
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint (exactly, on the same machine)")
    p.add_argument("--seed", type=_int_at_least(0), help="the one seed of data order, noise and samples (train.seed)")
    p.add_argument("--device", choices=DEVICES, help="train.device (default: from the config, auto)")
    p.add_argument("--time-limit", type=_float_at_least(0.0), metavar="S", help="stop (with a checkpoint) after S s")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run_train(args: argparse.Namespace) -> int:
    from .commands import run_train  # lazy: imports torch

    return run_train(args)


def _add_sampling(p: argparse.ArgumentParser, n_default: int) -> None:
    p.add_argument(
        "run", nargs="+", metavar="RUN", help="run folder (or its checkpoint folder); several: a cascade, base first"
    )
    p.add_argument("--sampler", choices=SAMPLERS, help="sampler (default: the run's sample.sampler)")
    p.add_argument("--steps", type=_int_at_least(1), help="sampling steps (default: the run's sample.steps)")
    p.add_argument("--spacing", choices=("t", "lam"), help="grid uniform in t or log-SNR (default: sample.spacing)")
    p.add_argument(
        "--guidance",
        type=_float_at_least(0.0),
        help="CFG weight w, uncond + w (cond - uncond) (default: sample.guidance)",
    )
    p.add_argument("--n", type=_int_at_least(1), default=n_default, help="number of samples (default: %(default)s)")
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="noise seed (default: %(default)s)")
    p.add_argument("--labels", nargs="+", metavar="Y", help="class labels to cycle through, e.g. --labels 3 or 0,1,2")
    p.add_argument("--weights", choices=("ema", "model"), default="ema", help="which weights (default: %(default)s)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="device (default: %(default)s)")
    p.add_argument(
        "--aug", type=_float_at_least(0.0), help="cascade: noise level of the low-resolution input, a fraction of t "
        "(default: the stage's sample.lowres_aug)"
    )  # fmt: skip
    p.add_argument("--bf16", action="store_true", help="sample under bf16 autocast")
    p.add_argument(
        "--batch-size", type=_int_at_least(1), help="samples per batch (default: 500 on GPU, by image size on CPU)"
    )
    p.add_argument("--progress", action="store_true", help="show a progress bar per batch")


def _add_sample(p: argparse.ArgumentParser) -> None:
    _add_sampling(p, 64)
    p.add_argument("--out", metavar="PNG", help="grid file (default: RUN/samples/SAMPLER_STEPSsteps_seedSEED.png)")
    p.add_argument("--nrow", type=_int_at_least(1), help="images per grid row (default: square, or one per class)")
    p.add_argument("--save", metavar="FILE", help="also write the samples as .npz or .pt (float in [-1, 1], labels)")


def _run_sample(args: argparse.Namespace) -> int:
    from .commands import run_sample

    return run_sample(args)


def _add_eval(p: argparse.ArgumentParser) -> None:
    _add_sampling(p, 1000)
    p.add_argument("--samples", metavar="FILE", help="score these saved samples (.npz/.pt) instead of sampling")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--out", metavar="JSON", help="also write the result to this file")


def _run_eval(args: argparse.Namespace) -> int:
    from .commands import run_eval

    return run_eval(args)


def _add_distill(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="teacher: a run of 'difflab train' (or an earlier distill stage)")
    p.add_argument("--to-steps", type=_int_at_least(1), help="sampling steps of the last student (default: 4)")
    p.add_argument("--from-steps", type=_int_at_least(2), help="teacher DDIM steps the first student halves (256)")
    p.add_argument("--updates", type=_int_at_least(1), help="optimizer updates per halving (default: 1000)")
    p.add_argument("--batch-size", type=_int_at_least(1), help="batch size (default: the teacher's)")
    p.add_argument("--lr", type=_float_at_least(0.0), help="learning rate, decayed linearly to 0 per halving (1e-4)")
    p.add_argument("--weighting", choices=("truncated-snr", "snr+1"), help="loss weighting (default: truncated-snr)")
    p.add_argument("--parameterization", choices=("eps", "x", "v", "both"), help="student's (default: teacher's)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--guidance", type=_float_at_least(0.0), metavar="W", help="distil the CFG teacher at fixed w")
    g.add_argument(
        "--guidance-range",
        type=_float_at_least(0.0),
        nargs=2,
        metavar=("LO", "HI"),
        help="student takes w in [LO, HI] as an input (Meng et al. 2023)",
    )
    p.add_argument("--config", metavar="YAML", help="a DistillConfig recipe (flags and key=value override it)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="DistillConfig overrides, e.g. ckpt_every=200")
    p.add_argument("--out", metavar="DIR", help="output folder (default: RUN-distilled); one run folder per halving")
    p.add_argument("--resume", action="store_true", help="skip finished halvings and continue an interrupted one")
    p.add_argument("--seed", type=_int_at_least(0), help="seed (default: 0)")
    p.add_argument("--device", choices=DEVICES, help="device (default: auto)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), help="training precision (default: fp32)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _run_distill(args: argparse.Namespace) -> int:
    from .methods.distill import run_distill

    return run_distill(args)


# -- autoregressive diffusion models: difflab.methods.ardm.cli (imports torch only when run) -------
def _ardm(name: str) -> Callable[..., int | None]:
    def call(arg: argparse.ArgumentParser | argparse.Namespace) -> int | None:
        from .methods.ardm import cli as ardm

        return getattr(ardm, name)(arg)

    return call


COMMANDS: dict[str, Command] = {
    "demo": Command(
        help="sample a 2-D Gaussian mixture with every sampler and its exact denoiser",
        description=(
            "Samples a 2-D Gaussian mixture (8 components on a ring, weights 1:2:...:8) with every sampler "
            "at several step counts, using the mixture's exact denoiser, so no training is needed. Prints "
            "network evaluations, the sliced Wasserstein distance to the data, the error of the mixture "
            "weights and wall time; then shows classifier-free guidance and dynamic thresholding. Writes "
            "demo.png and metrics.json into --out."
        ),
        add_arguments=_add_demo,
        run=_run_demo,
    ),
    "train": Command(
        help="train a diffusion model from a YAML recipe (exit 130/143 when interrupted, after saving)",
        description=(
            "Trains the stage described by CONFIG (see configs/) into the run folder: config.yaml, metrics.jsonl, "
            "tb/ (TensorBoard), samples/step_*.png and checkpoint/. KEY=VALUE arguments override the config. "
            "--resume continues exactly from RUN/checkpoint. SIGINT/SIGTERM save a checkpoint and exit with "
            "130/143; a non-finite loss keeps the last good checkpoint and exits with 1. Under torchrun "
            "(torchrun --nproc_per_node N -m difflab train ...) every process trains with DDP."
        ),
        add_arguments=_add_train,
        run=_run_train,
    ),
    "sample": Command(
        help="sample a trained run (EMA weights) into a PNG grid, optionally .npz/.pt",
        description=(
            "Draws --n samples from RUN's checkpoint with its EMA weights (--weights model for the raw ones), "
            "using the run's sampler settings unless overridden, classifier-free guidance for conditional "
            "models, and writes a PNG grid (and the samples with --save)."
        ),
        add_arguments=_add_sample,
        run=_run_sample,
    ),
    "eval": Command(
        help="score a trained run: FD (with its floor), precision, recall, class accuracy",
        description=(
            "Samples --n images from RUN (or reads --samples) and scores them with difflab.eval.evaluate "
            "against the run's dataset. --json prints one JSON object."
        ),
        add_arguments=_add_eval,
        run=_run_eval,
    ),
    "distill": Command(
        help="progressive distillation: halve a trained stage's sampling steps down to --to-steps",
        description=(
            "Progressive distillation (Salimans & Ho 2022, Algorithm 2): a student learns to do in one DDIM step "
            "what the teacher does in two, then becomes the teacher, from --from-steps/2 down to --to-steps. "
            "Writes one run folder per halving (OUT/steps-0128 ... OUT/steps-0004) that 'difflab sample' and "
            "'difflab eval' accept; their config samples with the student's step count. --guidance W distils a "
            "class-conditional teacher under classifier-free guidance at fixed w; --guidance-range LO HI makes w "
            "an input of the student (Meng et al. 2023)."
        ),
        add_arguments=_add_distill,
        run=_run_distill,
    ),
    "wavegrad-train": Command(
        help="train a WaveGrad / PriorGrad vocoder on speech (e.g. configs/wavegrad-small.yaml)",
        description=(
            "Trains WaveGrad (Chen et al. 2021) with the shared trainer: random speech segments, L1 on eps at a "
            "continuous noise level; model.prior=priorgrad uses PriorGrad's data-dependent prior. --minutes stops "
            "cleanly with a checkpoint; --search N then grid-searches an N-step schedule. See docs/wavegrad.md."
        ),
        add_arguments=lambda p: _wavegrad().add_train_arguments(p),
        run=lambda a: _wavegrad().run_train(a),
    ),
    "wavegrad-search": Command(
        help="grid-search an N-step WaveGrad schedule on validation audio and save it with the checkpoint",
        add_arguments=lambda p: _wavegrad().add_search_arguments(p),
        run=lambda a: _wavegrad().run_search(a),
    ),
    "vocode": Command(
        help="re-synthesise a speech file from its mel with a WaveGrad run (--steps 6 -o out.wav)",
        add_arguments=lambda p: _wavegrad().add_vocode_arguments(p),
        run=lambda a: _wavegrad().run_vocode(a),
    ),
    "ardm-train": Command(
        help="train an autoregressive diffusion model (OA-ARDM, Upscale ARDM, text) from a YAML recipe",
        description="Trains the ARDM of CONFIG (e.g. configs/ardm-digits.yaml) with the difflab trainer; "
        "--time-limit stops early with a checkpoint.",
        add_arguments=_ardm("add_train"),
        run=_ardm("run_train"),
    ),
    "ardm-eval": Command(
        help="ARDM test NLL in bits per dimension; per-step losses and DP/uniform parallel budgets",
        description="Estimates the NLL (mean and standard error over --orders random orders per image); with "
        "--budgets, estimates the per-step losses (saved as ardm_steps.json for DP plans) and the NLL with K "
        "network calls under the DP plan and under uniform segments.",
        add_arguments=_ardm("add_eval"),
        run=_ardm("run_eval"),
    ),
    "ardm-export": Command(
        help="write an ARDM's EMA weights (bf16) and config alone: a small model folder for the codec",
        add_arguments=_ardm("add_export"),
        run=_ardm("run_export"),
    ),
    "compress": Command(
        help="losslessly compress PNG images with an ARDM and rANS, each image coded on its own",
        description="Codes IN.png... into OUT.ardm with MODEL (an ARDM run or exported folder) in a fixed order; "
        "--budget K uses K network calls per image (DP plan). See docs/ardm.md for the file format.",
        add_arguments=_ardm("add_compress"),
        run=_ardm("run_compress"),
    ),
    "decompress": Command(
        help="decode an .ardm file made by 'difflab compress' back into PNGs (exact pixels)",
        add_arguments=_ardm("add_decompress"),
        run=_ardm("run_decompress"),
    ),
}


def _wavegrad():  # the WaveGrad CLI module (it imports no torch at module level)
    from .methods.wavegrad import cli

    return cli


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="difflab: diffusion models in one PyTorch toolkit (schedules, samplers, guidance, methods).",
        epilog=f"Run '{PROG} COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.description or cmd.help)
        cmd.add_arguments(p)
    return parser


def _take_overrides(args: argparse.Namespace, extra: list[str]) -> None:
    """KEY=VALUE overrides may follow options (``train CFG --resume a.b=1``): argparse leaves
    them over, so add them to ``args.overrides``; anything else left over is an error."""
    bad = [e for e in extra if not hasattr(args, "overrides") or e.startswith("-") or "=" not in e]
    if bad:
        raise UsageError(f"unrecognized arguments: {' '.join(bad)} (see '{PROG} --help')")
    if extra:
        args.overrides = [*args.overrides, *extra]


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return USAGE_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``difflab`` command; returns the exit status."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        _take_overrides(args, extra)
    except UsageError as e:
        return _fail(str(e))
    except SystemExit as e:  # --help and --version exit through argparse
        return e.code if isinstance(e.code, int) else 0
    if args.command is None:
        return _fail(f"a command is required, one of: {', '.join(COMMANDS)} (see '{PROG} --help')")
    try:
        return COMMANDS[args.command].run(args)
    except BrokenPipeError:  # e.g. `difflab demo | head`: stop quietly, like other command-line tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, UsageError, OSError) as e:
        return _fail(" ".join(str(e).split()) or type(e).__name__)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
