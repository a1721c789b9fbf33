"""Checkpoint folders: round trip, atomic replacement, one-line errors that name the broken file."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

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

    def crash_on_ema(state, path, *rest):
        calls.append(path.name)
        if path.name == "ema.safetensors":
            raise OSError("disk full")
        real(state, path, *rest)

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


# -- a writer replacing the checkpoint while readers load it ---------------------------------
def _save_step(path, step: int):
    """A checkpoint whose every file says which write it is: weights = step, EMA = 2 step, state and config step."""
    v = float(step)
    model = {"weight": torch.full((2, 3), v), "bias": torch.full((2,), v)}
    return save_checkpoint(
        path,
        model=model,
        ema={k: 2 * t for k, t in model.items()},
        config={"written_at": step},
        meta={"step": step, "model_config": {"step": step}},
        state={"step": step},
    )


def test_a_reader_sees_one_checkpoint_while_a_writer_replaces_it(tmp_path):
    run = tmp_path / "run"
    _save_step(run / "checkpoint", 0)
    stop, written = threading.Event(), []

    def writer():
        step = 0
        while not stop.is_set():
            step += 1
            _save_step(run / "checkpoint", step)
            written.append(step)
            time.sleep(0.02)  # a busy writer (50 saves a second), not a livelock: a trainer saves every few minutes

    thread = threading.Thread(target=writer)
    thread.start()
    seen = set()
    try:
        i = 0
        # at least 400 loads, and on until the writer has replaced the folder enough times (fast loads on
        # an idle machine can finish 400 before it has written 20)
        while i < 400 or (len(written) <= 20 and i < 100_000):
            i += 1
            if i % 2:
                c = load_checkpoint(ck.checkpoint_path(run))
                ok = (
                    float(c.model["weight"][0, 0]) == c.step and float(c.ema["bias"][0]) == 2 * c.step
                    and c.state["step"] == c.step and c.config == {"written_at": c.step}
                )  # fmt: skip
                assert ok, f"files of different writes in one load (format.json step {c.step})"
                assert "write_id" not in c.state  # the bookkeeping stays out of the caller's state
                seen.add(c.step)
            else:
                net, meta, _ = ck.load_network(run, lambda cfg: torch.nn.Linear(3, 2))
                assert float(net.weight.detach()[0, 0]) == 2 * meta["step"] == 2 * meta["model_config"]["step"]
                seen.add(meta["step"])
    finally:
        stop.set()
        thread.join()
    assert len(written) > 20 and len(seen) > 10  # the writer really replaced it during the loads


KILL_BETWEEN_RENAMES = """
import os, sys
import torch
from difflab.train.checkpoint import save_checkpoint

def save(step):
    w = {"weight": torch.full((2, 3), float(step))}
    save_checkpoint(sys.argv[1], model=w, ema=w, config={"step": step}, meta={"step": step}, state={"step": step})

save(1)
real = os.replace
def replace(src, dst):
    if ".tmp-" in os.path.basename(src):
        os._exit(9)  # killed after checkpoint -> .checkpoint.old, before the new folder is renamed in
    real(src, dst)
os.replace = replace
save(2)
"""


def test_a_write_killed_between_its_renames_leaves_a_checkpoint_that_is_found(tmp_path):
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", KILL_BETWEEN_RENAMES, str(run / "checkpoint")], timeout=120)
    assert done.returncode == 9
    names = sorted(p.name for p in run.iterdir())
    assert names[0] == ".checkpoint.old" and names[1].startswith(".checkpoint.tmp-") and len(names) == 2
    with pytest.warns(RuntimeWarning, match=r"checkpoint is missing: .* using the previous checkpoint in .*\.old"):
        found = ck.checkpoint_path(run)  # what difflab sample / eval / load read
    assert found == run / ".checkpoint.old"
    with pytest.warns(RuntimeWarning, match=r"\.checkpoint\.old"):
        assert load_checkpoint(run / "checkpoint").step == 1
    assert ck.remove_unfinished(run / "checkpoint") == [run / names[1]]
    assert ck.recover_checkpoint(run / "checkpoint") == run / ".checkpoint.old"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint"] and load_checkpoint(run / "checkpoint").step == 1


def test_a_file_of_another_write_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    _save_step(tmp_path / "a", 1)
    _save_step(tmp_path / "b", 2)
    f = tmp_path / "a" / "ema.safetensors"
    f.write_bytes((tmp_path / "b" / "ema.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match=f"{f}: belongs to another checkpoint write"):
        load_checkpoint(tmp_path / "a")
    save_file(load_file(f), str(f))  # rewritten by a tool that drops the metadata (e.g. a dtype cast): accepted
    assert float(load_checkpoint(tmp_path / "a").ema["bias"][0]) == 4.0
