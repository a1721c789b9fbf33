"""benchmarks/distillation.py: how a merged part's machine is written in RESULTS.md."""

from __future__ import annotations

BENCHMARK = "distillation"  # benchmarks/distillation.py, loaded by the `bench` fixture of conftest.py


def test_a_part_says_what_it_recorded_and_nothing_it_did_not(bench) -> None:
    full = {"machine": {"cpu": "AMD EPYC", "cores": 2, "torch_threads": 1, "torch": "2.13.0+cpu"}, "seconds": 40.9}
    assert bench._where(full) == "AMD EPYC, 2 cores, 1 torch threads; torch 2.13.0+cpu; 40.9 s"
    gpu = {"machine": {"gpu": "NVIDIA H200", "cpu": "Xeon", "torch": "2.11.0+cu130"}, "seconds": None}
    assert bench._where(gpu) == "NVIDIA H200; torch 2.11.0+cu130"
    assert bench._where({"machine": {"cpu": "AMD EPYC, 2 cores"}}) == "AMD EPYC, 2 cores"
    assert bench._where({}) == "machine not recorded"
    assert "- `x` (c)\n" in bench.render({"parts": [{"command": "x", "machine": {"cpu": "c"}}]})
