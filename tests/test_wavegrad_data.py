"""WaveGrad speech data: the asterisk split, folder and LJSpeech loaders, caches, segments, bad input."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from difflab.methods.wavegrad import audio as wa
from difflab.methods.wavegrad.audio import MEL_PRESETS, AudioError, check_speech, mel_basis, read_audio
from difflab.methods.wavegrad.data import (
    DataWarning,
    SegmentDataset,
    asterisk_splits,
    export_training_cache,
    load_asterisk,
    load_corpus,
    load_folder,
    load_ljspeech,
    load_training_cache,
    mulaw_decode,
    mulaw_encode,
    training_cache_voices,
)


def write_sine(path: Path, seconds: float, rate: int, freq: float = 220.0, amp: float = 0.3) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (amp * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def test_asterisk_split_rule():
    names = [f"sub/z{i}" for i in range(5)] + [f"p{i:02d}" for i in range(40)]
    audio = [np.zeros(16000 * (1 if i % 4 == 0 else 3), np.float32) for i in range(45)]
    s = asterisk_splits(names, audio, 16000)
    test = [names[i] for i in s["test"]]
    expected = sorted(n for i, n in enumerate(names) if "/" not in n and len(audio[i]) >= 32000)[:20]
    assert test == expected
    assert not set(s["test"]) & (set(s["train"]) | set(s["val"])) and not set(s["train"]) & set(s["val"])
    assert len(s["train"]) + len(s["val"]) + len(s["test"]) == 45


def test_real_asterisk_package(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFLAB_DATA_CACHE", str(tmp_path))
    corpus = load_asterisk()
    test = corpus.split_names("test")
    assert len(test) == 20 and test == sorted(test) and all("/" not in n for n in test)
    assert all(len(a) >= 2 * 16000 for a in corpus.split("test"))
    assert len(corpus.splits["train"]) > 400 and not set(corpus.splits["test"]) & set(corpus.splits["train"])
    assert list(tmp_path.glob("speech-asterisk-*.npz"))  # decoded once, then read from the cache
    again = load_asterisk()
    assert again.split_names("test") == test and np.allclose(again.audio[0], corpus.audio[0], atol=1 / 32768)


def test_several_voices_each_split_on_their_own(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFLAB_DATA_CACHE", str(tmp_path))
    with pytest.warns(DataWarning, match="ru_RU_f_IvrvoiceRU: skipped 1 unreadable"):  # is.g722 holds no audio
        ru = load_asterisk(voices=["ru"])
    with pytest.warns(DataWarning, match="ru_RU_f_IvrvoiceRU: skipped 1 unreadable"):
        both = load_asterisk(voices=["en", "ru"])
    en = load_asterisk()
    assert len(both.names) == len(en.names) + len(ru.names) and len(both.split("test")) == 40
    for split in ("train", "val", "test"):  # the union of each voice's own split, names prefixed by the voice
        want = [f"en_US_f_Allison/{n}" for n in en.split_names(split)]
        want += [f"ru_RU_f_IvrvoiceRU/{n}" for n in ru.split_names(split)]
        assert both.split_names(split) == want
    assert ru.split_names("test") != en.split_names("test") and len(ru.split("test")) == 20
    assert both.skipped == [("ru_RU_f_IvrvoiceRU/is.g722", ru.skipped[0][1])]
    assert np.array_equal(both.split("test")[20], ru.split("test")[0])
    for kwargs, message in (
        ({"voices": ["de"]}, "unknown voice 'de'; valid: en, es, fr, it, ru"),
        ({"voices": ["en", "en"]}, "names a voice twice"),
        ({"voices": ["en"], "root": tmp_path}, "either root="),
    ):
        with pytest.raises(ValueError, match=message):
            load_asterisk(**kwargs)
    with pytest.raises(ValueError, match="voices is an option of the asterisk source"):
        load_corpus("folder", str(tmp_path), voices=["en"])


def test_folder_loader_resamples_and_skips_unreadable(tmp_path):
    write_sine(tmp_path / "a.wav", 1.0, 8000)
    write_sine(tmp_path / "sub" / "b.wav", 0.5, 16000)
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really a wav file")
    with pytest.warns(DataWarning, match="skipped 1 unreadable"):
        corpus = load_folder(tmp_path, 16000)
    assert corpus.names == ["a.wav", "sub/b.wav"] and len(corpus.skipped) == 1
    assert abs(len(corpus.audio[0]) - 16000) <= 2  # 8 kHz resampled to 16 kHz
    assert abs(float(np.abs(corpus.audio[0]).max()) - 0.3) < 0.02


def test_ljspeech_loader(tmp_path):
    for i in ("LJ001-0001", "LJ001-0002"):
        write_sine(tmp_path / "wavs" / f"{i}.wav", 0.3, 22050)
    (tmp_path / "metadata.csv").write_text("LJ001-0001|Hi.|Hi.\nLJ001-0002|Yo.|Yo.\nLJ001-0003|Gone.|Gone.\n")
    with pytest.warns(DataWarning):
        corpus = load_ljspeech(tmp_path, 22050)
    assert corpus.names == ["wavs/LJ001-0001.wav", "wavs/LJ001-0002.wav"] and len(corpus.skipped) == 1
    with pytest.raises(FileNotFoundError, match="metadata.csv"):
        load_ljspeech(tmp_path / "wavs")


def test_espeak_speech_reads(tmp_path):
    out = tmp_path / "e.wav"
    subprocess.run(["espeak-ng", "-w", str(out), "testing one two three"], check=True)
    audio, sr = read_audio(out, 16000, resample_to=True)
    assert sr == 16000 and len(audio) > 8000
    check_speech(audio, out, MEL_PRESETS["16k"])


def test_training_cache_round_trip(tmp_path):
    for i in range(60):
        write_sine(tmp_path / "src" / f"f{i:02d}.wav", 0.2, 16000, freq=100 + 10 * i)
    corpus = load_folder(tmp_path / "src", 16000)
    path = export_training_cache(tmp_path / "c.npz", corpus, MEL_PRESETS["16k"])
    wa._BASES.clear()  # the loader registers the stored filter bank
    back = load_training_cache(path)
    assert len(wa._BASES) == 1
    assert len(back.split("train")) == len(corpus.split("train")) and len(back.split("val")) == 1
    a, b = corpus.split("train")[0], back.split("train")[0]
    assert np.abs(a - b).max() < 0.01
    assert np.allclose(mel_basis(MEL_PRESETS["16k"]), np.load(path)["mel_basis"])
    assert training_cache_voices(path) == ["en"]  # the default: what every cache held before voices existed
    voiced = export_training_cache(tmp_path / "v.npz", corpus, MEL_PRESETS["16k"], voices=["es", "fr"])
    assert training_cache_voices(voiced) == ["es", "fr"]
    x = np.linspace(-1, 1, 1001).astype(np.float32)
    assert (np.abs(mulaw_decode(mulaw_encode(x)) - x) <= 0.025 * np.abs(x) + 2e-4).all()  # relative error


def test_segments_with_context():
    audio = [np.arange(1000, dtype=np.float32), np.ones(100, np.float32)]
    ds = SegmentDataset(audio, segment=256, hop=64, context=32)
    assert len(ds) == (1000 - 256) // 64 + 1 + 1
    x, y = ds[1]
    assert x.shape == (1, 320) and y == {}
    assert torch.equal(x[0, :32], torch.zeros(32) + torch.arange(32, 64).float())  # context before offset 64
    short, _ = ds[len(ds) - 1]
    assert short.shape == (1, 320) and float(short.sum()) == 100  # zero-padded


def test_bad_audio_is_one_line_error(tmp_path):
    (tmp_path / "x.wav").write_text("hello")
    with pytest.raises(AudioError, match="not readable audio"):
        read_audio(tmp_path / "x.wav")
    with pytest.raises(AudioError, match="not found"):
        read_audio(tmp_path / "missing.wav")
    silent = write_sine(tmp_path / "s.wav", 1.0, 16000, amp=0.0)
    audio, _ = read_audio(silent, 16000)
    with pytest.raises(AudioError, match="silent"):
        check_speech(audio, silent, MEL_PRESETS["16k"])
    with pytest.raises(AudioError, match="too short"):
        check_speech(audio[:500] + 0.1, silent, MEL_PRESETS["16k"])
    speech = audio + 0.1
    for value in (np.nan, np.inf, -np.inf):  # was "the audio is silent (peak nan)"
        speech[100:103] = value
        with pytest.raises(AudioError, match=r"3 of 16000 samples are non-finite \(NaN or inf\)") as e:
            check_speech(speech, silent, MEL_PRESETS["16k"])
        assert "silent" not in str(e.value)
    with pytest.raises(AudioError, match="sample rate 8000 Hz, the model expects 16000 Hz"):
        read_audio(write_sine(tmp_path / "r.wav", 0.5, 8000), 16000, resample_to=False)
