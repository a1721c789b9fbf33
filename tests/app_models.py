"""Tiny models of every kind the app serves, trained for a few steps (for tests/test_app*.py and test_report.py;
not a test module).

:func:`tiny_models` trains them once per test session into ``BASETEMP/app-models`` (both app test modules
share them) and returns their folders: ``image`` (class-conditional digits), ``student`` (distilled from it,
2 steps), ``t2i`` (caption-conditioned scenes, a scratch text encoder), ``ardm`` (digits, 17 levels),
``wavegrad`` (on tones) and ``video`` (moving items, 4 frames of 8x8).
"""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Any

import numpy as np

from difflab.cli import main
from difflab.config import dump_yaml

TRAIN = {"log_every": 1, "sample_every": 0, "ckpt_every": 0, "progress": False, "threads": 1}
UNET = {"channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_levels": [], "heads": 2, "norm_groups": 4}


def write_tone(path: Path, seconds: float = 0.6, rate: int = 16000, freq: float = 300.0) -> Path:
    """A 16-bit mono WAV of a sine tone."""
    t = np.arange(int(seconds * rate)) / rate
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((0.4 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2").tobytes())
    return path


def _train(root: Path, name: str, config: dict, command: str = "train") -> Path:
    (root / f"{name}.yaml").write_text(dump_yaml({"name": name, **config}))
    assert main([command, str(root / f"{name}.yaml"), "--out", str(root / name)]) == 0
    return root / name


def tiny_wavegrad_config(root: Path, train: dict) -> Any:
    """A WaveGrad run config of a few thousand parameters on four tones written to ``root/speech``."""
    from difflab.train.config import RunConfig

    (root / "speech").mkdir()
    for i in range(4):
        write_tone(root / "speech" / f"t{i}.wav", freq=200 + 60 * i)
    mel = dict(sample_rate=16000, n_fft=256, hop=64, win=256, n_mels=20, fmin=0.0, fmax=8000.0)
    return RunConfig.from_dict(
        {
            "name": "wg",
            "model": {"factors": [4, 4, 4], "in_channels": 16, "up_channels": [16, 16, 8],
                      "down_channels": [4, 8, 8], "mel": mel},
            "data": {"name": "speech", "options": {"source": "folder", "root": str(root / "speech"),
                                                   "segment_frames": 8}, "batch_size": 8},
            "diffusion": {"schedule": "linear", "parameterization": "eps", "weighting": "snr", "norm": "l1"},
            "train": train,
        }
    )  # fmt: skip


def _wavegrad(root: Path) -> Path:
    from difflab.methods.wavegrad.train import train_wavegrad

    result, _ = train_wavegrad(tiny_wavegrad_config(root, {"steps": 2, **TRAIN}), root / "wavegrad")
    assert result.status == "done"
    return root / "wavegrad"


def build(root: Path) -> dict[str, Path]:
    """Train every tiny model into ``root`` (about half a minute on two cores)."""
    root.mkdir(parents=True, exist_ok=True)
    runs = {}
    runs["image"] = _train(root, "image", {
        "model": UNET, "data": {"name": "digits", "batch_size": 8, "conditions": ["class"]},
        "train": {"steps": 2, "cond_drop": 0.1, **TRAIN}, "sample": {"sampler": "ddim", "steps": 4, "guidance": 2.0},
    })  # fmt: skip
    student = root / "distilled"
    argv = ["distill", str(runs["image"]), "--from-steps", "4", "--to-steps", "2", "--updates", "1", "--out",
            str(student), "--no-progress", "--batch-size", "4", "log_every=1", "ckpt_every=0",
            "sample_n=4"]  # fmt: skip
    assert main(argv) == 0
    runs["student"] = student / "steps-0002"
    runs["t2i"] = _train(root, "t2i", {
        "model": UNET, "data": {"name": "scenes", "options": {"size": 8, "n": 64}, "batch_size": 4,
                                "conditions": ["caption"]},
        "text": {"encoder": "scratch", "dim": 16, "layers": 1, "heads": 2, "max_tokens": 32},
        "train": {"steps": 2, "cond_drop": 0.2, **TRAIN}, "sample": {"sampler": "ddim", "steps": 4, "guidance": 3.0},
    })  # fmt: skip
    runs["ardm"] = _train(root, "ardm", {
        "method": "ardm", "model": {"head": "softmax", "branching": 0, "unet": UNET},
        "data": {"name": "digits", "batch_size": 8}, "train": {"steps": 2, **TRAIN}, "sample": {"steps": 4, "n": 4},
    }, command="ardm-train")  # fmt: skip
    runs["wavegrad"] = _wavegrad(root)
    runs["video"] = _train(root, "video", {
        "model": {**UNET, "dims": 3, "temporal_levels": [1], "max_frame_offset": 4},
        "data": {"name": "moving-items", "options": {"frames": 4, "size": 20, "item_size": 8, "n": 16}, "batch_size": 2,
                 "conditions": ["class"]},
        "train": {"steps": 2, "cond_drop": 0.1, **TRAIN}, "sample": {"sampler": "ddim", "steps": 2, "guidance": 1.0},
    })  # fmt: skip
    return runs


def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """The tiny models, trained once per test session (a marker file says they are complete)."""
    root = tmp_path_factory.getbasetemp() / "app-models"
    names = ("image", "student", "t2i", "ardm", "wavegrad", "video")
    if not (root / "done").is_file():
        if root.exists():
            import shutil

            shutil.rmtree(root)
        build(root)
        (root / "done").write_text("ok\n")
    return {n: root / n if n != "student" else root / "distilled" / "steps-0002" for n in names}
