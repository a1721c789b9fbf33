"""scripts/gpu/slim.sh: the tracked weights leave the working tree before a device call and come back."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu" / "slim.sh"
pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def test_weights_move_out_and_back_leaving_what_is_kept(tmp_path) -> None:
    repo = tmp_path / "repo"
    files = {
        "src/difflab/pretrained/digits/model.safetensors": b"w" * 300_000,
        "artifacts/wavegrad-standard/checkpoint/ema.safetensors": b"k" * 200_000,
        "artifacts/ardm/model.safetensors": b"a" * 400_000,
        "src/difflab/pretrained/digits/config.yaml": b"name: digits\n",
    }
    for rel, data in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_bytes(data)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    env = {"PATH": "/usr/bin:/bin", "SLIM_STASH": str(tmp_path / "stash"), "SLIM_KEEP": "artifacts/wavegrad-standard/"}

    def slim(action: str) -> str:
        return subprocess.run(["bash", str(SCRIPT), action], cwd=repo, env=env, check=True, capture_output=True,
                              text=True).stdout  # fmt: skip

    out = slim("out")
    assert "moved 2 weight files" in out
    assert not (repo / "artifacts/ardm/model.safetensors").exists()
    assert not (repo / "src/difflab/pretrained/digits/model.safetensors").exists()
    assert (repo / "artifacts/wavegrad-standard/checkpoint/ema.safetensors").exists()  # kept
    assert (repo / "src/difflab/pretrained/digits/config.yaml").exists()  # not a weight file
    travel = 200_000 + len(files["src/difflab/pretrained/digits/config.yaml"])
    assert f"{travel / 1048576:.1f} MiB travel" in out
    assert "brought back 2 weight files" in slim("back")
    assert _git(repo, "status", "--short") == ""
    assert (repo / "artifacts/ardm/model.safetensors").read_bytes() == files["artifacts/ardm/model.safetensors"]
