"""Training batches as a pure function of (seed, step): what makes resuming exact.

The data stream is the concatenation of per-epoch permutations of the training set, epoch ``e``
permuted by ``torch.randperm`` under the seed ``mix_seed(seed, e)``. Micro-batch ``m`` of the
whole job (``m = step * grad_accum + micro``) covers stream positions
``[m * B * W, (m + 1) * B * W)`` for batch size ``B`` and ``W`` processes, and rank ``r`` takes
its own slice ``[m B W + r B, m B W + (r + 1) B)``. So the batches of a step depend only on the
seed and the step number -- never on how many steps ran before in this process -- and ``W``
processes of batch ``B`` together see exactly the batches of one process of batch ``W B``.

In-memory datasets (those with ``tensors()``: digits, Fashion-MNIST) are indexed directly;
others go through a ``DataLoader`` whose batch sampler yields the same index lists.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (SplitMix64, Steele et al. 2014): one stream per tuple."""
    h = 0x2545F4914F6CDD1D
    for p in parts:
        h = _splitmix64(h ^ (int(p) & _MASK64))
    return h & ((1 << 63) - 1)


class BatchOrder:
    """Which dataset indices rank ``rank`` of ``world`` uses for micro-batch ``micro`` of ``step``."""

    def __init__(self, n: int, batch_size: int, seed: int, *, rank: int = 0, world: int = 1, accum: int = 1) -> None:
        if n < 1:
            raise ValueError("the training set is empty")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world, self.accum = rank, world, accum
        self._perms: dict[int, Tensor] = {}

    def permutation(self, epoch: int) -> Tensor:
        """The order of epoch ``epoch`` (cached; only the last few epochs are kept)."""
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.pop(min(self._perms))
            g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
            self._perms[epoch] = torch.randperm(self.n, generator=g)
        return self._perms[epoch]

    def indices(self, step: int, micro: int = 0) -> Tensor:
        """Dataset indices (int64, ``batch_size`` of them) of this rank's micro-batch."""
        m = step * self.accum + micro
        start = (m * self.world + self.rank) * self.batch_size
        pos = torch.arange(start, start + self.batch_size)
        epochs = pos // self.n
        out = torch.empty_like(pos)
        for e in epochs.unique().tolist():
            sel = epochs == e
            out[sel] = self.permutation(int(e))[pos[sel] % self.n]
        return out


class _StepSampler(torch.utils.data.Sampler):
    """Batch sampler that yields :meth:`BatchOrder.indices` lists from ``start_step`` on, forever."""

    def __init__(self, order: BatchOrder, start_step: int) -> None:
        self.order, self.start_step = order, start_step

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            for micro in range(self.order.accum):
                yield self.order.indices(step, micro).tolist()
            step += 1


class Batches:
    """Yields ``(x, cond)`` micro-batches for every step from ``start_step`` on, in order.

    ``x`` is float32; ``cond`` is the batch's condition dict, each key with its own dtype
    (:func:`difflab.data.collate`).
    """

    def __init__(self, dataset: Any, order: BatchOrder, num_workers: int = 0, pin_memory: bool = False) -> None:
        self.dataset, self.order = dataset, order
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.tensors: tuple[Tensor, dict[str, Tensor]] | None = None
        if hasattr(dataset, "tensors"):
            x, cond = dataset.tensors()
            self.tensors = (x.float().contiguous(), cond)

    def __call__(self, start_step: int) -> Iterator[tuple[Tensor, dict[str, Tensor]]]:
        if self.tensors is not None:
            return self._in_memory(start_step)
        return self._loader(start_step)

    def _in_memory(self, start_step: int) -> Iterator[tuple[Tensor, dict[str, Tensor]]]:
        x, cond = self.tensors  # type: ignore[misc]
        step = start_step
        while True:
            for micro in range(self.order.accum):
                idx = self.order.indices(step, micro)
                yield x[idx], {k: v[idx] for k, v in cond.items()}
            step += 1

    def _loader(self, start_step: int) -> Iterator[tuple[Tensor, dict[str, Tensor]]]:
        from ..data import collate, seed_worker

        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=_StepSampler(self.order, start_step),
            num_workers=self.num_workers,
            worker_init_fn=seed_worker if self.num_workers > 0 else None,
            generator=torch.Generator().manual_seed(mix_seed(self.order.seed, start_step, self.order.rank)),
            pin_memory=self.pin_memory,
            persistent_workers=False,
            collate_fn=collate,
        )
        for x, cond in loader:
            yield x.float(), cond
