"""The Vocode tab: WaveGrad re-synthesis of an uploaded audio file or of a sentence spoken by espeak-ng,
beside Griffin-Lim on the same mel.

:func:`vocode` reads the audio as ``difflab vocode`` does (:func:`~difflab.methods.wavegrad.audio.read_audio`,
resampled to the model's rate, :func:`~difflab.methods.wavegrad.audio.check_speech`), vocodes its mel with
the :class:`~difflab.methods.wavegrad.vocoder.Vocoder` (the ``auto`` schedule for ``steps``) and runs
:func:`~difflab.methods.wavegrad.vocoder.griffin_lim` on the same mel; all three are written as WAV files.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import limits as check
from .limits import DEFAULT_LIMITS, AppError, Limits
from .models import Entry, Models
from .outputs import job_folder

MAX_SEED = 2**32 - 1


@dataclass
class Vocoded:
    """The original (at the model's rate), WaveGrad's and Griffin-Lim's WAV files, with timings."""

    original: Path
    wavegrad: Path
    griffin_lim: Path
    seconds: float  # length of the audio
    wavegrad_seconds: float
    griffin_lim_seconds: float
    summary: str


def speak(sentence: str, path: Path) -> Path:
    """``sentence`` spoken by espeak-ng into the WAV file ``path`` (the text goes through standard input)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise AppError("speech: espeak-ng is not installed here (apt-get install espeak-ng); upload an audio file")
    try:
        subprocess.run(
            [exe, "--stdin", "-w", str(path)], input=sentence.encode(), capture_output=True, timeout=60, check=True
        )
    except (subprocess.SubprocessError, OSError) as e:
        raise AppError(f"speech: espeak-ng failed ({type(e).__name__})") from None
    return path


def vocode(
    models: Models,
    entry: Entry,
    *,
    audio: Any = None,
    sentence: Any = "",
    steps: Any = 6,
    seed: Any = 0,
    out: str | Path,
    limits: Limits = DEFAULT_LIMITS,
) -> Vocoded:
    """Vocode ``audio`` (a file) or, when no file is given, ``sentence`` spoken by espeak-ng; WAV files under
    ``out/vocode/``."""
    import numpy as np

    from ..methods.wavegrad.audio import check_speech, read_audio, resample, write_wav
    from ..methods.wavegrad.vocoder import griffin_lim

    n_steps = check.whole("steps", steps, 1, limits.steps)
    seed = check.whole("seed", seed, 0, MAX_SEED, optional=True) or 0
    words = check.text("sentence", sentence, limits.text_chars)
    if audio is None and not words:
        raise AppError("audio: upload an audio file or type a sentence to speak")
    folder = None  # made once the input is known to be good (or for espeak-ng's file)
    if audio is not None:
        path = check.upload("audio", audio, limits.audio_bytes)
        source = path.name
    else:
        folder = job_folder(out, "vocode")
        path = speak(words, folder / "spoken.wav")
        source = "espeak-ng"
    voc = models.vocoder(entry)
    cfg = voc.mel_config
    if voc.distilled:  # a distilled student has one schedule, its own; the info line names its step count
        n_steps = voc.distilled["steps"]
    betas = voc.schedule(n_steps, "auto")
    try:
        wav, rate = read_audio(path)  # its own rate first: the length is checked before any resampling
    except ValueError as e:
        raise AppError(f"audio: {check.one_line(e).replace(str(path), path.name)}") from None
    seconds = len(wav) / rate
    if seconds > limits.audio_seconds:
        raise AppError(f"audio: {source} is {seconds:.1f} s long, over the limit of {limits.audio_seconds:g} s")
    if rate != cfg.sample_rate:
        wav = resample(wav, rate, cfg.sample_rate)
    try:
        check_speech(wav, source, cfg)
    except ValueError as e:
        raise AppError(f"audio: {check.one_line(e)}") from None
    mel = voc.mel(wav)[0]
    t0 = time.perf_counter()
    out_wg = voc(mel, betas=betas, seed=seed)[: len(wav)].cpu().numpy()
    t1 = time.perf_counter()
    out_gl = griffin_lim(mel, cfg)[: len(wav)]
    out_gl = np.pad(
        out_gl, (0, len(wav) - len(out_gl))
    )  # librosa gives (frames - 1) * hop samples: as long as the rest
    t2 = time.perf_counter()
    folder = folder or job_folder(out, "vocode")
    original = write_wav(folder / "original.wav", wav, cfg.sample_rate)
    wavegrad = write_wav(folder / "wavegrad.wav", out_wg, cfg.sample_rate)
    gl = write_wav(folder / "griffin-lim.wav", out_gl, cfg.sample_rate)
    length = len(wav) / cfg.sample_rate
    summary = (
        f"{source}: {length:.2f} s at {cfg.sample_rate} Hz; WaveGrad {n_steps} steps "
        f"({voc.resolve_schedule(n_steps)} schedule) {t1 - t0:.2f} s (real-time factor {(t1 - t0) / length:.2f}); "
        f"Griffin-Lim {t2 - t1:.2f} s"
    )
    return Vocoded(original, wavegrad, gl, length, t1 - t0, t2 - t1, summary)
