"""Freed memory kept in the process (difflab.allocator) against glibc's default, on three workloads.

Run from the repository root::

    .venv/bin/python benchmarks/allocator.py [--threads 2 --rounds 3]

The malloc settings are process-wide, so each measurement is its own Python process, started with
``DIFFLAB_MALLOC=default`` (glibc's behaviour) or without it (difflab's), the two alternating round
by round. Each process times a few repetitions of one workload after a warm-up and counts the
minor page faults (fresh pages the kernel zeroed) per repetition:

- ``ardm-call``: a forward of the ARDM codec's U-Net (5.74M parameters) at its coding batch of
  100 Fashion-MNIST-sized images, without gradients;
- ``wavegrad-call``: one call of the shipped WaveGrad network on 5.5 s of audio;
- ``unet-train``: a training step (forward, backward, AdamW) of the U-Net of
  ``benchmarks/training.py throughput`` at batch 64.

Prints the median time and page faults per repetition of each, and the speed-up. It prints only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

WORKER = r"""
import json, resource, sys, time
sys.path[:0] = [sys.argv[3], sys.argv[4]]
from difflab.allocator import keep_freed_memory
mode = "kept" if keep_freed_memory() else "default"
import torch
torch.set_num_threads(int(sys.argv[2]))
torch.manual_seed(0)
name = sys.argv[1]
if name == "ardm-call":
    from difflab.nets import UNet, UNetConfig
    net = UNet(UNetConfig(dims=2, in_channels=2, out_channels=30, channels=64, channel_mult=(1, 2, 2), num_blocks=2,
                          attn_levels=(2,), heads=4, norm_groups=16)).eval()
    x, lam = torch.randn(100, 2, 28, 28), torch.zeros(100)
    def run():
        with torch.no_grad():
            net(x, lam)
elif name == "wavegrad-call":
    import difflab
    net = difflab.load("pretrained:wavegrad").net.eval()
    frames = round(5.5 * 16000 / net.hop)
    mel, z = torch.randn(1, net.n_mels, frames) * 0.5 - 4, torch.randn(1, 1, frames * net.hop)
    def run():
        with torch.no_grad():
            net(z, torch.zeros(1), mel)
else:
    from difflab.diffusion import CosineSchedule, training_loss
    from difflab.nets import UNet, UNetConfig
    from training import DIFFLAB_CONFIG
    net = UNet(UNetConfig(**DIFFLAB_CONFIG))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x, schedule = torch.rand(64, 1, 28, 28) * 2 - 1, CosineSchedule()
    def run():
        loss = training_loss(net, x, schedule, "v", "snr+1")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
run(); run()
times, faults = [], []
for _ in range(int(sys.argv[5])):
    f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    run()
    times.append(time.perf_counter() - t0)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
times.sort(); faults.sort()
print(json.dumps({"mode": mode, "seconds": times[len(times) // 2], "faults": faults[len(faults) // 2]}))
"""

WORKLOADS = ("ardm-call", "wavegrad-call", "unet-train")


def measure(name: str, mode: str, threads: int, repeats: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "DIFFLAB_MALLOC"}
    if mode == "default":
        env["DIFFLAB_MALLOC"] = "default"
    cmd = [sys.executable, "-c", WORKER, name, str(threads), str(ROOT / "src"), str(HERE), str(repeats)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["mode"] != mode:
        raise RuntimeError(f"{name}: asked for malloc {mode}, the process ran with {result['mode']}")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="processes per workload and setting (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions per process (default: %(default)s)")
    p.add_argument("--only", nargs="*", choices=WORKLOADS, help="these workloads only")
    args = p.parse_args()
    print(f"{args.threads} torch thread(s), load average {os.getloadavg()[0]:.2f} at start")
    for name in args.only or WORKLOADS:
        runs: dict[str, list[dict]] = {"default": [], "kept": []}
        for _ in range(args.rounds):
            for mode in runs:
                runs[mode].append(measure(name, mode, args.threads, args.repeats))
        med = {m: statistics.median(r["seconds"] for r in rs) for m, rs in runs.items()}
        flt = {m: statistics.median(r["faults"] for r in rs) for m, rs in runs.items()}
        print(
            f"{name}: default {med['default'] * 1e3:.0f} ms ({flt['default']:.0f} page faults), "
            f"kept {med['kept'] * 1e3:.0f} ms ({flt['kept']:.0f}), speed-up {med['default'] / med['kept']:.2f}x "
            f"(median of {args.rounds} processes x {args.repeats} repetitions)"
        )


if __name__ == "__main__":
    main()
