"""Torch thread counts that degrade gracefully when other work shares the CPU (no torch import here).

torch runs each operator on a team of OpenMP threads that meet at a barrier after every parallel
region. When another busy process holds one of the cores, the thread that shares it with that
process gets a time slice only now and then, and every barrier waits for it: a 2-thread training on
2 cores beside one busy single-threaded process ran about 70 times slower than alone, where 1 thread
would have lost only about half. So difflab asks for as many threads as there are cores that other
processes leave free, and asks again as their load changes:

- :class:`LoadMeter` measures the other processes' load from ``/proc/stat`` (all CPU time) less
  this process's own CPU time over the same interval;
- :class:`ThreadGovernor` re-measures every ``every`` seconds of a long job (training steps,
  sampling batches) and calls ``torch.set_num_threads`` when the answer changes.

``train.threads: 0`` (the default) and the sampling commands use it; a positive ``train.threads``
(or ``OMP_NUM_THREADS`` in the environment) fixes the count instead. Where ``/proc/stat`` does not
exist (macOS, Windows), every core counts as free.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

BUSY_THRESHOLD = 0.3  # a core counts as taken when others use more than this share of it


def cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _cpu_seconds() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat; None elsewhere."""
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return (total - idle) / tick, total / tick


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


class LoadMeter:
    """How many cores other processes keep busy, measured between two calls of :meth:`others`."""

    def __init__(self) -> None:
        self._last = (_cpu_seconds(), _own_seconds(), time.monotonic())

    def others(self) -> float | None:
        """Cores used by other processes since the last call (or creation); None when unknown."""
        now = (_cpu_seconds(), _own_seconds(), time.monotonic())
        (m0, own0, t0), (m1, own1, t1) = self._last, now
        self._last = now
        if m0 is None or m1 is None or t1 - t0 <= 0:
            return None
        busy, total = m1[0] - m0[0], m1[1] - m0[1]
        if total <= 0:
            return None
        machine_cores = total / (t1 - t0)  # all cores of the machine, not only ours
        return max(0.0, (busy - (own1 - own0)) / total * machine_cores)


def threads_for(others: float, limit: int) -> int:
    """Threads on ``limit`` cores when other processes keep ``others`` cores busy: a core counts as taken
    once they use more than ``BUSY_THRESHOLD`` of it; at least 1."""
    return max(1, limit - max(0, math.ceil(others - BUSY_THRESHOLD)))


def others_busy(interval: float = 0.2) -> float:
    """Cores kept busy by other processes over the next ``interval`` seconds (0 when unknown)."""
    meter = LoadMeter()
    time.sleep(interval)
    return meter.others() or 0.0


class ThreadGovernor:
    """Keeps ``torch``'s thread count at the cores other processes leave free.

    Call :meth:`tick` often (every training step, every sampling batch): every ``every`` seconds it
    measures the other processes' load over the time since the last measurement, and sets the count
    when it changes. ``fixed`` > 0 pins the count (no measuring); so does ``OMP_NUM_THREADS``.
    ``set_threads`` defaults to ``torch.set_num_threads``."""

    def __init__(self, fixed: int = 0, every: float = 5.0, set_threads: Callable[[int], None] | None = None) -> None:
        if set_threads is None:
            import torch

            set_threads = torch.set_num_threads
        self.set_threads, self.every = set_threads, every
        env = os.environ.get("OMP_NUM_THREADS", "")
        self.fixed = fixed if fixed > 0 else (int(env) if env.isdigit() and int(env) > 0 else 0)
        self.limit = cores()
        self.threads = self.fixed or threads_for(others_busy(0.1), self.limit)
        self.set_threads(self.threads)
        self.changes = 0
        self._meter = LoadMeter()
        self._next = time.monotonic() + every

    def tick(self) -> int:
        """The thread count now (re-measured when ``every`` seconds have passed)."""
        if self.fixed or time.monotonic() < self._next:
            return self.threads
        self._next = time.monotonic() + self.every
        others = self._meter.others()
        if others is not None:
            n = threads_for(others, self.limit)
            if n != self.threads:
                self.threads, self.changes = n, self.changes + 1
                self.set_threads(n)
        return self.threads
