"""Train and evaluate the Fashion-MNIST ARDMs on one GPU within a wall-time budget (see scripts/gpu/ardm.sh).

Trains, one after the other, an OA-ARDM (most of the time) and Upscale ARDMs with branching 4 and 2
from configs/ardm-fashion-mnist.yaml, each for a fixed share of ARDM_TRAIN_SECONDS: the step count is
set from the speed measured over the first steps (so the cosine learning-rate decay ends on time),
and a time limit stops the run in any case. Each model's EMA weights are exported in bf16 to
$OUT/ardm-fmnist/NAME (< 16 MB). Then, while ARDM_TOTAL_SECONDS allow, each model is evaluated:
test NLL in bits per dimension (mean and standard error over 4 orders per image), per-step losses
(saved next to the weights, for DP plans) and the NLL under parallel budgets (DP plan vs uniform),
written to $OUT/ardm-fmnist/NAME/eval.json.

    PYTHONPATH=src python3 scripts/gpu/ardm_run.py        # $OUT set, data in data-cache/fashion-mnist
    ARDM_SMOKE=1 OUT=/tmp/o PYTHONPATH=src python3 scripts/gpu/ardm_run.py   # tiny CPU check
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

import torch

T0 = time.perf_counter()
ROOT = Path(__file__).resolve().parents[2]
SMOKE = os.environ.get("ARDM_SMOKE", os.environ.get("DRY", "0")) == "1"
OUT = Path(os.environ.get("OUT", "outputs/gpu")) / "ardm-fmnist"
DATA = os.environ.get("ARDM_DATA", str(ROOT / "data-cache" / "fashion-mnist"))
TRAIN_SECONDS = float(os.environ.get("ARDM_TRAIN_SECONDS", "60" if SMOKE else "300"))
TOTAL_SECONDS = float(os.environ.get("ARDM_TOTAL_SECONDS", "200" if SMOKE else "440"))
RUNS = Path(os.environ.get("ARDM_RUNS", "/tmp/ardm-runs"))
# name, branching, share of the training time, U-Net channels, ship the weights (the OA-ARDM codes images;
# the Upscale ARDMs give the parallel-generation table only, so their weights stay behind: 16 MB limit)
MODELS = [("oa", 0, 0.6, 64, True), ("up4", 4, 0.2, 32, False), ("up2", 2, 0.2, 32, False)]
# ARDM_MODELS=oa trains only those models, their shares scaled up to fill ARDM_TRAIN_SECONDS
ONLY = [m for m in os.environ.get("ARDM_MODELS", "").split(",") if m]
if ONLY:
    MODELS = [m for m in MODELS if m[0] in ONLY]
    MODELS = [(n, b, share / sum(m[2] for m in MODELS), c, ship) for n, b, share, c, ship in MODELS]
BUDGETS = [8, 16, 32, 49, 98, 196, 392, 784, 1568, 3136]


def log(msg: str) -> None:
    print(f"[ardm {time.perf_counter() - T0:6.1f} s] {msg}", flush=True)


def overrides(branching: int, channels: int) -> list[str]:
    o = [f"model.branching={branching}", "train.progress=false", "train.ckpt_every=0"]
    o.append(f"model.unet.channels={channels}")
    if SMOKE:
        o += ["train.device=cpu", "train.precision=fp32", "data.batch_size=16", "train.threads=1"]
        if not (branching == 0 and os.environ.get("ARDM_INIT")):  # a tiny network, unless weights must fit it
            o += ["model.unet.channels=16", "model.unet.attn_levels=[]", "model.unet.num_blocks=1", "model.mixtures=3"]
    else:
        o += ["train.device=cuda", "train.precision=bf16", "data.batch_size=256", "train.lr=8e-4"]
    # fine-tuning from ARDM_INIT wants a lower peak and a decay to near zero: ARDM_LR, ARDM_FINAL_LR_RATIO,
    # ARDM_WARMUP override the recipe's (e.g. 2.5e-4, 0.02, 100)
    for env, key in (("ARDM_LR", "lr"), ("ARDM_FINAL_LR_RATIO", "final_lr_ratio"), ("ARDM_WARMUP", "warmup")):
        if os.environ.get(env):
            o.append(f"train.{key}={os.environ[env]}")
    if branching == 0 and os.environ.get("ARDM_INIT"):  # continue the OA-ARDM from saved weights
        o.append(f"train.init={os.environ['ARDM_INIT']}")
    return o


def train_one(name: str, branching: int, seconds: float, channels: int, ship: bool) -> Path:
    from difflab.methods.ardm.train import ARDMMethod, export_ardm
    from difflab.train import Trainer
    from difflab.train.config import load_run_config

    cfg = load_run_config(ROOT / "configs" / "ardm-fashion-mnist.yaml", overrides(branching, channels))
    run_dir = RUNS / name
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg.out_dir, cfg.name = str(run_dir.parent), run_dir.name
    method = ARDMMethod(cfg, skip_grids=True)  # no sample grid at the calibration pauses
    trainer = Trainer(cfg, run_dir, method=method, time_limit=seconds)
    start = time.perf_counter()
    warm = 5 if SMOKE else 40
    trainer.fit(until=warm)
    t_warm = time.perf_counter() - start
    trainer.fit(until=2 * warm)  # the first steps include compilation and allocation: time the next ones
    rate = warm / max(time.perf_counter() - start - t_warm, 1e-6)
    left = seconds - (time.perf_counter() - start)
    trainer.cfg.train.steps = max(2 * warm + 1, 2 * warm + int(rate * left * 0.97))
    log(f"{name}: {rate:.1f} steps/s -> {trainer.cfg.train.steps} steps ({trainer.net.summary()})")
    method.skip_grids = SMOKE
    result = trainer.fit()
    trainer.close()
    log(f"{name}: stopped at step {result.step} ({result.status}), loss {result.loss}")
    out = OUT / name
    if ship:
        export_ardm(run_dir, out, dtype="bf16")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(run_dir / "metrics.jsonl", out / "metrics.jsonl")
    (out / "train.json").write_text(json.dumps({"steps": result.step, "seconds": round(result.seconds, 1),
                                                "steps_per_s": round(rate, 2), "loss_bpd": result.loss}))  # fmt: skip
    return run_dir


def evaluate_one(name: str, run_dir: Path) -> None:
    from difflab.methods.ardm.train import STEPS_FILE, evaluate_ardm

    device = "cpu" if SMOKE else "cuda"
    shipped = (OUT / name / "format.json").is_file()  # evaluate the bf16 weights the codec will use
    res = evaluate_ardm(
        OUT / name if shipped else run_dir, orders=4, images=300 if SMOKE else None, step_images=100 if SMOKE else 2000,
        grid=8 if SMOKE else 64, budgets=[8, 49] if SMOKE else BUDGETS, parallel_images=100 if SMOKE else 1000,
        parallel_orders=1 if SMOKE else 4, device=device, batch_size=64 if SMOKE else 1000,
    )  # fmt: skip
    res["model"] = name
    (OUT / name / "eval.json").write_text(json.dumps(res, indent=1))
    if not shipped:
        shutil.copy(run_dir / "checkpoint" / STEPS_FILE, OUT / name / STEPS_FILE)
    log(f"{name}: test NLL {res['nll_bpd']:.4f} +- {res['nll_bpd_se']:.4f} bpd; parallel {res.get('parallel')}")


def codec_benchmark() -> None:
    """If constriction is installed here and time is left: the codec benchmark with all D steps on the GPU."""
    import importlib.util
    import subprocess

    left = TOTAL_SECONDS + 40 - (time.perf_counter() - T0)
    if importlib.util.find_spec("constriction") is None or not (OUT / "oa" / "format.json").is_file() or left < 60:
        log(f"no codec benchmark here (constriction missing, no model, or {left:.0f} s left)")
        return
    evals = [str(p) for p in sorted(OUT.glob("*/eval.json"))]
    cmd = [sys.executable, str(ROOT / "benchmarks" / "ardm.py"), "--model", str(OUT / "oa"), "--device",
           "cpu" if SMOKE else "cuda", "--images", "20" if SMOKE else "1000", "--group", "1000",
           "--json", str(OUT / "ardm-codec.json"), "--parallel-from", *evals]  # fmt: skip
    try:
        subprocess.run(cmd, timeout=left, check=False)
    except subprocess.TimeoutExpired:
        log("codec benchmark: out of time")


def main() -> int:
    os.environ["DIFFLAB_FASHION_MNIST"] = DATA  # not in the saved config: the CPU that runs the codec has its own
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 evaluation as on the CPU that runs the codec
    torch.backends.cudnn.allow_tf32 = False
    OUT.mkdir(parents=True, exist_ok=True)
    log(f"torch {torch.__version__}, cuda {torch.cuda.is_available()}, data {DATA}, out {OUT}")
    runs = {}
    for name, branching, share, channels, ship in MODELS:
        try:
            runs[name] = train_one(name, branching, TRAIN_SECONDS * share, channels, ship)
        except Exception:
            traceback.print_exc()
            log(f"{name}: training failed")
            continue
        if time.perf_counter() - T0 > TOTAL_SECONDS:
            log(f"time is up: no evaluation of {name}")
            continue
        try:
            evaluate_one(name, runs[name])
        except Exception:
            traceback.print_exc()
            log(f"{name}: evaluation failed")
    codec_benchmark()
    log("done: " + ", ".join(str(p) for p in sorted(OUT.rglob("*")) if p.is_file()))
    return 0 if runs else 1


if __name__ == "__main__":
    sys.exit(main())
