"""WaveGrad training through the shared Trainer, resume, the schedule search and the vocode CLI."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from difflab.cli import main
from difflab.methods.wavegrad.train import train_wavegrad
from difflab.methods.wavegrad.vocoder import Vocoder
from difflab.train.config import RunConfig

TINY_MEL = dict(sample_rate=16000, n_fft=256, hop=64, win=256, n_mels=20, fmin=0.0, fmax=8000.0)


def write_tone(path: Path, seconds: float, rate: int, freq: float) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.4 * np.sin(2 * np.pi * freq * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((x * 32767).astype("<i2").tobytes())
    return path


def tiny_config(root: Path, steps: int, prior: str = "standard") -> RunConfig:
    return RunConfig.from_dict(
        {
            "name": "wg",
            "model": {
                "factors": [4, 4, 4], "in_channels": 16, "up_channels": [16, 16, 8], "down_channels": [4, 8, 8],
                "mel": TINY_MEL, "prior": prior,
            },
            "data": {"name": "speech", "options": {"source": "folder", "root": str(root), "segment_frames": 8},
                     "batch_size": 8},
            "diffusion": {"schedule": "linear", "parameterization": "eps", "weighting": "snr", "norm": "l1"},
            "train": {"steps": steps, "lr": 3e-3, "log_every": 10, "ckpt_every": 0, "sample_every": 0,
                      "progress": False, "threads": 1, "ema_decay": 0.9},
        }
    )  # fmt: skip


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tones")
    for i in range(6):
        write_tone(root / f"t{i}.wav", 0.6, 16000, 200 + 60 * i)
    return root


@pytest.fixture(scope="module")
def trained(tones, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "wg"
    result, _ = train_wavegrad(tiny_config(tones, 60), run)
    assert result.status == "done" and result.step == 60
    return run


def test_training_reduces_loss(trained):
    losses = [json.loads(line)["loss"] for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 6 and losses[-1] < 0.7 * losses[0]
    meta = json.loads((trained / "checkpoint" / "format.json").read_text())
    assert meta["method"] == "wavegrad" and meta["train_seconds"] > 0


def test_priorgrad_resume_and_time_limit(tones, tmp_path):
    cfg = tiny_config(tones, 6, prior="priorgrad")
    res, tr = train_wavegrad(cfg, tmp_path / "pg", time_limit=1e-3, snapshots=(0.0,))
    assert res.status == "time-limit" and res.step == 1 and res.exit_code == 0
    assert tr.model_config["prior_energy_ref"] > 0
    assert json.loads((tmp_path / "pg" / "summary.json").read_text())["status"] == "time-limit"
    snap = next((tmp_path / "pg" / "snapshots").glob("*.safetensors"))
    assert json.loads(snap.with_suffix(".json").read_text())["val_mel_l1_6"] > 0  # scored on validation clips
    res2, tr2 = train_wavegrad(cfg, tmp_path / "pg", resume=True)
    assert res2.step == 6 and tr2.model_config == tr.model_config
    voc = Vocoder.load(snap)
    assert voc.config.prior == "priorgrad" and voc(torch.zeros(20, 4), steps=3, schedule="naive").shape == (256,)


def test_search_and_vocode_cli(trained, tones, tmp_path, capsys):
    for name in ("model.safetensors", "state.pt"):  # as the GPU script leaves a run: EMA weights only
        (trained / "checkpoint" / name).unlink()
    wav_in = tones / "t1.wav"
    out = tmp_path / "out.wav"
    assert main(["vocode", str(trained), str(wav_in), "--steps", "6", "-o", str(out)]) == 0
    with wave.open(str(out)) as w:
        assert w.getframerate() == 16000 and w.getnframes() == 0.6 * 16000 // 64 * 64
    assert "real-time factor" in capsys.readouterr().out
    assert main(["wavegrad-search", str(trained), "--steps", "2", "--clips", "1", "--seconds", "0.3"]) == 0
    meta = json.loads((trained / "checkpoint" / "format.json").read_text())
    assert len(meta["schedules"]["2"]["betas"]) == 2 and meta["schedules"]["2"]["evaluated"] >= 9
    assert main(["vocode", str(trained), str(wav_in), "--steps", "2", "--schedule", "searched", "-o", str(out)]) == 0


def test_vocode_bad_input_one_line(trained, tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    rate = write_tone(tmp_path / "r.wav", 0.5, 8000, 300)
    cases = [
        (bad, "not readable audio"),
        (rate, "sample rate 8000 Hz, the model expects 16000 Hz"),
        (write_tone(tmp_path / "short.wav", 0.01, 16000, 300), "too short"),
        (tmp_path / "missing.wav", "not found"),
    ]
    for path, message in cases:
        assert main(["vocode", str(trained), str(path), "-o", str(tmp_path / "o.wav")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and err.count("\n") == 0
    assert main(["vocode", str(trained), str(rate), "--resample", "-o", str(tmp_path / "o.wav")]) == 0
    assert main(["vocode", str(trained), str(rate), "--schedule", "searched", "--steps", "5", "-o", "x.wav"]) == 2
    assert "no searched 5-step schedule" in capsys.readouterr().err


def test_fit_schedule_ends_the_decay_at_the_time_limit(tones, tmp_path):
    cfg = tiny_config(tones, 100_000)
    cfg.train.decay, cfg.train.warmup, cfg.train.final_lr_ratio, cfg.train.log_every = "cosine", 5, 0.0, 1
    with pytest.raises(ValueError, match="time limit"):
        train_wavegrad(cfg, tmp_path / "no-limit", fit_schedule=True)
    res, tr = train_wavegrad(cfg, tmp_path / "fit", time_limit=8.0, fit_schedule=True)
    fitted = tr.cfg.train.steps
    assert tr.method.CALIB_WARM + tr.method.CALIB_TIMED < fitted < 100_000  # measured, not the configured 100,000
    assert res.status in ("done", "time-limit") and res.exit_code == 0 and res.step <= fitted
    saved = (tmp_path / "fit" / "config.yaml").read_text()
    assert f"steps: {fitted}" in saved  # a resumed run keeps the fitted schedule
    if res.status == "done":  # the usual case: the cosine ran to its end inside the time
        assert res.step == fitted
        last_lr = json.loads((tmp_path / "fit" / "metrics.jsonl").read_text().splitlines()[-1])["lr"]
        assert last_lr < 0.01 * cfg.train.lr


def test_init_from_a_checkpoint_counts_its_training_time(trained, tones, tmp_path):
    before = json.loads((trained / "checkpoint" / "format.json").read_text())["train_seconds"]
    cfg = tiny_config(tones, 3)
    cfg.train.init = str(trained)
    res, tr = train_wavegrad(cfg, tmp_path / "cont", snapshots=(0.0,))
    assert tr.method.train_seconds_before == before > 0
    after = json.loads((tmp_path / "cont" / "checkpoint" / "format.json").read_text())["train_seconds"]
    assert after > before  # the continued weights' time includes the first run's
    snap = json.loads(next((tmp_path / "cont" / "snapshots").glob("*.json")).read_text())
    assert snap["train_seconds"] >= before


def test_a_diffusion_section_that_is_not_wavegrads_process_is_refused(tones, tmp_path):
    cfg = tiny_config(tones, 2)
    cfg.diffusion.parameterization = "v"
    with pytest.raises(ValueError, match=r"WaveGrad trains with its own process.*diffusion.parameterization='v'"):
        train_wavegrad(cfg, tmp_path / "v")
    cfg = tiny_config(tones, 2)
    cfg.model["up_chanels"] = [16, 16, 8]
    with pytest.raises(ValueError, match=r"unknown config key 'model.up_chanels' \(did you mean 'up_channels'\?\)"):
        train_wavegrad(cfg, tmp_path / "typo")


def test_vocode_cli_length_schedule_threads_device_and_format(trained, tmp_path, capsys, monkeypatch):
    odd = write_tone(tmp_path / "odd.wav", 0.61, 16000, 330)  # 9760 samples: 152.5 hops
    out = tmp_path / "out.wav"
    assert main(["vocode", str(trained), str(odd), "--steps", "3", "--threads", "1", "-o", str(out)]) == 0
    with wave.open(str(out)) as w:
        assert w.getnframes() == 9760  # the input's length
    said = capsys.readouterr().out
    assert "3 steps, naive schedule" in said and "1 thread(s)" in said and "real-time factor" in said
    assert "after a warm-up" in said and "decoding" in said  # what the factor measures
    assert main(["vocode", str(trained), str(odd), "--steps", "6", "-o", str(out)]) == 0
    assert "6 steps, fixed schedule" in capsys.readouterr().out

    def one_line_error(argv: list[str], message: str) -> None:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and err.count("\n") == 0, err

    one_line_error(["vocode", str(trained), str(odd), "-o", str(tmp_path / "y.mp3")], "writes 16-bit PCM WAV only")
    assert not (tmp_path / "y.mp3").exists()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only torch
    one_line_error(
        ["vocode", str(trained), str(odd), "--device", "cuda", "-o", str(out)], "--device cuda: not available"
    )
    assert main(["vocode", str(trained), str(odd), "--device", "gpu", "-o", str(out)]) == 2
    assert "invalid choice: 'gpu'" in capsys.readouterr().err
    assert main(["wavegrad-search", str(trained), "--device", "gpu"]) == 2
    assert "invalid choice: 'gpu'" in capsys.readouterr().err


def test_wavegrad_train_config_errors_name_their_source(tmp_path, capsys) -> None:
    """A bad value of the WaveGrad model section names the override that set it, as difflab train does."""
    from difflab.cli import main

    argv = ["wavegrad-train", "configs/wavegrad-small.yaml", "model.in_channels=abc", "train.steps=1",
            "--out", str(tmp_path / "never")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("difflab: error: override 'model.in_channels=abc': config key model.in_channels"), err
    assert not (tmp_path / "never" / "checkpoint").exists()


# -- progressive distillation of the vocoder ---------------------------------------------------
def test_distilled_student_follows_its_teachers_two_steps(trained, tmp_path, capsys):
    """6 -> 3 steps on the tiny tone model: the student's schedule is the teacher's levels 2, 4, 6; it samples
    by DDIM; and after distillation its 3 steps land nearer the teacher's 6 DDIM steps than the teacher's own 3."""
    from difflab.diffusion import ddim, make_denoiser
    from difflab.methods.wavegrad.diffusion import betas_to_lams, naive_betas, noise_levels
    from difflab.methods.wavegrad.distill import distill_wavegrad, student_betas

    teacher_betas = naive_betas(6)
    result, _ = distill_wavegrad(
        trained, tmp_path / "student", ["train.steps=150", "train.lr=2e-3", "train.ema_decay=0.9", "train.threads=1",
                                        "train.progress=false"],
        teacher_steps=6, schedule="naive",
    )  # fmt: skip
    assert result.status == "done" and result.step == 150
    student, teacher = Vocoder.load(tmp_path / "student"), Vocoder.load(trained)
    assert student.distilled["teacher_betas"] == teacher_betas and student.distilled["steps"] == 3
    betas = student.schedule(3)
    assert betas == student_betas(teacher_betas)
    torch.testing.assert_close(noise_levels(betas)[1:], noise_levels(teacher_betas)[2::2])
    assert student.resolve_schedule(3) == "distilled"
    for steps, kind in ((6, "auto"), (3, "naive")):
        with pytest.raises(ValueError, match="distilled 3-step student: it samples only its own schedule"):
            student.schedule(steps, kind)
    assert main(["wavegrad-search", str(tmp_path / "student"), "--steps", "2", "--clips", "1"]) == 2
    wav_in = write_tone(tmp_path / "in.wav", 0.4, 16000, 300)
    assert main(["vocode", str(tmp_path / "student"), str(wav_in), "-o", str(tmp_path / "out.wav")]) == 0
    assert "3 steps, distilled schedule" in capsys.readouterr().out  # the student's own count by default

    mel = student.mel(torch.from_numpy(_tone_audio()))
    torch.manual_seed(0)
    z = torch.randn(1, 1, (mel.shape[-1] + 8) * 64)  # the vocoder's own first draw, with its 4 + 4 edge frames
    padded = torch.nn.functional.pad(mel, (4, 4), mode="replicate")

    def run(voc, b):
        return ddim(make_denoiser(voc.net, "eps"), z, betas_to_lams(b), cond=padded)[0, 0, 4 * 64 : -4 * 64]

    with torch.no_grad():
        out = student(mel[0], steps=3, seed=0)
        g = torch.Generator().manual_seed(0)
        z.copy_(torch.randn(z.shape, generator=g))
        torch.testing.assert_close(out, run(student, betas).clamp(-1, 1))  # DDIM from the seeded noise
        ref = run(teacher, teacher_betas)
        err_student = (run(student, betas) - ref).pow(2).mean().sqrt()
        err_teacher = (run(teacher, betas) - ref).pow(2).mean().sqrt()
    assert err_student < 0.7 * err_teacher, (float(err_student), float(err_teacher))


def _tone_audio() -> np.ndarray:
    t = np.arange(int(0.5 * 16000)) / 16000
    return (0.4 * np.sin(2 * np.pi * 260 * t)).astype(np.float32)


def test_wavegrad_distill_cli_refuses_what_it_cannot_halve(trained, tones, tmp_path, capsys):
    pg, _ = train_wavegrad(tiny_config(tones, 2, prior="priorgrad"), tmp_path / "pg")
    for argv, message in (
        ([str(trained), "--out", str(tmp_path / "a"), "--teacher-steps", "5", "--schedule", "naive"],
         "a teacher schedule of 5 steps cannot be halved"),
        ([str(tmp_path / "pg"), "--out", str(tmp_path / "b"), "--schedule", "naive"],
         "vocoder distillation supports the standard prior"),
        ([str(trained), "--out", str(tmp_path / "c"), "--schedule", "searched"], "no searched 6-step schedule"),
    ):  # fmt: skip
        assert main(["wavegrad-distill", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "Traceback" not in err and len(err.splitlines()) == 1, err
