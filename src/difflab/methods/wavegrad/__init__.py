"""WaveGrad: a mel-conditioned diffusion vocoder (Chen et al. 2021, "WaveGrad: Estimating Gradients
for Waveform Generation"), with PriorGrad's data-dependent prior (Lee et al. 2022).

Modules: :mod:`.audio` (reading, resampling, log-mel front end), :mod:`.data` (speech corpora and
caches), :mod:`.net` (UBlock / DBlock / FiLM network), :mod:`.diffusion` (noise levels, loss,
sampling, schedule search), :mod:`.train` (the ``wavegrad`` method of the trainer), :mod:`.vocoder` (the Python API,
Griffin-Lim) and :mod:`.cli` (``difflab wavegrad-train``, ``wavegrad-search``, ``vocode``). The
names below import lazily, so ``difflab --help`` does not load torch. See docs/wavegrad.md.
"""

from importlib import import_module

_NAMES = {
    "AudioError": "audio", "MelConfig": "audio", "log_mel": "audio", "read_audio": "audio", "write_wav": "audio",
    "WaveGrad": "net", "WaveGradConfig": "net", "Vocoder": "vocoder", "griffin_lim": "vocoder",
    "WaveGradMethod": "train", "train_wavegrad": "train",
}  # fmt: skip
__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(import_module(f".{_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
