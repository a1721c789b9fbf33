"""Checkpoint folders: round trip, atomic replacement, one-line errors that name the broken file."""

from __future__ import annotations

import json

import pytest
import torch

from difflab.train import checkpoint as ck
from difflab.train.checkpoint import CheckpointError, load_checkpoint, load_into, save_checkpoint


def _save(path, value: float, step: int):
    model = {"w": torch.full((3, 4), value), "b": torch.arange(4.0)}
    state = {"optimizer": {"state": {0: {"m": torch.ones(2)}}, "param_groups": [{"lr": 0.1}]}, "step": step}
    return save_checkpoint(
        path,
        model=model,
        ema={k: v * 2 for k, v in model.items()},
        config={"a": {"b": 1}},
        meta={"step": step},
        state=state,
    )


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_round_trip(tmp_path):
    _save(tmp_path / "ck", 1.5, 7)
    c = load_checkpoint(tmp_path / "ck")
    assert c.step == 7 and c.config == {"a": {"b": 1}} and c.meta["version"] == ck.VERSION
    assert torch.equal(c.model["w"], torch.full((3, 4), 1.5)) and torch.equal(c.ema["b"], torch.arange(4.0) * 2)
    assert c.state["optimizer"]["param_groups"][0]["lr"] == 0.1


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    _save(tmp_path / "ck", 1.0, 1)
    real = ck.save_weights
    calls = []

    def crash_on_ema(state, path):
        calls.append(path.name)
        if path.name == "ema.safetensors":
            raise OSError("disk full")
        real(state, path)

    monkeypatch.setattr(ck, "save_weights", crash_on_ema)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path / "ck", 2.0, 2)
    assert calls == ["model.safetensors", "ema.safetensors"]
    c = load_checkpoint(tmp_path / "ck")
    assert c.step == 1 and float(c.model["w"][0, 0]) == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temporary folders left behind
    monkeypatch.setattr(ck, "save_weights", real)
    _save(tmp_path / "ck", 3.0, 3)
    assert load_checkpoint(tmp_path / "ck").step == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


@pytest.mark.parametrize("name", ["model.safetensors", "ema.safetensors"])
def test_truncated_weights_name_the_file(tmp_path, name):
    _save(tmp_path / "ck", 1.0, 1)
    f = tmp_path / "ck" / name
    f.write_bytes(f.read_bytes()[:40])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "ck")
    assert str(f) in _one_line(e) and "corrupt or truncated" in str(e.value)


def test_truncated_or_garbage_state_names_the_file(tmp_path):
    _save(tmp_path / "ck", 1.0, 1)
    f = tmp_path / "ck" / "state.pt"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "ck")
    assert str(f) in _one_line(e)
    f.write_bytes(b"not a torch file at all")
    with pytest.raises(CheckpointError, match="state.pt: corrupt or truncated"):
        load_checkpoint(tmp_path / "ck")
    assert load_checkpoint(tmp_path / "ck", with_state=False).step == 1  # sampling does not need it


def test_metadata_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="no format.json"):
        load_checkpoint(tmp_path)
    _save(tmp_path / "ck", 1.0, 1)
    meta = tmp_path / "ck" / "format.json"
    meta.write_text('{"format": "difflab-checkpoint", "vers')
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "ck")
    assert str(meta) in _one_line(e)
    meta.write_text(json.dumps({"format": "difflab-checkpoint", "version": ck.VERSION + 1}))
    with pytest.raises(CheckpointError, match="newer than this difflab"):
        load_checkpoint(tmp_path / "ck")
    meta.write_text(json.dumps({"format": "other", "version": 1}))
    with pytest.raises(CheckpointError, match="not a difflab checkpoint"):
        load_checkpoint(tmp_path / "ck")


def test_load_into_names_the_source_on_mismatch():
    net = torch.nn.Linear(3, 2)
    good = {k: torch.zeros_like(v) for k, v in net.state_dict().items()}
    load_into(net, good, "x.safetensors")
    assert float(net.weight.detach().abs().sum()) == 0.0
    with pytest.raises(
        CheckpointError, match=r"x.safetensors: .*with other shapes \(e.g. weight: \(2, 4\) vs \(2, 3\)\)"
    ):
        load_into(net, {**good, "weight": torch.zeros(2, 4)}, "x.safetensors")
    with pytest.raises(CheckpointError, match=r"1 missing \(e.g. bias\); 1 unexpected \(e.g. extra\)"):
        load_into(net, {"weight": good["weight"], "extra": torch.zeros(1)}, "x.safetensors")
