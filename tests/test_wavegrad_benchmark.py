"""benchmarks/wavegrad.py: merging the quality-vs-time curve of an earlier result with a new one; the target checks."""

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


def _row(speaker: str, method: str = "wavegrad", **kw) -> dict:
    row = {"method": method, "prior": "standard", "schedule": "searched", "steps": 6, "speaker": speaker,
           "pesq": 1.5, "stoi": 0.87, "rtf": 0.2, "threads": 2}  # fmt: skip
    return {**row, **kw}


def test_target_checks_say_which_part_is_met(bench) -> None:
    rows = [
        _row("en"),
        _row("en", pesq=2.1, stoi=0.93, rtf=0.3),
        _row("en", pesq=2.1, stoi=0.93, rtf=0.2, threads=1),
        _row("en", pesq=2.1, stoi=0.93),
        _row("en", schedule="naive", pesq=3.0, stoi=0.99),  # not a searched or distilled schedule: no check
        _row("ru", method="griffin-lim", stoi=0.95),
        _row("ru", stoi=0.91),
        _row("ru", stoi=0.89),
    ]
    lines = bench.speaker_checks(rows)
    assert len(lines) == 6
    assert "PESQ 1.50 (>= 2.0) missed" in lines[0] and "RTF 0.200 at 2 thread(s) (<= 0.25 at 2) met" in lines[0]
    assert lines[0].endswith(": missed")
    assert "PESQ 2.10 (>= 2.0) met" in lines[1] and "RTF 0.300" in lines[1] and lines[1].endswith("missed")
    assert "at 1 thread(s) (<= 0.25 at 2) missed" in lines[2]
    assert lines[3].endswith("met: met")
    assert lines[4].endswith("= 0.900: met") and lines[5].endswith("= 0.900: missed")
