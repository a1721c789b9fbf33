"""One call from generated images to the numbers a report needs: FD, its floor, precision, recall, accuracy.

``evaluate(samples, "fashion-mnist")`` embeds the samples with the data set's shipped feature net
and compares them with a fixed reference set of real training images. Because FD is biased upward
for finite sample counts, it also reports ``fd_floor``: the FD between the same reference set and
as many *real test* images as there are samples -- what a perfect generator would score. Reference
and floor features are cached per process, so sweeps (metric vs. sampling steps) pay for them once.

Every other image data set (``evaluate(samples, "image-folder", options={"root": ...})``) is scored
in the features of a net that difflab trains on that data the first time and caches by the data's
content (:mod:`.generic`: the task, the cache and how its floor is formed). ``prepare_evaluation``
does everything that can fail -- reading the data, loading or training the feature net, the
reference features and the floor -- so that a command can call it before spending time on sampling.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

from .featurenet import FEATURE_NETS, FeatureNet, class_accuracy, feature_net_metadata, features, load_feature_net
from .metrics import frechet_distance, precision_recall

_FEATURE_CACHE: dict[tuple[str, str, int, int], Tensor] = {}
_FLOOR_CACHE: dict[tuple[str, int, int, int], float] = {}


@functools.cache
def cached_feature_net(name: str) -> FeatureNet:
    """``load_feature_net(name)``, loaded once per process."""
    return load_feature_net(name)


def clear_cache() -> None:
    """Forget the cached reference / floor features and feature nets (e.g. after retraining them)."""
    from .generic import clear_generic_cache

    _FEATURE_CACHE.clear()
    _FLOOR_CACHE.clear()
    cached_feature_net.cache_clear()
    clear_generic_cache()


def real_features(name: str, split: str, n: int | None = None, seed: int = 0, batch_size: int = 500) -> Tensor:
    """Features of ``n`` real images of ``split`` (a seeded random subset; all if ``n`` is None), cached."""
    from difflab.data import from_levels, get_dataset

    data = get_dataset(name, split, discrete=True)
    total = len(data)
    n = total if n is None else min(int(n), total)
    key = (name, split, n, seed)
    if key not in _FEATURE_CACHE:
        idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]
        images = torch.stack([data[int(i)][0] for i in idx])
        _FEATURE_CACHE[key] = features(cached_feature_net(name), from_levels(images, data.levels), batch_size)
    return _FEATURE_CACHE[key]


def fd_floor(name: str, n_samples: int, n_ref: int = 10_000, seed: int = 0) -> tuple[float, int]:
    """(FD between ``n_ref`` train and ``min(n_samples, test size)`` test images, that test count), cached."""
    ref = real_features(name, "train", n_ref, seed)
    test = real_features(name, "test", None, seed)
    n = min(int(n_samples), test.shape[0])
    key = (name, ref.shape[0], n, seed)
    if key not in _FLOOR_CACHE:
        _FLOOR_CACHE[key] = frechet_distance(ref, test[:n])
    return _FLOOR_CACHE[key], n


def has_shipped_net(dataset_name: str) -> bool:
    """Whether ``dataset_name`` is scored with a shipped feature net (else with the generic one)."""
    return dataset_name in FEATURE_NETS


def prepare_evaluation(
    dataset_name: str,
    options: dict[str, Any] | None = None,
    n_samples: int = 1000,
    sample_shape: tuple[int, ...] | None = None,
    n_ref: int = 10_000,
    seed: int = 0,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Do, and cache, every step of :func:`evaluate` that does not need the samples: load the feature
    net (or read the data and train the generic one, with a progress bar), read the reference images
    and compute the floor for ``n_samples`` samples; ``sample_shape`` (C, H, W), if given, must be
    what the feature net takes. Raises what :func:`evaluate` would; returns which net is used:
    ``feature_net`` ("generic" or the data set), and for the generic net ``feature_net_path``,
    ``trained_now`` and ``train_seconds``."""
    if has_shipped_net(dataset_name):
        net = cached_feature_net(dataset_name)
        if sample_shape is not None:
            net.check_input(torch.zeros(1, *sample_shape))
        real_features(dataset_name, "train", n_ref, seed)
        fd_floor(dataset_name, n_samples, n_ref, seed)
        return {"feature_net": dataset_name}
    from .generic import generic_reference

    ref = generic_reference(dataset_name, options, n_ref=n_ref, seed=seed, progress=progress)
    if sample_shape is not None and tuple(sample_shape) != ref.images.data_shape:
        raise ValueError(
            f"the model makes images of shape {tuple(sample_shape)}, but {dataset_name!r} holds "
            f"{ref.images.data_shape}: FD compares images of the data set's own shape"
        )
    ref.floor(n_samples)
    return {
        "feature_net": "generic",
        "feature_net_path": str(ref.folder) if ref.folder is not None else None,
        "trained_now": ref.trained_now,
        "train_seconds": ref.meta.get("train_seconds"),
        "task_accuracy": ref.meta.get("task_accuracy"),
    }


def evaluate(
    samples: Tensor,
    dataset_name: str,
    labels: Tensor | None = None,
    n_ref: int = 10_000,
    k: int = 3,
    seed: int = 0,
    batch_size: int = 500,
    options: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Score generated images (N, C, H, W) in [-1, 1] against real ``dataset_name`` images.

    Samples are clamped to [-1, 1] first (what saving them as images would do). The reference set is
    a seeded random subset of ``n_ref`` training images (all of them if fewer). Returns a dict:

    - ``fd``: Frechet distance between reference and sample features (``frechet_distance``);
    - ``fd_floor``: the same for ``min(N, test size)`` real test images (``n_floor``) -- the score of
      a perfect generator at this sample count; compare ``fd`` with it, not with 0;
    - ``precision``, ``recall``: k-NN manifold metrics (``precision_recall``) against the first
      ``min(N, n_ref)`` reference features (equally large sets, as in the paper);
    - ``class_accuracy``: the feature net's accuracy on ``labels`` (class-conditional samples), if given;
    - ``n_samples``, ``n_ref``, ``n_floor``, ``dataset``, ``feature_net_sha256``.

    Data sets without a shipped net (every one but digits and Fashion-MNIST) are read with
    ``options`` (``get_dataset``'s, e.g. ``{"root": "path/to/images"}``) and scored with the generic
    feature net (:mod:`.generic`, trained on first use with a progress bar if ``progress`` allows):
    the floor then comes from a held-out half of the training images, ``class_accuracy`` from its
    class x rotation head, and ``feature_net`` ("generic"), ``feature_net_path`` and
    ``feature_task_accuracy`` are added.
    """
    if not isinstance(samples, Tensor):
        raise TypeError(f"samples must be a torch.Tensor (N, C, H, W), got {type(samples).__name__}")
    if not has_shipped_net(dataset_name):
        from .generic import evaluate_generic, generic_reference

        ref = generic_reference(dataset_name, options, n_ref=n_ref, seed=seed, progress=progress, batch_size=batch_size)
        return {**evaluate_generic(samples, ref, labels, k, batch_size), "dataset": dataset_name}
    net = cached_feature_net(dataset_name)
    net.check_input(samples)
    n = samples.shape[0]
    if n <= k:
        raise ValueError(f"evaluate needs more than k={k} samples, got {n}")
    x = samples.detach().float().clamp(-1.0, 1.0)
    fake = features(net, x, batch_size)
    ref = real_features(dataset_name, "train", n_ref, seed, batch_size)
    fd = frechet_distance(ref, fake)
    floor, n_floor = fd_floor(dataset_name, n, n_ref, seed)
    precision, recall = precision_recall(ref[: min(n, ref.shape[0])], fake, k=k)
    out: dict[str, Any] = {"fd": fd, "fd_floor": floor, "precision": precision, "recall": recall}
    if labels is not None:
        out["class_accuracy"] = class_accuracy(net, x, labels, batch_size)
    out.update(
        n_samples=n,
        n_ref=int(ref.shape[0]),
        n_floor=n_floor,
        dataset=dataset_name,
        feature_net_sha256=feature_net_metadata(dataset_name)["sha256"],
    )
    return out
