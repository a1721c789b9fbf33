"""Image folders: labels from class folders, transforms, corrupt and non-image files skipped and counted."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import difflab.data as dd

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _save(path, color, size=(24, 16), fmt=None, mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, format=fmt)


@pytest.fixture()
def tree(tmp_path):
    root = tmp_path / "imgs"
    _save(root / "cat" / "a.png", RED)
    _save(root / "cat" / "nested" / "b.jpg", RED, size=(40, 20))
    _save(root / "cat" / "c.png", (255, 0, 0, 0), mode="RGBA")  # fully transparent: composited on white
    _save(root / "dog" / "d.png", BLUE, size=(16, 16))
    _save(root / "dog" / "e.jpeg", BLUE)
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage, not a png")
    good = root / "cat" / "a.png"
    (root / "cat" / "truncated.png").write_bytes(good.read_bytes()[:40])
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    _save(root / ".hidden" / "x.png", RED)
    return root


def test_labels_and_skipped_files(tree) -> None:
    with pytest.warns(dd.DataWarning, match=r"skipped 2 unreadable image file\(s\).*ignored 1 non-image"):
        ds = dd.get_dataset("image-folder", root=tree, size=16)
    assert ds.class_names == ("cat", "dog")
    names = {p.name: t for p, t in zip(ds.files, ds.targets, strict=True)}
    assert names == {"a.png": 0, "b.jpg": 0, "c.png": 0, "d.png": 1, "e.jpeg": 1}
    assert sorted(p.rsplit("/", 1)[-1] for p, _ in ds.skipped) == ["broken.png", "truncated.png"]
    assert ds.num_ignored == 1 and len(ds) == 5
    assert ds.info.num_classes == 2 and ds.info.num_items == {"train": 5}


def test_transform_values_and_shapes(tree) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dd.DataWarning)
        ds = dd.ImageFolder(tree, size=8, resize=12)
        gray = dd.ImageFolder(tree, size=8, channels=1, discrete=True)
    for i in range(len(ds)):
        x, cond = ds[i]
        y = cond["class"]
        assert x.shape == (3, 8, 8) and x.dtype == torch.float32 and -1 <= float(x.min()) <= float(x.max()) <= 1
        target = torch.tensor(RED if y == 0 else BLUE, dtype=torch.float32).view(3, 1, 1) / 127.5 - 1
        if ds.files[i].name == "c.png":
            target = torch.ones(3, 1, 1)  # transparent -> white
        assert torch.allclose(x, target.expand_as(x), atol=0.05), ds.files[i]
    k, _ = gray[0]
    assert k.shape == (1, 8, 8) and k.dtype == torch.uint8
    assert abs(int(k[0, 0, 0]) - 76) <= 1  # luminance of pure red: 0.299 * 255


def test_random_crop_follows_torch_seed(tmp_path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(tmp_path / "noise.png")
    ds = dd.ImageFolder(tmp_path, size=8, resize=32, crop="random", flip=True)
    torch.manual_seed(0)
    a = [ds[0][0] for _ in range(4)]
    torch.manual_seed(0)
    b = [ds[0][0] for _ in range(4)]
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not all(torch.equal(a[0], u) for u in a[1:])
    assert ds.class_names == ("",) and ds[0][1] == {} and ds.cond_keys == ()


def test_truncated_jpeg_is_replaced_on_the_fly(tmp_path) -> None:
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.jpg"):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / name, quality=90)
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "a.jpg").write_bytes(data[: len(data) // 2])  # header fine, pixels cut off
    ds = dd.ImageFolder(tmp_path, size=16)  # verify() cannot see JPEG truncation
    assert len(ds) == 2 and not ds.skipped
    with pytest.warns(dd.DataWarning, match="cannot decode .*a.jpg"):
        x, _ = ds[0]
    assert torch.equal(x, ds[1][0]) and len(ds.skipped) == 1
    with pytest.warns(dd.DataWarning, match="skipped 1 unreadable"):
        full = dd.ImageFolder(tmp_path, size=16, verify="decode")
    assert [p.name for p in full.files] == ["b.jpg"]


def test_splits(tree, tmp_path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dd.DataWarning)
        with pytest.raises(ValueError, match="test_fraction"):
            dd.ImageFolder(tree, "test")
        train = dd.ImageFolder(tree, "train", test_fraction=0.5)
        test = dd.ImageFolder(tree, "test", test_fraction=0.5)
    assert set(train.files).isdisjoint(test.files) and len(train) + len(test) == 5
    root = tmp_path / "split"
    _save(root / "train" / "x" / "1.png", RED)
    _save(root / "train" / "y" / "2.png", BLUE)
    _save(root / "test" / "x" / "3.png", RED)
    assert [p.name for p in dd.ImageFolder(root, "test", size=8).files] == ["3.png"]
    assert dd.ImageFolder(root, "train", size=8).class_names == ("x", "y")


def test_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dd.ImageFolder(tmp_path / "missing")
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(ValueError, match="no readable images"):
        dd.ImageFolder(tmp_path)
    with pytest.raises(ValueError, match="resize >= size"):
        dd.ImageFolder(tmp_path, size=16, resize=8)


def test_sixteen_bit_images_are_scaled_by_their_range_with_one_notice(tmp_path) -> None:
    values = np.array([0, 128, 129, 257, 32767, 32896, 65406, 65535], dtype=np.uint16)
    want = [0, 0, 1, 1, 127, 128, 254, 255]  # round(v * 255 / 65535)
    for i in range(3):
        Image.fromarray(np.tile(values, (8, 1))).save(tmp_path / f"g{i}.png")  # mode I;16
    pgm = tmp_path / "p.pgm"  # a 16-bit PGM opens as mode I
    pgm.write_bytes(b"P5 8 8 65535\n" + np.tile(values, (8, 1)).astype(">u2").tobytes())
    ds = dd.ImageFolder(tmp_path, size=8, channels=1, discrete=True)
    with pytest.warns(dd.DataWarning, match=r"16-bit image: scaled to 8-bit levels \(value \* 255 / 65535") as rec:
        items = [ds[i][0] for i in range(len(ds))]
    assert len([w for w in rec if "16-bit" in str(w.message)]) == 1  # one notice, not one per image
    for k in items:
        assert k.dtype == torch.uint8 and k[0, 0].tolist() == want
    rgb = dd.ImageFolder(tmp_path, size=8, channels=3, discrete=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dd.DataWarning)
        assert rgb[0][0][:, 0].tolist() == [want] * 3


def test_thirty_two_bit_images_are_skipped_with_the_reason(tmp_path) -> None:
    Image.fromarray(np.zeros((8, 8), dtype=np.int32)).save(tmp_path / "i.tif")
    Image.fromarray(np.zeros((8, 8), dtype=np.float32)).save(tmp_path / "f.tif")
    _save(tmp_path / "ok.png", RED, size=(8, 8))
    with pytest.warns(dd.DataWarning, match="skipped 2 unreadable"):
        ds = dd.ImageFolder(tmp_path, size=8)
    reasons = dict(ds.skipped)
    assert "32-bit floating-point image (mode F)" in reasons[str(tmp_path / "f.tif")]
    assert "32-bit integer image (mode I)" in reasons[str(tmp_path / "i.tif")]
