"""Fashion-MNIST (Xiao et al. 2017): 70,000 real 28x28 greyscale photos of clothing, 10 classes.

Read with numpy from the original IDX files (official split: 60,000 train / 10,000 test):
``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``,
``t10k-labels-idx1-ubyte.gz`` (gzip or uncompressed, without the ``.gz``).

The folder is the ``root=`` option, else the environment variable ``DIFFLAB_FASHION_MNIST``,
else ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).
Decoded arrays are cached in memory: each file is parsed once per process.
"""

from __future__ import annotations

import gzip
import os
import threading
import zlib
from pathlib import Path

import numpy as np

from .arrays import ArrayImageDataset

ENV_VAR = "DIFFLAB_FASHION_MNIST"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
SUMMARY = "Fashion-MNIST: real 28x28 greyscale photos of clothing (Xiao et al. 2017)"
_PREFIX = {"train": "train", "test": "t10k"}
_IDX_DTYPE = 0x08  # unsigned byte, the only element type Fashion-MNIST uses
_CACHE: dict[tuple[str, int, int], np.ndarray] = {}
_LOCK = threading.Lock()
_HOW_TO_GET = (
    f"run `apt-get install dataset-fashion-mnist`, or set {ENV_VAR} / pass root= to a folder holding the four "
    "*-ubyte(.gz) files"
)


def resolve_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The Fashion-MNIST folder: ``root``, else $DIFFLAB_FASHION_MNIST, else the Debian location."""
    if root is not None:
        where, origin = Path(root), "root="
    elif os.environ.get(ENV_VAR):
        where, origin = Path(os.environ[ENV_VAR]), f"${ENV_VAR}"
    else:
        where, origin = DEBIAN_DIR, "the default location"
    if not where.is_dir():
        raise FileNotFoundError(f"Fashion-MNIST not found at {where} ({origin}): {_HOW_TO_GET}")
    return where


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"Fashion-MNIST file {stem}(.gz) missing in {root}: {_HOW_TO_GET}")


def read_idx(path: str | os.PathLike[str], ndim: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (gzip or raw) with ``ndim`` dimensions into a uint8 array.

    IDX layout (LeCun et al.): magic ``00 00 08 ndim``, then ``ndim`` big-endian uint32 sizes,
    then the bytes. A bad magic, a wrong length or a broken gzip stream is a ValueError naming the file.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"corrupt IDX file {path}: cannot decompress ({e}); reinstall or re-download it") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_DTYPE or raw[3] != ndim:
        raise ValueError(
            f"corrupt IDX file {path}: bad magic {raw[:4].hex() or 'none'} "
            f"(expected 000008{ndim:02x}); reinstall or re-download it"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"corrupt IDX file {path}: truncated header; reinstall or re-download it")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected:
        raise ValueError(
            f"corrupt IDX file {path}: {len(raw):,} bytes, expected {expected:,} for shape {shape}; "
            "reinstall or re-download it"
        )
    out = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
    out.setflags(write=False)
    return out


def _cached_idx(path: Path, ndim: int) -> np.ndarray:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = read_idx(path, ndim)
        return _CACHE[key]


def load_fashion_mnist(
    split: str = "train", root: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return (uint8 images (N, 1, 28, 28), int64 labels (N,)) of ``split``; cached per process."""
    if split not in _PREFIX:
        raise ValueError(f"unknown split {split!r}; valid splits: train, test")
    folder = resolve_root(root)
    img_path = _find(folder, f"{_PREFIX[split]}-images-idx3-ubyte")
    lab_path = _find(folder, f"{_PREFIX[split]}-labels-idx1-ubyte")
    images = _cached_idx(img_path, 3)
    labels = _cached_idx(lab_path, 1)
    if images.shape[1:] != (28, 28):
        raise ValueError(f"corrupt IDX file {img_path}: images are {images.shape[1:]}, expected 28x28")
    if len(images) != len(labels):
        raise ValueError(f"Fashion-MNIST mismatch: {img_path} has {len(images):,} images, {lab_path} {len(labels):,}")
    if labels.size and int(labels.max()) >= len(FASHION_CLASSES):
        raise ValueError(f"corrupt IDX file {lab_path}: label {int(labels.max())} outside 0..9")
    return images[:, None], labels.astype(np.int64)


class FashionMNIST(ArrayImageDataset):
    """Fashion-MNIST as (1, 28, 28) images, 256 levels, labels 0-9 (names in ``class_names``).

    Options: ``root`` (folder of the IDX files, see module doc), ``discrete`` (uint8 levels),
    ``pad`` (background pixels added on each side, e.g. 2 for 32x32).
    """

    def __init__(
        self,
        split: str = "train",
        *,
        root: str | os.PathLike[str] | None = None,
        discrete: bool = False,
        pad: int = 0,
    ) -> None:
        images, labels = load_fashion_mnist(split, root)
        meta = {"levels": 256, "name": "fashion-mnist", "summary": SUMMARY, "class_names": FASHION_CLASSES}
        super().__init__(images, labels, split=split, discrete=discrete, pad=pad, **meta)
