"""benchmarks/wavegrad.py: merging the quality-vs-time curve of an earlier result with a new one."""

from __future__ import annotations

BENCHMARK = "wavegrad"  # benchmarks/wavegrad.py, loaded by the `bench` fixture of conftest.py


def _val(prior: str, seconds: float, l1: float) -> dict:
    return {"prior": prior, "kind": "validation", "train_seconds": seconds, "step": int(seconds), "val_mel_l1_6": l1}


def test_merged_curve_has_each_point_once_and_new_measurements_win(bench) -> None:
    old = [_val("standard", 30.0, 4.0), _val("standard", 30.0, 4.0), _val("standard", 60.0, 3.0)]
    test_point = {"prior": "standard", "train_seconds": 60.0, "step": 60, "pesq": 1.1}
    new = [_val("standard", 60.02, 2.5), _val("standard", 60.02, 2.5), test_point, _val("priorgrad", 30.0, 3.9)]
    merged = bench.merge_curve(old, new)
    keys = [(c["prior"], c.get("kind", "test"), round(c["train_seconds"])) for c in merged]
    assert len(keys) == len(set(keys)) == 4
    standard_val = [c for c in merged if c["prior"] == "standard" and c.get("kind") == "validation"]
    assert [c["val_mel_l1_6"] for c in standard_val] == [4.0, 2.5]  # sorted by time; 60 s re-measured
    assert test_point in merged  # a test point at the same second is a different point
