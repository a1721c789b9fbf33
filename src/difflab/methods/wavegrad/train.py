"""Training WaveGrad (Chen et al. 2021) and PriorGrad (Lee et al. 2022) with difflab's one Trainer.

:class:`WaveGradTrainer` overrides the Trainer's hooks only: the dataset is random hop-aligned
segments of speech (:class:`.data.SegmentDataset`, with ``n_fft / 2`` samples of context on each side
so the mel of a segment equals the whole utterance's mel there), the model is :class:`.net.WaveGrad`,
the loss is :func:`.diffusion.wavegrad_loss` (L1 on eps at a continuous noise level). Everything
else (AdamW, EMA, bf16/fp16, DDP, exact resume, signals) is the shared loop.

A run config is a normal difflab recipe (``configs/wavegrad-small.yaml``): ``model`` holds the
:class:`.net.WaveGradConfig` (with ``mel`` and ``prior``), ``data.options`` holds ``source``
(asterisk|cache|folder|ljspeech), ``root`` and ``segment_frames``. Extra to the Trainer:
``time_limit`` (seconds of this session) stops a session cleanly, and ``snapshots`` (seconds of
training time) score the EMA model on validation clips and write its weights (bf16 safetensors) to
``RUN/snapshots/`` for quality-vs-training-time curves. Training seconds count from the start of the
weights' training: a run resumed, or started from a WaveGrad checkpoint with ``train.init``, adds the
seconds recorded with it. With ``fit_schedule`` and a time limit, ``train.steps`` is set from the speed
measured over the first updates, so that a decaying learning rate (``train.decay``) reaches its end
when the time is up, not at a step count guessed in advance.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...config import dump_yaml
from ...train.checkpoint import load_checkpoint
from ...train.config import RunConfig
from ...train.distributed import all_reduce_sum
from ...train.stage import CHECKPOINT_DIR
from ...train.trainer import Trainer
from .audio import MelConfig, log_mel
from .data import Corpus, SegmentDataset, load_corpus
from .diffusion import frame_energy, noise_levels, prior_std, train_betas, wavegrad_loss
from .net import WaveGrad, WaveGradConfig

DATA_OPTIONS = ("source", "root", "segment_frames")


def mel_of_model(model: dict[str, Any]) -> MelConfig:
    return MelConfig(**(model.get("mel") or {}))


def energy_reference(audio: list[np.ndarray], mel: MelConfig, quantile: float = 0.999) -> float:
    """PriorGrad's normaliser: a high quantile of the per-frame mel energy over the training audio."""
    energies = [frame_energy(log_mel(torch.from_numpy(a)[None], mel))[0] for a in audio if len(a) > mel.n_fft]
    return float(torch.quantile(torch.cat(energies)[:1_000_000], quantile))


def init_train_seconds(path: str | Path) -> float:
    """Training seconds recorded with the weights at ``path`` (a WaveGrad run, checkpoint or snapshot); 0 if none."""
    p = Path(path)  # resolved as train.init resolves it (trainer.init_weights): a weights file, or a folder
    metas = [p.with_suffix(".json")] if p.is_file() else [p / "format.json", p / CHECKPOINT_DIR / "format.json"]
    for meta in metas:
        if meta.is_file():
            return float(json.loads(meta.read_text()).get("train_seconds", 0))
    return 0.0


class WaveGradTrainer(Trainer):
    """The Trainer with WaveGrad's data, network and loss (see the module doc)."""

    def __init__(
        self,
        cfg: RunConfig,
        run_dir: str | Path | None = None,
        *,
        resume: bool = False,
        time_limit: float | None = None,
        snapshots: tuple[float, ...] = (),
        snapshot_weights: tuple[float, ...] | None = None,
        fit_schedule: bool = False,
    ) -> None:
        if fit_schedule and time_limit is None:
            raise ValueError("fit_schedule needs a time limit (--minutes): it fits train.steps into that time")
        self.time_limit, self.snapshot_times = time_limit, sorted(snapshots)
        self.fit_schedule = fit_schedule
        self._calib: tuple[int, float] | None = None
        self.snapshot_weights = None if snapshot_weights is None else set(snapshot_weights)
        self._val_clips: torch.Tensor | None = None
        torch.backends.cudnn.benchmark = True  # fixed segment shapes: let cuDNN pick the fastest convs
        self.time_up, self.schedule_done, self.corpus = False, False, None
        self.train_seconds_before = 0.0
        super().__init__(cfg, run_dir, resume=resume)
        if resume:
            self.train_seconds_before = float(
                load_checkpoint(self.ckpt_dir, with_state=False).meta.get("train_seconds", 0)
            )
        elif cfg.train.init:  # continuing trained weights: their training time counts (curves, train_hours)
            self.train_seconds_before = init_train_seconds(cfg.train.init)
        self.start_step = self.step
        self.levels = noise_levels(train_betas())
        self.mel = WaveGradConfig(**self.model_config).mel_config
        self.t_start = time.perf_counter()

    # -- hooks -----------------------------------------------------------------------------
    def make_dataset(self) -> SegmentDataset:
        opts = dict(self.cfg.data.options)
        bad = sorted(set(opts) - set(DATA_OPTIONS))
        if bad:
            raise ValueError(f"unknown data.options {', '.join(bad)} for WaveGrad; valid: {', '.join(DATA_OPTIONS)}")
        mel = mel_of_model(self.cfg.model)
        self.corpus: Corpus = load_corpus(opts.get("source", "asterisk"), opts.get("root"), mel.sample_rate)
        frames = int(opts.get("segment_frames", 24))
        return SegmentDataset(self.corpus.split("train"), frames * mel.hop, mel.hop, context=mel.n_fft // 2)

    def resolve_model_config(self) -> dict[str, Any]:
        model = dict(self.cfg.model)
        model["mel"] = mel_of_model(model).to_dict()
        if model.get("prior") == "priorgrad" and not model.get("prior_energy_ref"):
            ref = energy_reference(self.corpus.split("train"), MelConfig(**model["mel"]))
            model["prior_energy_ref"] = round(ref, 6)
        try:
            return WaveGradConfig(**model).to_dict()
        except TypeError as e:
            valid = ", ".join(WaveGradConfig.__dataclass_fields__)
            raise ValueError(f"invalid WaveGrad model config ({e}); valid keys: {valid}") from None

    def build_network(self) -> torch.nn.Module:
        return WaveGrad(self.model_config)

    def _cond(self, labels: torch.Tensor) -> None:
        return None

    def _loss(self, x: torch.Tensor, cond: Any) -> torch.Tensor:
        ctx = self.mel.n_fft // 2
        with torch.autocast(self.device.type, enabled=False):
            mel = log_mel(x[:, 0].float(), self.mel, center=False)[..., :-1]
        wave = x[..., ctx:-ctx]
        c = self.net.config
        std = prior_std(mel, self.mel.hop, c.prior_energy_ref, c.prior_std_min) if c.prior == "priorgrad" else None
        return wavegrad_loss(self.model, wave, mel, self.levels, std, generator=self.noise)

    def extra_meta(self) -> dict[str, Any]:
        return {"method": "wavegrad", "train_seconds": round(self.train_seconds(), 2)}

    def sample_grid(self, monitor: Any = None) -> None:
        return None  # audio is judged by the benchmark (benchmarks/wavegrad.py), not a grid

    # -- time limit and snapshots ----------------------------------------------------------
    def train_seconds(self) -> float:
        return self.train_seconds_before + time.perf_counter() - self.t_start

    # updates that warm up (compilation, allocation, cuDNN autotuning) and then time the speed
    CALIB_WARM, CALIB_TIMED = 20, 40

    def _fit_steps(self) -> None:
        """At the end of the timed updates: ``train.steps`` = the updates that fit into the time limit."""
        t, now = self.cfg.train, time.perf_counter()
        if self._calib is None:
            self._calib = (self.step, now)
            return
        step0, t0 = self._calib
        rate = (self.step - step0) / max(now - t0, 1e-9)
        left = self.time_limit - (now - self.t_start)  # type: ignore[operator]
        steps = self.step + max(1, int(rate * left * 0.97))  # 3% for snapshots and speed noise
        if self.dist.enabled:  # every process takes the main process's count, or they would stop apart
            n = torch.tensor(float(steps if self.dist.is_main else 0), device=self.device)
            steps = int(all_reduce_sum(n, self.dist).item())
        if self.dist.is_main:
            print(
                f"fit_schedule: {rate:.2f} updates/s -> train.steps {t.steps} -> {steps} "
                f"(to resume this run later, pass train.steps={steps})",
                flush=True,
            )
        t.steps, self.fit_schedule = steps, False
        if self.dist.is_main:  # the run's config.yaml tells what was run
            (self.run_dir / "config.yaml").write_text(dump_yaml(self.cfg.to_dict()))

    def _update(self, batches: Any) -> tuple[float, float, bool]:
        loss, grad_norm, stop = super()._update(batches)
        if self.fit_schedule and self.step - self.start_step in (self.CALIB_WARM, self.CALIB_WARM + self.CALIB_TIMED):
            self._fit_steps()
        if self._calib is not None and not self.fit_schedule and self.step >= self.cfg.train.steps:
            self.schedule_done, stop = True, True  # the fitted end lies before the loop's own end
        now = self.train_seconds()
        while self.snapshot_times and now >= self.snapshot_times[0]:
            at = self.snapshot_times.pop(0)
            self.write_snapshot(weights=self.snapshot_weights is None or at in self.snapshot_weights)
        if self.time_limit is not None and time.perf_counter() - self.t_start >= self.time_limit:
            self.time_up, stop = True, True
        return loss, grad_norm, stop

    def validation_mel_l1(self, steps: int = 6) -> float:
        """Log-mel L1 of the EMA model's re-synthesis of 8 validation clips (1.5 s), fixed 6-step schedule."""
        from .vocoder import Vocoder, mel_l1, validation_clips

        if self._val_clips is None:
            self._val_clips = validation_clips(self.corpus.split("val"), self.mel, 8, 1.5).to(self.device)
        voc = Vocoder(self.ema.module, {"step": self.step})
        ref = voc.mel(self._val_clips)
        return mel_l1(voc, voc(ref, steps=steps, schedule="fixed", seed=0), ref)

    def write_snapshot(self, weights: bool = True) -> Path | None:
        """``RUN/snapshots/ema-SECONDSs.json`` (step, training seconds, validation log-mel L1 at 6 steps)
        and, with ``weights``, the EMA weights beside it as bf16 safetensors."""
        if not self.dist.is_main:
            return None
        from safetensors.torch import save_file

        secs = self.train_seconds()
        folder = self.run_dir / "snapshots"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"ema-{int(secs):06d}s"
        meta = {"step": self.step, "train_seconds": round(secs, 2), "val_mel_l1_6": round(self.validation_mel_l1(), 5)}
        if weights:
            state = {k: v.detach().to(torch.bfloat16).contiguous().cpu() for k, v in self.ema.state_dict().items()}
            save_file(state, str(folder / f"{name}.safetensors"))
        (folder / f"{name}.json").write_text(json.dumps({**meta, "model_config": self.model_config}, indent=1))
        print(f"snapshot {name}: {json.dumps(meta)}", flush=True)
        return folder / f"{name}.json"


def train_wavegrad(
    cfg: RunConfig,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    time_limit: float | None = None,
    snapshots: tuple[float, ...] = (),
    snapshot_weights: tuple[float, ...] | None = None,
    fit_schedule: bool = False,
) -> tuple[Any, WaveGradTrainer]:
    """Train (or resume) a WaveGrad run; returns (TrainResult, trainer). A time limit ends with status "time-limit".

    ``snapshots``: training seconds at which to score the EMA model on validation clips (and save its
    weights, at the times in ``snapshot_weights``; None: at every snapshot). ``fit_schedule``: set
    ``train.steps`` so the learning-rate schedule ends at the time limit (see the module doc)."""
    trainer = WaveGradTrainer(
        cfg, run_dir, resume=resume, time_limit=time_limit, snapshots=snapshots, snapshot_weights=snapshot_weights,
        fit_schedule=fit_schedule,
    )  # fmt: skip
    try:
        result = trainer.fit()
    finally:
        trainer.close()
    if (trainer.time_up or trainer.schedule_done) and trainer._signal is None:
        status = "done" if trainer.schedule_done else "time-limit"
        result.status, result.signal = status, None
        if trainer.dist.is_main:
            summary_path = trainer.run_dir / "summary.json"
            summary = json.loads(summary_path.read_text())
            summary.update(status=status, signal=None, train_seconds=round(trainer.train_seconds(), 2))
            summary_path.write_text(json.dumps(summary, indent=1))
            why = (
                f"end of the schedule ({result.step})" if trainer.schedule_done else f"time limit of {time_limit:.0f} s"
            )
            print(f"{why} reached: the stop above is that, not a signal", flush=True)
    return result, trainer
