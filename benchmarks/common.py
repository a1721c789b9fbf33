"""Shared pieces of the benchmark scripts: provenance (command, machine) and writing results."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from difflab.allocator import keep_freed_memory  # noqa: E402

# Every benchmark measures what the difflab command does, and the command keeps freed memory in the
# process (src/difflab/allocator.py); comparisons with other libraries run in the same process.
MALLOC = "kept" if keep_freed_memory() else "default"


def alternate(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each of ``runs``, called in turn (so that machine noise hits all alike)
    ``repeats`` times after two warm-up rounds."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(repeats + 2):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            if i >= 2:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def machine_info() -> dict:
    """CPU model, core count and library versions of this machine."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }
    info["malloc"] = MALLOC  # glibc malloc: freed memory kept in the process, or the default
    if hasattr(os, "getloadavg"):
        info["load_average"] = round(os.getloadavg()[0], 2)  # 1-minute: was the machine busy?
    try:
        import diffusers

        info["diffusers"] = diffusers.__version__
    except ImportError:
        info["diffusers"] = None
    return info


def command_line(script: str) -> str:
    exe = Path(sys.executable)
    try:
        exe_s = str(exe.relative_to(ROOT)) if exe.is_relative_to(ROOT) else exe.name
    except ValueError:
        exe_s = exe.name
    return " ".join([exe_s, script, *sys.argv[1:]])


def result_path(name: str) -> Path:
    """``docs/results/NAME.json``: where :func:`write_result` writes a benchmark's result."""
    return ROOT / "docs" / "results" / f"{name}.json"


def write_result(name: str, res: dict) -> Path:
    """Write ``docs/results/NAME.json`` atomically and regenerate docs/RESULTS.md."""
    from report import main as write_report

    out = result_path(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res, indent=2) + "\n")
    tmp.replace(out)
    write_report()
    return out


def training_seconds(run: Path) -> float:
    """Training seconds of a run over all its sessions (each session's last elapsed time in metrics.jsonl)."""
    total, last = 0.0, 0.0
    for line in (run / "metrics.jsonl").read_text().splitlines():
        e = json.loads(line).get("elapsed_s")
        if e is None:
            continue
        if e < last:  # a new session started
            total += last
        last = e
    return total + last


def record_train_command(runs: Path, script: str) -> None:
    """Append this command to ``runs/train_command.txt``: every training session of the runs, in order."""
    runs.mkdir(parents=True, exist_ok=True)
    with open(runs / "train_command.txt", "a") as f:
        f.write(command_line(script) + "\n")


def train_commands(runs: Path) -> str:
    """The training sessions recorded by :func:`record_train_command`, "; then "-joined ("unknown": none)."""
    path = runs / "train_command.txt"
    lines = [line for line in path.read_text().splitlines() if line] if path.is_file() else []
    return "; then ".join(lines) or "unknown"


def start_training(config: str, out: Path, *args: str) -> subprocess.Popen:
    """``difflab train ROOT/config --out out --no-progress train.threads=1 ARGS`` in the background
    (``--resume`` when ``out`` holds a checkpoint), logging to ``out.log`` (appended)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    resume = ["--resume"] if (out / "checkpoint" / "format.json").is_file() else []
    cmd = [sys.executable, "-m", "difflab", "train", str(ROOT / config), "--out", str(out), "--no-progress", *resume,
           "train.threads=1", *args]  # fmt: skip
    print("$", " ".join(cmd[2:]), flush=True)
    with open(out.with_suffix(".log"), "a") as log:  # the child keeps its own copy of the handle
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def wait_all(*procs: subprocess.Popen) -> None:
    """Wait for training processes; exit with a message if any failed."""
    if any(p.wait() != 0 for p in procs):
        raise SystemExit("a training run failed: see the .log files beside the runs")


def run_summary(run: Path) -> dict:
    """A run's ``summary.json``."""
    return json.loads((run / "summary.json").read_text())
