"""Speech data for the WaveGrad vocoder: real recordings split by file, cached, cut into segments.

Sources (``load_corpus``):

- ``asterisk``: Debian ``asterisk-core-sounds-LANG-g722`` (one voice per language, 16 kHz G.722,
  about 25 minutes each), decoded with PyAV. ``voices`` picks the languages (default ``["en"]``;
  :data:`VOICES` lists them: en, es, fr, it, ru). Per voice, the test split is the first 20 files,
  sorted by name, in the top level of the voice's folder that last at least 2 s (issue 6);
  validation: every 30th other file; train: the rest. The splits of several voices are the union
  of each voice's splits, and names then start with the voice's folder (``fr_CA_f_June/...``); one
  voice keeps names relative to its folder. Decoded audio is cached as int16 ``.npz`` under
  ``data-cache/`` (or ``$DIFFLAB_DATA_CACHE``), keyed by the package's file names, sizes and
  modification times.
- ``ljspeech``: an LJSpeech-style folder (``wavs/*.wav`` + ``metadata.csv``; ids from the csv).
- ``folder``: every audio file under a folder (recursive).
- ``cache``: a compact training cache (:func:`export_training_cache`: train + validation audio as
  8-bit mu-law and the mel filter bank), for machines without PyAV or librosa.

Unreadable files are skipped and counted (``Corpus.skipped``). Files are resampled to the rate asked.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...data.base import DataWarning
from .audio import AudioError, MelConfig, mel_basis, read_audio, register_mel_basis

__all__ = ["VOICES", "Corpus", "DataWarning", "SegmentDataset", "join_corpora", "load_asterisk", "load_corpus"]

ASTERISK_SOUNDS = Path("/usr/share/asterisk/sounds")
# language -> the voice folder its Debian package installs (one speaker each)
VOICES = {
    "en": "en_US_f_Allison",
    "es": "es_MX_f_Allison",
    "fr": "fr_CA_f_June",
    "it": "it_IT_m_Carlo",
    "ru": "ru_RU_f_IvrvoiceRU",
}
ASTERISK_ROOT = ASTERISK_SOUNDS / VOICES["en"]
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".g722", ".m4a")
N_TEST, MIN_TEST_SECONDS, VAL_EVERY = 20, 2.0, 30


@dataclass
class Corpus:
    """Utterances (float32 mono in [-1, 1]) with their names; ``splits`` maps split -> indices."""

    names: list[str]
    audio: list[np.ndarray]
    sample_rate: int
    splits: dict[str, list[int]] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def split(self, name: str) -> list[np.ndarray]:
        if name not in self.splits:
            raise ValueError(f"unknown split {name!r}; valid splits: {', '.join(self.splits)}")
        return [self.audio[i] for i in self.splits[name]]

    def split_names(self, name: str) -> list[str]:
        return [self.names[i] for i in self.splits[name]]


def cache_dir() -> Path:
    return Path(os.environ.get("DIFFLAB_DATA_CACHE", "data-cache"))


def _key(files: list[Path], root: Path, sample_rate: int) -> str:
    h = hashlib.sha1(str(sample_rate).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root)}|{st.st_size}|{int(st.st_mtime)}\n".encode())
    return h.hexdigest()[:12]


def _cached_decode(files: list[Path], root: Path, sample_rate: int, tag: str, use_cache: bool):
    """Decode ``files`` (skipping unreadable ones), through an int16 ``.npz`` cache keyed by their contents."""
    path = cache_dir() / f"speech-{tag}-{_key(files, root, sample_rate)}.npz"
    if use_cache and path.is_file():
        with np.load(path) as z:
            pcm, offsets = z["pcm"], z["offsets"]
            names = json.loads(str(z["names"]))
            skipped = [tuple(s) for s in json.loads(str(z["skipped"]))]
        audio = [(pcm[offsets[i] : offsets[i + 1]] / 32768.0).astype(np.float32) for i in range(len(names))]
        return names, audio, skipped
    names, audio, skipped = [], [], []
    for f in files:
        try:
            audio.append(read_audio(f, sample_rate)[0])
            names.append(str(f.relative_to(root)))
        except AudioError as e:
            skipped.append((str(f.relative_to(root)), str(e)))
    if use_cache and audio:
        path.parent.mkdir(parents=True, exist_ok=True)
        pcm = np.concatenate([np.clip(a * 32768.0, -32768, 32767).round().astype(np.int16) for a in audio])
        offsets = np.cumsum([0] + [len(a) for a in audio]).astype(np.int64)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, pcm=pcm, offsets=offsets, names=json.dumps(names), skipped=json.dumps(skipped))
        tmp.replace(path)
    return names, audio, skipped


def asterisk_splits(names: list[str], audio: list[np.ndarray], sample_rate: int) -> dict[str, list[int]]:
    """Split by file: test = the first 20 top-level files (by name) lasting >= 2 s; val = every 30th other."""
    order = sorted(range(len(names)), key=lambda i: names[i])
    test = [i for i in order if "/" not in names[i] and len(audio[i]) >= MIN_TEST_SECONDS * sample_rate][:N_TEST]
    rest = [i for i in order if i not in set(test)]
    val = rest[VAL_EVERY // 2 :: VAL_EVERY]
    train = [i for i in rest if i not in set(val)]
    return {"train": train, "val": val, "test": test}


def file_splits(names: list[str]) -> dict[str, list[int]]:
    """Split a user's files by name: every 50th (offset 0) test, every 50th (offset 25) validation, rest train."""
    order = sorted(range(len(names)), key=lambda i: names[i])
    if len(order) < 3:
        return {"train": order, "val": order[:1], "test": order[:1]}
    test, val = order[::50], order[25::50] or order[1:2]
    held = set(test) | set(val)
    return {"train": [i for i in order if i not in held], "val": val, "test": test}


def _finish(names, audio, skipped, sample_rate, what, splits) -> Corpus:
    if skipped:
        warnings.warn(f"{what}: skipped {len(skipped)} unreadable file(s), e.g. {skipped[0][1]}", DataWarning, 3)
    if not audio:
        raise AudioError(f"{what}: no readable audio files")
    return Corpus(names, audio, sample_rate, splits=splits(names, audio), skipped=skipped)


def _voice_folder(lang: str) -> Path:
    if lang not in VOICES:
        raise ValueError(f"unknown voice {lang!r}; valid: {', '.join(VOICES)}")
    return ASTERISK_SOUNDS / VOICES[lang]


def load_asterisk(
    root: str | Path | None = None,
    sample_rate: int = 16000,
    use_cache: bool = True,
    voices: list[str] | tuple[str, ...] | None = None,
) -> Corpus:
    """Asterisk prompts with the issue's train/val/test split per voice (see the module doc).

    ``root`` is one voice's folder (default: the English one); ``voices`` names languages of
    :data:`VOICES` instead, each split on its own and joined.
    """
    if voices is not None and root is not None:
        raise ValueError("give the asterisk source either root= (one folder) or voices=, not both")
    if isinstance(voices, str):
        voices = [voices]
    voices = list(voices or ["en"])
    if len(set(voices)) != len(voices):
        raise ValueError(f"voices: {voices} names a voice twice")
    roots = [Path(root)] if root is not None else [_voice_folder(v) for v in voices]
    parts = []
    for lang, folder in zip(voices if root is None else ["?"], roots, strict=True):
        files = sorted(folder.rglob("*.g722")) if folder.is_dir() else []
        if not files:
            package = f"asterisk-core-sounds-{lang if lang in VOICES else 'en'}-g722"
            raise FileNotFoundError(
                f"no .g722 files under {folder}: install the Debian package {package} "
                f"(apt-get install {package}) or pass root="
            )
        tag = "asterisk" if lang in ("en", "?") else f"asterisk-{lang}"
        names, audio, skipped = _cached_decode(files, folder, sample_rate, tag, use_cache)
        split = lambda n, a: asterisk_splits(n, a, sample_rate)  # noqa: E731
        parts.append((folder, _finish(names, audio, skipped, sample_rate, str(folder), split)))
    if len(parts) == 1:
        return parts[0][1]
    return join_corpora([(folder.name, corpus) for folder, corpus in parts])


def join_corpora(parts: list[tuple[str, Corpus]]) -> Corpus:
    """One corpus of several: names prefixed ``PREFIX/``, each split the union of the parts' splits."""
    rates = {c.sample_rate for _, c in parts}
    if len(rates) != 1:
        raise AudioError(f"cannot join corpora of different sample rates: {sorted(rates)}")
    names, audio, skipped, splits = [], [], [], {}
    for prefix, c in parts:
        start = len(audio)
        names += [f"{prefix}/{n}" for n in c.names]
        audio += c.audio
        skipped += [(f"{prefix}/{n}", why) for n, why in c.skipped]
        for split, idx in c.splits.items():
            splits.setdefault(split, []).extend(start + i for i in idx)
    return Corpus(names, audio, rates.pop(), splits=splits, skipped=skipped)


def load_folder(root: str | Path, sample_rate: int = 16000, use_cache: bool = False) -> Corpus:
    """Every audio file under ``root`` (recursive), resampled to ``sample_rate``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"audio folder not found: {root}")
    files = sorted(f for f in root.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file())
    if not files:
        raise AudioError(f"{root}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
    names, audio, skipped = _cached_decode(files, root, sample_rate, "folder", use_cache)
    return _finish(names, audio, skipped, sample_rate, str(root), lambda n, a: file_splits(n))


def load_ljspeech(root: str | Path, sample_rate: int = 22050, use_cache: bool = False) -> Corpus:
    """An LJSpeech-style folder: ``metadata.csv`` (``id|text|normalized``) and ``wavs/ID.wav``."""
    root = Path(root)
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise FileNotFoundError(f"{root}: no metadata.csv; expected an LJSpeech-style folder (metadata.csv, wavs/)")
    ids = [line.split("|", 1)[0].strip() for line in meta.read_text(encoding="utf-8").splitlines() if line.strip()]
    files, missing = [], []
    for i in ids:
        f = root / "wavs" / f"{i}.wav"
        (files if f.is_file() else missing).append(f)
    names, audio, skipped = _cached_decode(files, root, sample_rate, "ljspeech", use_cache) if files else ([], [], [])
    skipped = skipped + [(str(f.relative_to(root)), f"{f}: listed in metadata.csv but missing") for f in missing]
    return _finish(names, audio, skipped, sample_rate, str(root), lambda n, a: file_splits(n))


# -- compact training cache (for a GPU machine without PyAV / librosa) -----------------------
MU = 255


def mulaw_encode(x: np.ndarray) -> np.ndarray:
    y = np.sign(x) * np.log1p(MU * np.minimum(np.abs(x), 1.0)) / np.log1p(MU)
    return np.round((y + 1.0) * 127.5).astype(np.uint8)


def mulaw_decode(q: np.ndarray) -> np.ndarray:
    y = q.astype(np.float32) / 127.5 - 1.0
    return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(MU)) / MU).astype(np.float32)


def export_training_cache(path: str | Path, corpus: Corpus, mel: MelConfig, voices: list[str] | None = None) -> Path:
    """Write train + validation audio (8-bit mu-law, zlib) and the mel filter bank to one ``.npz``;
    ``voices`` (the asterisk languages it holds) is recorded with it (:func:`training_cache_voices`)."""
    arrays: dict[str, np.ndarray] = {}
    for split in ("train", "val"):
        audio = corpus.split(split)
        arrays[f"{split}_mulaw"] = np.concatenate([mulaw_encode(a) for a in audio])
        arrays[f"{split}_offsets"] = np.cumsum([0] + [len(a) for a in audio]).astype(np.int64)
    arrays["mel_basis"] = mel_basis(mel)
    info = {"sample_rate": corpus.sample_rate, "mel": mel.to_dict(), "voices": list(voices or ["en"])}
    arrays["info"] = np.array(json.dumps(info))
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(p)
    return p


def training_cache_voices(path: str | Path) -> list[str]:
    """The voices a training cache holds (caches written before voices were recorded hold English only)."""
    with np.load(path) as z:
        return list(json.loads(str(z["info"])).get("voices", ["en"]))


def load_training_cache(path: str | Path) -> Corpus:
    """Read :func:`export_training_cache`'s file (splits train and val) and register its mel basis."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"training cache not found: {p} (write it with scripts/gpu/make_speech_cache.py)")
    with np.load(p) as z:
        info = json.loads(str(z["info"]))
        register_mel_basis(MelConfig(**info["mel"]), z["mel_basis"])
        names, audio, splits = [], [], {}
        for split in ("train", "val"):
            q, off = z[f"{split}_mulaw"], z[f"{split}_offsets"]
            start = len(audio)
            audio += [mulaw_decode(q[off[i] : off[i + 1]]) for i in range(len(off) - 1)]
            names += [f"{split}/{i}" for i in range(len(off) - 1)]
            splits[split] = list(range(start, len(audio)))
    return Corpus(names, audio, int(info["sample_rate"]), splits=splits)


def load_corpus(
    source: str = "asterisk", root: str | None = None, sample_rate: int = 16000, voices: list[str] | None = None
) -> Corpus:
    """One of the sources in the module doc, by name (``voices``: the asterisk source's languages)."""
    if voices is not None and source != "asterisk":
        raise ValueError(f"data.options.voices is an option of the asterisk source, not of {source!r}")
    if source == "asterisk":
        return load_asterisk(root, sample_rate, voices=voices)
    if source == "cache":
        if not root:
            raise ValueError("source 'cache' needs root= (the .npz written by export_training_cache)")
        corpus = load_training_cache(root)
        if corpus.sample_rate != sample_rate:
            raise AudioError(f"{root}: cache holds {corpus.sample_rate} Hz audio, the config asks for {sample_rate} Hz")
        return corpus
    if source in ("ljspeech", "folder"):
        if not root:
            raise ValueError(f"source {source!r} needs root= (a folder)")
        return (load_ljspeech if source == "ljspeech" else load_folder)(root, sample_rate)
    raise ValueError(f"unknown speech source {source!r}; valid: asterisk, cache, folder, ljspeech")


class SegmentDataset(torch.utils.data.Dataset):
    """Every hop-aligned window of ``segment`` samples of the utterances (shorter ones zero-padded),
    with ``context`` extra samples on each side (zeros beyond the utterance) for the mel's frames.

    The trainer draws indices in a seeded random order, so batches are random segments while
    resuming stays exact. Items: ``(float32 (1, segment + 2 * context), 0)``.
    """

    def __init__(self, audio: list[np.ndarray], segment: int, hop: int, context: int = 0) -> None:
        if segment % hop:
            raise ValueError(f"segment {segment} must be a multiple of the hop {hop}")
        self.segment, self.context = segment, context
        self.audio = [torch.from_numpy(np.pad(np.asarray(a, np.float32), (context, context + segment))) for a in audio]
        utt, off = [], []
        for i, a in enumerate(audio):
            starts = range(0, max(len(a) - segment, 0) + 1, hop)
            utt += [i] * len(starts)
            off += list(starts)
        if not utt:
            raise ValueError("no audio to cut segments from")
        self.utt, self.off = torch.tensor(utt), torch.tensor(off)

    def __len__(self) -> int:
        return len(self.utt)

    cond_keys: tuple[str, ...] = ()  # the mel is computed from the segment itself, in the loss

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        a = self.audio[int(self.utt[index])]
        o = int(self.off[index])
        return a[o : o + self.segment + 2 * self.context].unsqueeze(0), {}
