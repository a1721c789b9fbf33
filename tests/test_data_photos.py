"""Photo crops: determinism, held-out test photos, and (high-res, low-res) pairs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import difflab.data as dd


@pytest.fixture(scope="module")
def crops() -> dd.PhotoCrops:
    return dd.get_dataset("photo-crops", size=32, length=64, seed=0)


def test_shapes_and_ranges(crops) -> None:
    assert len(crops) == 64 and crops.photo_names == dd.TRAIN_PHOTOS
    x, cond = crops[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= cond["class"] < len(dd.TRAIN_PHOTOS)
    xs = torch.stack([crops[i][0] for i in range(len(crops))])
    assert float(xs.min()) >= -1 and float(xs.max()) <= 1 and float(xs.std()) > 0.1
    labels = {crops[i][1]["class"] for i in range(len(crops))}
    assert len(labels) > 5  # crops come from many photos
    k, _ = dd.PhotoCrops(size=16, length=4, channels=1, discrete=True)[0]
    assert k.shape == (1, 16, 16) and k.dtype == torch.uint8


def test_deterministic_given_seed(crops) -> None:
    same = dd.PhotoCrops(size=32, length=64, seed=0)
    other = dd.PhotoCrops(size=32, length=64, seed=1)
    order = [5, 0, 63, 5]
    assert all(torch.equal(crops[i][0], same[i][0]) for i in order)
    assert not all(torch.equal(crops[i][0], other[i][0]) for i in range(8))
    before = crops[3][0]
    crops.set_epoch(1)
    assert not torch.equal(crops[3][0], before)
    crops.set_epoch(0)
    assert torch.equal(crops[3][0], before)


def test_test_split_holds_out_photos() -> None:
    test = dd.get_dataset("photo-crops", "test", size=32)
    assert len(test) == 1000 and test.photo_names == dd.TEST_PHOTOS
    assert set(dd.TEST_PHOTOS).isdisjoint(dd.TRAIN_PHOTOS)
    first = test[7][0]
    test.set_epoch(3)  # the test crops never change
    assert torch.equal(test[7][0], first)
    with pytest.raises(ValueError, match="exceeds photo"):
        dd.PhotoCrops(size=400, photos=["coins"])
    with pytest.raises(ValueError, match="valid photos: .*astronaut"):
        dd.PhotoCrops(photos=["lena"])


def test_low_res_pairs() -> None:
    pairs = dd.photo_crop_pairs("train", factor=4, size=32, length=8, seed=2)
    hr, cond = pairs[1]
    lr = cond["lowres"]
    assert hr.shape == (3, 32, 32) and lr.shape == (3, 8, 8) and len(pairs) == 8
    assert torch.allclose(lr, F.avg_pool2d(hr[None], 4)[0], atol=1e-6)  # area = 4x4 block mean
    base_x, base_cond = dd.PhotoCrops(size=32, length=8, seed=2)[1]
    assert torch.equal(hr, base_x) and cond["class"] == base_cond["class"]  # the base item's class is kept
    bic = dd.LowResPairs(dd.PhotoCrops(size=32, length=2), factor=2, mode="bicubic")[0][1]["lowres"]
    assert bic.shape == (3, 16, 16) and float(bic.abs().max()) <= 1
    with pytest.raises(ValueError, match="divide"):
        dd.downsample(hr, 5)
    with pytest.raises(ValueError, match="discrete=False"):
        dd.LowResPairs(dd.PhotoCrops(size=8, length=2, discrete=True))


def test_rescaled_digits_shrink_and_lowres() -> None:
    base = dd.get_dataset("digits", "train")
    ds = dd.Rescaled(base, shrink=2, lowres_factor=2)
    assert len(ds) == len(base) and ds.cond_keys == ("class", "lowres")
    x, cond = ds[0]
    assert x.shape == (1, 4, 4) and x.dtype == torch.float32
    lr = cond["lowres"]
    assert lr.shape == (1, 2, 2) and lr.dtype == torch.float32
    assert -1 <= float(lr.min()) <= float(lr.max()) <= 1
    assert isinstance(cond["class"], int) and cond["class"] == base[0][1]["class"] == int(base.labels[0])
    xs, conds = ds.tensors()
    assert xs.shape == (len(base), 1, 4, 4) and conds["lowres"].shape == (len(base), 1, 2, 2)
    assert torch.equal(xs[0], x) and torch.equal(conds["lowres"][0], lr) and int(conds["class"][0]) == cond["class"]
    bx, bcond = dd.collate([ds[i] for i in range(3)])
    assert bx.shape == (3, 1, 4, 4) and set(bcond) == {"class", "lowres"}
    assert bcond["class"].dtype == torch.int64 and bcond["lowres"].dtype == torch.float32
    assert bcond["class"].tolist() == [ds[i][1]["class"] for i in range(3)]
    assert torch.equal(bcond["lowres"], conds["lowres"][:3])


def test_resize_images_averages_by_integer_factors_and_interpolates_otherwise():
    import torch

    from difflab.data import downsample, resize_images

    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    torch.testing.assert_close(resize_images(x, (4, 4)), downsample(x, 4))
    assert resize_images(x, (16, 16)) is x
    y = resize_images(x, (12, 12))  # not a factor: antialiased bilinear
    assert y.shape == (2, 3, 12, 12) and float(y.min()) >= -1 - 1e-6 and float(y.max()) <= 1 + 1e-6
    assert not torch.allclose(resize_images(x, (8, 8)), y[..., :8, :8])
