"""difflab.allocator: freed tensor memory is reused instead of page-faulted afresh (each case in its own
process: the malloc settings are process-wide)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, resource, sys
import torch
from difflab.allocator import keep_freed_memory
from difflab.nets import UNet, UNetConfig
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
torch.set_num_threads(1)
net = UNet(UNetConfig(dims=2, in_channels=1, out_channels=1, channels=32, channel_mult=(1, 2), num_blocks=1,
                      attn_levels=(), heads=4, norm_groups=8)).eval()
x, lam = torch.randn(16, 1, 28, 28), torch.zeros(16)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
with torch.no_grad():
    net(x, lam), net(x, lam)  # warm up: the heap grows to the pass's peak
    before = faults()
    for _ in range(5):
        net(x, lam)
print(json.dumps({"applied": applied, "again": keep_freed_memory() if applied else None,
                  "faults_per_pass": (faults() - before) / 5}))
"""


def _probe(mode: str, **env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings: Linux only")
def test_freed_buffers_are_reused_instead_of_page_faulted() -> None:
    default = _probe("default")
    kept = _probe("keep")
    assert kept["applied"] is True and kept["again"] is True
    # activations of 1.6-3.2 MiB: glibc's default gives many of them fresh pages on every pass (about
    # 6,600 page faults per pass here); kept, the pass reuses the heap of the warm-up passes
    assert default["faults_per_pass"] > 2000
    assert kept["faults_per_pass"] < default["faults_per_pass"] / 10


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings: Linux only")
def test_default_in_the_environment_keeps_glibc_behaviour() -> None:
    r = _probe("keep", DIFFLAB_MALLOC="default")
    assert r["applied"] is False and r["faults_per_pass"] > 2000


BENCHMARK = "allocator"  # benchmarks/allocator.py, loaded by the `bench` fixture of conftest.py


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings: Linux only")
def test_benchmark_runs_each_setting_in_its_own_process(bench) -> None:
    kept = bench.measure("wavegrad-call", "kept", threads=1, repeats=1)
    default = bench.measure("wavegrad-call", "default", threads=1, repeats=1)
    assert kept["mode"] == "kept" and default["mode"] == "default"
    assert kept["seconds"] > 0 and kept["faults"] < default["faults"]
