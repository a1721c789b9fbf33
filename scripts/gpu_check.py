"""``make gpu-check``: the CUDA path end to end on one GPU, with throughput.

Trains the digits recipe for a few hundred steps with CUDA and bf16 autocast, samples 1,000 images
(DDIM, 50 steps, bf16), scores them (FD with its floor), and prints one JSON object with training
images/s, sampling images/s and the FD. Runs without installing the project
(``PYTHONPATH=src python3 scripts/gpu_check.py``), as on a lent GPU machine that has torch.

    make gpu-check                      # writes outputs/gpu-check/gpu_check.json
    PYTHONPATH=src python3 scripts/gpu_check.py --steps 300 --out $OUT
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=400, help="training steps (default: %(default)s)")
    ap.add_argument("--n", type=int, default=1000, help="samples to draw and score (default: %(default)s)")
    ap.add_argument("--out", default=str(ROOT / "outputs" / "gpu-check"), help="output folder")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device visible to torch; nothing to check", file=sys.stderr)
        return 2
    from difflab.eval import evaluate
    from difflab.train import generate, load_run_config, load_stage, train

    out = Path(args.out)
    run = out / "digits-cuda"
    cfg = load_run_config(
        ROOT / "configs" / "digits.yaml",
        [f"train.steps={args.steps}", "train.device=cuda", "train.precision=bf16", "train.sample_every=0",
         "train.ckpt_every=0", "train.progress=false", f"train.log_every={max(args.steps // 4, 1)}"],
    )  # fmt: skip
    if run.exists():
        import shutil

        shutil.rmtree(run)
    t0 = time.perf_counter()
    result = train(cfg, run)
    train_s = time.perf_counter() - t0
    logs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rates = [r["images_per_s"] for r in logs if "images_per_s" in r][1:]  # the first window holds start-up
    stage = load_stage(run, device="cuda")
    generate(stage.net, stage.config, stage.image_shape, 64, steps=5, device="cuda", precision="bf16")  # warm up
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    x, _ = generate(stage.net, stage.config, stage.image_shape, args.n, steps=50, device="cuda", precision="bf16")
    torch.cuda.synchronize()
    sample_s = time.perf_counter() - t1
    ev = evaluate(x, "digits")
    res = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "train_steps": result.step,
        "train_seconds": round(train_s, 2),
        "train_images_per_s": round(sorted(rates)[len(rates) // 2], 1) if rates else None,
        "final_loss": result.loss,
        "sample_images_per_s": round(args.n / sample_s, 1),
        "sample_setting": "ddim 50 steps, bf16",
        "fd": round(ev["fd"], 4),
        "fd_floor": round(ev["fd_floor"], 4),
        "max_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
