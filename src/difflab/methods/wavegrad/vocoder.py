"""Using a trained WaveGrad (Chen et al. 2021) or PriorGrad (Lee et al. 2022) model: the Python API.

::

    voc = Vocoder.load("runs/wavegrad-small")          # run folder, checkpoint folder or snapshot file
    wav = voc(mel, steps=6)                            # mel: (n_mels, T) or (B, n_mels, T) log-mel -> T * hop samples
    wav = voc.resynthesize("in.wav", steps=6)          # the mel of a file, vocoded: as many samples as the file

Lengths: mel frame ``t`` is the centred STFT frame at sample ``t * hop`` and stands for samples
``[t * hop, (t + 1) * hop)``, so a mel of ``T`` frames gives ``T * hop`` samples; :meth:`Vocoder.mel`
of ``L`` samples has ``ceil(L / hop)`` frames and :meth:`Vocoder.resynthesize` cuts the result back
to ``L``. Edges: the network never saw an utterance's edges in training (segments with context), and
its zero-padded convolutions put a click on the first and last samples; the mel is therefore
extended by ``PAD_FRAMES`` copies of its edge frames on each side and the samples of those frames
are cut off again (``pad=0`` turns this off).

Schedules: ``"searched"`` (the grid-search result saved with the checkpoint by
:func:`search_and_save`), ``"naive"`` (mantissa 1, one decade per step), ``"fixed"`` (25, 50,
1000 steps and the community 6-step schedule) or ``"auto"`` (searched if saved, else fixed, else
naive). A distilled student (:mod:`.distill`) has one schedule, its own, sampled by DDIM.
Griffin-Lim on the same mel (:func:`griffin_lim`) is the classical baseline.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...train.checkpoint import CheckpointError, load_into, load_network, load_weights
from .audio import AudioError, MelConfig, check_speech, log_mel, read_audio
from .diffusion import fixed_betas, naive_betas, prior_std, sample, search_schedule
from .net import WaveGrad, WaveGradConfig

PAD_FRAMES = 4  # edge frames repeated on each side of a mel before vocoding (their samples are cut off)


class Vocoder:
    """A WaveGrad network with its front end, prior and saved schedules."""

    def __init__(self, net: WaveGrad, meta: dict[str, Any], path: Path | None = None) -> None:
        self.net, self.meta, self.path = net.eval(), meta, path
        self.config: WaveGradConfig = net.config
        self.mel_config: MelConfig = self.config.mel_config

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", weights: str = "ema") -> Vocoder:
        """From a run folder, its checkpoint folder, or a snapshot ``.safetensors`` (with its ``.json``)."""
        p = Path(path)
        if p.suffix != ".safetensors":
            net, meta, ckpt_dir = load_network(p, WaveGrad, weights, method="wavegrad")
            return cls(net.to(device), meta, ckpt_dir)
        meta_file = p.with_suffix(".json")
        if not meta_file.is_file():
            raise CheckpointError(f"{p}: no {meta_file.name} beside it (the snapshot's model config)")
        meta = json.loads(meta_file.read_text())
        net = WaveGrad(meta["model_config"])
        load_into(net, {k: v.float() for k, v in load_weights(p).items()}, p)
        return cls(net.to(device), meta, p)

    # -- front end and schedules ----------------------------------------------------------
    def mel(self, audio: Tensor | np.ndarray) -> Tensor:
        """The conditioning log-mel (B, n_mels, ceil(L / hop)) of audio (B, L) or (L,): frame ``t`` is centred
        on sample ``t * hop`` and stands for samples ``[t * hop, (t + 1) * hop)`` (the last one partly)."""
        a = torch.as_tensor(audio, dtype=torch.float32)
        a = a[None] if a.dim() == 1 else a
        n = math.ceil(a.shape[-1] / self.mel_config.hop)
        return log_mel(a, self.mel_config)[..., :n].to(self.device)

    def read(self, path: str | Path, resample: bool = False) -> np.ndarray:
        """A file's audio at the model's rate, checked (``resample`` converts other sample rates)."""
        audio, _ = read_audio(path, self.mel_config.sample_rate, resample_to=resample)
        check_speech(audio, path, self.mel_config)
        return audio

    @property
    def distilled(self) -> dict[str, Any] | None:
        """What a distilled student records (:mod:`.distill`): its steps, betas and teacher; None otherwise."""
        return self.meta.get("distill")

    def resolve_schedule(self, steps: int, kind: str = "auto") -> str:
        """The schedule ``kind`` stands for: ``auto`` is searched if one is saved for ``steps``, else fixed
        (6, 25, 50 and 1000 steps), else naive; a distilled student has only its own (``distilled``)."""
        if self.distilled:
            n = self.distilled["steps"]
            if kind not in ("auto", "distilled") or steps != n:
                raise ValueError(
                    f"this vocoder is a distilled {n}-step student: it samples only its own schedule "
                    f"(--steps {n}, schedule auto); asked for {steps} steps, schedule {kind}"
                )
            return "distilled"
        if kind != "auto":
            return kind
        if (self.meta.get("schedules") or {}).get(str(steps)):
            return "searched"
        return "fixed" if steps in (6, 25, 50, 1000) else "naive"

    def schedule(self, steps: int, kind: str = "auto") -> list[float]:
        """The betas of a ``steps``-step schedule of ``kind`` (searched | naive | fixed | auto)."""
        saved = (self.meta.get("schedules") or {}).get(str(steps))
        kind = self.resolve_schedule(steps, kind)
        if kind == "distilled":
            return list(self.distilled["betas"])
        if kind == "searched":
            if not saved:
                have = ", ".join(sorted((self.meta.get("schedules") or {}), key=int)) or "none"
                raise ValueError(f"no searched {steps}-step schedule saved with this model (searched: {have})")
            return list(saved["betas"])
        if kind == "naive":
            return naive_betas(steps)
        if kind == "fixed":
            return fixed_betas(steps)
        raise ValueError(f"unknown schedule {kind!r}; valid: auto, searched, naive, fixed")

    # -- vocoding -------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        mel: Tensor,
        steps: int = 6,
        schedule: str = "auto",
        betas: list[float] | None = None,
        seed: int = 0,
        pad: int = PAD_FRAMES,
        deterministic: bool | None = None,
    ) -> Tensor:
        """Waveform(s) for log-mel ``(n_mels, T)`` -> (T * hop,) or ``(B, n_mels, T)`` -> (B, T * hop):
        frame ``t`` gives samples ``[t * hop, (t + 1) * hop)`` (see the module doc). The mel is vocoded
        with ``pad`` copies of its first and last frames on each side, whose samples are cut off: without
        them the first and last samples are clicks. ``deterministic`` samples by DDIM instead of DDPM
        (default: DDIM for a distilled student, which learnt its teacher's DDIM steps, else DDPM)."""
        m = torch.as_tensor(mel, dtype=torch.float32)
        single = m.dim() == 2
        m = m[None] if single else m
        if m.dim() != 3 or m.shape[1] != self.mel_config.n_mels:
            raise ValueError(
                f"mel has shape {tuple(torch.as_tensor(mel).shape)}; expected ({self.mel_config.n_mels}, frames) "
                f"or (batch, {self.mel_config.n_mels}, frames) log-mel"
            )
        if pad < 0:
            raise ValueError(f"pad must be >= 0 frames, got {pad}")
        m = m.to(self.device)
        frames, hop = m.shape[-1], self.mel_config.hop
        if pad:
            m = torch.nn.functional.pad(m, (pad, pad), mode="replicate")
        c = self.config
        std = prior_std(m, hop, c.prior_energy_ref, c.prior_std_min) if c.prior == "priorgrad" else None
        gen = torch.Generator(device=self.device).manual_seed(seed)
        betas = betas if betas is not None else self.schedule(steps, schedule)
        det = bool(self.distilled) if deterministic is None else deterministic
        wav = sample(self.net, m, betas, std=std, generator=gen, deterministic=det)[
            :, 0, pad * hop : (pad + frames) * hop
        ]
        wav = wav.clamp(-1.0, 1.0)
        return wav[0] if single else wav

    def resynthesize(
        self, path: str | Path, steps: int = 6, schedule: str = "auto", resample: bool = False, seed: int = 0
    ) -> np.ndarray:
        """Read a file, check it, and vocode its mel (``resample`` converts other sample rates): as many
        samples as the file has (at the model's rate)."""
        betas = self.schedule(steps, schedule)  # an unknown schedule fails before any decoding
        audio = self.read(path, resample)
        return self(self.mel(audio)[0], betas=betas, seed=seed)[: len(audio)].cpu().numpy()


def griffin_lim(mel: Tensor | np.ndarray, cfg: MelConfig, n_iter: int = 32) -> np.ndarray:
    """Griffin-Lim on the same log-mel (librosa: NNLS mel inversion, then ``n_iter`` iterations)."""
    import librosa

    m = np.exp(np.asarray(torch.as_tensor(mel, dtype=torch.float32).cpu()))
    return librosa.feature.inverse.mel_to_audio(
        m, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop, win_length=cfg.win, power=1.0,
        n_iter=n_iter, fmin=cfg.fmin, fmax=cfg.fmax, pad_mode="reflect",
    ).astype(np.float32)  # fmt: skip


# -- the schedule search on validation audio -------------------------------------------------
def validation_clips(audio: list[np.ndarray], cfg: MelConfig, n: int = 8, seconds: float = 1.5) -> Tensor:
    """Up to ``n`` equal-length clips (hop-aligned, from the middle of each utterance) as (n, L);
    shorter than ``seconds`` when no utterance is that long. With more than ``n`` long enough
    utterances, they are taken evenly spread over the list (so every voice of a several-voice
    corpus, whose validation files come voice by voice, is among them)."""
    longest = max((len(a) for a in audio), default=0)
    length = min(int(seconds * cfg.sample_rate), longest) // cfg.hop * cfg.hop
    if length < cfg.n_fft:
        raise AudioError(f"no validation utterance lasts {cfg.n_fft / cfg.sample_rate:.2f} s (one FFT window)")
    long_enough = [a for a in audio if len(a) >= length]
    picks = sorted({round(float(i)) for i in np.linspace(0, len(long_enough) - 1, min(n, len(long_enough)))})
    clips = []
    for a in (long_enough[i] for i in picks):
        start = (len(a) - length) // 2
        clips.append(torch.from_numpy(np.ascontiguousarray(a[start : start + length])))
    return torch.stack(clips)


def mel_l1(voc: Vocoder, audio: Tensor, reference_mel: Tensor) -> float:
    """Mean |log-mel(audio) - reference| over the reference's frames."""
    m = voc.mel(audio)[..., : reference_mel.shape[-1]]
    return float((m - reference_mel[..., : m.shape[-1]]).abs().mean())


def search_and_save(
    voc: Vocoder, clips: Tensor, steps: int = 6, method: str = "coordinate", seed: int = 0
) -> dict[str, Any]:
    """Grid-search a ``steps``-step schedule on validation ``clips`` (log-mel L1, fixed noise seed) and
    store it in the checkpoint's ``format.json`` under ``schedules`` (atomically)."""
    ref = voc.mel(clips)

    def score(betas: list[float]) -> float:
        return mel_l1(voc, voc(ref, betas=betas, seed=seed), ref)

    betas, best, evaluated = search_schedule(score, steps, method=method)
    entry = {"betas": betas, "val_mel_l1": round(best, 5), "evaluated": evaluated, "clips": int(clips.shape[0])}
    entry["step"] = voc.meta.get("step")
    voc.meta.setdefault("schedules", {})[str(steps)] = entry
    if voc.path is not None:
        f = voc.path / "format.json" if voc.path.is_dir() else voc.path.with_suffix(".json")
        meta = json.loads(f.read_text())
        meta.setdefault("schedules", {})[str(steps)] = entry
        tmp = f.with_name(f".{f.name}.tmp")
        tmp.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, f)
    return entry
