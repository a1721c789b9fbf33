"""scikit-learn's 8x8 handwritten digits: 1,797 real images, 17 grey levels (0..16), labels 0-9.

The split is fixed and deterministic: for each class c = 0..9 in turn, the indices of class c
are shuffled by ``numpy.random.RandomState(split_seed)`` (one generator shared by the classes,
seed 0 by default; RandomState's stream is frozen by NumPy) and the first 30 go to the test
split. Test = 300 images (30 per class), train = the other 1,497; both keep the original order.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from .arrays import ArrayImageDataset

DIGITS_LEVELS = 17
TEST_PER_CLASS = 30
DIGIT_CLASSES = tuple(str(i) for i in range(10))
SUMMARY = "scikit-learn load_digits: real 8x8 handwritten digits"
ENV_VAR = "DIFFLAB_DIGITS"


@functools.cache
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as (uint8 (N, 1, 8, 8) levels 0..16, int64 labels); cached per process.

    From scikit-learn, or from the ``.npz`` (arrays ``images``, ``labels``) named by the environment
    variable ``DIFFLAB_DIGITS`` (a copy for machines without scikit-learn: :func:`save_digits_copy`)."""
    copy = os.environ.get(ENV_VAR)
    if copy:
        with np.load(copy) as f:
            images, labels = f["images"].astype(np.uint8), f["labels"].astype(np.int64)
        if images.shape != (1797, 1, 8, 8) or labels.shape != (1797,):
            raise ValueError(f"{ENV_VAR}={copy}: expected images (1797, 1, 8, 8) and labels (1797,)")
    else:
        try:
            from sklearn.datasets import load_digits
        except ImportError as e:
            raise ImportError(f"the digits dataset needs scikit-learn (pip install scikit-learn) or {ENV_VAR}") from e
        bunch = load_digits()
        images = np.asarray(bunch.images).round().astype(np.uint8).reshape(-1, 1, 8, 8)
        labels = np.asarray(bunch.target, dtype=np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def save_digits_copy(path: str | os.PathLike[str]) -> None:
    """Write the digits (from scikit-learn) as an ``.npz`` that ``DIFFLAB_DIGITS`` can name."""
    images, labels = _load_digits()
    np.savez_compressed(path, images=images, labels=labels)


def digits_split_indices(split: str, split_seed: int = 0) -> np.ndarray:
    """Sorted indices into ``load_digits()`` of the ``"train"`` or ``"test"`` split (see module doc)."""
    _, labels = _load_digits()
    rng = np.random.RandomState(split_seed)
    test = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:TEST_PER_CLASS] for c in range(10)])
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; valid splits: train, test")
    return np.flatnonzero(np.isin(np.arange(len(labels)), test) == (split == "test"))


class Digits(ArrayImageDataset):
    """The 8x8 digits as (1, 8, 8) images; 17 levels (``discrete=True`` gives the raw 0..16 values).

    Options: ``discrete`` (uint8 levels instead of floats), ``split_seed`` (default 0: the
    documented split), ``pad`` (pixels of background added on each side, e.g. 4 for 16x16).
    """

    def __init__(self, split: str = "train", *, discrete: bool = False, split_seed: int = 0, pad: int = 0) -> None:
        images, labels = _load_digits()
        idx = digits_split_indices(split, split_seed)
        meta = {"levels": DIGITS_LEVELS, "name": "digits", "summary": SUMMARY, "class_names": DIGIT_CLASSES}
        super().__init__(images[idx], labels[idx], split=split, discrete=discrete, pad=pad, **meta)
