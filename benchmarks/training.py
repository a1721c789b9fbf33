"""Benchmark for the issue "Training stack and image pipeline": training throughput.

Run from the repository root::

    .venv/bin/python benchmarks/training.py throughput [--threads N]
    .venv/bin/python benchmarks/training.py demo
    .venv/bin/python benchmarks/training.py shared [--seconds 20 --rounds 3]
    .venv/bin/python benchmarks/training.py fashion --run runs/fashion-mnist-cfg [--guidance 2]

``throughput``: training steps (forward, backward, AdamW) per second x batch, for difflab's
U-Net and diffusers' ``UNet2DModel`` of matched parameter count, on 1x28x28 inputs (the
Fashion-MNIST shape) at batch 64, v-parameterization loss from ``difflab.diffusion``. The two
models alternate step by step, so machine noise hits both alike; the median over steps is
reported.

``demo``: times ``make demo`` from a warm set-up (the analytic demo, then training on digits,
sampling and evaluation) and records the FD of its 1,000 samples with the train/test floor.

``shared``: make demo's training (``configs/digits.yaml``) alone and beside one busy single-threaded
process, with 2 threads, 1 thread and difflab's default (``train.threads: 0``, :mod:`difflab.threads`):
steps/s, median over rounds with the policies interleaved.

``fashion``: evaluates a finished run of ``configs/fashion-mnist-cfg.yaml`` (trained with
``difflab train``): FD of 1,000 guided samples (labels cycling through the classes) with
its floor, class accuracy by the shipped classifier, and the training time from the run's
``summary.json``.

Each part merges its keys into ``docs/results/training.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import command_line, machine_info, write_result  # noqa: E402
from difflab.diffusion import CosineSchedule, training_loss  # noqa: E402
from difflab.nets import UNet, UNetConfig  # noqa: E402

# ~2.2M parameters each: difflab's U-Net (attention at the 14x14 level) and a diffusers
# UNet2DModel with attention at its middle level, widths chosen to match the count.
DIFFLAB_CONFIG = dict(
    dims=2, in_channels=1, out_channels=1, channels=32, channel_mult=(1, 2, 3), num_blocks=2, attn_levels=(1,), heads=4
)
DIFFUSERS_CONFIG = dict(
    sample_size=28,
    in_channels=1,
    out_channels=1,
    block_out_channels=(64, 64, 96),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=32,
    attention_head_dim=16,
)


class DiffusersNet(torch.nn.Module):
    """diffusers' UNet2DModel as a difflab network ``net(z, lam, cond)`` (lam scaled like a step index)."""

    def __init__(self) -> None:
        super().__init__()
        from diffusers import UNet2DModel

        self.unet = UNet2DModel(**DIFFUSERS_CONFIG)

    def forward(self, z: torch.Tensor, lam: torch.Tensor, cond: object = None) -> torch.Tensor:
        return self.unet(z, lam * 25.0).sample


def forward_gmac(net: torch.nn.Module) -> float:
    """Multiply-accumulates (1e9) of one forward pass of one 1x28x28 image: every convolution
    (transposed ones too), matrix product and attention, as counted by
    ``torch.utils.flop_counter`` (FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(torch.zeros(1, 1, 28, 28), torch.zeros(1))
    return counter.get_total_flops() / 2e9


def bench_throughput(
    batch: int, steps: int, warmup: int, compile: bool = False, device: str = "cpu", bf16: bool = False
) -> dict:
    """Images/s of a training step for each (library, compiled) variant, all alternating step by step."""
    torch.manual_seed(0)
    dev = torch.device(device)
    schedule = CosineSchedule()
    x = (torch.rand(batch, 1, 28, 28) * 2 - 1).to(dev)
    base = {"difflab": UNet(UNetConfig(**DIFFLAB_CONFIG)), "diffusers": DiffusersNet()}
    gmac = {k: round(forward_gmac(n), 3) for k, n in base.items()}
    nets = {(k, False): n.to(dev) for k, n in base.items()}
    if compile:  # separate copies, so the plain and the compiled model each keep their own optimizer state
        import copy

        nets.update({(k, True): torch.compile(copy.deepcopy(n)) for k, n in base.items()})
    opts = {k: torch.optim.AdamW(n.parameters(), lr=1e-4) for k, n in nets.items()}
    times: dict[tuple, list[float]] = {k: [] for k in nets}
    first: dict[tuple, float] = {}
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for i in range(warmup + steps):
        for key, net in nets.items():
            sync()
            t0 = time.perf_counter()
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                loss = training_loss(net, x, schedule, "v", "snr+1")
            opts[key].zero_grad(set_to_none=True)
            loss.backward()
            opts[key].step()
            sync()
            if i == 0:
                first[key] = time.perf_counter() - t0  # includes compilation for compiled models
            if i >= warmup:
                times[key].append(time.perf_counter() - t0)
    params = {k: sum(p.numel() for p in n.parameters()) for k, n in base.items()}
    rate = {k: batch / statistics.median(v) for k, v in times.items()}
    rows = [
        {"device": dev.type if dev.type != "cuda" else torch.cuda.get_device_name(dev), "library": lib,
         "compile": comp, "precision": "bf16" if bf16 else "fp32", "batch": batch,
         "threads": torch.get_num_threads(), "images_per_s": round(r, 2), "first_step_s": round(first[(lib, comp)], 2)}
        for (lib, comp), r in rate.items()
    ]  # fmt: skip
    return {
        "throughput_images_per_s": {lib: r for (lib, comp), r in rate.items() if not comp},
        "throughput_ratio": rate[("difflab", False)] / rate[("diffusers", False)],
        "throughput": rows,
        "throughput_setup": {
            "batch": batch,
            "input": [1, 28, 28],
            "timed_steps": steps,
            "params": params,
            "forward_gmac_per_image": gmac,
            "difflab_config": DIFFLAB_CONFIG,
            "diffusers_config": {k: list(v) if isinstance(v, tuple) else v for k, v in DIFFUSERS_CONFIG.items()},
        },
    }


def bench_demo() -> dict:
    t0 = time.perf_counter()
    subprocess.run(["make", "demo"], cwd=ROOT, check=True)
    seconds = time.perf_counter() - t0
    ev = json.loads((ROOT / "outputs" / "digits" / "eval.json").read_text())
    keep = ("fd", "fd_floor", "precision", "recall", "n_samples")
    return {"demo_seconds": seconds, "digits": {k: ev.get(k) for k in keep} | {"fd_ratio": ev["fd"] / ev["fd_floor"]}}


def bench_fashion(run: Path, guidance: float) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    if summary.get("status") != "done":
        raise SystemExit(f"{run}: training status is {summary.get('status')!r}, not 'done'")
    exe = Path(sys.executable).with_name("difflab")
    cmd = [str(exe), "eval", str(run), "--n", "1000", "--guidance", str(guidance), "--json"]
    ev = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout)
    keep = ("fd", "fd_floor", "precision", "recall", "class_accuracy", "n_samples")
    out = {k: ev.get(k) for k in keep}
    out |= {"train_minutes": summary["seconds"] / 60, "steps": summary["step"], "guidance": guidance}
    out["eval_command"] = " ".join(["difflab", *cmd[1:]])
    return {"fashion_mnist_cond": out}


BUSY = [sys.executable, "-c", "while True: pass"]  # one busy single-threaded process at normal priority


def _train_rate(threads: int, seconds: float, out: Path) -> dict:
    """Steps/s of `difflab train configs/digits.yaml` (make demo's training) over ``seconds`` (the median
    10-step window after the first log line: start-up excluded), and the thread counts it used."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "difflab", "train", str(ROOT / "configs/digits.yaml"), "--out", str(out),
           "--no-progress", "--time-limit", str(seconds), f"train.threads={threads}", "train.sample_every=0",
           "train.ckpt_every=0", "train.log_every=10"]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    pairs = itertools.pairwise(rows)
    windows = [(b["step"] - a["step"]) / max(b["elapsed_s"] - a["elapsed_s"], 1e-9) for a, b in pairs]
    if not windows:
        raise SystemExit(f"{out}: fewer than two log lines in {seconds} s; give more --seconds")
    rate = statistics.median(windows)  # per 10-step window, the first (start-up) excluded
    used = sorted({r.get("threads") for r in rows if r.get("threads") is not None})
    return {"steps_per_s": round(rate, 2), "threads_used": used}


def bench_shared(seconds: float, rounds: int) -> dict:
    """make demo's training alone and beside one busy process, with 2 fixed threads, 1 fixed thread and
    difflab's default (0: the cores other processes leave free, re-measured as the load changes); policies
    interleaved, median over ``rounds``."""
    import os
    import tempfile

    policies = {"2 threads": 2, "1 thread": 1, "auto (default)": 0}
    got: dict[str, dict[str, list]] = {k: {"alone": [], "busy": []} for k in policies}
    used: dict[str, dict[str, list]] = {k: {"alone": [], "busy": []} for k in policies}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for cond in ("alone", "busy"):
                for name, n in policies.items():
                    busy = subprocess.Popen(BUSY) if cond == "busy" else None
                    try:
                        res = _train_rate(n, seconds, Path(tmp) / "run")
                    finally:
                        if busy is not None:
                            busy.kill()
                            busy.wait()
                    got[name][cond].append(res["steps_per_s"])
                    used[name][cond] += res["threads_used"]
                    print(f"round {r + 1}: {name:<15} {cond:<5} {res['steps_per_s']:7.2f} steps/s, threads "
                          f"{res['threads_used']}", flush=True)  # fmt: skip
    rows = [
        {
            "policy": name, "train_threads": n,
            "alone_steps_per_s": statistics.median(got[name]["alone"]),
            "busy_steps_per_s": statistics.median(got[name]["busy"]),
            "threads_alone": sorted(set(used[name]["alone"])), "threads_busy": sorted(set(used[name]["busy"])),
        }
        for name, n in policies.items()
    ]  # fmt: skip
    for row in rows:
        row["busy_over_alone"] = round(row["busy_steps_per_s"] / row["alone_steps_per_s"], 3)
    return {"shared_cpu": {"rows": rows, "seconds": seconds, "rounds": rounds, "cores": os.cpu_count(),
                           "busy": "python -c 'while True: pass' (one core, normal priority)"}}  # fmt: skip


def run_throughput(args: argparse.Namespace, res: dict) -> dict:
    """The throughput part: rows of this device replace its old ones; a GPU run leaves the CPU's headline keys."""
    part = bench_throughput(args.batch, args.steps, warmup=3, compile=args.compile, device=args.device, bf16=args.bf16)
    device = part["throughput"][0]["device"]
    part["throughput"] = [r for r in res.get("throughput", []) if r["device"] != device] + part["throughput"]
    for row in part["throughput"]:
        print(json.dumps(row))
    if args.device != "cpu":
        return {"throughput": part["throughput"]}
    r, params = part["throughput_images_per_s"], part["throughput_setup"]["params"]
    print(
        f"training throughput, batch {args.batch}, 1x28x28, {torch.get_num_threads()} threads: "
        f"difflab {r['difflab']:.1f} img/s ({params['difflab'] / 1e6:.2f}M params), "
        f"diffusers {r['diffusers']:.1f} img/s ({params['diffusers'] / 1e6:.2f}M), ratio {part['throughput_ratio']:.2f}"
    )
    return part


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("part", choices=["throughput", "demo", "fashion", "shared"], help="which measurement to run")
    p.add_argument("--seconds", type=float, default=20.0, help="shared: training seconds per measurement")
    p.add_argument("--rounds", type=int, default=3, help="shared: rounds (median)")
    p.add_argument("--run", type=Path, default=ROOT / "runs" / "fashion-mnist-cfg", help="fashion: the run folder")
    p.add_argument("--guidance", type=float, default=2.0, help="fashion: classifier-free guidance weight w")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=15, help="timed training steps per model")
    p.add_argument("--compile", action="store_true", help="throughput: also torch.compile'd copies of both models")
    p.add_argument("--device", default="cpu", help="throughput: torch device (default: %(default)s)")
    p.add_argument("--bf16", action="store_true", help="throughput: bf16 autocast (for a GPU)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    path = ROOT / "docs" / "results" / "training.json"
    res = json.loads(path.read_text()) if path.exists() else {}
    if args.part == "throughput":
        part = run_throughput(args, res)
    elif args.part == "shared":
        part = bench_shared(args.seconds, args.rounds)
        for row in part["shared_cpu"]["rows"]:
            print(f"{row['policy']:<15} alone {row['alone_steps_per_s']:.2f}, beside a busy process "
                  f"{row['busy_steps_per_s']:.2f} steps/s ({row['busy_over_alone']:.2f}x)")  # fmt: skip
    elif args.part == "demo":
        part = bench_demo()
        d = part["digits"]
        print(f"make demo: {part['demo_seconds']:.0f} s; digits FD {d['fd']:.4f}, floor {d['fd_floor']:.4f}")
    else:
        part = bench_fashion(args.run, args.guidance)
        f = part["fashion_mnist_cond"]
        print(
            f"fashion-mnist-cfg: {f['train_minutes']:.1f} min, {f['steps']} steps; w={args.guidance}: "
            f"class accuracy {f['class_accuracy']:.3f}, FD {f['fd']:.4f} (floor {f['fd_floor']:.4f})"
        )
    stamp = {"command": command_line("benchmarks/training.py"), "machine": machine_info()}
    stamp["date"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    res.update(part)
    part_name = args.part if args.device == "cpu" else f"{args.part}-{args.device}"  # a GPU row keeps its own stamp
    res["parts"] = {**res.get("parts", {}), part_name: stamp}
    res.update(stamp)  # the file's provenance: its latest part
    if not args.no_write:
        print(f"wrote {write_result('training', res).relative_to(ROOT)}")
    return res


if __name__ == "__main__":
    main()
