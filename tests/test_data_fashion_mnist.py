"""Fashion-MNIST from the Debian IDX files, and the IDX parser's errors."""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import pytest
import torch

import difflab.data as dd
from difflab.data import fashion_mnist as fm


def _have_fashion() -> bool:
    try:
        fm.resolve_root()
    except FileNotFoundError:
        return False
    return True


needs_fashion = pytest.mark.skipif(
    not _have_fashion() and os.environ.get("CI", "").lower() != "true",
    reason="Fashion-MNIST files absent: apt-get install dataset-fashion-mnist (never skipped when CI=true)",
)


@needs_fashion
def test_fashion_mnist_loads_official_split() -> None:
    train, test = dd.get_dataset("fashion-mnist"), dd.get_dataset("fashion-mnist", "test")
    assert (len(train), len(test)) == (60000, 10000)
    x, cond = train[0]
    y = cond["class"]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and -1.0 <= float(x.min()) < float(x.max()) <= 1.0
    assert y == 9 and train.class_names[y] == "Ankle boot"  # the first training image is an ankle boot
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert np.bincount(test.labels).tolist() == [1000] * 10
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == np.uint8 and train.levels == 256
    k, _ = dd.get_dataset("fashion-mnist", "test", discrete=True)[0]
    assert k.dtype == torch.uint8 and int(k.max()) > 200
    assert dd.get_dataset("fashion-mnist", "test", pad=2)[0][0].shape == (1, 32, 32)
    # Decoded once per process: a second dataset shares the cached array.
    assert dd.FashionMNIST("train").images.base is train.images.base


def _write_idx(path, data: bytes, magic: bytes, dims: tuple[int, ...], compress: bool = True) -> None:
    raw = magic + b"".join(struct.pack(">I", d) for d in dims) + data
    path.write_bytes(gzip.compress(raw) if compress else raw)


def _write_fake_set(root, n: int = 5) -> None:
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, n * 784, np.uint8).tobytes(),
                   b"\x00\x00\x08\x03", (n, 28, 28))  # fmt: skip
        _write_idx(root / f"{prefix}-labels-idx1-ubyte", bytes(range(n)), b"\x00\x00\x08\x01", (n,), compress=False)


def test_root_option_and_env_var(tmp_path, monkeypatch) -> None:
    _write_fake_set(tmp_path, n=5)
    ds = dd.get_dataset("fashion-mnist", "test", root=tmp_path)
    assert len(ds) == 5 and ds.labels.tolist() == [0, 1, 2, 3, 4]
    monkeypatch.setenv(fm.ENV_VAR, str(tmp_path))
    assert len(dd.FashionMNIST("train")) == 5


def test_missing_folder_says_how_to_get_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(fm.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist.*DIFFLAB_FASHION_MNIST") as e:
        dd.FashionMNIST()
    assert "\n" not in str(e.value) and "$DIFFLAB_FASHION_MNIST" in str(e.value)
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        dd.FashionMNIST("test", root=tmp_path)  # folder exists, files do not


def test_truncated_gzip_is_a_clear_error(tmp_path) -> None:
    _write_fake_set(tmp_path, n=50)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="corrupt IDX file .*train-images-idx3-ubyte.gz") as e:
        dd.FashionMNIST("train", root=tmp_path)
    assert "\n" not in str(e.value)


def test_bad_magic_and_wrong_length(tmp_path) -> None:
    bad = tmp_path / "bad"
    _write_idx(bad, bytes(10), b"\x00\x00\x08\x01", (10,))
    with pytest.raises(ValueError, match="bad magic 00000801 .expected 00000803"):
        fm.read_idx(bad, 3)
    short = tmp_path / "short"
    _write_idx(short, bytes(9), b"\x00\x00\x08\x01", (10,), compress=False)
    with pytest.raises(ValueError, match="corrupt IDX file .*short: 17 bytes, expected 18"):
        fm.read_idx(short, 1)
    good = tmp_path / "good"
    _write_idx(good, bytes(range(10)), b"\x00\x00\x08\x01", (10,))
    assert fm.read_idx(good, 1).tolist() == list(range(10))


def test_label_out_of_range(tmp_path) -> None:
    _write_fake_set(tmp_path, n=12)  # labels 0..11: 10 and 11 are not Fashion-MNIST classes
    with pytest.raises(ValueError, match="label 11 outside 0..9"):
        dd.FashionMNIST("train", root=tmp_path)
