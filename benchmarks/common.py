"""Shared pieces of the benchmark scripts: provenance (command, machine) and writing results."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
