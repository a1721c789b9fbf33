"""Progressive distillation (Salimans & Ho 2022, Algorithm 2) and guided distillation (Meng et al. 2023)."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

from difflab.analytic import Gaussian, GaussianMixture
from difflab.cli import main
from difflab.diffusion import CosineSchedule, ddim, make_denoiser
from difflab.methods.distill import (
    Distillation,
    DistillConfig,
    _ddim_to,
    distill,
    distillation_loss,
    distillation_target,
    halvings,
    stage_dir,
    student_model_config,
)
from difflab.train import RunConfig, generate, load_stage, train

SCHED = CosineSchedule()


def _mixture() -> GaussianMixture:
    comps = [
        Gaussian([1.2, 0.4], [[0.05, 0.0], [0.0, 0.02]]),
        Gaussian([-0.8, -0.6], [[0.03, 0.01], [0.01, 0.04]]),
        Gaussian([0.1, 1.0], [[0.02, 0.0], [0.0, 0.02]]),
    ]
    return GaussianMixture([0.3, 0.5, 0.2], comps)


# -- the target ---------------------------------------------------------------------------------
def test_one_student_step_lands_on_the_teachers_two_step_point():
    """x_tilde is exactly the x whose single DDIM step from z_t reaches the teacher's z_t''."""
    mix = _mixture()
    teacher = mix.denoise
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 2, generator=g, dtype=torch.float64)
    lam_t, lam_mid, lam_s = (SCHED.lam(torch.full((64,), t, dtype=torch.float64)) for t in (0.75, 0.625, 0.5))
    x_tilde = distillation_target(teacher, z, lam_t, lam_mid, lam_s)
    z1 = _ddim_to(z, teacher(z, lam_t), lam_t, lam_mid)
    z2 = _ddim_to(z1, teacher(z1, lam_mid), lam_mid, lam_s)
    torch.testing.assert_close(_ddim_to(z, x_tilde, lam_t, lam_s), z2, atol=1e-10, rtol=0)
    # the teacher's own single step misses it (the target is not the teacher's x_hat)
    assert (_ddim_to(z, teacher(z, lam_t), lam_t, lam_s) - z2).abs().max() > 1e-3
    # at the last step (lam_s = +inf) the target is the teacher's second x_hat
    inf = torch.full((64,), math.inf, dtype=torch.float64)
    x_last = distillation_target(teacher, z, lam_t, lam_mid, inf)
    torch.testing.assert_close(x_last, teacher(z1, lam_mid), atol=1e-10, rtol=0)


class _MLP(nn.Module):
    """A tiny v-prediction network for 2-D data, net(z, lam, cond)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 + 16, 128), nn.SiLU(), nn.Linear(128, 128), nn.SiLU(), nn.Linear(128, 2))

    def forward(self, z, lam, cond=None):
        f = torch.arange(8, dtype=z.dtype) + 1.0
        a = lam.to(z.dtype)[:, None].clamp(-20, 20) / 20 * f
        return self.net(torch.cat([z, torch.sin(a), torch.cos(a)], 1))


def test_after_one_halving_the_student_reproduces_the_2n_step_teacher():
    """Issue 4's check of the target: with the same start noise, the N-step student is closer to
    the 2N-step teacher's deterministic samples than the N-step teacher itself."""
    torch.manual_seed(0)
    mix = _mixture()
    teacher = mix.denoise
    n = 2
    student = _MLP()
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(500):
        x, _ = mix.sample(256, generator=g)
        loss = distillation_loss(student, teacher, x.float(), SCHED, n, "v", "truncated-snr", generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    z = torch.randn(2000, 2, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = ddim(teacher, z.double(), SCHED.lams(2 * n, "t")).float()
        teacher_n = ddim(teacher, z.double(), SCHED.lams(n, "t")).float()
        student_n = ddim(make_denoiser(student, "v"), z, SCHED.lams(n, "t"))
    err_student = (student_n - ref).pow(2).sum(1).mean().sqrt()
    err_teacher = (teacher_n - ref).pow(2).sum(1).mean().sqrt()
    assert err_student < 0.5 * err_teacher, (float(err_student), float(err_teacher))


def test_start_from_noise_trains_the_first_step_from_pure_noise():
    """WaveGrad's samplers start from N(0, I) at a first level that keeps signal: with start_from_noise the
    examples drawn at i = N see exactly the noise (and the others the usual a x + s eps)."""
    from difflab.diffusion import BetaSchedule
    from difflab.diffusion._util import alpha_sigma

    sched = BetaSchedule([1e-3, 0.05, 0.3, 0.6])  # t = 1 keeps alpha ~ 0.52 of the signal
    x = torch.full((64, 2), 3.0)
    seen = {}

    def student(z, lam, cond=None):
        seen["z"], seen["lam"] = z, lam
        return torch.zeros_like(z)

    for start in (False, True):
        g = torch.Generator().manual_seed(0)
        distillation_loss(student, lambda z, lam, c: z * 0, x, sched, 2, "eps", "truncated-snr", generator=g,
                          start_from_noise=start)  # fmt: skip
        g = torch.Generator().manual_seed(0)  # the loss's own draws, in its order
        i = torch.randint(1, 3, (64,), generator=g)
        eps = torch.randn(x.shape, generator=g)
        first = i == 2
        assert 0 < int(first.sum()) < 64
        a, s = alpha_sigma(seen["lam"])
        noisy = a[:, None] * x + s[:, None] * eps
        torch.testing.assert_close(seen["z"][~first], noisy[~first])
        torch.testing.assert_close(seen["z"][first], eps[first] if start else noisy[first])
        assert float(a[first][0]) > 0.5  # the level itself keeps signal: only the flag makes the start pure noise


def test_weighting_without_weight_at_snr_zero_is_refused():
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="truncated-snr, snr\\+1"):
        distillation_loss(_MLP(), _mixture().denoise, x, SCHED, 2, "v", "snr")


# -- configuration -----------------------------------------------------------------------------
def test_halvings_and_bad_step_counts():
    assert halvings(256, 4) == [128, 64, 32, 16, 8, 4]
    assert halvings(2, 1) == [1]
    with pytest.raises(ValueError, match="must be one of 128, 64, 32, 16, 8, 4, 2, 1"):
        halvings(256, 6)
    with pytest.raises(ValueError, match="one of 4, 2, 1"):
        halvings(8, 8)
    with pytest.raises(ValueError, match="power of two"):
        halvings(100, 4)
    with pytest.raises(ValueError, match="either guidance"):
        DistillConfig(guidance=2.0, guidance_range=(1.0, 3.0))
    with pytest.raises(ValueError, match="weighting"):
        DistillConfig(weighting="snr")


# -- end to end on digits ------------------------------------------------------------------------
TINY = {
    "name": "teacher",
    "model": {"channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "heads": 2, "norm_groups": 4},
    "data": {"name": "digits", "batch_size": 16},
    "train": {
        "steps": 20, "lr": 2e-3, "log_every": 0, "sample_every": 0, "ckpt_every": 0, "progress": False,
        "threads": 1, "ema_decay": 0.5,
    },
    "sample": {"steps": 8, "n": 4, "guidance": 2.0},
}  # fmt: skip


def _teacher(tmp_path, conditional=False, parameterization="v"):
    d = copy.deepcopy(TINY)
    d["data"]["conditions"] = ["class"] if conditional else []
    d["diffusion"] = {"parameterization": parameterization}
    run = tmp_path / ("cond" if conditional else "uncond") / parameterization
    train(RunConfig.from_dict(d), run)
    return run


def _dcfg(**kw) -> DistillConfig:
    base = {"from_steps": 8, "to_steps": 2, "updates": 3, "log_every": 0, "ckpt_every": 0, "progress": False}
    base["sample_n"], base["threads"] = 4, 1
    return DistillConfig(**{**base, **kw})


@pytest.mark.parametrize("parameterization", ["eps", "x", "v", "both"])
def test_distill_writes_usable_stage_per_halving(tmp_path, parameterization):
    teacher = _teacher(tmp_path, parameterization=parameterization)
    out = tmp_path / "dist"
    result = distill(teacher, out, _dcfg(), log=lambda s: None)
    assert result.status == "done"
    assert [p.name for p in result.stages] == ["steps-0004", "steps-0002"]
    for n in (4, 2):
        stage = load_stage(stage_dir(out, n))
        assert stage.config.sample.steps == n and stage.config.sample.sampler == "ddim"
        assert stage.meta["sampling_steps"] == n and stage.meta["distill"]["teacher_steps"] == 2 * n
        assert stage.config.diffusion.parameterization == parameterization
        x, _ = generate(stage.net, stage.config, stage.image_shape, 3)
        assert x.shape == (3, 1, 8, 8) and bool(torch.isfinite(x).all())
    # the first student starts from the teacher and moves away from it
    t, s = load_stage(teacher), load_stage(stage_dir(out, 4))
    w = "out.weight" if "out.weight" in dict(t.net.named_parameters()) else next(iter(dict(t.net.named_parameters())))
    assert not torch.equal(dict(t.net.named_parameters())[w], dict(s.net.named_parameters())[w])
    record = json.loads((out / "distill.json").read_text())
    assert [e["steps"] for e in record["stages"]] == [4, 2]


def test_resume_skips_finished_halvings_and_refuses_to_overwrite(tmp_path):
    teacher = _teacher(tmp_path)
    out = tmp_path / "dist"
    distill(teacher, out, _dcfg(to_steps=4), log=lambda s: None)
    before = (stage_dir(out, 4) / "checkpoint" / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="--resume"):
        distill(teacher, out, _dcfg(to_steps=4), log=lambda s: None)
    logs: list[str] = []
    result = distill(teacher, out, _dcfg(to_steps=2), resume=True, log=logs.append)
    assert "skipped" in logs[0] and result.status == "done"
    assert (stage_dir(out, 4) / "checkpoint" / "model.safetensors").read_bytes() == before
    assert stage_dir(out, 2).joinpath("checkpoint", "format.json").is_file()


def test_guided_distillation_fixed_w_and_w_as_input(tmp_path, capsys):
    teacher = _teacher(tmp_path, conditional=True)
    fixed = distill(teacher, tmp_path / "fixed", _dcfg(to_steps=2, guidance=2.0), log=lambda s: None)
    st = load_stage(fixed.stages[-1])
    assert st.config.sample.guidance == 1.0 and st.meta["distill"]["guidance"] == 2.0
    assert st.net.config.cond_drop == {}
    # only the first halving guides its teacher; later teachers have w built in (no compounding)
    dcfg = _dcfg(to_steps=2, guidance=2.0)
    first = load_stage(teacher)
    second = load_stage(fixed.stages[0])
    for stage, guided in ((first, True), (second, False)):
        tr = Distillation(
            copy.deepcopy(st.config), teacher=stage, dcfg=dcfg, n_student=2,
            student_config=student_model_config(stage.meta, dcfg, "v"),
        )  # fmt: skip
        assert tr.guide_teacher == guided
    png = str(tmp_path / "g.png")
    assert main(["sample", str(fixed.stages[-1]), "--n", "4", "--guidance", "3", "--out", png]) == 0
    assert "built in" in capsys.readouterr().err
    assert main(["sample", str(fixed.stages[-1]), "--n", "4", "--out", png]) == 0
    assert "built in" not in capsys.readouterr().err
    ranged = distill(teacher, tmp_path / "ranged", _dcfg(to_steps=2, guidance_range=(1.0, 3.0)), log=lambda s: None)
    for path in ranged.stages:
        st = load_stage(path)
        assert st.net.config.guidance_embed
        x2, _ = generate(st.net, st.config, st.image_shape, 4, guidance=2.0, seed=3)
        x3, _ = generate(st.net, st.config, st.image_shape, 4, guidance=3.0, seed=3)
        assert x2.shape == (4, 1, 8, 8) and not torch.equal(x2, x3)  # w is an input


def test_guidance_embedding_starts_as_the_identity(tmp_path):
    """A copy of the teacher with a (zero-initialised) w input computes the teacher's function."""
    from difflab.nets import UNet

    teacher = load_stage(_teacher(tmp_path, conditional=True))
    cfg = {**teacher.meta["model_config"], "guidance_embed": True}
    student = UNet(cfg)
    student.load_state_dict(teacher.net.state_dict(), strict=False)
    student.eval()
    z, lam = torch.randn(5, 1, 8, 8), torch.linspace(-5, 5, 5)
    cond = {"class": torch.arange(5)}
    with torch.no_grad():
        ref = teacher.net(z, lam, cond)
        got = student(z, lam, {**cond, "guidance": torch.full((5,), 3.0)})
    torch.testing.assert_close(got, ref)
    with pytest.raises(ValueError, match="cond\\['guidance'\\]"):
        student(z, lam, cond)


# -- bad input ---------------------------------------------------------------------------------------
def test_cli_errors_are_one_line(tmp_path, capsys):
    teacher = _teacher(tmp_path)
    assert main(["distill", str(teacher), "--from-steps", "8", "--to-steps", "3"]) == 2
    err = capsys.readouterr().err
    assert "must be one of 4, 2, 1" in err and err.count("\n") == 1
    assert main(["distill", str(teacher), "--from-steps", "4", "--to-steps", "2", "sample_n=0"]) == 2
    assert "sample_n must be >= 1" in capsys.readouterr().err
    fake = tmp_path / "ardm" / "checkpoint"
    fake.mkdir(parents=True)
    (fake / "format.json").write_text(json.dumps({"format": "difflab-checkpoint", "method": "ardm", "step": 1}))
    assert main(["distill", str(fake.parent), "--to-steps", "4"]) == 2
    assert "not a diffusion stage" in capsys.readouterr().err
    meta_file = teacher / "checkpoint" / "format.json"
    meta = json.loads(meta_file.read_text())
    meta["parameterization"] = "score"
    meta_file.write_text(json.dumps(meta))
    assert main(["distill", str(teacher), "--to-steps", "4"]) == 2
    assert "gives no x_hat" in capsys.readouterr().err
    assert main(["distill", str(teacher), "--guidance", "2", "--to-steps", "4"]) == 2


def test_cli_distill_runs_and_eval_accepts_the_student(tmp_path, capsys):
    teacher = _teacher(tmp_path)
    out = tmp_path / "cli"
    args = ["distill", str(teacher), "--from-steps", "4", "--to-steps", "2", "--updates", "2", "--out", str(out)]
    assert main([*args, "--no-progress", "log_every=0", "ckpt_every=0", "threads=1"]) == 0
    assert main(["sample", str(out / "steps-0002"), "--n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").is_file()
