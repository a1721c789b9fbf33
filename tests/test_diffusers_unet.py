"""A diffusers ``UNet2DModel`` as a difflab denoiser (``difflab.nets.diffusers_unet``).

Tiny UNets (8x8, widths 8 and 16, random weights) are saved with ``save_pretrained`` and loaded back
as difflab stages; the reference is diffusers' own ``DDIMScheduler`` loop on the same UNet and noise.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

import difflab  # noqa: E402
from difflab.diffusion import cfg, ddim, get_schedule, make_denoiser  # noqa: E402
from difflab.methods import load  # noqa: E402
from difflab.methods.distill import DistillConfig, distill, stage_dir  # noqa: E402
from difflab.nets import keep_cond, null_cond  # noqa: E402
from difflab.nets.diffusers_unet import (  # noqa: E402
    DiffusersUNet,
    is_diffusers_folder,
    load_diffusers_unet,
    save_diffusers,
)
from difflab.train.checkpoint import CheckpointError  # noqa: E402

N = 1000
SHAPE = (3, 1, 8, 8)


def tiny_unet(classes: int | None = None, seed: int = 0):
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        num_class_embeds=classes,
    )  # fmt: skip


def save_folder(path, pred="epsilon", beta_schedule="linear", classes=None, bare=False, run=None, **sched):
    """A diffusers pipeline folder (or a bare UNet folder) with a DDPM scheduler config."""
    unet = tiny_unet(classes)
    s = diffusers.DDPMScheduler(
        num_train_timesteps=N, beta_schedule=beta_schedule, prediction_type=pred, clip_sample=False, **sched
    )
    if bare:
        unet.save_pretrained(path)
        s.save_config(path)
    else:
        unet.save_pretrained(path / "unet")
        s.save_pretrained(path / "scheduler")
        (path / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline"}))
    if run is not None:
        (path / "difflab.yaml").write_text(json.dumps(run))  # JSON is YAML
    return path


def diffusers_ddim(unet, sched_config, z, steps, spacing="trailing", labels=None):
    """diffusers' deterministic DDIM loop; returns the result and the timesteps it visited."""
    s = diffusers.DDIMScheduler.from_config(sched_config, timestep_spacing=spacing, set_alpha_to_one=True)
    s.set_timesteps(steps)
    with torch.no_grad():
        for k in s.timesteps:
            z = s.step(unet(z, k, class_labels=labels).sample, k, z, eta=0.0).prev_sample
    return z, [int(k) for k in s.timesteps]


def lam_of_k(schedule, k: int) -> float:
    return math.inf if k < 0 else float(schedule.lam(torch.tensor((k + 1) / N, dtype=torch.float64)))


@pytest.mark.parametrize(
    ("pred", "beta_schedule", "spacing"),
    [
        ("epsilon", "linear", "trailing"),
        ("v_prediction", "squaredcos_cap_v2", "leading"),
        ("sample", "linear", "trailing"),
    ],
)
def test_ddim_matches_diffusers_ddim(tmp_path, pred, beta_schedule, spacing):
    stage = load_diffusers_unet(save_folder(tmp_path, pred, beta_schedule))
    net, schedule = stage.net, stage.net.schedule()
    assert net.parameterization == {"epsilon": "eps", "v_prediction": "v", "sample": "x"}[pred]
    z0 = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    ref, ks = diffusers_ddim(net.unet, dict(net.scheduler_config), z0, 10, spacing)
    if spacing == "trailing":  # difflab's default grid is diffusers' trailing spacing
        lams = schedule.lams(10)
        ours = stage.sample(len(z0), sampler="ddim", steps=10, noise=z0)
    else:  # any other list of timesteps: their log-SNR, then +inf (set_alpha_to_one)
        lams = torch.tensor([lam_of_k(schedule, k) for k in ks] + [math.inf], dtype=torch.float64)
        with torch.no_grad():
            ours = ddim(make_denoiser(net, net.parameterization), z0, lams)
    assert net.timestep(lams[:-1].float()).tolist() == ks  # the UNet sees diffusers' own timesteps
    err = (ours - ref).abs().max().item()
    assert err < 1e-4 * max(1.0, ref.abs().max().item()), f"max abs diff {err:.3g}"


@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "trained"])
def test_diffusers_schedule_has_diffusers_betas(beta_schedule):
    kw = {"beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 500}
    if beta_schedule == "trained":
        kw["trained_betas"] = torch.linspace(1e-4, 0.05, 500).tolist()
    else:
        kw["beta_schedule"] = beta_schedule
    ours = get_schedule("diffusers", **kw)
    assert torch.equal(ours.betas, diffusers.DDPMScheduler(**kw).betas.double())
    with pytest.raises(ValueError, match="unknown beta_schedule 'cosine'"):
        get_schedule("diffusers", beta_schedule="cosine")


def test_timesteps_and_schedule(tmp_path):
    net = load_diffusers_unet(save_folder(tmp_path, beta_schedule="scaled_linear")).net
    s = net.schedule()
    ref = diffusers.DDPMScheduler(beta_schedule="scaled_linear")
    assert torch.equal(s.betas, ref.betas.double())
    assert torch.allclose(s.alphas_cumprod, ref.alphas_cumprod.double(), rtol=1e-5, atol=0)
    lam = lambda t: s.lam(torch.tensor(t, dtype=torch.float64)).float()  # noqa: E731
    assert net.timestep(lam([1 / N, 501 / N, 1.0])).tolist() == [0, 500, 999]
    assert net.timestep(lam([501.5 / N])).item() == pytest.approx(500.5, abs=1e-3)  # continuous in between
    assert net.timestep(torch.tensor([math.inf, 40.0, -40.0])).tolist() == [0, 0, 999]  # clamped to the table


def test_guidance_composes_with_a_null_class(tmp_path):
    folder = save_folder(tmp_path, "v_prediction", classes=4, run={"model": {"null_class": True}})
    stage = difflab.load(folder)
    net = stage.net
    assert net.config.num_classes == 3 and net.config.droppable == ("class",) and stage.conditions == ("class",)
    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2))
    lam = torch.full((3,), -1.0)
    y = torch.tensor([0, 1, 2])
    den = make_denoiser(net, "v")
    with torch.no_grad():
        guided = cfg(den, 3.0, null_cond)(z, lam, keep_cond({"class": y}))
        k = net.timestep(lam)
        a, s = (v.view(-1, 1, 1, 1) for v in (torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()))
        x_c = a * z - s * net.unet(z, k, class_labels=y).sample  # x_hat = alpha z - sigma v
        x_u = a * z - s * net.unet(z, k, class_labels=torch.full((3,), 3)).sample
    assert torch.allclose(guided, x_u + 3.0 * (x_c - x_u), atol=1e-5)
    x = stage.sample(3, steps=4, guidance=3.0)
    assert x.shape == SHAPE and bool(torch.isfinite(x).all())
    plain = load_diffusers_unet(folder, run={}).net  # without null_class: 4 classes, no guidance
    assert plain.config.num_classes == 4 and plain.config.droppable == ()
    with pytest.raises(ValueError, match="null class"):
        plain(z, lam, null_cond({"class": y}))


def test_bare_folder_and_save_diffusers_round_trip(tmp_path):
    pipe = load_diffusers_unet(save_folder(tmp_path / "pipe"))
    bare = difflab.load(save_folder(tmp_path / "bare", bare=True))
    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    a = pipe.sample(3, steps=5, noise=z)
    assert torch.equal(a, bare.sample(3, steps=5, noise=z))
    out = save_diffusers(pipe, tmp_path / "saved")
    again = difflab.load(out)
    assert torch.equal(a, again.sample(3, steps=5, noise=z))
    # diffusers reads the saved folder, and its DDIM (trailing spacing) samples on difflab's grid
    pipeline = diffusers.DDIMPipeline.from_pretrained(out, local_files_only=True, low_cpu_mem_usage=False)
    ref, _ = diffusers_ddim(pipeline.unet, dict(pipeline.scheduler.config), z, 5, "trailing")
    assert (ref - a).abs().max().item() < 1e-4 * max(1.0, ref.abs().max().item())


def test_cli_sample(tmp_path):
    from difflab.cli import main

    folder = save_folder(tmp_path / "m")
    assert main(["sample", str(folder), "--n", "2", "--steps", "2", "--out", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").is_file()


def test_distill_a_diffusers_teacher(tmp_path):
    teacher = save_folder(tmp_path / "teacher", "v_prediction", run={"data": {"name": "digits", "batch_size": 8}})
    dcfg = DistillConfig(
        from_steps=8, to_steps=4, updates=2, log_every=0, ckpt_every=0, progress=False, sample_n=2, threads=1
    )
    result = distill(teacher, tmp_path / "dist", dcfg, log=lambda s: None)
    assert result.status == "done"
    student = difflab.load(stage_dir(tmp_path / "dist", 4))
    assert isinstance(student.net, DiffusersUNet) and student.config.sample.steps == 4
    assert student.config.diffusion.schedule == "diffusers" and student.config.diffusion.parameterization == "v"
    t_w = dict(load_diffusers_unet(teacher).net.named_parameters())
    s_w = dict(student.net.named_parameters())
    assert t_w.keys() == s_w.keys() and not torch.equal(t_w["unet.conv_out.weight"], s_w["unet.conv_out.weight"])
    x = student.sample(2)
    assert x.shape == (2, 1, 8, 8) and bool(torch.isfinite(x).all())
    save_diffusers(student, tmp_path / "student")  # the student goes back to diffusers
    assert load_diffusers_unet(tmp_path / "student").config.sample.steps == 4


def one_line_error(exc, fn, match):
    with pytest.raises(exc, match=match) as info:
        fn()
    assert "\n" not in str(info.value), str(info.value)


def test_bad_folders_give_one_line_errors(tmp_path):
    f = save_folder(tmp_path / "no-sched")
    (f / "scheduler" / "scheduler_config.json").unlink()
    one_line_error(FileNotFoundError, lambda: difflab.load(f), "scheduler config")
    f = save_folder(tmp_path / "no-weights")
    (f / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    one_line_error(CheckpointError, lambda: difflab.load(f), "cannot load the UNet2DModel")
    f = save_folder(tmp_path / "cond-unet")
    cfg_file = f / "unet" / "config.json"
    cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), "_class_name": "UNet2DConditionModel"}))
    one_line_error(ValueError, lambda: difflab.load(f), "UNet2DModel only")
    f = save_folder(tmp_path / "zero-snr", rescale_betas_zero_snr=True)
    one_line_error(ValueError, lambda: difflab.load(f), "rescale_betas_zero_snr")
    f = save_folder(tmp_path / "bad-pred")
    sc = f / "scheduler" / "scheduler_config.json"
    sc.write_text(json.dumps({**json.loads(sc.read_text()), "prediction_type": "flow"}))
    one_line_error(ValueError, lambda: difflab.load(f), "prediction_type 'flow'")
    f = save_folder(tmp_path / "bad-yaml", run={"train": {"steps": 3}})
    one_line_error(ValueError, lambda: difflab.load(f), "only data, sample, model.null_class")
    f = save_folder(tmp_path / "bad-data", run={"data": {"nmae": "digits"}})
    one_line_error(ValueError, lambda: difflab.load(f), "difflab.yaml: .*nmae")
    f = save_folder(tmp_path / "ok")
    one_line_error(CheckpointError, lambda: load(f, method="ardm"), "needs a 'ardm' one")
    # without a data set in difflab.yaml, distill says where to put one
    dcfg = DistillConfig(from_steps=8, to_steps=4, updates=1, progress=False)
    one_line_error(ValueError, lambda: distill(f, tmp_path / "d", dcfg, log=lambda s: None), "difflab.yaml")
    one_line_error(
        ValueError, lambda: distill(f, tmp_path / "d2", DistillConfig(from_steps=8, to_steps=4, parameterization="v")),
        "keeps its teacher's parameterization",
    )  # fmt: skip
    clip = tmp_path / "clip"  # a Hugging Face folder with a config.json is not taken for a diffusers one
    clip.mkdir()
    (clip / "config.json").write_text(json.dumps({"model_type": "clip"}))
    assert not is_diffusers_folder(clip) and is_diffusers_folder(f)


def test_missing_diffusers_is_one_line(tmp_path, monkeypatch):
    f = save_folder(tmp_path / "m")
    monkeypatch.setitem(__import__("sys").modules, "diffusers", None)
    one_line_error(ImportError, lambda: load_diffusers_unet(f), "pip install diffusers")
