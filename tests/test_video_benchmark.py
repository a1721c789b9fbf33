"""benchmarks/video.py: the target checks, the RESULTS section and the extension plot from a result."""

from __future__ import annotations

import pytest

BENCHMARK = "video"  # benchmarks/video.py, loaded by the `bench` fixture of conftest.py


def _result(recon_fvd: float = 30.0, joint_fd: float = 9.0, recon_mse: float = 0.02) -> dict:
    ext = [
        {"method": "reconstruction", "weight": w, "frames": 64, "identity_consistency": 0.9, "motion_error": 1.0,
         "fvd": recon_fvd + w, "seconds_per_video": 1.0}
        for w in (1.0, 2.0, 5.0)
    ] + [{"method": "replacement", "weight": None, "frames": 64, "identity_consistency": 0.8, "motion_error": 2.0,
          "fvd": 33.0, "seconds_per_video": 0.5}]  # fmt: skip
    return {
        "command": "python benchmarks/video.py eval", "train_command": "python benchmarks/video.py train",
        "classifier_accuracy": {"frame_items": 0.9, "video_items": 0.95, "order": 0.99}, "videos": 8,
        "long_videos": 4, "sampler": "ddim, 25 steps, guidance 2", "extend_run": "joint-0",
        "floors": {"frame_fd": 1.0, "fvd": 2.0, "fvd_48": 2.5, "identity_consistency": 0.99, "motion_error": 0.3},
        "train": {"joint-0": {"updates": 10, "seconds": 60.0}}, "seconds_per_clip": {"joint-0": 0.5},
        "extension": ext,
        "joint": [{"image_frames": 0, "frame_fd": 10.0, "fvd": 20.0},
                  {"image_frames": 4, "frame_fd": joint_fd, "fvd": 19.0}],
        "interpolation": [{"method": "reconstruction", "weight": 1.0, "mse": recon_mse + 0.02, "fvd": 5.0},
                          {"method": "reconstruction", "weight": 5.0, "mse": recon_mse, "fvd": 5.0},
                          {"method": "replacement", "weight": None, "mse": 0.03, "fvd": 6.0},
                          {"method": "linear", "weight": None, "mse": 0.04, "fvd": 7.0}],
        "filmstrip": {"path": "docs/images/video-extension.png", "rows": ["truth", "replacement"], "every": 4},
    }  # fmt: skip


def test_targets_name_the_weights_where_reconstruction_wins_and_each_missed_target(bench) -> None:
    met = bench.targets(_result())
    assert len(met) == 3 and all(": met" in line for line in met)
    assert "at weights 1, 2 of 1, 2, 5" in met[0]  # weight 5: FD 35 is worse than replacement's 33
    assert "best MSE 0.0200 at weight 5 vs 0.0300 and 0.0400" in met[2]  # weight 1's 0.04 would miss
    missed = bench.targets(_result(recon_fvd=40.0, joint_fd=11.0, recon_mse=0.035))
    assert all(": missed" in line for line in missed)
    assert "at weights none" in missed[0]


def test_the_results_section_has_every_table_and_the_targets(bench, tmp_path) -> None:
    text = bench.render_video(_result())
    for heading in ("Joint image-video training", "Extension from 16 to 64 frames (joint-0, 4 test videos",
                    "Interpolation 4x", "Targets:", "| real videos |"):  # fmt: skip
        assert heading in text
    out = bench.plot(_result(), tmp_path / "metrics.png")
    from PIL import Image

    with Image.open(out) as im:
        assert im.size[0] > im.size[1] > 100


def test_keep_joint_carries_the_earlier_rows_with_what_made_them(bench, tmp_path) -> None:
    import json

    earlier = _result() | {
        "date": "2026-11-01",
        "machine": {"cpu": "x"},
        "samples_filmstrip": {"path": "s.png", "rows": ["joint-0"]},
    }
    earlier["train"] |= {"joint-4": {"updates": 8, "seconds": 60.0}}
    path = tmp_path / "video.json"
    path.write_text(json.dumps(earlier))
    kept = bench._carried_joint(path)
    assert kept["joint"] == earlier["joint"] and kept["date"] == "2026-11-01"
    assert set(kept["train"]) == {"joint-0", "joint-4"} and kept["command"] == earlier["command"]
    # a result that already kept them passes on the original source, not itself
    again = earlier | {"joint_source": {"command": "first", "train_command": "t", "date": "2026-10-01"}}
    path.write_text(json.dumps(again))
    assert bench._carried_joint(path)["command"] == "first"
    assert kept["floors"] == {"frame_fd": 1.0, "fvd": 2.0}
    new_floors = _result()["floors"] | {"frame_fd": 7.5, "fvd": 8.5}
    text = bench.render_video(_result() | {"joint_source": kept, "floors": new_floors})
    assert "Kept from the earlier result of 2026-11-01" in text
    assert "| real floor | 1.00 | 2.00 |" in text  # the kept rows' own floor, not this run's
    path.write_text(json.dumps(earlier | {"joint": []}))
    with pytest.raises(SystemExit, match="no joint-training rows"):
        bench._carried_joint(path)
    with pytest.raises(SystemExit, match="no earlier result"):
        bench._carried_joint(tmp_path / "missing.json")


def test_interpolation_rescored_later_names_its_command(bench) -> None:
    text = bench.render_video(_result() | {"interpolation_command": "python benchmarks/video.py interp --weights 9"})
    assert "16 frames; scored by `python benchmarks/video.py interp --weights 9`):" in text
    assert "scored by" not in bench.render_video(_result()).split("Interpolation 4x")[1].split("\n")[0]
