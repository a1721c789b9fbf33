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


# --- channels and size inferred from the images ----------------------------------------------------------------


def _grey_folder(root, n=4, size=(25, 25)):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, size[::-1], dtype=np.uint8)).save(root / f"g{i}.png")
    return root


def _messages(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, dd.DataWarning)]


def test_greyscale_images_keep_their_channels_and_size(tmp_path) -> None:
    root = _grey_folder(tmp_path / "faces")  # the issue: 25x25 greyscale PNGs came out as 3 x 64 x 64
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = dd.get_dataset("image-folder", root=root)
    assert ds[0][0].shape == (1, 25, 25) and ds.inferred == {"channels": 1, "size": 25}
    assert ds.info.channels == 1 and ds.info.size == 25
    msgs = _messages(rec)
    assert len(msgs) == 1, msgs  # one notice, and no warning: the images are not changed
    assert "chose channels=1 (every image is greyscale) and size=25 (every image is 25x25)" in msgs[0]
    k = dd.ImageFolder(root, discrete=True)[0][0]
    assert torch.equal(k[0], torch.from_numpy(np.array(Image.open(root / "g0.png"))))  # pixels untouched


def test_inferred_size_is_cropped_to_a_multiple_the_unet_takes(tmp_path) -> None:
    root = _grey_folder(tmp_path / "faces")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = dd.ImageFolder(root, size_multiple=4, discrete=True)
    assert ds.inferred == {"channels": 1, "size": 24, "resize": 25}  # one pixel cropped away, no resampling
    assert "size=24 (every image is 25x25; centre-cropped to a multiple of 4" in _messages(rec)[0]
    assert len(_messages(rec)) == 1
    full = np.array(Image.open(root / "g0.png"))
    assert torch.equal(ds[0][0][0], torch.from_numpy(full[:24, :24]))  # (25 - 24) // 2 = 0: the first 24 rows
    small = dd.ImageFolder(root, size_multiple=16)  # 25 -> 16 would crop 59%: shrunk instead
    assert small.inferred == {"channels": 1, "size": 16} and small.resize == 16
    tiny = _grey_folder(tmp_path / "tiny", size=(5, 5))
    with pytest.warns(dd.DataWarning, match=r"4 of 4 images are enlarged to 8 pixels"):
        assert dd.ImageFolder(tiny, size_multiple=8).size == 8  # only images below the multiple grow


def test_colour_and_mixed_sizes_are_inferred_from_the_majority(tmp_path) -> None:
    root = _grey_folder(tmp_path / "mix", n=3, size=(32, 32))
    _save(root / "c.png", RED, size=(32, 48))  # one colour image, shorter side 32
    _save(root / "s.png", BLUE, size=(20, 20))  # smaller than the rest
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = dd.ImageFolder(root)
    assert ds.inferred == {"channels": 3, "size": 32} and ds[0][0].shape == (3, 32, 32)
    notice, changes = _messages(rec)
    assert "channels=3 (2 of 5 images are in colour)" in notice
    assert "size=32 (the most common shorter side, 32 (4 of 5 images; 20 to 32))" in notice
    assert "1 of 5 images are enlarged to 32 pixels" in changes and "s.png, 20x20" in changes
    assert "the 32x32 crop cuts away more than 10% of 1 of 5 images (most: " in changes
    assert "c.png, 32x48, keeps 67%)" in changes


def test_explicit_options_work_as_before_and_warn_when_they_change_the_images(tmp_path) -> None:
    root = _grey_folder(tmp_path / "faces")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = dd.ImageFolder(root, size=64, channels=3)
    assert ds[0][0].shape == (3, 64, 64) and ds.inferred == {}
    msgs = _messages(rec)
    assert len(msgs) == 1 and "chose" not in msgs[0] and "4 of 4 images are enlarged to 64 pixels" in msgs[0]
    colour = tmp_path / "colour"
    _save(colour / "a.png", RED, size=(16, 16))
    with pytest.warns(dd.DataWarning, match=r"1 of 1 colour images become grey \(channels=1"):
        assert dd.ImageFolder(colour, channels=1)[0][0].shape == (1, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error", dd.DataWarning)  # nothing to say: given, and the images fit
        assert dd.ImageFolder(colour, size=16, channels=3)[0][0].shape == (3, 16, 16)
        assert dd.ImageFolder(colour, size=8, channels=3).resize == 8  # shrinking is not a change worth a warning


def test_the_trainer_infers_a_size_its_unet_takes_and_records_it(tmp_path) -> None:
    from difflab.train.config import RunConfig
    from difflab.train.stage import ImageDiffusion

    root = _grey_folder(tmp_path / "faces", size=(25, 25))
    cfg = RunConfig.from_dict(
        {"model": {"channels": 8, "channel_mult": [1, 2, 2], "heads": 2, "norm_groups": 4},
         "data": {"name": "image-folder", "options": {"root": str(root)}}}
    )  # fmt: skip
    with pytest.warns(dd.DataWarning, match="size=24"):
        data = ImageDiffusion(cfg).dataset()  # 2 down-samplings: a multiple of 4
    assert data[0][0].shape == (1, 24, 24)
    assert cfg.data.options == {"root": str(root), "channels": 1, "size": 24, "resize": 25}
    cfg.data.shrink = 2  # a cascade's base stage at half size: a multiple of 8
    assert ImageDiffusion(cfg).size_multiple() == 8
