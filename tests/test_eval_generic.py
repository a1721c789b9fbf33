"""The generic feature net: trained on any image data set, cached by content, FD / floor / precision / recall."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from difflab.data import DataWarning, get_dataset
from difflab.eval import evaluate, generic, prepare_evaluation

UPDATES = 12  # tiny training: these tests check the plumbing, not the quality of the features


def faces(root, n=32, size=16, seed=0, classes=None):
    """``n`` PNGs of a cartoon face (eyes above a mouth: an orientation to learn) on random backgrounds;
    with ``classes``, sub-folders whose faces differ in colour."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / classes[i % len(classes)] if classes else root
        folder.mkdir(parents=True, exist_ok=True)
        im = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 90, 3)))
        d = ImageDraw.Draw(im)
        s, cx, cy = size / 16, size / 2 + rng.integers(-1, 2), size / 2 + rng.integers(-1, 2)
        skin = (230, 190, 150) if not classes or i % len(classes) == 0 else (120, 160, 240)
        d.ellipse([cx - 6 * s, cy - 7 * s, cx + 6 * s, cy + 7 * s], fill=skin)
        for ex in (-3 * s, 3 * s):
            d.rectangle([cx + ex - s, cy - 3 * s, cx + ex + s, cy - s], fill=(10, 10, 10))
        d.rectangle([cx - 3 * s, cy + 3 * s, cx + 3 * s, cy + 4 * s], fill=(160, 20, 20))
        im.save(folder / f"{i:03d}.png")
    return root


@pytest.fixture()
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path / "cache"))
    generic.clear_generic_cache()
    yield faces(tmp_path / "faces")
    generic.clear_generic_cache()


def opts(root) -> dict:
    return {"root": str(root), "size": 16, "channels": 3}


def real_images(root) -> torch.Tensor:
    data = get_dataset("image-folder", root=root, size=16, channels=3)
    return torch.stack([data[i][0] for i in range(len(data))])


def test_the_net_is_trained_once_and_found_again_by_the_content_of_the_data(folder, tmp_path, monkeypatch) -> None:
    ref = generic.generic_reference("image-folder", opts(folder), updates=UPDATES, progress=False)
    assert ref.trained_now and ref.folder.parent == tmp_path / "cache" / "features"
    assert (ref.folder / "generic.safetensors").is_file() and ref.meta["updates"] == UPDATES
    assert ref.meta["images"] == 32 and ref.meta["classes"] == 1 and ref.net.config.num_classes == 4
    assert ref.meta["content_sha256"] == ref.images.key
    assert ref.folder.name == generic.cache_key(ref.images, UPDATES)[:24]
    assert ref.ref.shape == (16, 128) and ref.held_out.shape == (16, 128)  # two disjoint halves of 32 images
    assert generic.generic_reference("image-folder", opts(folder), updates=UPDATES) is ref  # held per process

    def no_training(*args, **kwargs):
        raise AssertionError("the cached net should have been used")

    monkeypatch.setattr(generic, "train_generic", no_training)
    moved = shutil.copytree(folder, tmp_path / "elsewhere" / "renamed")  # same images, other path
    again = generic.generic_reference("image-folder", opts(moved), updates=UPDATES)
    assert not again.trained_now and again.folder == ref.folder and again.meta["sha256"] == ref.meta["sha256"]
    assert torch.allclose(again.ref, ref.ref)
    a = np.array(Image.open(moved / "000.png"))
    a[0, 0, 0] ^= 1  # one pixel changed: other data, another net
    Image.fromarray(a).save(moved / "000.png")
    generic.clear_generic_cache()
    with pytest.raises(AssertionError, match="cached net"):
        generic.generic_reference("image-folder", opts(moved), updates=UPDATES)


def test_real_images_score_near_the_floor_and_noise_far_above_it(folder, monkeypatch) -> None:
    monkeypatch.setattr(generic, "UPDATES_MIN", UPDATES)  # what evaluate() and the CLI train
    info = prepare_evaluation("image-folder", opts(folder), n_samples=16, sample_shape=(3, 16, 16), progress=False)
    assert info["feature_net"] == "generic" and info["trained_now"] and info["train_seconds"] is not None
    real = evaluate(real_images(folder)[:16], "image-folder", options=opts(folder))
    noise = evaluate(torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1, "image-folder",
                     options=opts(folder))  # fmt: skip
    for key in ("fd", "fd_floor", "precision", "recall", "n_floor", "feature_net_path", "feature_task_accuracy"):
        assert key in real, key
    assert real["feature_net"] == "generic" and real["dataset"] == "image-folder" and real["n_floor"] == 16
    assert real["fd_floor"] == noise["fd_floor"] > 0
    assert noise["fd"] > 10 * real["fd"] and noise["fd"] > 10 * noise["fd_floor"]
    assert real["precision"] > noise["precision"] and real["recall"] > noise["recall"]
    assert "class_accuracy" not in real  # unlabelled folder
    with pytest.raises(ValueError, match=r"makes images of shape \(1, 16, 16\), but 'image-folder' holds \(3, 16"):
        prepare_evaluation("image-folder", opts(folder), sample_shape=(1, 16, 16))


def test_class_folders_train_class_times_rotation(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path / "cache"))
    root = faces(tmp_path / "two", n=24, classes=["a", "b"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 12 updates may not learn the rotations: not checked here
        ref = generic.generic_reference("image-folder", opts(root), updates=UPDATES, progress=False)
    assert ref.images.num_classes == 2 and ref.net.config.num_classes == 8 and ref.meta["chance_accuracy"] == 0.125
    x = real_images(root)
    labels = torch.tensor(get_dataset("image-folder", root=root, size=16, channels=3).targets)
    scores = generic.evaluate_generic(x, ref, labels=labels)
    assert 0.0 <= scores["class_accuracy"] <= 1.0
    generic.clear_generic_cache()


def test_a_corrupt_cache_entry_is_trained_again(folder) -> None:
    ref = generic.generic_reference("image-folder", opts(folder), updates=UPDATES, progress=False)
    (ref.folder / "generic.safetensors").write_bytes(b"not weights")
    generic.clear_generic_cache()
    with pytest.warns(UserWarning, match="ignoring the cached feature net .*sha256"):
        again = generic.generic_reference("image-folder", opts(folder), updates=UPDATES, progress=False)
    assert again.trained_now and (again.folder / "generic.safetensors").read_bytes() != b"not weights"


def test_images_without_an_orientation_get_a_warning(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    (tmp_path / "noise").mkdir()
    for i in range(16):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp_path / "noise" / f"{i}.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.warns(UserWarning, match=r"tells the rotation of only \d+% of the images \(chance 25%\)"):
            generic.generic_reference("image-folder", {"root": str(tmp_path / "noise")}, updates=UPDATES)
    generic.clear_generic_cache()


def test_feature_resolution_and_quantization() -> None:
    assert [generic.feature_resolution(s) for s in (8, 25, 64, 65, 128, 200, 256)] == [8, 25, 64, 32, 64, 50, 64]
    x = torch.linspace(-1, 1, 2 * 3 * 128 * 128).reshape(2, 3, 128, 128)
    k = generic.to_feature_levels(x, 64)
    assert k.shape == (2, 3, 64, 64) and k.dtype == torch.uint8
    levels = ((x + 1) * 127.5).round().to(torch.uint8)
    assert torch.equal(generic.to_feature_levels(levels, 64), k)  # samples and real images: the same steps
    assert generic.default_updates(32) == generic.UPDATES_MIN and generic.default_updates(10**6) == generic.UPDATES_MAX


def test_the_agreement_benchmark_adds_a_data_set_to_the_results_it_keeps(tmp_path) -> None:
    """``benchmarks/eval_generic.py --datasets fashion-mnist`` must keep the digits rows already in the
    result file (each with the command that measured it) instead of replacing them."""
    import importlib.util
    import json
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        spec = importlib.util.spec_from_file_location("eval_generic_bench", bench / "eval_generic.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(bench))
    old = {
        "command": "bench --datasets digits",
        "agreement": [
            {"dataset": "digits", "labels": False, "spearman": 0.9, "points": 10},
            {"dataset": "fmnist", "labels": False, "spearman": 0.1, "points": 10},
        ],
        "points": [{"dataset": "digits", "step": 1}, {"dataset": "fmnist", "step": 1}],
    }
    path = tmp_path / "eval_generic.json"
    path.write_text(json.dumps(old))
    row = {"dataset": "fmnist", "labels": False, "spearman": 0.99, "points": 12, "command": "bench --datasets fmnist"}
    new = {"command": "bench --datasets fmnist", "agreement": [row], "points": [{"dataset": "fmnist", "step": 2}]}
    merged = mod.keep_other_datasets(new, path, {"fmnist"})
    assert [(a["dataset"], a["spearman"], a["command"]) for a in merged["agreement"]] == [
        ("digits", 0.9, "bench --datasets digits"),
        ("fmnist", 0.99, "bench --datasets fmnist"),
    ]
    assert merged["points"] == [{"dataset": "digits", "step": 1}, {"dataset": "fmnist", "step": 2}]
    assert mod.keep_other_datasets(new, tmp_path / "none.json", {"fmnist"}) == new  # no file yet
    text = mod.render({**merged, "points": [], "feature": "f"})
    assert "bench --datasets digits" in text and "bench --datasets fmnist" in text
