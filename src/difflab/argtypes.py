"""Argument types, choices and the training arguments shared by ``difflab`` subcommands (no torch import).

A bad value is an ``argparse.ArgumentTypeError`` that the CLI reports in one line.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

SAMPLERS = ("ddpm", "ddim", "dpmpp_2m", "heun")  # difflab.diffusion.SAMPLERS, without importing torch (a test checks)
DEVICES = ("auto", "cpu", "cuda", "mps")


def int_at_least(lo: int) -> Callable[[str], int]:
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


def int_list(lo: int) -> Callable[[str], list[int]]:
    """A comma-separated list of integers (``2,4,8``); used with ``nargs="+"`` so that
    ``--steps 2 4 8`` works too."""
    one = int_at_least(lo)

    def parse(text: str) -> list[int]:
        return [one(p) for p in text.split(",") if p.strip()]

    return parse


def flatten(lists: Sequence[Sequence[int]]) -> list[int]:
    return [v for part in lists for v in part]


def float_at_least(lo: float, strict: bool = False) -> Callable[[str], float]:
    """A number ``>= lo`` (``> lo`` when ``strict``)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (v > lo if strict else v >= lo):
            raise argparse.ArgumentTypeError(f"must be a number {'>' if strict else '>='} {lo}, got {v}")
        return v

    parse.__name__ = f"number {'>' if strict else '>='} {lo}"
    return parse


def add_train_arguments(p: argparse.ArgumentParser, example: str, minutes: bool = False) -> None:
    """What every training command takes: CONFIG (``example``), KEY=VALUE overrides, ``--out``, ``--resume``,
    ``--device``, ``--no-progress`` and a time limit (``--time-limit`` seconds, or ``--minutes``)."""
    p.add_argument("config", metavar="CONFIG", help=f"YAML recipe, e.g. {example}")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.steps=500")
    p.add_argument("--out", metavar="RUN", help="run folder (default: OUT_DIR/NAME from the config)")
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint (exactly, on the same machine)")
    p.add_argument("--device", choices=DEVICES, help="train.device (default: from the config, auto)")
    if minutes:
        p.add_argument("--minutes", type=float_at_least(0, strict=True), help="stop (with a checkpoint) after M min")
    else:
        p.add_argument("--time-limit", type=float_at_least(0.0), metavar="S", help="stop (with a checkpoint) after S s")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_or_model(text: str) -> str:
    """A run (or checkpoint, exported or diffusers) folder as given, or ``pretrained:NAME``: the shipped
    model's folder, its files checked (an unknown name lists the known ones; a corrupt file is named)."""
    from .pretrained import PretrainedError, is_pretrained, resolve

    if not is_pretrained(text):
        return text
    try:
        return str(resolve(text))
    except PretrainedError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


run_or_model.__name__ = "run folder or pretrained:NAME"
