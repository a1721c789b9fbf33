"""The pretrained models shipped with difflab: loadable by name everywhere, checked, within budget."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import difflab
from difflab import cli
from difflab.pretrained import PretrainedError, get, list_models, output_home, verify_folder

SHIPPED = {
    "digits", "fashion-mnist-cfg", "fashion-mnist-4step", "ardm-fashion-mnist", "wavegrad", "clip-scenes",
    "text-to-image", "unclip",
}  # fmt: skip
BUDGET_BYTES = 80 * 2**20
needs = pytest.mark.skipif


def _have(name: str) -> bool:
    return any(m.name == name for m in list_models())


def _ship(name: str):
    """Skip a model not exported yet, except in CI, where every shipped model must be there."""
    import os

    if os.environ.get("CI") == "true" or _have(name):
        return get(name)
    pytest.skip(f"pretrained:{name} not exported on this machine")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_every_model_has_a_card_checksums_and_the_set_fits_the_budget():
    import os

    models = {m.name: m for m in list_models()}
    if os.environ.get("CI") == "true":
        assert SHIPPED <= set(models), f"missing: {sorted(SHIPPED - set(models))}"
    assert sum(m.bytes for m in models.values()) <= BUDGET_BYTES
    for m in models.values():
        verify_folder(m.path)
        readme = (m.path / "README.md").read_text()
        assert m.card["train_command"] in readme and m.card["metric"]["command"] in readme
        assert isinstance(m.card["metric"]["value"], float) and m.params > 0
        assert m.method in difflab.pretrained.METHODS
        for part in m.parts:
            assert (part / "format.json").is_file() and (part / "model.safetensors").is_file()


def _image_stats(x: torch.Tensor) -> tuple[float, float]:
    return float(x.mean()), float(x.std())


def _data_stats(dataset: str) -> tuple[float, float]:
    """Pixel mean and standard deviation of the training images, in [-1, 1]."""
    from difflab.data import get_dataset

    data = get_dataset(dataset, split="train")
    x = torch.stack([data[i][0] for i in range(0, len(data), max(1, len(data) // 1000))])
    return _image_stats(x)


@pytest.mark.parametrize(
    ("name", "dataset", "kwargs"),
    [
        ("digits", "digits", {"steps": 20}),
        ("fashion-mnist-cfg", "fashion-mnist", {"steps": 20, "labels": torch.arange(16) % 10}),
        ("fashion-mnist-4step", "fashion-mnist", {"labels": torch.arange(16) % 10}),
    ],
)
def test_image_models_sample_like_their_data(name, dataset, kwargs):
    _ship(name)
    stage = difflab.load(f"pretrained:{name}")
    x = stage.sample(16, seed=0, **kwargs)
    assert torch.isfinite(x).all() and x.abs().max() < 1.5  # not clipped: a little past [-1, 1] is normal
    (mean, std), (data_mean, data_std) = _image_stats(x), _data_stats(dataset)
    assert abs(mean - data_mean) < 0.12 and abs(std - data_std) < 0.12, (mean, std, data_mean, data_std)
    noise = torch.randn_like(x).clamp(-1, 1)
    assert abs(_image_stats(noise)[0] - data_mean) > 0.2  # what the check tells apart from no model at all


def test_the_distilled_student_samples_in_four_steps_of_its_teacher_family():
    info = _ship("fashion-mnist-4step")
    assert info.card["teacher"] == "fashion-mnist-cfg"
    stage = difflab.load("pretrained:fashion-mnist-4step")
    assert stage.config.sample.steps == 4


def test_the_ardm_codec_round_trips_test_images_below_8_bits():
    from difflab.data import load_fashion_mnist
    from difflab.methods.ardm.codec import compress, decompress

    _ship("ardm-fashion-mnist")
    model = difflab.load("pretrained:ardm-fashion-mnist")
    images = torch.from_numpy(load_fashion_mnist("test")[0][:2].astype(np.int64))
    data = compress(model, images, plan="dp", budget=8)  # 8 network calls per image
    assert torch.equal(decompress(model, data).long(), images)
    assert len(data) * 8 / images.numel() < 4.0  # 8 bits raw, JPEG-XL about 4.3; the card's 98 calls: about 2.75


def test_the_vocoder_resynthesises_held_out_speech():
    from pystoi import stoi

    from difflab.methods.wavegrad.data import load_asterisk

    _ship("wavegrad")
    voc = difflab.load("pretrained:wavegrad")
    ref = np.asarray(load_asterisk().split("test")[0][:16000], dtype=np.float32)
    gen = voc(voc.mel(torch.from_numpy(ref))[0], steps=6, seed=0).numpy()
    assert np.isfinite(gen).all() and abs(len(gen) - len(ref)) < 256
    n = min(len(gen), len(ref))
    assert stoi(ref[:n].astype(np.float64), gen[:n].astype(np.float64), 16000) > 0.75


def test_clip_matches_scenes_to_their_captions():
    from difflab.methods.clip import zero_shot_accuracy

    _ship("clip-scenes")
    acc = zero_shot_accuracy(difflab.load("pretrained:clip-scenes"), "test", 60)
    assert acc["item"] > 0.4  # chance 1/20; the card's 0.76 is over the whole split


def test_text_to_image_is_a_cascade_to_64_pixels_on_the_shipped_clip():
    _ship("text-to-image")
    cascade = difflab.load("pretrained:text-to-image")
    assert len(cascade.stages) == 2
    assert cascade.stages[0].config.text.path == "pretrained:clip-scenes"
    prompts = ["a red bag at the top left", "a blue shoe at the bottom right", "a green shirt in the middle"]
    low, x = cascade.sample(3, prompts=prompts, steps=[12, 6], seed=0)
    assert low.shape == (3, 3, 16, 16) and x.shape == (3, 3, 64, 64)
    assert torch.isfinite(x).all() and x.abs().max() < 2.5
    pooled = torch.nn.functional.avg_pool2d(x, 4)
    own, other = (pooled - low).abs().mean(), (pooled - low.roll(1, 0)).abs().mean()
    assert own < other, (own, other)  # each 64x64 image follows its own 16x16 input


def test_unclip_prior_maps_captions_near_their_images():
    from difflab.methods.unclip.prior import prior_cosine

    _ship("unclip")
    pipe = difflab.load("pretrained:unclip")
    assert prior_cosine(pipe.prior, "test", 8) > 0.8  # the card: 0.96 on 256 test captions


def test_sample_by_name_writes_outside_the_installation(tmp_path, monkeypatch):
    info = _ship("digits")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["sample", "pretrained:digits", "--n", "4", "--steps", "2"]) == 0
    written = list((tmp_path / "outputs" / "digits" / "samples").glob("*.png"))
    assert len(written) == 1
    assert output_home(str(info.path)) == output_home("pretrained:digits") == Path("outputs/digits")
    verify_folder(info.path)  # nothing was written into the model folder


def test_an_unknown_name_lists_the_known_ones(capsys):
    _ship("digits")
    assert cli.main(["sample", "pretrained:digitz"]) == 2
    err = capsys.readouterr().err
    assert "unknown pretrained model 'digitz'" in err and "digits" in err and "Traceback" not in err
    with pytest.raises(PretrainedError, match="available: .*digits"):
        difflab.load("pretrained:nope")


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_corrupt_model_file_is_refused_naming_the_file(tmp_path, monkeypatch, capsys, damage):
    info = _ship("digits")
    copy = tmp_path / "models" / "digits"
    shutil.copytree(info.path, copy)
    monkeypatch.setenv("DIFFLAB_PRETRAINED", str(tmp_path / "models"))  # searched before the shipped ones
    target = copy / "model.safetensors"
    raw = bytearray(target.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0x55
        target.write_bytes(bytes(raw))
    elif damage == "truncate":
        target.write_bytes(bytes(raw[: len(raw) // 3]))
    else:
        target.unlink()
    why = {"flip": "checksum mismatch", "truncate": "bytes, expected", "delete": "missing"}[damage]
    with pytest.raises(PretrainedError, match=why) as e:
        difflab.load("pretrained:digits")
    assert str(target) in str(e.value)
    assert cli.main(["sample", "pretrained:digits", "--n", "1"]) == 2
    assert str(target) in capsys.readouterr().err


def test_models_lists_every_model_with_size_and_metric(capsys):
    assert cli.main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == {m.name for m in list_models()}
    for r in rows:
        assert r["bytes"] > 0 and r["metric"] and r["value"] is not None
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert all(r["name"] in out for r in rows) and "MB" in out


def test_generate_takes_only_pipelines_by_name(capsys):
    _ship("digits")
    assert cli.main(["generate", "a red bag", "--pretrained", "digits"]) == 2
    assert "generate draws with text-to-image or unclip" in capsys.readouterr().err


def test_export_writes_a_checked_fp16_folder_that_samples_like_its_run(tmp_path, monkeypatch):
    from difflab.config import dump_yaml
    from difflab.pretrained.export import export_checkpoint, write_card

    config = {
        "name": "tiny",
        "model": {"channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "heads": 2, "norm_groups": 4},
        "data": {"name": "digits", "batch_size": 8},
        "train": {"steps": 3, "log_every": 1, "sample_every": 0, "ckpt_every": 0, "progress": False, "threads": 1},
        "sample": {"steps": 2, "n": 4},
    }
    (tmp_path / "tiny.yaml").write_text(dump_yaml(config))
    assert cli.main(["train", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "run")]) == 0
    root = tmp_path / "models"
    info = export_checkpoint(tmp_path / "run", root / "tiny", rename={"digits": "renamed"})
    assert info["weights_dtype"] == "float16" and 0 < info["max_rel_weight_error"] < 1e-3
    meta = json.loads((root / "tiny" / "format.json").read_text())
    assert "write_id" not in meta and meta["dataset"] == "renamed" and meta["exported_from"]["weights"] == "ema"
    card = {"name": "tiny", "method": "image", "params": info["params"], "train_command": "t", "metric": {}}
    write_card(root / "tiny", card, "# tiny")
    monkeypatch.setenv("DIFFLAB_PRETRAINED", str(root))
    shipped = difflab.load("pretrained:tiny", device="cpu")
    run = difflab.load(tmp_path / "run")
    a, b = shipped.sample(4, steps=2, seed=3), run.sample(4, steps=2, seed=3)
    assert (a - b).abs().max() < 1e-2  # fp16 weights: the same samples up to rounding
    with pytest.raises(ValueError, match="fp16 range"):
        from difflab.pretrained.export import convert

        convert({"w": torch.tensor([1e6])}, "fp16")
