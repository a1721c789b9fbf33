"""One trainer for every stage (docs/design.md): AdamW + warm-up/decay, clipping, accumulation, EMA,
mixed precision, DDP, checkpoints that resume exactly, sample grids, metrics, clean interruption.

Determinism. Everything random in update ``s`` (0-based) is a pure function of ``(seed, s, rank)``:
the batch indices (:mod:`.data`), the loss noise (a generator re-seeded per update) and the
global torch RNG used by dropout and condition dropping (re-seeded per update). Resuming restores
the weights, EMA, optimizer, GradScaler and step, so N steps in one go and N/2 + resume + N/2 give
identical weights. The RNG states are saved in the checkpoint as well (and restored).

Interruption. SIGINT or SIGTERM finishes the current update, saves the checkpoint and returns a
:class:`TrainResult` whose ``exit_code`` is ``128 + signal`` (130 / 143), which ``difflab train``
exits with. A second SIGINT stops at once (KeyboardInterrupt) without saving. A stop that is not a
signal -- ``time_limit`` seconds passed, or a reason returned by the method's ``after_update`` --
is saved the same way and reported as what it is (status "time-limit", or the method's reason).

Crashes. A save killed between its two renames (see :mod:`.checkpoint`) leaves the previous
checkpoint in ``.checkpoint.old``: ``resume`` moves it back and says so, a fresh start refuses to
train over it. The ``.checkpoint.tmp-*`` folders of killed saves are deleted at start (the trainer
is its run's only writer) and listed in its output. ``summary.json`` records the unreadable files the
training set skipped (:func:`skipped_summary`).

Non-finite loss. If the loss (or, without a GradScaler, the gradient norm) of update ``s + 1``
is NaN or infinite, the update is not applied: the checkpoint is saved with the weights after
update ``s`` and :class:`NonFiniteLossError` names the step.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import dump_yaml
from ..threads import ThreadGovernor
from .checkpoint import (
    CHECKPOINT_DIR,
    CheckpointError,
    interrupted_write,
    load_checkpoint,
    load_into,
    read_meta,
    recover_checkpoint,
    remove_unfinished,
    save_checkpoint,
)
from .config import RunConfig
from .data import Batches, BatchOrder, mix_seed
from .distributed import DistInfo, all_reduce_sum, barrier, init_distributed, resolve_device, shutdown
from .method import Method
from .monitor import Monitor
from .optim import EMA, lr_at, make_optimizer
from .stage import autocast, check_precision

_NOISE, _GLOBAL, _INIT = 1, 2, 3  # stream ids for mix_seed (4: sample grids, in .stage)


def init_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights to start a run from (``train.init``): a ``.safetensors`` file, or a run, checkpoint or
    exported model folder (``ema.safetensors`` if it has one, else ``model.safetensors``)."""
    from .checkpoint import load_weights

    p = Path(path)
    if p.is_file():
        return load_weights(p)
    for folder in (p, p / CHECKPOINT_DIR):
        for name in ("ema.safetensors", "model.safetensors"):
            if (folder / name).is_file():
                return load_weights(folder / name)
    raise FileNotFoundError(f"train.init={path}: no .safetensors file, and no ema/model.safetensors in that folder")


MAX_SKIPPED_LISTED = 1000  # summary.json names at most this many skipped files (the count is exact)


def skipped_summary(dataset: Any) -> dict[str, Any]:
    """``summary.json`` entries for the unreadable files a training set skipped: ``skipped_files`` (the
    count) and ``skipped`` (``[{"path", "reason"}]``, the first ``MAX_SKIPPED_LISTED``); empty for a data
    set that does not count them (e.g. :class:`~difflab.data.ImageFolder` does, in ``skipped``).

    Wrappers (``Rescaled``, ``AppendImageFrames``, ``Subset``) are looked through. Files skipped while
    loading inside DataLoader workers are counted by the workers' copies and are not included."""
    seen: set[int] = set()
    while dataset is not None and id(dataset) not in seen:
        seen.add(id(dataset))
        skipped = getattr(dataset, "skipped", None)
        if isinstance(skipped, (list, tuple)):
            items = [{"path": str(p), "reason": str(r)} for p, r in skipped[:MAX_SKIPPED_LISTED]]
            return {"skipped_files": len(skipped), "skipped": items}
        inner = getattr(dataset, "base", None)
        dataset = inner if inner is not None else getattr(dataset, "dataset", None)
    return {}


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the message names the step and the checkpoint that was kept."""


@dataclass
class TrainResult:
    """How :meth:`Trainer.fit` ended: ``status`` is "done", "paused" (``until``), "interrupted" (by
    ``signal``), "time-limit", or a stop reason of the method."""

    run_dir: Path
    step: int
    status: str
    seconds: float
    loss: float | None = None
    signal: int | None = None

    @property
    def exit_code(self) -> int:
        return 0 if self.signal is None else 128 + self.signal


def _dataset_facts(dataset: Any) -> tuple[tuple[int, ...], int | None]:
    """(item shape, e.g. an image's (C, H, W); number of classes or None) of a training set."""
    shape = tuple(int(v) for v in dataset[0][0].shape)
    try:
        num_classes = dataset.info.num_classes
    except (AttributeError, NotImplementedError):
        num_classes = None
    return shape, num_classes


class Trainer:
    """Trains what a :class:`RunConfig` describes into ``run_dir`` with ``method`` (a
    :class:`~.method.Method`; default: image diffusion, :class:`~.stage.ImageDiffusion`).

    ``Trainer(cfg, run_dir, resume=True).fit()`` continues from ``run_dir/checkpoint``. Under
    ``torchrun`` the process joins the job (see :mod:`.distributed`); rank 0 writes every file.
    ``time_limit`` (seconds of this session) stops cleanly with a checkpoint.
    """

    def __init__(
        self,
        cfg: RunConfig,
        run_dir: str | Path | None = None,
        *,
        method: Method | None = None,
        resume: bool = False,
        time_limit: float | None = None,
    ) -> None:
        from .stage import ImageDiffusion

        self.cfg, self.time_limit = cfg, time_limit
        self.method = method if method is not None else ImageDiffusion(cfg)
        t = cfg.train
        self.run_dir = Path(run_dir) if run_dir is not None else cfg.run_dir
        self.ckpt_dir = self.run_dir / CHECKPOINT_DIR
        self.device = resolve_device(t.device, int(os.environ.get("LOCAL_RANK", "0")))
        check_precision(t.precision, self.device)
        # threads 0: as many as the cores other processes leave free, re-measured as their load changes
        self.governor = ThreadGovernor(t.threads) if self.device.type == "cpu" else None
        if not resume and (self.ckpt_dir / "format.json").exists():
            raise ValueError(
                f"{self.run_dir} already holds a checkpoint: pass --resume to continue it, or choose another --out"
            )
        interrupted = interrupted_write(self.ckpt_dir)  # a save killed between its two renames
        if interrupted is not None and not resume:
            raise ValueError(
                f"{self.run_dir} holds the checkpoint of step {read_meta(interrupted).get('step', '?')} in "
                f"{interrupted} (a save was killed between its two renames): pass --resume to continue it, "
                "or choose another --out"
            )
        if interrupted is not None and recover_checkpoint(self.ckpt_dir) is not None:
            warnings.warn(
                f"{self.ckpt_dir} was missing (a save was killed between its two renames): resuming from the "
                f"previous checkpoint, step {read_meta(self.ckpt_dir).get('step', '?')}, moved back from {interrupted}",
                RuntimeWarning,
                stacklevel=2,
            )
        if resume and not self.ckpt_dir.exists():
            raise FileNotFoundError(f"cannot resume: no checkpoint at {self.ckpt_dir}")
        self.dataset = dataset = self.method.dataset("train")
        self.image_shape, self.num_classes = _dataset_facts(dataset)
        self.model_config = self.method.resolve_model_config(dataset)
        self.dist: DistInfo = init_distributed(self.device)
        # the folders of saves killed mid-write; this process is the run's only writer and not writing yet
        self.removed_unfinished = remove_unfinished(self.ckpt_dir) if self.dist.is_main else []
        torch.manual_seed(mix_seed(t.seed, _INIT))
        self.net = self.method.build(self.model_config).to(self.device)
        if t.init and not resume:
            report = load_into(self.net, init_weights(t.init), t.init, strict=t.init_strict)
            if self.dist.is_main and (report["new"] or report["unused"]):
                new, unused = report["new"], report["unused"]
                print(
                    f"init from {t.init}: {len(new)} tensor(s) new{f' (e.g. {new[0]})' if new else ''}, "
                    f"{len(unused)} of its tensor(s) unused{f' (e.g. {unused[0]})' if unused else ''}",
                    flush=True,
                )
        self.ema = EMA(self.net, t.ema_decay, t.ema_warmup)
        self.opt = make_optimizer(list(self.net.parameters()), t)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=t.precision == "fp16")
        self.model: torch.nn.Module = self.net
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.net, device_ids=ids)
        self.noise = torch.Generator(device=self.device)
        self.order = BatchOrder(
            len(dataset),
            cfg.data.batch_size,
            t.seed,
            rank=self.dist.rank,
            world=self.dist.world_size,
            accum=t.grad_accum,
        )
        self.batches = Batches(dataset, self.order, cfg.data.num_workers, pin_memory=self.device.type == "cuda")
        self.step = 0
        self._signal: int | None = None
        self._t_start: float | None = None
        self._reason: str | None = None
        if resume:
            self._load()
        self.start_step = self.step
        self.method.attach(self)

    # -- checkpoints --------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        from .. import __version__

        return {
            "step": self.step,
            "model_config": self.model_config,
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes if "class" in self.cfg.data.conditions else 0,
            "conditions": list(self.cfg.data.conditions),
            "dataset": self.cfg.data.name,
            "parameterization": self.cfg.diffusion.parameterization,
            "parameters": sum(p.numel() for p in self.net.parameters()),
            "world_size": self.dist.world_size,
            "difflab_version": __version__,
            **self.method.meta(),
        }

    def save(self) -> Path | None:
        """Write the checkpoint of the current step (atomically; main process only)."""
        if not self.dist.is_main:
            return None
        rng: dict[str, Any] = {"torch": torch.get_rng_state(), "noise": self.noise.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        state = {
            "step": self.step,
            "optimizer": self.opt.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema_updates": self.ema.updates,
            "rng": rng,
        }
        return save_checkpoint(
            self.ckpt_dir,
            model=self.net.state_dict(),
            ema=self.ema.state_dict(),
            config=self.cfg.to_dict(),
            meta=self._meta(),
            state=state,
        )

    def _check_matches(self, meta: dict[str, Any]) -> None:
        where = self.ckpt_dir / "format.json"
        old = meta.get("model_config")
        if not isinstance(old, dict):
            raise CheckpointError(f"{where}: no model_config; not a difflab training checkpoint")
        for key in sorted(set(old) | set(self.model_config)):
            if old.get(key) != self.model_config.get(key):
                raise CheckpointError(
                    f"{where}: the checkpoint does not match the config: model {key} is {old.get(key)!r} "
                    f"in the checkpoint and {self.model_config.get(key)!r} in the config"
                )
        for key, now in (("image_shape", list(self.image_shape)), ("dataset", self.cfg.data.name)):
            if meta.get(key) != now:
                raise CheckpointError(
                    f"{where}: the checkpoint does not match the config: {key} is {meta.get(key)!r} "
                    f"in the checkpoint and {now!r} in the config"
                )
        if meta.get("parameterization") != self.cfg.diffusion.parameterization:
            raise CheckpointError(
                f"{where}: the checkpoint was trained with parameterization {meta.get('parameterization')!r}, "
                f"the config says {self.cfg.diffusion.parameterization!r}"
            )

    def _load(self) -> None:
        ckpt = load_checkpoint(self.ckpt_dir)
        self._check_matches(ckpt.meta)
        load_into(self.net, ckpt.model, self.ckpt_dir / "model.safetensors")
        if ckpt.ema is None:
            raise CheckpointError(f"{self.ckpt_dir / 'ema.safetensors'}: file not found")
        load_into(self.ema.module, ckpt.ema, self.ckpt_dir / "ema.safetensors")
        state_file = self.ckpt_dir / "state.pt"
        st = ckpt.state
        missing = [k for k in ("step", "optimizer", "ema_updates", "rng") if k not in st]
        if missing:
            raise CheckpointError(f"{state_file}: training state lacks {', '.join(missing)} (cannot resume)")
        try:
            self.opt.load_state_dict(st["optimizer"])
            if self.scaler.is_enabled() and st.get("scaler"):
                self.scaler.load_state_dict(st["scaler"])
            torch.set_rng_state(st["rng"]["torch"])
            self.noise.set_state(st["rng"]["noise"])
            if self.device.type == "cuda" and "cuda" in st["rng"]:
                torch.cuda.set_rng_state(st["rng"]["cuda"], self.device)
        except (ValueError, KeyError, RuntimeError, TypeError) as e:
            raise CheckpointError(f"{state_file}: cannot restore the training state ({e})") from None
        self.ema.updates = int(st["ema_updates"])
        self.step = int(st["step"])
        if self.step != ckpt.step:
            raise CheckpointError(f"{state_file}: step {self.step} differs from format.json's {ckpt.step}")
        if ckpt.meta.get("world_size", 1) != self.dist.world_size:
            warnings.warn(
                f"resuming a {ckpt.meta.get('world_size')}-process run with {self.dist.world_size} processes: "
                "the data order from here on differs from an uninterrupted run",
                RuntimeWarning,
                stacklevel=2,
            )

    # -- one update ---------------------------------------------------------------------
    def _update(self, batches: Any) -> tuple[float, float, bool]:
        """Run update ``self.step``; return (mean loss, grad norm, stop requested by any rank)."""
        t = self.cfg.train
        torch.manual_seed(mix_seed(t.seed, _GLOBAL, self.step, self.dist.rank))
        self.noise.manual_seed(mix_seed(t.seed, _NOISE, self.step, self.dist.rank))
        lr = lr_at(self.step, t)
        for group in self.opt.param_groups:
            group["lr"] = lr
        total = torch.zeros((), device=self.device)
        for micro in range(t.grad_accum):
            x, cond = next(batches)
            x = x.to(self.device, non_blocking=True)
            cond = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in cond.items()}
            sync = not self.dist.enabled or micro == t.grad_accum - 1
            with contextlib.nullcontext() if sync else self.model.no_sync():  # type: ignore[operator]
                with autocast(self.device, t.precision):
                    loss = self.method.loss(self.model, x, cond, self.noise)
                self.scaler.scale(loss / t.grad_accum).backward()
            total += loss.detach().float()
        time_up = self.time_limit is not None and time.perf_counter() - self._t_start >= self.time_limit
        flags = [float(self._signal is not None), float(time_up)]
        packed = torch.tensor([0.0, *flags], device=self.device)
        packed[0] = total / t.grad_accum
        all_reduce_sum(packed, self.dist)  # every process stops at the same update
        loss_value = float(packed[0]) / self.dist.world_size
        stop = float(packed[1]) > 0
        if float(packed[2]) > 0 and not stop:
            self._reason = "time-limit"
        self.scaler.unscale_(self.opt)
        clip = t.grad_clip if t.grad_clip > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.net.parameters(), clip))
        if not math.isfinite(loss_value) or (not self.scaler.is_enabled() and not math.isfinite(grad_norm)):
            self.opt.zero_grad(set_to_none=True)
            self.save()
            what = f"loss {loss_value}" if not math.isfinite(loss_value) else f"gradient norm {grad_norm}"
            raise NonFiniteLossError(
                f"non-finite {what} at step {self.step + 1}; stopped and kept the last good checkpoint "
                f"(step {self.step}) in {self.ckpt_dir}: lower train.lr, set train.grad_clip, or resume from it"
            )
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        self.ema.update(self.net)
        self.step += 1
        return loss_value, grad_norm, stop

    def sample_grid(self, monitor: Monitor | None = None) -> Path | None:
        """Samples of the EMA model at this step, as the method writes them (main process only)."""
        return self.method.sample_grid(self, monitor) if self.dist.is_main else None

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum: int, frame: Any) -> None:
            if self._signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._signal = signum

        return {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

    # -- the loop -----------------------------------------------------------------------
    def fit(self, until: int | None = None) -> TrainResult:
        """Train up to ``train.steps`` updates (or ``until``, or a signal); see the module doc.

        ``until`` pauses the run early at that step, with a checkpoint, as an interruption would;
        the learning-rate schedule still follows ``train.steps``.
        """
        t, main = self.cfg.train, self.dist.is_main
        start, t0 = self.step, time.perf_counter()
        self._reason = None
        if self._t_start is None:  # the time limit counts from the first fit of this trainer
            self._t_start = t0
        end = t.steps if until is None else min(until, t.steps)
        per_step = self.cfg.data.batch_size * t.grad_accum * self.dist.world_size
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(dump_yaml(self.cfg.to_dict()))
        monitor = Monitor(
            self.run_dir, enabled=main, start_step=start, total_steps=t.steps, progress=t.progress, tensorboard=True
        )
        n_params = sum(p.numel() for p in self.net.parameters())
        summary = self.net.summary() if hasattr(self.net, "summary") else type(self.net).__name__
        monitor.write(f"run {self.run_dir}: {summary}")
        if self.removed_unfinished:
            names = ", ".join(p.name for p in self.removed_unfinished)
            monitor.write(
                f"removed {len(self.removed_unfinished)} unfinished checkpoint write(s) of killed runs: {names}"
            )
            self.removed_unfinished = []
        monitor.write(
            f"parameters: {n_params:,} | device {self.device}, {t.precision}, {self.dist.world_size} process(es) | "
            f"batch {self.cfg.data.batch_size} x accum {t.grad_accum} x {self.dist.world_size} = {per_step} | "
            f"steps {start} -> {t.steps}"
        )
        old_handlers = self._install_signals()
        batches = self.batches(self.step)
        win_loss, win_n, win_t, last_loss = 0.0, 0, time.perf_counter(), None
        stop, saved_at, sampled_at = False, -1, -1
        try:
            while self.step < end and not stop:
                loss, grad_norm, stop = self._update(batches)
                reason = self.method.after_update(self)  # always called: snapshots, schedule fits
                self._reason = self._reason or reason
                stop = stop or self._reason is not None
                win_loss, win_n = win_loss + loss, win_n + 1
                if self.governor is not None:
                    self.governor.tick()
                monitor.advance()
                last = self.step == end
                if (t.log_every and self.step % t.log_every == 0) or last or stop:
                    now = time.perf_counter()
                    last_loss = win_loss / win_n
                    monitor.log(
                        {
                            "step": self.step, "loss": last_loss, "lr": lr_at(self.step - 1, t),
                            "grad_norm": grad_norm, "images_per_s": win_n * per_step / max(now - win_t, 1e-9),
                            "elapsed_s": round(now - t0, 3), "threads": torch.get_num_threads(),
                        }
                    )  # fmt: skip
                    win_loss, win_n, win_t = 0.0, 0, now
                if (t.sample_every and self.step % t.sample_every == 0) or last:
                    self.sample_grid(monitor)
                    sampled_at = self.step
                if (t.ckpt_every and self.step % t.ckpt_every == 0) or last or stop:
                    self.save()
                    saved_at = self.step
            if saved_at != self.step:
                self.save()
            if sampled_at != self.step and not stop and self.step > start:
                self.sample_grid(monitor)
            barrier(self.dist)
        finally:
            for s, h in old_handlers.items():
                signal.signal(s, h)
            monitor.close()
        seconds = time.perf_counter() - t0
        sig = None
        if stop and self._reason is not None:
            status = self._reason
        elif stop:
            status, sig = "interrupted", self._signal if self._signal is not None else int(signal.SIGTERM)
        else:
            status = "done" if self.step >= t.steps else "paused"
        result = TrainResult(self.run_dir, self.step, status, seconds, last_loss, sig)
        if main:
            summary = {
                "status": status, "step": self.step, "seconds": round(seconds, 2), "loss": last_loss,
                "parameters": n_params, "steps_this_session": self.step - start, "signal": sig,
                **skipped_summary(self.dataset), **self.method.summary(),
            }  # fmt: skip
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
            what = f"stopped by signal {sig}" if sig is not None else status
            monitor.write(f"{what} at step {self.step} after {seconds:.1f} s; checkpoint in {self.ckpt_dir}")
        return result

    def close(self) -> None:
        """Leave the process group (if this trainer joined one)."""
        shutdown(self.dist)


def train(
    cfg: RunConfig,
    run_dir: str | Path | None = None,
    *,
    method: Method | None = None,
    resume: bool = False,
    until: int | None = None,
    time_limit: float | None = None,
) -> TrainResult:
    """Build a :class:`Trainer`, run it (up to ``until``, see :meth:`Trainer.fit`), leave the process group."""
    trainer = Trainer(cfg, run_dir, method=method, resume=resume, time_limit=time_limit)
    try:
        return trainer.fit(until)
    finally:
        trainer.close()
