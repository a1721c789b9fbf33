"""Audio input and the log-mel front end of the WaveGrad vocoder (Chen et al. 2021, "WaveGrad:
Estimating Gradients for Waveform Generation", section 4: 80-bin log-mel conditioning).

The mel filter bank is librosa's (``librosa.filters.mel``, Slaney-normalised); the STFT is
``torch.stft`` (Hann window, centred, reflect padding) so the front end runs on any device.
``log_mel`` is ``log(max(mel_filters @ |STFT|, floor))``: natural log of the *magnitude* mel.

Where librosa is not installed (a bare GPU machine), a filter bank stored beside the training
cache is registered with :func:`register_mel_basis` and used instead.

Files are read with PyAV (any format FFmpeg knows, including raw G.722 with ``format="g722"``)
or, without PyAV, with the standard ``wave`` module (PCM WAV only).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


class AudioError(ValueError):
    """Input audio that cannot be used; the message is one line naming the file and what is expected."""


@dataclass(frozen=True)
class MelConfig:
    """STFT and mel settings. ``hop`` must equal the product of the network's up-sampling factors."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop: int = 256
    win: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float = 8000.0
    floor: float = 1e-5

    def __post_init__(self) -> None:
        if not (self.win <= self.n_fft and self.hop >= 1 and self.n_mels >= 1):
            raise ValueError(f"invalid mel config {self}: need win <= n_fft, hop >= 1, n_mels >= 1")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(f"invalid mel config: need 0 <= fmin < fmax <= sample_rate / 2, got {self}")

    def to_dict(self) -> dict:
        return asdict(self)


# The benchmark's setting (issue 6) and the usual 22.05 / 24 kHz vocoder front ends.
MEL_PRESETS: dict[str, MelConfig] = {
    "16k": MelConfig(16000, 1024, 256, 1024, 80, 0.0, 8000.0),
    "22k": MelConfig(22050, 1024, 256, 1024, 80, 0.0, 8000.0),
    "24k": MelConfig(24000, 2048, 300, 1200, 128, 20.0, 12000.0),
}

_BASES: dict[tuple, np.ndarray] = {}
_DEVICE_BASES: dict[tuple, Tensor] = {}


def _basis_key(cfg: MelConfig) -> tuple:
    return (cfg.sample_rate, cfg.n_fft, cfg.n_mels, float(cfg.fmin), float(cfg.fmax))


def register_mel_basis(cfg: MelConfig, basis: np.ndarray) -> None:
    """Use ``basis`` (n_mels, n_fft // 2 + 1) for ``cfg`` (e.g. one stored with a training cache)."""
    basis = np.asarray(basis, dtype=np.float32)
    if basis.shape != (cfg.n_mels, cfg.n_fft // 2 + 1):
        raise ValueError(f"mel basis has shape {basis.shape}, expected {(cfg.n_mels, cfg.n_fft // 2 + 1)}")
    _BASES[_basis_key(cfg)] = basis
    for key in [k for k in _DEVICE_BASES if k[:-1] == _basis_key(cfg)]:
        del _DEVICE_BASES[key]


def mel_basis(cfg: MelConfig) -> np.ndarray:
    """librosa's Slaney mel filter bank for ``cfg`` (or a registered one), float32 (n_mels, n_fft/2+1)."""
    key = _basis_key(cfg)
    if key not in _BASES:
        try:
            import librosa
        except ImportError:
            raise ImportError(
                "the mel filter bank needs librosa (pip install 'difflab[audio]') or a registered basis "
                "(difflab.methods.wavegrad.audio.register_mel_basis, done by the training cache loader)"
            ) from None
        fb = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
        _BASES[key] = fb.astype(np.float32)
    return _BASES[key]


def log_mel(audio: Tensor, cfg: MelConfig, center: bool = True) -> Tensor:
    """Log-mel of ``audio`` (..., L) -> (..., n_mels, L // hop + 1), float32, on ``audio``'s device.

    ``center=False`` frames the signal as given (no padding): a window with ``n_fft // 2`` samples of
    context on each side gives the frames that ``center=True`` gives on the whole utterance."""
    shape = audio.shape[:-1]
    x = audio.reshape(-1, audio.shape[-1]).float()
    window = torch.hann_window(cfg.win, device=x.device)
    spec = torch.stft(
        x, cfg.n_fft, cfg.hop, cfg.win, window, center=center, pad_mode="reflect", return_complex=True
    ).abs()
    key = (*_basis_key(cfg), str(x.device))
    if key not in _DEVICE_BASES:  # one copy per device (no host-to-device copy per training step)
        _DEVICE_BASES[key] = torch.from_numpy(mel_basis(cfg)).to(x.device)
    fb = _DEVICE_BASES[key]
    mel = torch.log(torch.clamp(fb @ spec, min=cfg.floor))
    return mel.reshape(*shape, cfg.n_mels, mel.shape[-1])


# -- reading and resampling -----------------------------------------------------------------
def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling (scipy.signal.resample_poly) of float audio along the last axis."""
    if sr_in == sr_out:
        return audio
    from scipy.signal import resample_poly

    ratio = Fraction(sr_out, sr_in)
    return resample_poly(audio, ratio.numerator, ratio.denominator, axis=-1).astype(np.float32)


def _read_wave(path: Path) -> tuple[np.ndarray, int]:
    import wave

    with wave.open(str(path), "rb") as w:
        width, channels, sr, n = w.getsampwidth(), w.getnchannels(), w.getframerate(), w.getnframes()
        raw = w.readframes(n)
    if width != 2:
        raise AudioError(f"{path}: only 16-bit PCM WAV can be read without PyAV (pip install av)")
    a = np.frombuffer(raw, dtype="<i2").reshape(-1, channels).mean(axis=1)
    return (a / 32768.0).astype(np.float32), sr


def _read_av(path: Path, fmt: str | None) -> tuple[np.ndarray, int]:
    import av

    with av.open(str(path), format=fmt) as container:
        if not container.streams.audio:
            raise AudioError(f"{path}: no audio stream; expected an audio file (wav, flac, mp3, g722 ...)")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono")
        chunks = [
            out.to_ndarray().reshape(-1) for frame in container.decode(stream) for out in resampler.resample(frame)
        ]
        sr = stream.rate
    if not chunks:
        raise AudioError(f"{path}: no audio samples decoded; expected a non-empty audio file")
    return np.concatenate(chunks).astype(np.float32), int(sr)


def read_audio(path: str | Path, sample_rate: int | None = None, *, resample_to: bool = True) -> tuple[np.ndarray, int]:
    """Read mono float32 audio in [-1, 1] and its sample rate.

    With ``sample_rate`` set, a file at another rate is resampled (``resample_to``) or rejected.
    Files ending in ``.g722`` are decoded as raw G.722. Any failure is a one-line :class:`AudioError`.
    """
    p = Path(path)
    if not p.is_file():
        raise AudioError(f"audio file not found: {p}")
    fmt = "g722" if p.suffix.lower() == ".g722" else None
    try:
        import av
    except ImportError:
        av = None
    try:
        audio, sr = _read_av(p, fmt) if av is not None else _read_wave(p)
    except AudioError:
        raise
    except Exception as e:  # av.error.*, wave.Error, EOFError ...
        raise AudioError(f"{p}: not readable audio ({type(e).__name__}); expected a WAV/FLAC/MP3/G.722 file") from None
    if sample_rate is not None and sr != sample_rate:
        if not resample_to:
            raise AudioError(f"{p}: sample rate {sr} Hz, the model expects {sample_rate} Hz (pass --resample)")
        audio, sr = resample(audio, sr, sample_rate), sample_rate
    return audio, sr


def check_speech(audio: np.ndarray, path: str | Path, cfg: MelConfig, min_seconds: float = 0.1) -> None:
    """Reject clips that are too short to vocode, hold non-finite samples (NaN, inf) or are silent (one-line
    :class:`AudioError`)."""
    need = max(int(min_seconds * cfg.sample_rate), cfg.n_fft)
    if audio.shape[-1] < need:
        raise AudioError(
            f"{path}: {audio.shape[-1]} samples is too short; expected at least {need} "
            f"({need / cfg.sample_rate:.2f} s at {cfg.sample_rate} Hz)"
        )
    bad = int(audio.size - np.count_nonzero(np.isfinite(audio)))
    if bad:
        raise AudioError(f"{path}: {bad} of {audio.size} samples are non-finite (NaN or inf); expected finite audio")
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak < 1e-4:
        raise AudioError(f"{path}: the audio is silent (peak {peak:.2g}); expected speech")


def write_wav(path: str | Path, audio: np.ndarray | Tensor, sample_rate: int) -> Path:
    """Write mono 16-bit PCM WAV (values clipped to [-1, 1]) with the ``wave`` module."""
    import wave

    a = audio.detach().float().cpu().numpy() if isinstance(audio, Tensor) else np.asarray(audio, dtype=np.float32)
    pcm = (np.clip(a.reshape(-1), -1.0, 1.0) * 32767.0).round().astype("<i2")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(p), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return p
