"""The ``difflab`` command.

Each subcommand is one entry of :data:`COMMANDS`: a one-line help and where it lives,
``"module:NAME"``, a module with ``add_NAME(parser)`` (its arguments) and ``run_NAME(args)``
(returns an exit code): :mod:`difflab.commands` for the core commands, each method's ``cli``
module for its own. Adding a subcommand means writing those two functions and one dictionary
entry. Heavy imports (torch, matplotlib, tqdm) happen inside the run functions, so
``difflab --help`` stays fast.

Errors from bad input (``ValueError``, missing files ...) print one line,
``difflab: error: ...``, to stderr and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import __version__
from .allocator import keep_freed_memory

PROG = "difflab"
USAGE_ERROR = 2


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise :class:`UsageError` instead of exiting, so that
    :func:`main` reports every kind of bad input the same way (and is testable)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


# -- subcommands ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    """One subcommand: its help line and ``where`` it lives, ``"module:NAME"``: that module (imported
    when the parser is built; it imports no torch at module level) has ``add_NAME(parser)`` and
    ``run_NAME(args) -> exit code``."""

    help: str
    where: str
    description: str = ""

    def _function(self, kind: str) -> Callable[..., Any]:
        module, name = self.where.split(":")
        return getattr(importlib.import_module(module), f"{kind}_{name}")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        self._function("add")(parser)

    def run(self, args: argparse.Namespace) -> int:
        return int(self._function("run")(args))


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
        where="difflab.commands:demo",
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
        where="difflab.commands:train",
    ),
    "sample": Command(
        help="sample a trained run (EMA weights) into a PNG grid, optionally .npz/.pt",
        description=(
            "Draws --n samples from RUN's checkpoint with its EMA weights (--weights model for the raw ones), "
            "using the run's sampler settings unless overridden, classifier-free guidance for conditional "
            "models, and writes a PNG grid (and the samples with --save)."
        ),
        where="difflab.commands:sample",
    ),
    "generate": Command(
        help="text to image: draw prompts with a caption-conditioned cascade or unCLIP into a PNG grid",
        description=(
            "Draws --n images per PROMPT with the cascade RUN ... (a caption-conditioned base stage, then its "
            "super-resolution stages), with classifier-free guidance (--guidance, one weight or one per stage) "
            "and thresholding (--threshold none|static|dynamic, one or one per stage); one grid row per prompt. "
            "--unclip PRIOR DECODER [SR ...] draws with unCLIP instead: the prior maps each prompt to a CLIP "
            "image embedding (--prior-guidance, --best-of), the decoder and its stages draw the image. "
            "--pretrained NAME uses a shipped text-to-image or unclip model (difflab models)."
        ),
        where="difflab.commands:generate",
    ),
    "eval": Command(
        help="score a trained run: FD (with its floor), precision, recall, class accuracy",
        description=(
            "Samples --n images from RUN (or reads --samples) and scores them with difflab.eval.evaluate "
            "against the run's dataset. Digits and Fashion-MNIST use the feature nets shipped with difflab; any "
            "other image data set (an image folder) a net trained on its images the first time, with a progress "
            "bar, and cached under ~/.cache/difflab/features (DIFFLAB_CACHE). The data and the feature net are "
            "checked before sampling. --json prints one JSON object."
        ),
        where="difflab.commands:eval",
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
        where="difflab.commands:distill",
    ),
    "wavegrad-train": Command(
        help="train a WaveGrad / PriorGrad vocoder on speech (e.g. configs/wavegrad-small.yaml)",
        description=(
            "Trains WaveGrad (Chen et al. 2021) with the shared trainer: random speech segments, L1 on eps at a "
            "continuous noise level; model.prior=priorgrad uses PriorGrad's data-dependent prior. --minutes stops "
            "cleanly with a checkpoint; --search N then grid-searches an N-step schedule. See docs/wavegrad.md."
        ),
        where="difflab.methods.wavegrad.cli:train",
    ),
    "wavegrad-distill": Command(
        help="progressive distillation of a WaveGrad vocoder: a student with half its teacher's steps (6 -> 3)",
        description=(
            "The student (a copy of the teacher) learns to do in one DDIM step what the teacher does in two, on the "
            "teacher's own schedule (its searched one by default), with the teacher's data and the shared trainer. "
            "The student vocodes with DDIM: difflab vocode RUN IN.wav --steps 3 -o out.wav. See docs/wavegrad.md."
        ),
        where="difflab.methods.wavegrad.cli:distill",
    ),
    "wavegrad-search": Command(
        help="grid-search an N-step WaveGrad schedule on validation audio and save it with the checkpoint",
        where="difflab.methods.wavegrad.cli:search",
    ),
    "vocode": Command(
        help="re-synthesise a speech file from its mel with a WaveGrad run (--steps 6 -o out.wav)",
        where="difflab.methods.wavegrad.cli:vocode",
    ),
    "video": Command(
        help="video stages: sample clips, extend videos, interpolate frame rates (GIF / MP4 / filmstrip)",
        description="difflab video sample RUN --out clips.gif; difflab video extend RUN [INPUT] --frames 64 --out "
        "long.mp4; difflab video interpolate RUN [INPUT] --factor 4 --out smooth.gif. Extension and interpolation "
        "condition new clips on known frames by reconstruction guidance (--weight) or replacement (--method).",
        where="difflab.methods.video.cli:video",
    ),
    "unclip": Command(
        help="unCLIP image manipulations: variations, interpolations, text diffs (PNG grids)",
        description="difflab unclip variations --decoder RUN IMAGE --n 8 --out v.png; difflab unclip interpolate "
        "--decoder RUN IMAGE_A IMAGE_B --mode noise --out i.png; difflab unclip text-diff --decoder RUN IMAGE --from "
        "CAPTION --to CAPTION --out t.png. --sr RUN ... adds super-resolution stages. Text to image: difflab "
        "generate PROMPT --unclip PRIOR DECODER [SR ...].",
        where="difflab.methods.unclip.cli:unclip",
    ),
    "report": Command(
        help="one self-contained HTML page for a run or model: config, curves, samples, metrics",
        description=(
            "Writes one HTML file (default RUN_OR_MODEL/report.html) that needs nothing else: the summary, the "
            "config, training curves (loss, learning rate, gradient norm, throughput), metric-vs-step charts, the "
            "sample grids over training (latest first), audio and video, and eval.json, all embedded inline."
        ),
        where="difflab.commands:report",
    ),
    "models": Command(
        help="list the pretrained models shipped with difflab (use one as pretrained:NAME)",
        description=(
            "Lists every pretrained model: name, method, parameters, size on disk and the metric of its model "
            "card (README.md in its folder). Any command that takes a run folder takes pretrained:NAME instead, "
            "e.g. difflab sample pretrained:fashion-mnist-4step; difflab.load('pretrained:digits') in Python."
        ),
        where="difflab.commands:models",
    ),
    "app": Command(
        help="a browser app (Gradio) with a tab per method: sample, distilled vs teacher, compress, vocode, video",
        description=(
            "Serves a page on --host:--port (default 127.0.0.1:7860, this machine only) with a tab per method: "
            "class-conditional and text-to-image sampling, a distilled student beside its teacher, ARDM lossless "
            "compression of an uploaded image (with PNG and JPEG-XL sizes), WaveGrad vocoding of an uploaded file "
            "or a sentence spoken by espeak-ng (with Griffin-Lim), and video sampling / extension. It offers the "
            "shipped pretrained models and the runs given with --model and --video, refuses inputs over its "
            "limits with a message, and serves only files under --out. Needs the app extra: pip install "
            "'difflab[app]'. See docs/app.md."
        ),
        where="difflab.app.cli:app",
    ),
    "ardm-train": Command(
        help="train an autoregressive diffusion model (OA-ARDM, Upscale ARDM, text) from a YAML recipe",
        description="Trains the ARDM of CONFIG (e.g. configs/ardm-digits.yaml) with the difflab trainer; "
        "--time-limit stops early with a checkpoint.",
        where="difflab.methods.ardm.cli:train",
    ),
    "ardm-eval": Command(
        help="ARDM test NLL in bits per dimension; per-step losses and DP/uniform parallel budgets",
        description="Estimates the NLL (mean and standard error over --orders random orders per image); with "
        "--budgets, estimates the per-step losses (saved as ardm_steps.json for DP plans) and the NLL with K "
        "network calls under the DP plan and under uniform segments.",
        where="difflab.methods.ardm.cli:eval",
    ),
    "ardm-export": Command(
        help="write an ARDM's EMA weights (bf16) and config alone: a small model folder for the codec",
        where="difflab.methods.ardm.cli:export",
    ),
    "compress": Command(
        help="losslessly compress PNG images with an ARDM and rANS, each image coded on its own",
        description="Codes IN.png... into OUT.ardm with MODEL (an ARDM run or exported folder) in a fixed order; "
        "--budget K uses K network calls per image (DP plan). See docs/ardm.md for the file format.",
        where="difflab.methods.ardm.cli:compress",
    ),
    "decompress": Command(
        help="decode an .ardm file made by 'difflab compress' back into PNGs (exact pixels)",
        where="difflab.methods.ardm.cli:decompress",
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
    keep_freed_memory()  # tensor buffers reused instead of page-faulted afresh (difflab/allocator.py)
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
