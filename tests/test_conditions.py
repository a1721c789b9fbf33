"""One path for every method: condition dicts reach the network with their dtype and values, in
training and in sampling; noise-conditioning augmentation; cascades; ``difflab.load``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import difflab
from difflab.cli import main
from difflab.data import Rescaled, get_dataset
from difflab.diffusion import CosineSchedule
from difflab.methods.cascade import Cascade
from difflab.train import CheckpointError, LoadedStage, RunConfig, Trainer, generate, load_stage, train

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def config(**data) -> RunConfig:
    return RunConfig.from_dict(
        {
            "name": "c",
            "model": {"channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "heads": 2, "norm_groups": 4},
            "data": {"name": "digits", "batch_size": 6, **data},
            "train": {
                "steps": 2, "lr": 1e-3, "log_every": 1, "sample_every": 0, "ckpt_every": 0, "progress": False,
                "threads": 1, "ema_decay": 0.9,
            },
            "sample": {"steps": 2, "n": 4},
        }
    )  # fmt: skip


def record_calls(net: torch.nn.Module) -> list[dict]:
    """Wrap ``net.forward`` so every call's condition dict is kept (detached copies)."""
    calls: list[dict] = []
    forward = net.forward

    def spy(x, lam, cond=None):
        calls.append({k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in (cond or {}).items()})
        return forward(x, lam, cond)

    net.forward = spy
    return calls


def test_every_condition_key_reaches_the_network_in_training(tmp_path):
    cfg = config(conditions=["class", "lowres"], lowres_factor=2)
    trainer = Trainer(cfg, tmp_path / "sr")
    calls = record_calls(trainer.net)
    trainer.fit()
    data = Rescaled(get_dataset("digits", "train"), 1, 2)
    _, whole = data.tensors()
    for step, cond in enumerate(calls):
        idx = trainer.order.indices(step)
        assert cond["class"].dtype == torch.int64 and torch.equal(cond["class"], whole["class"][idx])
        assert cond["lowres"].dtype == torch.float32 and cond["lowres"].shape == (6, 1, 4, 4)
        assert torch.equal(cond["lowres"], whole["lowres"][idx])  # no augmentation: the clean image
        assert "aug_lam" not in cond
    assert len(calls) == 2
    meta = json.loads((tmp_path / "sr" / "checkpoint" / "format.json").read_text())
    assert meta["conditions"] == ["class", "lowres"] and meta["lowres_shape"] == [1, 4, 4]
    assert meta["model_config"]["lowres_channels"] == 1 and meta["model_config"]["num_classes"] == 10


def test_noise_conditioning_augmentation_noises_lowres_and_tells_the_level(tmp_path):
    cfg = config(conditions=["lowres"], lowres_factor=2)
    cfg.diffusion.lowres_aug = 0.5
    trainer = Trainer(cfg, tmp_path / "aug")
    calls = record_calls(trainer.net)
    trainer.fit()
    _, whole = Rescaled(get_dataset("digits", "train"), 1, 2).tensors()
    lo = float(CosineSchedule().lam(torch.tensor(0.5)))
    for step, cond in enumerate(calls):
        clean = whole["lowres"][trainer.order.indices(step)]
        assert "class" not in cond and cond["aug_lam"].shape == (6,) and cond["aug_lam"].dtype == torch.float32
        assert bool((cond["aug_lam"] >= lo - 1e-4).all()) and not torch.allclose(cond["lowres"], clean)


def test_augmentation_can_leave_part_of_each_batch_clean(tmp_path):
    cfg = config(conditions=["lowres"], lowres_factor=2, batch_size=64)
    cfg.diffusion.lowres_aug, cfg.diffusion.lowres_aug_clean = 0.5, 0.5
    cfg.train.steps = 4
    trainer = Trainer(cfg, tmp_path / "half")
    calls = record_calls(trainer.net)
    trainer.fit()
    _, whole = Rescaled(get_dataset("digits", "train"), 1, 2).tensors()
    kept = torch.cat([torch.isinf(c["aug_lam"]) for c in calls])
    assert 0.3 < float(kept.float().mean()) < 0.7  # about half of 256 items at level 0
    for step, cond in enumerate(calls):
        inf = torch.isinf(cond["aug_lam"])
        clean = whole["lowres"][trainer.order.indices(step)]
        assert torch.equal(cond["lowres"][inf], clean[inf])  # level 0: untouched
        assert not torch.isclose(cond["lowres"][~inf], clean[~inf]).all(dim=(1, 2, 3)).any()
    with pytest.raises(ValueError, match=r"diffusion.lowres_aug_clean must lie in \[0, 1\], got 1.5"):
        RunConfig.from_dict({"diffusion": {"lowres_aug_clean": 1.5}})


def test_generate_passes_conditions_and_the_sampling_level(tmp_path):
    cfg = config(conditions=["class", "lowres"], lowres_factor=2)
    train(cfg, tmp_path / "sr")
    stage = load_stage(tmp_path / "sr")
    calls = record_calls(stage.net)
    lowres = torch.rand(3, 1, 4, 4) * 2 - 1
    labels = torch.tensor([7, 1, 4])
    x, _ = generate(stage.net, stage.config, stage.image_shape, 3, labels=labels, cond={"lowres": lowres}, aug=0.0)
    assert x.shape == (3, 1, 8, 8)
    for cond in calls:  # guidance 1: one call per step, conditional
        assert torch.equal(cond["class"], labels) and torch.equal(cond["lowres"], lowres)
        assert bool(torch.isinf(cond["aug_lam"]).all())  # level 0: clean input, clamped by the network
    calls.clear()
    generate(stage.net, stage.config, stage.image_shape, 3, labels=labels, cond={"lowres": lowres}, aug=0.3)
    lam = float(CosineSchedule().lam(torch.tensor(0.3)))
    assert torch.allclose(calls[0]["aug_lam"], torch.full((3,), lam)) and not torch.equal(calls[0]["lowres"], lowres)
    with pytest.raises(ValueError, match=r"cond\['lowres'\] holds 2 items for 3 samples"):
        generate(stage.net, stage.config, stage.image_shape, 3, cond={"lowres": lowres[:2]})


def test_a_data_set_without_a_needed_condition_key_says_which(tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    from PIL import Image

    Image.new("L", (8, 8), 128).save(folder / "a.png")
    cfg = config(name="image-folder", options={"root": str(folder), "size": 8, "channels": 1}, conditions=["class"])
    with pytest.raises(ValueError, match="data.conditions asks for class, but data set 'image-folder' provides only"):
        Trainer(cfg, tmp_path / "run")
    with pytest.raises(ValueError, match="'lowres' exactly when data.lowres_factor is set"):
        config(conditions=["lowres"])


def test_old_recipes_with_data_conditional_still_load():
    cfg = RunConfig.from_dict({"data": {"name": "digits", "conditional": True}})
    assert cfg.data.conditions == ("class",)
    assert RunConfig.from_dict({"data": {"conditional": False}}).data.conditions == ()


@pytest.fixture(scope="module")
def cascade_runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cascade")
    runs = {
        "base": config(conditions=["class"], shrink=2),
        "sr": config(conditions=["class", "lowres"], lowres_factor=2),
        "sr-uncond": config(conditions=["lowres"], lowres_factor=2),
        "full": config(conditions=["class"]),
    }
    for name, cfg in runs.items():
        cfg.sample.lowres_aug = 0.2
        train(cfg, root / name)
    return {name: root / name for name in runs}


def test_cascade_samples_every_stage_and_the_cli_draws_its_grid(cascade_runs, tmp_path):
    cascade = Cascade.load([cascade_runs["base"], cascade_runs["sr"]])
    outs = cascade.sample(5, labels=torch.tensor([0, 1, 2, 3, 4]), steps=[2, 3])
    assert [tuple(o.shape) for o in outs] == [(5, 1, 4, 4), (5, 1, 8, 8)]
    assert all(bool(torch.isfinite(o).all()) for o in outs)
    again = cascade.sample(5, labels=torch.tensor([0, 1, 2, 3, 4]), steps=[2, 3])
    assert torch.equal(outs[-1], again[-1])  # seeded
    png = tmp_path / "c.png"
    argv = ["sample", str(cascade_runs["base"]), str(cascade_runs["sr"]), "--n", "4", "--steps", "2"]
    assert main([*argv, "--aug", "0.1", "--out", str(png)]) == 0 and png.is_file()


def test_thresholding_per_stage_bounds_the_prediction_of_x(cascade_runs):
    cascade = Cascade.load([cascade_runs["base"], cascade_runs["sr"]])
    for stage in cascade.stages:  # a loud network: predictions of x far outside [-1, 1]
        with torch.no_grad():
            stage.net.out.bias.fill_(3.0)
    opts = {"labels": torch.arange(5), "steps": 2}
    free = cascade.sample(5, threshold="none", **opts)
    assert all(float(o.abs().max()) > 1.5 for o in free)
    static, dynamic = cascade.sample(5, threshold="static", **opts), cascade.sample(5, threshold="dynamic", **opts)
    for o in (*static, *dynamic):
        assert float(o.abs().max()) <= 1.0 + 1e-5
    assert not torch.allclose(static[-1], dynamic[-1])
    mixed = cascade.sample(5, threshold=["static", "none"], **opts)
    assert torch.equal(mixed[0], static[0]) and float(mixed[1].abs().max()) > 1.5
    with pytest.raises(ValueError, match="threshold: 3 values for 2 stages"):
        cascade.sample(5, threshold=["none"] * 3, **opts)
    with pytest.raises(ValueError, match="threshold must be none, static or dynamic, got 'soft'"):
        cascade.sample(5, threshold="soft", **opts)


def test_each_stage_can_take_its_own_sampler(cascade_runs, tmp_path):
    cascade = Cascade.load([cascade_runs["base"], cascade_runs["sr"]])
    opts = {"labels": torch.arange(4), "steps": 3, "aug": 0.1}
    ddim, ddpm = cascade.sample(4, sampler="ddim", **opts), cascade.sample(4, sampler="ddpm", **opts)
    mixed = cascade.sample(4, sampler=["ddim", "ddpm"], **opts)
    assert torch.equal(mixed[0], ddim[0]) and not torch.equal(mixed[0], ddpm[0])
    # the super-resolution stage's input is the DDIM base output, its own draw ancestral: neither run's
    assert not torch.allclose(mixed[1], ddim[1]) and not torch.allclose(mixed[1], ddpm[1])
    with pytest.raises(ValueError, match="sampler: 3 values for 2 stages"):
        cascade.sample(4, sampler=["ddim"] * 3, **opts)
    png = tmp_path / "c.png"
    argv = ["sample", str(cascade_runs["base"]), str(cascade_runs["sr"]), "--n", "2", "--steps", "2"]
    assert main([*argv, "--sampler", "ddim", "ddpm", "--out", str(png)]) == 0 and png.is_file()


def test_the_dynamic_threshold_quantile_can_be_chosen_per_call(cascade_runs):
    stage = Cascade.load([cascade_runs["base"]]).stages[0]
    with torch.no_grad():
        stage.net.out.bias.fill_(3.0)  # predictions of x far outside [-1, 1]
    opts = {"labels": torch.arange(4), "steps": 2, "threshold": "dynamic"}
    default = stage.sample(4, **opts)
    assert torch.equal(stage.sample(4, threshold_quantile=0.995, **opts), default)  # the config's quantile
    assert not torch.allclose(stage.sample(4, threshold_quantile=0.5, **opts), default)
    with pytest.raises(ValueError, match=r"quantile must lie in \(0, 1\]"):
        stage.sample(4, threshold_quantile=1.5, **opts)


def test_a_cascade_that_does_not_chain_is_refused_naming_the_stages(cascade_runs, capsys):
    base, sr, full = cascade_runs["base"], cascade_runs["sr"], cascade_runs["full"]
    with pytest.raises(ValueError, match=r"cascade stage 1 \(.*sr.*\) is a super-resolution stage"):
        Cascade.load([sr, base])
    with pytest.raises(
        ValueError, match=r"cascade stage 2 \(.*\) after stage 1 \(.*full.*\): .*up-samples \[1, 4, 4\]"
    ):
        Cascade.load([full, sr])
    with pytest.raises(ValueError, match="takes no low-resolution input"):
        Cascade.load([base, full])
    uncond_base = cascade_runs["sr-uncond"]  # as a "base" it is refused for needing lowres
    with pytest.raises(ValueError, match="super-resolution stage"):
        Cascade.load([uncond_base])
    assert main(["sample", str(full), str(sr), "--n", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "stage 2" in err and "full" in err


def test_load_dispatches_on_the_method_in_the_checkpoint(cascade_runs, tmp_path):
    stage = difflab.load(cascade_runs["base"])
    assert isinstance(stage, LoadedStage) and stage.sample(2).shape == (2, 1, 4, 4)
    assert isinstance(difflab.load([cascade_runs["base"], cascade_runs["sr"]]), Cascade)
    ardm = difflab.load(ARTIFACTS / "ardm-fmnist-ft")
    assert type(ardm).__name__ == "ImageARDM" and ardm.step_losses
    voc = difflab.load(ARTIFACTS / "wavegrad-priorgrad")
    assert type(voc).__name__ == "Vocoder" and voc.config.prior == "priorgrad"
    import shutil

    foreign = tmp_path / "foreign"
    shutil.copytree(cascade_runs["base"] / "checkpoint", foreign)
    meta = json.loads((foreign / "format.json").read_text())
    (foreign / "format.json").write_text(json.dumps({**meta, "method": "teleport"}))
    with pytest.raises(ValueError, match="unknown method 'teleport'; this difflab knows diffusion, ardm, wavegrad"):
        difflab.load(foreign)
    (foreign / "format.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(CheckpointError, match="version 99 is newer than this difflab"):
        difflab.load(foreign)
    with pytest.raises(CheckpointError, match="a 'diffusion' checkpoint, not a 'ardm' one"):
        from difflab.methods.ardm.train import load_ardm

        load_ardm(cascade_runs["base"])


def test_a_time_limit_is_reported_as_what_it_is(tmp_path):
    result = train(config(), tmp_path / "t", time_limit=0.0)
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert (result.status, result.step, result.exit_code, result.signal) == ("time-limit", 1, 0, None)
    assert summary["status"] == "time-limit" and summary["signal"] is None
