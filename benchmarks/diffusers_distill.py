"""diffusers interoperability: a diffusers ``UNet2DModel`` trained the diffusers way, distilled to 4
steps by ``difflab distill``, scored by FD at 4 steps (docs/diffusion.md, "diffusers UNets").

1. Teacher: a ``UNet2DModel`` (0.65M parameters) trained on the 8x8 digits with a plain loop in
   diffusers' style (``DDPMScheduler.add_noise``, integer timesteps, MSE on ``get_velocity``; cosine
   betas ``squaredcos_cap_v2``, v-prediction), EMA weights saved as a diffusers pipeline folder
   (``unet/``, ``scheduler/``, ``model_index.json``) with a ``difflab.yaml`` naming the data set.
2. ``difflab distill TEACHER --from-steps F --to-steps 4``: the student is a copy of the UNet2DModel.
3. FD (``difflab.eval.evaluate``, against the digits training split; floor: real test images) of
   ``--n`` samples from one shared noise draw: the teacher under diffusers' own ``DDIMScheduler``
   (trailing spacing) and under difflab's ``ddim`` and ``dpmpp_2m`` at 4 steps and ``ddim`` at F
   steps; the student under difflab's ``ddim`` and, saved back as a diffusers folder, under
   diffusers' ``DDIMScheduler`` (the same sampler on the same grid: the two should agree).

    .venv/bin/python benchmarks/diffusers_distill.py            # ~15-20 min on one core
    .venv/bin/python benchmarks/diffusers_distill.py --quick    # ~2 min smoke run (not written to docs/)
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, command_line, machine_info, write_result  # noqa: E402

FULL = {"train_steps": 2000, "from_steps": 64, "updates": 300, "n": 1000}
QUICK = {"train_steps": 150, "from_steps": 8, "updates": 30, "n": 200}
UNET = {
    "sample_size": 8, "in_channels": 1, "out_channels": 1, "block_out_channels": [32, 64], "layers_per_block": 1,
    "norm_num_groups": 8, "down_block_types": ["DownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D"],
}  # fmt: skip
SCHEDULER = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction"}


def train_teacher(folder: Path, steps: int, seed: int, batch: int = 128, lr: float = 2e-3) -> float:
    """Train the UNet2DModel the way diffusers' examples do and save the EMA weights; return seconds."""
    import diffusers

    from difflab.data import get_dataset

    data = get_dataset("digits", "train")
    x_all = torch.stack([data[i][0] for i in range(len(data))])
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    unet = diffusers.UNet2DModel(**UNET)
    ema = copy.deepcopy(unet).requires_grad_(False)
    sched = diffusers.DDPMScheduler(**SCHEDULER, clip_sample=False)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    warmup = min(100, steps // 10)
    t0 = time.perf_counter()
    for step in range(steps):  # linear warm-up, cosine decay to 5%; EMA 0.995
        frac = (step - warmup) / max(1, steps - warmup)
        scale = (step + 1) / warmup if step < warmup else 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac))
        for g in opt.param_groups:
            g["lr"] = lr * scale
        x = x_all[torch.randint(0, len(x_all), (batch,), generator=gen)]
        noise = torch.randn(x.shape, generator=gen)
        k = torch.randint(0, SCHEDULER["num_train_timesteps"], (batch,), generator=gen)
        v = unet(sched.add_noise(x, noise, k), k).sample
        loss = torch.nn.functional.mse_loss(v, sched.get_velocity(x, noise, k))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema.parameters(), unet.parameters(), strict=True):
                e.lerp_(p, 1 - min(0.995, (1 + step) / (10 + step)))
        if step % 250 == 0 or step == steps - 1:
            print(f"teacher step {step + 1}/{steps}: loss {loss.item():.4f}", flush=True)
    seconds = time.perf_counter() - t0
    ema.save_pretrained(folder / "unet")
    sched.save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline"}))
    (folder / "difflab.yaml").write_text("data:\n  name: digits\n  batch_size: 128\n")
    return seconds


@torch.no_grad()
def diffusers_ddim(folder: Path, z: torch.Tensor, steps: int) -> torch.Tensor:
    """diffusers' own ``DDIMScheduler`` (trailing spacing, eta 0) on a diffusers folder's UNet."""
    import diffusers

    unet = diffusers.UNet2DModel.from_pretrained(folder / "unet", low_cpu_mem_usage=False).eval()
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    sched = diffusers.DDIMScheduler.from_config(config, timestep_spacing="trailing", set_alpha_to_one=True)
    out = []
    for part in z.split(500):
        sched.set_timesteps(steps)
        for k in sched.timesteps:
            part = sched.step(unet(part, k).sample, k, part, eta=0.0).prev_sample
        out.append(part)
    return torch.cat(out)


def row(model: str, library: str, sampler: str, steps: int, draw, n: int) -> dict:
    """Sample (timed) and score one row."""
    from difflab.eval import evaluate

    t0 = time.perf_counter()
    x = draw()
    seconds = time.perf_counter() - t0
    r = evaluate(x, "digits")
    out = {"model": model, "library": library, "sampler": sampler, "steps": steps, "fd": r["fd"]}
    out.update(fd_floor=r["fd_floor"], precision=r["precision"], recall=r["recall"], seconds=round(seconds, 2), n=n)
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke-test settings (~2 min); result not written to docs/")
    ap.add_argument("--out", default=None, help="work folder (default: runs/diffusers-distill[-quick])")
    ap.add_argument("--write", default=None, help="result JSON (default: docs/results/diffusers_distill.json)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    s = QUICK if args.quick else FULL
    out = Path(args.out or ROOT / "runs" / ("diffusers-distill-quick" if args.quick else "diffusers-distill")).resolve()
    teacher, students = out / "teacher", out / "distilled"
    t_start = time.perf_counter()
    if not (teacher / "train.json").is_file():  # written last: a teacher folder without it is unfinished
        seconds = train_teacher(teacher, s["train_steps"], args.seed)
        (teacher / "train.json").write_text(json.dumps({"steps": s["train_steps"], "seconds": round(seconds, 1)}))
    train_s = json.loads((teacher / "train.json").read_text())["seconds"]
    from difflab.cli import main as difflab_main
    from difflab.methods import load
    from difflab.methods.distill import stage_dir
    from difflab.nets.diffusers_unet import save_diffusers

    def distill_cmd(teacher_s: str, students_s: str) -> list[str]:
        cmd = ["distill", teacher_s, "--from-steps", str(s["from_steps"]), "--to-steps", "4"]
        cmd += ["--updates", str(s["updates"]), "--out", students_s, "--device", "cpu", "--no-progress", "--resume"]
        return cmd + [f"threads={args.threads}", "log_every=50", "sample_n=16"]

    rel = lambda p: str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)  # noqa: E731
    t0 = time.perf_counter()
    if difflab_main(distill_cmd(str(teacher), str(students))) != 0:
        raise SystemExit("difflab distill failed")
    distill_s = round(time.perf_counter() - t0, 1)
    t_stage, s_stage = load(teacher), load(stage_dir(students, 4))
    back = save_diffusers(s_stage, out / "student-diffusers")  # the student as a diffusers folder again
    n = s["n"]
    z = torch.randn((n, 1, 8, 8), generator=torch.Generator().manual_seed(args.seed + 1))

    def ours(stage, sampler, steps):
        return lambda: stage.sample(n, sampler=sampler, steps=steps, noise=z)

    with torch.no_grad():
        rows = [
            row("teacher", "diffusers", "DDIMScheduler", 4, lambda: diffusers_ddim(teacher, z, 4), n),
            row("teacher", "difflab", "ddim", 4, ours(t_stage, "ddim", 4), n),
            row("teacher", "difflab", "dpmpp_2m", 4, ours(t_stage, "dpmpp_2m", 4), n),
            row("teacher", "difflab", "ddim", s["from_steps"], ours(t_stage, "ddim", s["from_steps"]), n),
            row("student", "difflab", "ddim", 4, ours(s_stage, "ddim", 4), n),
            row("student", "diffusers", "DDIMScheduler", 4, lambda: diffusers_ddim(back, z, 4), n),
        ]
    result = {
        "command": command_line("benchmarks/diffusers_distill.py"),
        "distill_command": "difflab " + " ".join(distill_cmd(rel(teacher), rel(students))),
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
        "quick": args.quick,
        "settings": {**s, "unet": UNET, "scheduler": SCHEDULER},
        "parameters": sum(p.numel() for p in t_stage.net.parameters()),
        "train_seconds": train_s,
        "distill_seconds": distill_s,
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "rows": rows,
    }
    path = Path(args.write) if args.write else out / "result.json" if args.quick else None
    if path is None:
        path = write_result("diffusers_distill", result)  # and docs/RESULTS.md
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


def render(data: dict) -> str:
    """The section of docs/RESULTS.md (benchmarks/report.py)."""
    from report import provenance, table

    s = data.get("settings", {})
    sched = s.get("scheduler", {})
    rows = data.get("rows", [])
    floor = next((r["fd_floor"] for r in rows if r.get("fd_floor") is not None), None)
    head = [
        "## diffusers interop: a UNet2DModel distilled by `difflab distill`",
        "",
        provenance(data),
        "",
        f"A diffusers `UNet2DModel` ({data.get('parameters', 0):,} parameters; `{sched.get('beta_schedule')}` betas,"
        f" `{sched.get('prediction_type')}`) trained on the 8x8 digits by a plain diffusers-style"
        f" loop ({s.get('train_steps')} steps, {data.get('train_seconds')} s), then `{data.get('distill_command')}`"
        f" ({data.get('distill_seconds')} s). FD of {s.get('n')} samples from one shared noise draw against the"
        f" training split; floor (real test images) {floor if floor is None else round(floor, 3)}."
        + (" **Quick mode: smoke-test settings, not the benchmark.**" if data.get("quick") else ""),
        "",
    ]
    cells = [[r["model"], f"{r['library']} {r['sampler']}", r["steps"]] for r in rows]
    cells = [c + [r["fd"], r["precision"], r["recall"], r["seconds"]] for c, r in zip(cells, rows, strict=True)]
    body = table(["model", "sampler", "steps", "FD", "precision", "recall", "seconds"], cells)
    return "\n".join([*head, body, ""])


if __name__ == "__main__":
    main()
