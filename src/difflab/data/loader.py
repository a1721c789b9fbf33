"""DataLoaders whose order (and worker randomness) is controlled by one seed."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .base import collate

T = TypeVar("T")


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` that seeds numpy and ``random`` in a worker from torch's per-worker seed.

    DataLoader already seeds each worker's torch RNG as ``base_seed + worker_id``, with
    ``base_seed`` drawn from the loader's generator; this extends that to numpy and ``random``.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    dataset: Dataset[Any],
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    distributed: bool | None = None,
    **kwargs: Any,
) -> DataLoader[Any]:
    """A DataLoader whose shuffling and worker RNGs follow ``seed``: same seed, same batches.

    Items ``(x, cond)`` are batched by :func:`~difflab.data.collate` (unless ``collate_fn`` is
    given): a batch is ``(x, cond)`` with each condition key stacked on its own, dtype kept
    (``cond["class"]`` int64, ``cond["lowres"]`` float32).
    Each pass over the loader draws a new order from the loader's ``torch.Generator`` (seeded
    once here), so epoch ``e`` of two loaders built with the same seed match. With
    ``distributed`` (default: whether ``torch.distributed`` is initialised) a
    ``DistributedSampler(seed=seed)`` gives each rank its shard; call ``loader.sampler.set_epoch(e)``
    before each epoch. Datasets with a ``set_epoch`` method (photo-crops) should get the same call.
    Extra keyword arguments go to ``DataLoader`` (e.g. ``pin_memory=True``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if distributed is None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    kwargs.setdefault("collate_fn", collate)
    generator = torch.Generator().manual_seed(seed)
    sampler = None
    if distributed:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
        shuffle = False
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        generator=generator,
        worker_init_fn=seed_worker if num_workers > 0 else None,
        **kwargs,
    )


def forever(loader: Iterable[T]) -> Iterator[T]:
    """Yield batches endlessly, starting a new epoch (and calling ``set_epoch``) when one ends."""
    epoch = 0
    while True:
        for target in (getattr(loader, "sampler", None), getattr(loader, "dataset", None)):
            if hasattr(target, "set_epoch"):
                target.set_epoch(epoch)
        yield from loader
        epoch += 1
