"""Registry, digits, integer levels, loaders and grids of difflab.data."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import difflab.data as dd


def test_import_is_cheap() -> None:
    code = "import sys, difflab.data; print(any(m.split('.')[0] in ('sklearn', 'skimage', 'PIL') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_registry_names_and_errors() -> None:
    names = [
        "caption-folder",
        "digits",
        "fashion-mnist",
        "image-folder",
        "moving-items",
        "photo-crops",
        "scenes",
        "video-folder",
    ]
    assert dd.list_datasets() == names
    with pytest.raises(ValueError, match="valid datasets: " + ", ".join(names)):
        dd.get_dataset("mnist")
    with pytest.raises(ValueError, match="valid splits: train, test"):
        dd.get_dataset("digits", split="val")
    with pytest.raises(ValueError, match="unknown option.*bogus.*valid options: discrete"):
        dd.get_dataset("digits", bogus=1)
    with pytest.raises(ValueError, match="needs root="):
        dd.get_dataset("image-folder")
    assert isinstance(dd.get_dataset("DIGITS", "test"), dd.Digits)  # case and _ / - insensitive


def test_describe() -> None:
    info = dd.describe("fashion_mnist")
    assert (info.channels, info.size, info.levels, info.num_classes) == (1, 28, 256, 10)
    assert info.num_items == {"train": 60000, "test": 10000}
    assert info.class_names is not None and info.class_names[9] == "Ankle boot"
    digits = dd.describe("digits")
    assert (digits.channels, digits.size, digits.levels, digits.num_items) == (1, 8, 17, {"train": 1497, "test": 300})
    assert "1x8x8" in str(digits) and "1,497" in str(digits)


def test_digits_shapes_ranges_and_split() -> None:
    train, test = dd.get_dataset("digits"), dd.get_dataset("digits", "test")
    assert (len(train), len(test)) == (1497, 300)
    x, cond = train[0]
    assert x.dtype == torch.float32 and x.shape == (1, 8, 8) and cond == {"class": int(train.labels[0])}
    assert isinstance(cond["class"], int) and train.cond_keys == ("class",)
    xs, conds = train.tensors()
    ys = conds["class"]
    assert xs.shape == (1497, 1, 8, 8) and ys.dtype == torch.int64 and list(conds) == ["class"]
    assert xs.min() == -1.0 and xs.max() == 1.0
    assert set(ys.tolist()) == set(range(10))
    assert np.bincount(test.labels).tolist() == [30] * 10  # stratified: 30 per class
    itrain, itest = dd.digits_split_indices("train"), dd.digits_split_indices("test")
    assert len(np.intersect1d(itrain, itest)) == 0 and len(np.union1d(itrain, itest)) == 1797
    # The documented split (RandomState(0) per class) is pinned: a change here breaks reproducibility.
    assert itest[:5].tolist() == [3, 7, 13, 19, 36] and int(itest.sum()) == 259751
    again = dd.Digits("test")
    assert np.array_equal(again.images, test.images) and np.array_equal(again.labels, test.labels)
    assert not np.array_equal(dd.digits_split_indices("test", split_seed=1), itest)


def test_digits_discrete_view() -> None:
    ds = dd.get_dataset("digits", discrete=True)
    k, _ = ds[5]
    assert k.dtype == torch.uint8 and k.shape == (1, 8, 8) and int(k.max()) <= 16
    assert ds.levels == 17 and int(torch.from_numpy(ds.images).max()) == 16
    assert torch.equal(dd.from_levels(k, 17), dd.get_dataset("digits")[5][0])
    assert dd.get_dataset("digits", pad=4)[0][0].shape == (1, 16, 16)
    with pytest.raises(IndexError):
        ds[len(ds)]


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_levels_round_trip(levels: int) -> None:
    k = torch.arange(levels, dtype=torch.uint8)
    x = dd.from_levels(k, levels)
    assert x[0] == -1.0 and x[-1] == 1.0
    assert torch.equal(dd.to_levels(x, levels), k)
    assert torch.equal(
        dd.to_levels(torch.tensor([-3.0, 3.0]), levels), torch.tensor([0, levels - 1], dtype=torch.uint8)
    )
    with pytest.raises(ValueError, match="levels"):
        dd.from_levels(k, 1)


def _batches(loader: torch.utils.data.DataLoader, n: int = 3) -> list[torch.Tensor]:
    return [cond["class"] for _, (_, cond) in zip(range(n), loader, strict=False)]


def test_make_loader_is_seeded() -> None:
    ds = dd.get_dataset("digits", "test")
    a = _batches(dd.make_loader(ds, 16, seed=1))
    b = _batches(dd.make_loader(ds, 16, seed=1))
    c = _batches(dd.make_loader(ds, 16, seed=2))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not all(torch.equal(u, v) for u, v in zip(a, c, strict=True))
    ordered = _batches(dd.make_loader(ds, 16, shuffle=False), 1)[0]
    assert torch.equal(ordered, torch.from_numpy(ds.labels[:16])) and ordered.dtype == torch.int64
    x, cond = next(iter(dd.make_loader(ds, 4, shuffle=False)))
    assert x.shape == (4, 1, 8, 8) and x.dtype == torch.float32 and list(cond) == ["class"]
    # Two epochs of the same loader differ; forever() keeps going past the end of an epoch.
    loader = dd.make_loader(ds, 100, seed=1, drop_last=True)
    stream = dd.forever(loader)
    first = [next(stream)[1]["class"] for _ in range(6)]
    assert len(first) == 6 and not torch.equal(first[0], first[3])


def test_make_grid_layout() -> None:
    images = torch.linspace(-1, 1, 10).view(10, 1, 1, 1).expand(10, 3, 4, 5)
    grid = dd.make_grid(images, nrow=4, padding=1, pad_value=1.0)
    assert grid.shape == (3 * 5 + 1, 4 * 6 + 1, 3) and grid.dtype == np.uint8
    assert grid[0, 0, 0] == 255  # padding is white
    assert grid[1, 1, 0] == 0  # first image is -1 -> black
    assert grid[1 + 2 * 5, 1 + 1 * 6, 0] == 255  # image 9 (row 2, col 1) is +1 -> white
    assert grid[1 + 2 * 5, 1 + 2 * 6, 0] == 255  # empty slot keeps the padding value
    with pytest.raises(ValueError, match="C in"):
        dd.make_grid(torch.zeros(2, 2, 4, 4))


def test_save_grid_writes_png(tmp_path) -> None:
    from PIL import Image

    x = torch.rand(10, 3, 8, 8) * 2 - 1
    path = dd.save_grid(x, tmp_path / "sub" / "grid.png", nrow=4)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (4 * 10 + 2, 3 * 10 + 2)
        arr = np.asarray(im)
    expected = ((x[5].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(arr[12:20, 12:20], expected)  # image 5 = row 1, col 1
    gray = dd.save_grid(torch.zeros(3, 1, 8, 8), tmp_path / "g.png", nrow=8)
    with Image.open(gray) as im:
        assert im.mode == "L" and im.size == (3 * 10 + 2, 12)
    assert not list(tmp_path.glob("**/.*.tmp"))


def test_digits_from_a_copy_for_machines_without_scikit_learn(tmp_path, monkeypatch) -> None:
    from difflab.data import digits

    expected = digits._load_digits()
    digits.save_digits_copy(tmp_path / "digits.npz")
    digits._load_digits.cache_clear()
    monkeypatch.setenv("DIFFLAB_DIGITS", str(tmp_path / "digits.npz"))
    monkeypatch.setitem(sys.modules, "sklearn", None)  # scikit-learn cannot be imported
    try:
        images, labels = digits._load_digits()
        assert np.array_equal(images, expected[0]) and np.array_equal(labels, expected[1])
        np.savez(tmp_path / "bad.npz", images=images[:5], labels=labels[:5])
        digits._load_digits.cache_clear()
        monkeypatch.setenv("DIFFLAB_DIGITS", str(tmp_path / "bad.npz"))
        with pytest.raises(ValueError, match="expected images"):
            digits._load_digits()
    finally:
        digits._load_digits.cache_clear()
