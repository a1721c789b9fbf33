"""Thread counts on a shared CPU (difflab.threads)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from difflab import threads
from difflab.threads import LoadMeter, ThreadGovernor, threads_for


@pytest.mark.parametrize(
    ("others", "limit", "want"),
    [
        (0.0, 2, 2),
        (0.25, 2, 2),
        (0.35, 2, 1),
        (1.0, 2, 1),
        (1.9, 2, 1),
        (3.0, 2, 1),
        (1.0, 8, 7),
        (2.2, 8, 6),
        (2.4, 8, 5),
    ],
)
def test_a_core_counts_as_taken_once_others_use_a_third_of_it(others, limit, want):
    assert threads_for(others, limit) == want


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")
def test_the_meter_sees_a_busy_process_and_not_its_own_work():
    meter = LoadMeter()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.6:  # this process busy: not "others"
        pass
    own = meter.others()
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # the child starts
        meter.others()
        time.sleep(1.0)
        theirs = meter.others()
    finally:
        busy.kill()
        busy.wait()
    assert own is not None and theirs is not None
    # One busy core appears, as far as the machine has room: on a machine other work already fills, the
    # child can only take what this (now sleeping) process left, cores() - own (seen: 1.49 -> 2.01 on 2 cores).
    room = min(1.0, threads.cores() - own)
    assert theirs - own > 0.6 * room, (own, theirs)
    assert theirs <= threads.cores() + 0.5, (own, theirs)  # never more busy cores than the machine has


class _FakeMeter:
    def __init__(self, values):
        self.values = list(values)

    def others(self):
        return self.values.pop(0)


def test_the_governor_follows_the_load_and_a_fixed_count_stays(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "cores", lambda: 4)
    monkeypatch.setattr(threads, "others_busy", lambda interval=0.2: 0.0)
    calls: list[int] = []
    gov = ThreadGovernor(every=0.0, set_threads=calls.append)
    assert gov.threads == 4 and calls == [4]
    gov._meter = _FakeMeter([1.0, 1.0, 0.1, None])
    assert [gov.tick() for _ in range(4)] == [3, 3, 4, 4]  # unknown load (None) keeps the count
    assert calls == [4, 3, 4] and gov.changes == 2

    pinned: list[int] = []
    fixed = ThreadGovernor(fixed=2, every=0.0, set_threads=pinned.append)
    fixed._meter = _FakeMeter([3.0])
    assert fixed.tick() == 2 and pinned == [2]


def test_omp_num_threads_pins_the_count(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    got: list[int] = []
    gov = ThreadGovernor(every=0.0, set_threads=got.append)
    gov._meter = _FakeMeter([5.0])
    assert gov.tick() == 3 and got == [3]
