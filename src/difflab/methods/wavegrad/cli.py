"""The WaveGrad subcommands of ``difflab`` (entries of ``difflab.cli.COMMANDS``); torch is imported lazily.

- ``difflab wavegrad-train CONFIG [KEY=VALUE ...] [--out RUN] [--resume] [--minutes M] [--search 6]``
- ``difflab wavegrad-distill TEACHER --out RUN [--teacher-steps 6] [--minutes M] [KEY=VALUE ...]``: progressive
  distillation of the vocoder (a student with half the teacher's steps)
- ``difflab wavegrad-search RUN [--steps 6]``: grid-search an N-step schedule on validation audio
  and save it with the checkpoint
- ``difflab vocode RUN in.wav --steps 6 -o out.wav [--device cpu] [--threads N]``: re-synthesise a file
  from its mel (as many samples as the input), printing the schedule used and the real-time factor
  of the vocoding alone
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from ...argtypes import DEVICES, add_train_arguments, float_at_least, int_at_least, run_or_model

SCHEDULES = ("auto", "searched", "naive", "fixed")


_positive_float = float_at_least(0.0, strict=True)
_positive_int = int_at_least(1)


def _device(name: str) -> object:
    """``--device`` as a torch device (``auto``: CUDA, then MPS, then CPU); an unavailable one is a one-line error."""
    from ...train.distributed import resolve_device

    try:
        return resolve_device(name)
    except ValueError:
        raise ValueError(
            f"--device {name}: not available here (this torch sees no {name} device); use --device cpu or auto"
        ) from None


def _search_args(p: argparse.ArgumentParser, flag: str, default: int | None) -> None:
    p.add_argument(flag, type=_positive_int, default=default, metavar="N", help="schedule steps to search")
    p.add_argument("--clips", type=_positive_int, default=8, help="validation clips scored (default: %(default)s)")
    p.add_argument("--seconds", type=_positive_float, default=1.5, help="seconds per clip (default: %(default)s)")
    p.add_argument("--method", choices=("coordinate", "exhaustive"), default="coordinate", help="grid search method")


def add_train(p: argparse.ArgumentParser) -> None:
    add_train_arguments(p, "configs/wavegrad-small.yaml", minutes=True)
    p.add_argument(
        "--fit-schedule",
        action="store_true",
        help="with --minutes: set train.steps from the measured speed so the learning-rate decay "
        "(train.decay=cosine|linear) ends when the time is up",
    )
    p.add_argument(
        "--snapshots",
        default="",
        metavar="S,S",
        help="training seconds at which to score and save EMA snapshots (counted from the start of the weights' "
        "training: with train.init or --resume, the seconds recorded with them are included)",
    )
    p.add_argument(
        "--snapshot-weights", metavar="S,S", help="save snapshot weights only at these of the --snapshots times"
    )
    _search_args(p, "--search", None)


def run_train(args: argparse.Namespace) -> int:
    from ...config import ConfigKeyError
    from ...train.config import config_from_args
    from .train import train_wavegrad

    cfg, run_dir = config_from_args(args)
    snaps = tuple(float(s) for s in args.snapshots.split(",") if s.strip())
    keep = None if args.snapshot_weights is None else tuple(float(s) for s in args.snapshot_weights.split(",") if s)
    limit = args.minutes * 60 if args.minutes else None
    if args.fit_schedule and limit is None:
        raise ValueError("--fit-schedule needs --minutes (it fits train.steps into that time)")
    try:
        result, trainer = train_wavegrad(
            cfg, run_dir, resume=args.resume, time_limit=limit, snapshots=snaps, snapshot_weights=keep,
            fit_schedule=args.fit_schedule,
        )  # fmt: skip
    except ConfigKeyError as e:  # e.g. model.channels=abc, found when the method checks its model section
        raise e.located(args.config, args.overrides) from None
    if args.search and result.status in ("done", "time-limit") and trainer.dist.is_main:
        _search(run_dir, args.search, args, trainer.method.corpus.split("val"), trainer.device)
    return result.exit_code


def add_distill(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "teacher", metavar="TEACHER", type=run_or_model, help="WaveGrad run or pretrained:NAME (standard prior)"
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="run config overrides, e.g. train.steps=3000")
    p.add_argument("--out", required=True, metavar="RUN", help="the student's run folder")
    p.add_argument(
        "--teacher-steps",
        type=_positive_int,
        default=6,
        help="the teacher's schedule steps, halved (default: %(default)s)",
    )
    p.add_argument(
        "--schedule", choices=("auto", "searched", "naive", "fixed"), default="auto",
        help="the teacher's schedule (default: %(default)s = searched if saved)",
    )  # fmt: skip
    p.add_argument("--minutes", type=_positive_float, help="stop (with a checkpoint) after M min")
    p.add_argument("--fit-schedule", action="store_true", help="with --minutes: end the learning-rate decay on time")
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint")
    p.add_argument("--device", choices=DEVICES, help="train.device (default: auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_distill(args: argparse.Namespace) -> int:
    from .distill import distill_wavegrad

    limit = args.minutes * 60 if args.minutes else None
    if args.fit_schedule and limit is None:
        raise ValueError("--fit-schedule needs --minutes (it fits train.steps into that time)")
    overrides = list(args.overrides) + (["train.progress=false"] if args.no_progress else [])
    result, method = distill_wavegrad(
        args.teacher, args.out, overrides, teacher_steps=args.teacher_steps, schedule=args.schedule,
        time_limit=limit, fit_schedule=args.fit_schedule, resume=args.resume, device=args.device,
    )  # fmt: skip
    if int(os.environ.get("RANK", "0")) == 0:  # one line, not one per torchrun process
        n = method.n_student
        print(f"student in {args.out}: {n} steps (DDIM); vocode with: difflab vocode {args.out} IN.wav --steps {n}")
    return result.exit_code


def _search(run: Path, steps: int, args: argparse.Namespace, val_audio: list, device: object) -> None:
    from .. import load
    from .vocoder import search_and_save, validation_clips

    voc = load(run, device=device, method="wavegrad")
    if voc.distilled:
        n = voc.distilled["steps"]
        raise ValueError(f"{run} is a distilled {n}-step student: it samples only its own schedule")
    clips = validation_clips(val_audio, voc.mel_config, args.clips, args.seconds)
    t0 = time.perf_counter()
    entry = search_and_save(voc, clips, steps, method=args.method)
    print(
        f"searched {steps}-step schedule: betas {[f'{b:.0e}' for b in entry['betas']]}, validation log-mel L1 "
        f"{entry['val_mel_l1']:.4f} ({entry['evaluated']} schedules, {time.perf_counter() - t0:.0f} s); "
        f"saved in {voc.path / 'format.json'}"
    )


def add_search(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "run", metavar="RUN", type=run_or_model, help="WaveGrad run folder (its config names the validation data)"
    )
    _search_args(p, "--steps", 6)
    p.add_argument("--device", choices=DEVICES, default="cpu", help="device (default: %(default)s)")


def run_search(args: argparse.Namespace) -> int:
    from ...config import load_yaml
    from ...train.checkpoint import checkpoint_path, read_meta
    from .data import load_corpus

    ckpt_dir = checkpoint_path(args.run)
    opts = (load_yaml(ckpt_dir / "config.yaml").get("data") or {}).get("options") or {}
    rate = read_meta(ckpt_dir)["model_config"]["mel"]["sample_rate"]
    corpus = load_corpus(opts.get("source", "asterisk"), opts.get("root"), rate, opts.get("voices"))
    _search(Path(args.run), args.steps, args, corpus.split("val"), _device(args.device))
    return 0


def add_vocode(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "run",
        metavar="RUN",
        type=run_or_model,
        help="WaveGrad run, checkpoint folder, snapshot .safetensors or pretrained:NAME",
    )
    p.add_argument("input", metavar="IN.wav", help="audio file whose mel is re-synthesised")
    p.add_argument(
        "-o", "--out", required=True, metavar="OUT.wav", help="output file: 16-bit PCM WAV, name ending in .wav"
    )
    p.add_argument("--steps", type=_positive_int, help="sampling steps (default: 6; a distilled student's own count)")
    p.add_argument(
        "--schedule", choices=SCHEDULES, default="auto",
        help="beta schedule (default: %(default)s = searched if saved for --steps, else fixed, else naive)",
    )  # fmt: skip
    p.add_argument("--resample", action="store_true", help="resample input at another rate to the model's")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default: %(default)s)")
    p.add_argument("--device", choices=DEVICES, default="cpu", help="device (default: %(default)s)")
    p.add_argument(
        "--threads", type=int_at_least(0), default=0, help="torch CPU threads (default: 0 = torch's default)"
    )


def run_vocode(args: argparse.Namespace) -> int:
    import torch

    from .. import load
    from .audio import write_wav

    if Path(args.out).suffix.lower() != ".wav":
        raise ValueError(
            f"-o {args.out}: vocode writes 16-bit PCM WAV only; give a name ending in .wav (and convert it afterwards)"
        )
    device = _device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    voc = load(args.run, device=device, method="wavegrad")
    steps = args.steps or (voc.distilled["steps"] if voc.distilled else 6)
    kind = voc.resolve_schedule(steps, args.schedule)
    betas = voc.schedule(steps, kind)  # an unknown or unsaved schedule fails before any decoding
    audio = voc.read(args.input, resample=args.resample)
    mel = voc.mel(audio)[0]
    voc(mel[:, :4], betas=betas[-1:], seed=args.seed).cpu()  # warm-up (kernel selection, allocations): 1 step
    t0 = time.perf_counter()
    wav = voc(mel, betas=betas, seed=args.seed)[: len(audio)].cpu().numpy()
    secs = time.perf_counter() - t0
    rate = voc.mel_config.sample_rate
    out = write_wav(args.out, wav, rate)
    where = f"{device}, {torch.get_num_threads()} thread(s)" if device.type == "cpu" else str(device)
    print(
        f"wrote {out} ({len(wav) / rate:.2f} s, the input's length; {steps} steps, {kind} schedule); "
        f"vocoding took {secs:.2f} s on {where}: real-time factor {secs * rate / len(wav):.2f} "
        "(vocoding time / audio time after a warm-up; loading, decoding and writing not included)"
    )
    return 0
