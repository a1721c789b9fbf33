"""Training WaveGrad (Chen et al. 2021) and PriorGrad (Lee et al. 2022) with difflab's one Trainer.

:class:`WaveGradMethod` is the ``wavegrad`` :class:`difflab.train.Method`: the dataset is random hop-aligned
segments of speech (:class:`.data.SegmentDataset`, with ``n_fft / 2`` samples of context on each side
so the mel of a segment equals the whole utterance's mel there), the model is :class:`.net.WaveGrad`,
the loss is :func:`.diffusion.wavegrad_loss` (L1 on eps at a continuous noise level). Everything
else (AdamW, EMA, bf16/fp16, DDP, exact resume, signals) is the shared loop.

A run config is a normal difflab recipe (``configs/wavegrad-small.yaml``): ``model`` holds the
:class:`.net.WaveGradConfig` (with ``mel`` and ``prior``), ``data.options`` holds ``source``
(asterisk|cache|folder|ljspeech), ``root`` and ``segment_frames``; ``diffusion`` must describe
WaveGrad's own process (it is checked, not ignored). With the trainer's ``time_limit`` (seconds of
this session, status "time-limit"), ``snapshots`` (seconds of
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
from ...train.checkpoint import CHECKPOINT_DIR, load_checkpoint
from ...train.config import DiffusionConfig, RunConfig
from ...train.distributed import all_reduce_sum
from ...train.method import Method
from ...train.trainer import Trainer
from .audio import MelConfig, log_mel
from .data import Corpus, SegmentDataset, load_corpus
from .diffusion import TRAIN_BETAS, frame_energy, noise_levels, prior_std, train_betas, wavegrad_loss
from .net import WaveGrad, WaveGradConfig

DATA_OPTIONS = ("source", "root", "segment_frames", "voices")


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


class WaveGradMethod(Method):
    """WaveGrad's data, network and loss on the one trainer (see the module doc)."""

    name = "wavegrad"
    model_config_class = WaveGradConfig
    sections = ("diffusion",)  # checked: WaveGrad's own noise schedule and L1 loss on eps

    def __init__(
        self,
        cfg: RunConfig,
        *,
        snapshots: tuple[float, ...] = (),
        snapshot_weights: tuple[float, ...] | None = None,
        fit_schedule: bool = False,
    ) -> None:
        super().__init__(cfg)
        self._check_process(cfg.diffusion)
        self.snapshot_times, self.fit_schedule = sorted(snapshots), fit_schedule
        self._calib: tuple[int, float] | None = None
        self.snapshot_weights = None if snapshot_weights is None else set(snapshot_weights)
        self._val_clips: torch.Tensor | None = None
        torch.backends.cudnn.benchmark = True  # fixed segment shapes: let cuDNN pick the fastest convs
        self.train_seconds_before, self.t_start = 0.0, time.perf_counter()
        self.levels = noise_levels(train_betas())

    @staticmethod
    def _check_process(d: DiffusionConfig) -> None:
        """A ``diffusion:`` section, when given, must describe WaveGrad's own process."""
        if d == DiffusionConfig():
            return
        (b0, b1, n) = TRAIN_BETAS
        want = {"schedule": "linear", "parameterization": "eps", "norm": "l1"}
        bad = [f"diffusion.{k}={getattr(d, k)!r}" for k, v in want.items() if getattr(d, k) != v]
        opts = {"n": n, "beta_start": b0, "beta_end": b1}
        if d.schedule_options and d.schedule_options != opts:
            bad.append(f"diffusion.schedule_options={d.schedule_options}")
        if bad:
            raise ValueError(
                f"invalid run config: WaveGrad trains with its own process ({want}, schedule_options {opts}); "
                f"not {', '.join(bad)}"
            )

    # -- hooks -----------------------------------------------------------------------------
    def dataset(self, split: str = "train") -> SegmentDataset:
        opts = dict(self.cfg.data.options)
        bad = sorted(set(opts) - set(DATA_OPTIONS))
        if bad:
            raise ValueError(f"unknown data.options {', '.join(bad)} for WaveGrad; valid: {', '.join(DATA_OPTIONS)}")
        mel = mel_of_model(self.cfg.model)
        self.corpus: Corpus = load_corpus(
            opts.get("source", "asterisk"), opts.get("root"), mel.sample_rate, opts.get("voices")
        )
        frames = int(opts.get("segment_frames", 24))
        return SegmentDataset(self.corpus.split(split), frames * mel.hop, mel.hop, context=mel.n_fft // 2)

    def resolve_model_config(self, dataset: Any) -> dict[str, Any]:
        model = super().resolve_model_config(dataset)
        model["mel"] = mel_of_model(model).to_dict()
        if model.get("prior") == "priorgrad" and not model.get("prior_energy_ref"):
            ref = energy_reference(self.corpus.split("train"), MelConfig(**model["mel"]))
            model["prior_energy_ref"] = round(ref, 6)
        self.mel = WaveGradConfig(**model).mel_config
        return WaveGradConfig(**model).to_dict()

    def build(self, model_config: dict[str, Any]) -> torch.nn.Module:
        return WaveGrad(model_config)

    def loss(
        self, net: Any, x: torch.Tensor, cond: dict[str, torch.Tensor], generator: torch.Generator
    ) -> torch.Tensor:
        ctx = self.mel.n_fft // 2
        with torch.autocast(x.device.type, enabled=False):
            mel = log_mel(x[:, 0].float(), self.mel, center=False)[..., :-1]
        wave = x[..., ctx:-ctx]
        c = getattr(net, "module", net).config  # net may be DDP-wrapped
        std = prior_std(mel, self.mel.hop, c.prior_energy_ref, c.prior_std_min) if c.prior == "priorgrad" else None
        return wavegrad_loss(net, wave, mel, self.levels, std, generator=generator)

    def meta(self) -> dict[str, Any]:
        return {"method": self.name, "train_seconds": round(self.train_seconds(), 2)}

    def summary(self) -> dict[str, Any]:
        from ...train.trainer import skipped_summary

        return {"train_seconds": round(self.train_seconds(), 2), **skipped_summary(getattr(self, "corpus", None))}

    def attach(self, trainer: Any) -> None:
        if self.fit_schedule and trainer.time_limit is None:
            raise ValueError("fit_schedule needs a time limit (--minutes): it fits train.steps into that time")
        if trainer.step > 0:
            self.train_seconds_before = float(
                load_checkpoint(trainer.ckpt_dir, with_state=False).meta.get("train_seconds", 0)
            )
        elif self.cfg.train.init:  # continuing trained weights: their training time counts (curves, train_hours)
            self.train_seconds_before = init_train_seconds(self.cfg.train.init)
        self.t_start = time.perf_counter()

    @classmethod
    def load(cls, path: str | Path, weights: str = "ema", device: Any = "cpu") -> Any:
        from .vocoder import Vocoder

        return Vocoder.load(path, device=device, weights=weights)

    # -- time limit and snapshots ----------------------------------------------------------
    def train_seconds(self) -> float:
        return self.train_seconds_before + time.perf_counter() - self.t_start

    # updates that warm up (compilation, allocation, cuDNN autotuning) and then time the speed
    CALIB_WARM, CALIB_TIMED = 20, 40

    def _fit_steps(self, trainer: Any) -> None:
        """At the end of the timed updates: ``train.steps`` = the updates that fit into the time limit."""
        t, now = self.cfg.train, time.perf_counter()
        if self._calib is None:
            self._calib = (trainer.step, now)
            return
        step0, t0 = self._calib
        rate = (trainer.step - step0) / max(now - t0, 1e-9)
        left = trainer.time_limit - (now - self.t_start)
        steps = trainer.step + max(1, int(rate * left * 0.97))  # 3% for snapshots and speed noise
        if trainer.dist.enabled:  # every process takes the main process's count, or they would stop apart
            n = torch.tensor(float(steps if trainer.dist.is_main else 0), device=trainer.device)
            steps = int(all_reduce_sum(n, trainer.dist).item())
        if trainer.dist.is_main:
            print(
                f"fit_schedule: {rate:.2f} updates/s -> train.steps {t.steps} -> {steps} "
                f"(to resume this run later, pass train.steps={steps})",
                flush=True,
            )
        t.steps, self.fit_schedule = steps, False
        if trainer.dist.is_main:  # the run's config.yaml tells what was run
            (trainer.run_dir / "config.yaml").write_text(dump_yaml(self.cfg.to_dict()))

    def after_update(self, trainer: Any) -> str | None:
        if self.fit_schedule and trainer.step - trainer.start_step in (
            self.CALIB_WARM,
            self.CALIB_WARM + self.CALIB_TIMED,
        ):
            self._fit_steps(trainer)
        now = self.train_seconds()
        while self.snapshot_times and now >= self.snapshot_times[0]:
            at = self.snapshot_times.pop(0)
            self.write_snapshot(trainer, weights=self.snapshot_weights is None or at in self.snapshot_weights)
        if self._calib is not None and not self.fit_schedule and trainer.step >= self.cfg.train.steps:
            return "done"  # the fitted end of the schedule lies before the loop's own end
        return None

    def validation_mel_l1(self, trainer: Any, steps: int = 6) -> float:
        """Log-mel L1 of the EMA model's re-synthesis of 8 validation clips (1.5 s), fixed 6-step schedule."""
        from .vocoder import Vocoder, mel_l1, validation_clips

        if self._val_clips is None:
            self._val_clips = validation_clips(self.corpus.split("val"), self.mel, 8, 1.5).to(trainer.device)
        voc = Vocoder(trainer.ema.module, {"step": trainer.step})
        ref = voc.mel(self._val_clips)
        return mel_l1(voc, voc(ref, steps=steps, schedule="fixed", seed=0), ref)

    def write_snapshot(self, trainer: Any, weights: bool = True) -> Path | None:
        """``RUN/snapshots/ema-SECONDSs.json`` (step, training seconds, validation log-mel L1 at 6 steps)
        and, with ``weights``, the EMA weights beside it as bf16 safetensors."""
        if not trainer.dist.is_main:
            return None
        from safetensors.torch import save_file

        secs = self.train_seconds()
        folder = trainer.run_dir / "snapshots"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"ema-{int(secs):06d}s"
        l1 = round(self.validation_mel_l1(trainer), 5)
        meta = {"step": trainer.step, "train_seconds": round(secs, 2), "val_mel_l1_6": l1}
        if weights:
            state = {k: v.detach().to(torch.bfloat16).contiguous().cpu() for k, v in trainer.ema.state_dict().items()}
            save_file(state, str(folder / f"{name}.safetensors"))
        (folder / f"{name}.json").write_text(json.dumps({**meta, "model_config": trainer.model_config}, indent=1))
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
) -> tuple[Any, Trainer]:
    """Train (or resume) a WaveGrad run; returns (TrainResult, trainer). A time limit ends with status "time-limit".

    ``snapshots``: training seconds at which to score the EMA model on validation clips (and save its
    weights, at the times in ``snapshot_weights``; None: at every snapshot). ``fit_schedule``: set
    ``train.steps`` so the learning-rate schedule ends at the time limit (see the module doc)."""
    method = WaveGradMethod(cfg, snapshots=snapshots, snapshot_weights=snapshot_weights, fit_schedule=fit_schedule)
    trainer = Trainer(cfg, run_dir, method=method, resume=resume, time_limit=time_limit)
    try:
        return trainer.fit(), trainer
    finally:
        trainer.close()
