"""SIGTERM / SIGINT stop ``difflab train`` cleanly: a checkpoint of the last finished step, exit 143 / 130."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from difflab.config import dump_yaml
from difflab.train import load_checkpoint, train
from difflab.train.config import RunConfig

CONFIG = {
    "name": "sig",
    "model": {"channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "heads": 2, "norm_groups": 4},
    "data": {"name": "digits", "batch_size": 8},
    "train": {"steps": 100000, "log_every": 1, "sample_every": 0, "ckpt_every": 0, "progress": False, "threads": 1},
    "sample": {"steps": 2, "n": 4},
}


def _metric_steps(path) -> list[int]:
    if not path.is_file():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.endswith("}")]


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143)])
def test_signal_saves_a_checkpoint_and_exits(tmp_path, sig, code):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(dump_yaml(CONFIG))
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "difflab", "train", str(cfg_path), "--out", str(run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while len(_metric_steps(run / "metrics.jsonl")) < 3:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "training did not start within 60 s"
            time.sleep(0.1)
        assert not (run / "checkpoint").exists()  # ckpt_every=0: only the signal writes one
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    ckpt = load_checkpoint(run / "checkpoint")
    steps = _metric_steps(run / "metrics.jsonl")
    assert ckpt.step >= 3 and ckpt.step == steps[-1]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == int(sig) and summary["step"] == ckpt.step
    assert "Traceback" not in err and f"stopped by signal {int(sig)}" in out


def test_sigint_in_process_returns_130(tmp_path):
    """The handler also works in-process: a SIGINT during a step finishes it and saves."""
    cfg = RunConfig.from_dict({**CONFIG, "train": {**CONFIG["train"], "steps": 50}})
    from difflab.train import Trainer

    trainer = Trainer(cfg, tmp_path / "run")
    real = trainer.method.loss

    def loss(*args):
        if trainer.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args)

    trainer.method.loss = loss
    result = trainer.fit()
    assert (result.status, result.step, result.exit_code) == ("interrupted", 3, 130)
    assert load_checkpoint(tmp_path / "run/checkpoint").step == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    assert train(cfg, tmp_path / "run", resume=True, until=4).step == 4
