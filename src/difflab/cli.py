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
}


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


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return USAGE_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``difflab`` command; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
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
