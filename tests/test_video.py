"""Video stages: sampling with known frames, extension, interpolation (difflab.methods.video)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from difflab.methods.video import extend, extension_lengths, interpolate, linear_interpolate
from difflab.nets import UNet
from difflab.train.config import RunConfig
from difflab.train.stage import LoadedStage, resolve_model_config

CLIP = (1, 8, 8, 8)  # (C, F, H, W)


def _stage(num_classes: int = 0, **sample) -> LoadedStage:
    """An untrained tiny 3-D U-Net as a loaded stage (what difflab.load returns for a video run)."""
    torch.manual_seed(0)
    conditions = ["class"] if num_classes else []
    cfg = RunConfig.from_dict({
        "model": {"dims": 3, "channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_levels": [1],
                  "heads": 2, "norm_groups": 4},
        "data": {"conditions": conditions},
        "diffusion": {"parameterization": "v"},
        "train": {"cond_drop": 0.1},
        "sample": {"sampler": "ddim", "steps": 4, **sample},
    })  # fmt: skip
    net = UNet(resolve_model_config(cfg, 1, num_classes or None))
    # a net that predicts something: scale the output layer up so guidance has an effect
    with torch.no_grad():
        net.out.weight.normal_(0, 0.5)
    meta = {"image_shape": list(CLIP), "num_classes": num_classes, "conditions": conditions}
    return LoadedStage(cfg, net.eval(), meta, Path("."))


def _mask(frames: int, known: list[int]) -> torch.Tensor:
    m = torch.zeros(1, 1, CLIP[1], 1, 1, dtype=torch.bool)
    m[:, :, known] = True
    return m


@pytest.mark.parametrize("method", ["reconstruction", "replacement"])
@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpmpp_2m"])
def test_known_frames_are_kept_exactly(method: str, sampler: str) -> None:
    stage = _stage()
    known = torch.rand(2, *CLIP) * 2 - 1
    mask = _mask(CLIP[1], [0, 1, 2])
    x = stage.sample(2, known=known, known_mask=mask, known_method=method, sampler=sampler, seed=1)
    assert x.shape == (2, *CLIP)
    assert torch.equal(x[:, :, :3], known[:, :, :3])
    assert not torch.equal(x[:, :, 3:], known[:, :, 3:])


def test_reconstruction_guidance_weight_zero_is_replacement() -> None:
    stage = _stage()
    known = torch.rand(2, *CLIP) * 2 - 1
    mask = _mask(CLIP[1], [0, 1])
    common = dict(known=known, known_mask=mask, seed=3, sampler="ddpm")
    rep = stage.sample(2, known_method="replacement", **common)
    zero = stage.sample(2, known_method="reconstruction", known_weight=0.0, **common)
    guided = stage.sample(2, known_method="reconstruction", known_weight=5.0, **common)
    torch.testing.assert_close(zero, rep)
    assert (guided[:, :, 2:] - rep[:, :, 2:]).abs().max() > 1e-3  # the gradient term changes the new frames


def test_known_arguments_are_checked() -> None:
    stage = _stage()
    known = torch.zeros(2, *CLIP)
    with pytest.raises(ValueError, match="give both or neither"):
        stage.sample(2, known=known)
    with pytest.raises(ValueError, match="reconstruction or replacement"):
        stage.sample(2, known=known, known_mask=_mask(8, [0]), known_method="inpaint")
    with pytest.raises(ValueError, match=r"known must be \(n, \*image_shape\)"):
        stage.sample(3, known=known, known_mask=_mask(8, [0]))


def test_extend_keeps_the_video_and_reaches_the_length() -> None:
    stage = _stage(num_classes=3, guidance=2.0)
    video = torch.rand(2, 1, 8, 8, 8) * 2 - 1
    long = extend(stage, video, 20, context=4, labels=torch.tensor([0, 2]), seed=5)
    assert long.shape == (2, 1, 20, 8, 8)
    assert torch.equal(long[:, :, :8], video)
    assert long[:, :, 8:].abs().max() > 0
    assert extension_lengths(8, 8, 4, upto=3) == [12, 16, 20]
    with pytest.raises(ValueError, match="possible lengths are 12, 16, 20"):
        extend(stage, video, 18, context=4)
    with pytest.raises(ValueError, match="context must be in 1..7"):
        extend(stage, video, 16, context=8)
    with pytest.raises(ValueError, match=r"video must be \(B, 1, frames, 8, 8\)"):
        extend(stage, torch.zeros(1, 3, 8, 8, 8), 12)


def test_extend_with_replacement_uses_the_last_frames_as_context() -> None:
    """Each new clip's known frames are the last ``context`` frames so far: the first extension clip
    equals a clip sampled with the same seed and those frames given as known."""
    stage = _stage()
    video = torch.rand(1, 1, 8, 8, 8) * 2 - 1
    long = extend(stage, video, 12, context=4, method="replacement", seed=0)
    known = torch.zeros(1, *CLIP)
    known[:, :, :4] = video[:, :, 4:]
    clip = stage.sample(1, known=known, known_mask=_mask(8, [0, 1, 2, 3]), known_method="replacement", seed=0)
    torch.testing.assert_close(long[:, :, 8:], clip[:, :, 4:])


def test_interpolate_keeps_the_given_frames() -> None:
    stage = _stage()
    low = torch.rand(1, 1, 5, 8, 8) * 2 - 1  # 5 frames at a quarter of the rate -> 17 frames
    for method in ("reconstruction", "replacement"):
        x = interpolate(stage, low, 4, method=method, seed=2)
        assert x.shape == (1, 1, 17, 8, 8)
        assert torch.equal(x[:, :, ::4], low)
        assert x[:, :, 1:4].abs().max() > 0
    with pytest.raises(ValueError, match=r"factor must be an integer in 2..7"):
        interpolate(stage, low, 8)
    with pytest.raises(ValueError, match="at least 2 frames"):
        interpolate(stage, low[:, :, :1], 4)


def test_linear_interpolate_blends_neighbours() -> None:
    v = torch.tensor([0.0, 4.0, 8.0]).view(1, 1, 3, 1, 1)
    out = linear_interpolate(v, 4)
    assert out.flatten().tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert linear_interpolate(v[0], 2).shape == (1, 5, 1, 1)


def test_an_image_stage_is_not_a_video_stage() -> None:
    stage = _stage()
    stage.meta["image_shape"] = [1, 8, 8]
    with pytest.raises(ValueError, match="not video clips"):
        extend(stage, torch.zeros(1, 1, 8, 8), 12)


@pytest.fixture(scope="module")
def video_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two updates of a tiny class-conditional video stage on moving items, with 2 image frames per clip."""
    from difflab.train import train

    run = tmp_path_factory.mktemp("video") / "run"
    cfg = RunConfig.from_dict({
        "model": {"dims": 3, "channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_levels": [1],
                  "temporal_levels": [0, 1], "heads": 2, "norm_groups": 4},
        "data": {"name": "moving-items", "options": {"n": 16, "frames": 4, "size": 32}, "batch_size": 2,
                 "conditions": ["class"], "image_frames": 2},
        "train": {"steps": 2, "cond_drop": 0.1, "log_every": 1, "sample_every": 2, "ckpt_every": 2},
        "sample": {"sampler": "ddim", "steps": 2, "n": 2},
    })  # fmt: skip
    train(cfg, run)
    return run


def test_joint_image_video_training_samples_clips_without_the_images(video_run: Path) -> None:
    import difflab

    stage = difflab.load(video_run)
    assert stage.meta["image_shape"] == [1, 6, 32, 32]  # 4 video frames + 2 images in training
    assert stage.image_shape == (1, 4, 32, 32)  # samples are clips
    x = stage.sample(2, labels=torch.tensor([3, 7]), steps=2)
    assert x.shape == (2, 1, 4, 32, 32)
    assert sorted(p.name for p in (video_run / "samples").glob("*.png"))  # a filmstrip grid was written


def test_image_frames_need_video_data(tmp_path: Path) -> None:
    from difflab.train import train

    cfg = RunConfig.from_dict({"data": {"name": "digits", "image_frames": 2}, "train": {"steps": 1}})
    with pytest.raises(ValueError, match="image_frames needs video data"):
        train(cfg, tmp_path / "run")


def test_video_cli_sample_extend_interpolate(video_run: Path, tmp_path: Path) -> None:
    from difflab.cli import main
    from difflab.data import read_video, save_video

    out = tmp_path / "clips.gif"
    common = ["--steps", "2", "--sampler", "ddim"]
    assert main(["video", "sample", str(video_run), "--n", "2", "--out", str(out), "--filmstrip",
                 str(tmp_path / "s.png"), *common]) == 0  # fmt: skip
    assert read_video(out).shape[0] == 4 and (tmp_path / "s.png").is_file()
    long = tmp_path / "long.gif"
    assert main(["video", "extend", str(video_run), "--frames", "8", "--out", str(long), *common]) == 0
    assert read_video(long).shape[0] == 8
    given = tmp_path / "given.gif"
    save_video(torch.rand(1, 3, 16, 16) * 2 - 1, given)  # 3 frames of 16x16: resized to the model's 32x32
    smooth = tmp_path / "smooth.mp4"
    argv = ["video", "interpolate", str(video_run), str(given), "--factor", "3", "--method", "replacement"]
    assert main([*argv, "--out", str(smooth), *common]) == 0
    assert read_video(smooth).shape[0] == 7
    # what the model cannot serve is a one-line error (exit 2)
    assert main(["video", "extend", str(video_run), "--frames", "7", "--out", str(long), *common]) == 2
    assert main([*argv[:-4], "--factor", "4", "--out", str(smooth), *common]) == 2
    assert main(["video", "sample", str(video_run), "--out", str(tmp_path / "x.avi")]) == 2
