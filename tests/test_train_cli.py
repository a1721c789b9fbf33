"""``difflab train`` / ``sample`` / ``eval`` end to end on a tiny config, and their one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from difflab import cli
from difflab.config import dump_yaml
from difflab.train import load_checkpoint

CONFIG = {
    "name": "tiny",
    "model": {"channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "heads": 2, "norm_groups": 4},
    "data": {"name": "digits", "batch_size": 8, "conditional": True},
    "train": {"steps": 3, "log_every": 1, "sample_every": 0, "ckpt_every": 0, "progress": False, "threads": 1},
    "sample": {"steps": 2, "n": 4, "guidance": 2.0},
}


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("difflab: error: "), err
    return err[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny conditional run trained through the CLI (once for this module)."""
    root = tmp_path_factory.mktemp("cli")
    cfg = root / "tiny.yaml"
    cfg.write_text(dump_yaml(CONFIG))
    assert cli.main(["train", str(cfg), "--out", str(root / "run"), "train.steps=2", "--seed", "5"]) == 0
    return root


def test_train_writes_the_run_folder_and_resumes(run, capsys):
    r = run / "run"
    saved = json.loads((r / "checkpoint" / "format.json").read_text())
    assert saved["step"] == 2 and saved["parameters"] > 0
    cfg = (r / "config.yaml").read_text()
    assert "seed: 5" in cfg and f"out_dir: {run}" in cfg and "name: run" in cfg
    # options after the overrides, and overrides after options, both work
    assert cli.main(["train", str(r / "config.yaml"), "--resume", "train.steps=3", "--out", str(r)]) == 0
    assert load_checkpoint(r / "checkpoint").step == 3
    out = capsys.readouterr().out
    assert "parameters:" in out and "steps 2 -> 3" in out


def test_sample_writes_a_grid_and_tensors(run, capsys):
    png, npz, pt = run / "g.png", run / "s.npz", run / "s.pt"
    argv = ["sample", str(run / "run"), "--n", "6", "--steps", "2", "--seed", "1", "--out", str(png)]
    assert cli.main([*argv, "--save", str(npz)]) == 0
    assert png.is_file() and "wrote" in capsys.readouterr().out
    with np.load(npz) as f:
        samples, labels = f["samples"], f["labels"]
    assert samples.shape == (6, 1, 8, 8) and labels.tolist() == [0, 1, 2, 3, 4, 5]
    assert cli.main([*argv, "--save", str(pt), "--labels", "7"]) == 0
    again = torch.load(pt, weights_only=True)
    assert again["labels"].tolist() == [7] * 6
    assert cli.main([*argv, "--save", str(pt)]) == 0  # same seed, same samples
    assert np.array_equal(torch.load(pt, weights_only=True)["samples"].numpy(), samples)
    assert cli.main([*argv, "--seed", "2", "--save", str(pt)]) == 0
    assert not np.array_equal(torch.load(pt, weights_only=True)["samples"].numpy(), samples)


def test_eval_prints_one_json_object(run, capsys):
    capsys.readouterr()
    assert cli.main(["eval", str(run / "run"), "--n", "12", "--steps", "2", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert {"fd", "fd_floor", "precision", "recall", "class_accuracy", "sampler", "steps"} <= set(result)
    assert result["n_samples"] == 12 and result["steps"] == 2


def test_eval_checks_its_feature_net_before_sampling(run, monkeypatch, capsys):
    import importlib

    import difflab.commands

    scoring = importlib.import_module("difflab.eval.evaluate")  # the module, not the function of that name

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled before checking the feature net")

    def missing(name):
        raise FileNotFoundError(f"feature net file {name}.safetensors is missing")

    monkeypatch.setattr(difflab.commands, "_draw", no_sampling)
    monkeypatch.setattr(scoring, "cached_feature_net", missing)
    assert cli.main(["eval", str(run / "run"), "--n", "12"]) == 2
    assert "feature net file digits.safetensors is missing" in _error(capsys)


def test_cli_errors_are_one_line(run, tmp_path, capsys):
    cfg = run / "tiny.yaml"
    assert cli.main(["train", str(cfg), "--out", str(run / "run")]) == 2
    assert "already holds a checkpoint" in _error(capsys)
    assert cli.main(["train", str(cfg), "train.lrr=1", "--out", str(tmp_path / "x")]) == 2
    assert "did you mean 'lr'" in _error(capsys)
    assert cli.main(["train", str(cfg), "--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in _error(capsys)
    assert cli.main(["train", str(tmp_path / "none.yaml")]) == 2
    assert "config file not found" in _error(capsys)
    assert cli.main(["train", str(cfg), "--resume", "--out", str(run / "run"), "model.channels=16"]) == 2
    assert "format.json: the checkpoint does not match the config: model channels" in _error(capsys)
    assert cli.main(["sample", str(tmp_path / "nowhere")]) == 2
    assert "run folder not found" in _error(capsys)
    assert cli.main(["sample", str(run / "run"), "--steps", "0"]) == 2
    _error(capsys)
    broken = tmp_path / "broken"
    (broken / "checkpoint").mkdir(parents=True)
    for f in (run / "run" / "checkpoint").iterdir():
        (broken / "checkpoint" / f.name).write_bytes(f.read_bytes())
    ema = broken / "checkpoint" / "ema.safetensors"
    ema.write_bytes(ema.read_bytes()[:64])
    assert cli.main(["sample", str(broken), "--n", "2"]) == 2
    assert f"{ema}: corrupt or truncated" in _error(capsys)
    assert cli.main(["train", str(cfg), "train.precision=fp16", "train.device=cpu", "--out", str(tmp_path / "y")]) == 2
    assert "fp16 needs CUDA" in _error(capsys)


@pytest.mark.parametrize("command", ["train", "sample", "eval"])
def test_help(command, capsys):
    assert cli.main([command, "--help"]) == 0
    assert f"usage: difflab {command}" in capsys.readouterr().out


def test_config_errors_say_which_key_what_type_and_where_from(tmp_path, capsys):
    five = tmp_path / "five.yaml"
    five.write_text("train: 5\n")
    cases = {  # --no-progress adds train.progress=false: the file's train: 5 is to blame, not that override
        (str(five), "--no-progress"): f"{five}: config key train: expected a mapping (section), got 5",
        ("configs/digits.yaml", "model.channels=abc", "train.steps=1"):
            "override 'model.channels=abc': config key model.channels: expected an integer, got 'abc'",
        ("configs/digits.yaml", "model.channel_mult=abc", "train.steps=1"):
            "override 'model.channel_mult=abc': config key model.channel_mult: expected a list, got 'abc'",
    }  # fmt: skip
    for argv, needle in cases.items():
        assert cli.main(["train", *argv, "--out", str(tmp_path / "never")]) == 2
        assert _error(capsys) == f"difflab: error: {needle}"
    assert not (tmp_path / "never" / "checkpoint").exists()


class _NotATensor:
    """A Python object in a samples file: torch.load(weights_only=True) must refuse it, not run it."""


def test_eval_samples_that_are_not_plain_tensors_are_one_line(run, tmp_path, capsys):
    obj = tmp_path / "obj.pt"
    torch.save({"samples": _NotATensor()}, obj)
    lst = tmp_path / "list.pt"
    torch.save({"samples": [1.0, 2.0]}, lst)
    for path, needle in ((obj, "not a plain tensor file, so it was not loaded (Unsupported global"),
                         (lst, "cannot read samples (TypeError")):  # fmt: skip
        assert cli.main(["eval", str(run / "run"), "--samples", str(path)]) == 2
        err = _error(capsys)
        assert f"{path}: {needle}" in err and "torch.load(weights_only=True)" in err and ".npz" in err, err
