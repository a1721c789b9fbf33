"""Cascade vs a single model, and noise-conditioning augmentation, on class-conditional Fashion-MNIST.

Two steps (each prints what it does; the second writes docs/results/cascade.json)::

    python benchmarks/cascade.py train [--base-minutes 15 --sr-minutes 25]
    python benchmarks/cascade.py eval  [--n 500 --seeds 0 1 2 --levels 0 0.1 0.2 0.3 0.5]
    python benchmarks/cascade.py eval --variant NAME   # another super-resolution stage, RUNS/NAME

``train`` runs ``difflab train`` four times under ``RUNS`` (default runs/cascade): the 14x14 base
stage (configs/cascade-fmnist-base.yaml) and then the 14 -> 28 super-resolution stage with
augmentation (configs/cascade-fmnist-sr.yaml, training level uniform in [0, 0.5] of t) in one process
stream, while a single 28x28 model (configs/fashion-mnist-cfg.yaml, the same width, no learning-rate
decay) trains in a second stream for the sum of the two times: equal training time, side by side on
the same machine, one thread each. The super-resolution stage without augmentation then trains for
exactly as many updates as the one with it.

``eval`` samples the base stage once per seed, feeds those samples to both super-resolution stages at
every sampling level (a fraction of the noise schedule's time t: the low-resolution input is
``alpha(s) x + sigma(s) eps`` and the network is told ``lam(s)``), and scores the 28x28 results with
``difflab.eval.evaluate`` (FD in the shipped feature net, class accuracy); the single model is sampled
with the same seeds. The cascade row uses the augmented stage at the sampling level with the lowest
mean FD. Every stage samples with DDIM, ``--steps`` steps, guidance w = 2 (the recipes' setting).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, command_line, machine_info, write_result  # noqa: E402

DIFFLAB = [sys.executable, "-m", "difflab"]


def _train(config: str, out: Path, *args: str) -> subprocess.Popen:
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [*DIFFLAB, "train", str(ROOT / config), "--out", str(out), "--no-progress", "train.threads=1", *args]
    print("$", " ".join(cmd[2:]), flush=True)
    with open(out.with_suffix(".log"), "w") as log:  # the child keeps its own copy of the handle
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def train(args: argparse.Namespace) -> None:
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    (runs / "train_command.txt").write_text(command_line("benchmarks/cascade.py") + "\n")
    base_s, sr_s = args.base_minutes * 60, args.sr_minutes * 60
    single = _train(
        "configs/fashion-mnist-cfg.yaml", runs / "single", "--time-limit", str(base_s + sr_s),
        "train.decay=none", "train.steps=1000000", "train.sample_every=0", "sample.n=20",
    )  # fmt: skip
    for run, config, seconds in (
        (runs / "base", "configs/cascade-fmnist-base.yaml", base_s),
        (runs / "sr-aug", "configs/cascade-fmnist-sr.yaml", sr_s),
    ):
        if _train(config, run, "--time-limit", str(seconds), "train.steps=1000000").wait() != 0:
            raise SystemExit(f"training {run} failed: see {run.with_suffix('.log')}")
    steps = _summary(runs / "sr-aug")["step"]
    noaug = _train(
        "configs/cascade-fmnist-sr.yaml", runs / "sr-noaug", "diffusion.lowres_aug=0", f"train.steps={steps}"
    )
    if single.wait() != 0 or noaug.wait() != 0:
        raise SystemExit(f"training failed: see the logs in {runs}")
    for name in ("base", "sr-aug", "sr-noaug", "single"):
        s = _summary(runs / name)
        print(f"{name:>9}: {s['step']} updates in {s['seconds']:.0f} s ({s['status']})")


def evaluate(args: argparse.Namespace) -> None:
    import torch

    from difflab.eval import evaluate as score
    from difflab.train import load_stage

    torch.set_num_threads(args.threads)
    runs = Path(args.runs)
    base, single = load_stage(runs / "base"), load_stage(runs / "single")
    srs = {True: load_stage(runs / "sr-aug"), False: load_stage(runs / "sr-noaug")}
    if args.variant:  # another super-resolution stage alone, e.g. trained with diffusion.lowres_aug=0.2
        srs = {args.variant: load_stage(runs / args.variant)}
    labels = torch.arange(args.n) % 10
    opts = {"steps": args.steps, "labels": labels, "sampler": "ddim"}
    sr_rows, single_rows, base_seconds, sr_seconds = [], [], [], []
    for seed in args.seeds:
        t0 = time.perf_counter()
        low = base.sample(args.n, seed=seed, **{**opts, "steps": args.base_steps or args.steps}).clamp(-1, 1)
        base_seconds.append(time.perf_counter() - t0)
        for train_aug, stage in srs.items():
            for level in args.levels:
                t0 = time.perf_counter()
                x = stage.sample(args.n, seed=1000 + seed, cond={"lowres": low}, aug=level, **opts)
                sr_seconds.append(time.perf_counter() - t0)
                s = score(x, "fashion-mnist", labels=labels)
                row = {"train_aug": train_aug, "sample_aug": level, "seed": seed, "fd": round(s["fd"], 4)}
                sr_rows.append({**row, "class_accuracy": round(s["class_accuracy"], 4), "fd_floor": s["fd_floor"]})
                print(json.dumps(sr_rows[-1]), flush=True)
        if args.variant:
            continue
        t0 = time.perf_counter()
        x = single.sample(args.n, seed=seed, **opts)
        secs = time.perf_counter() - t0
        s = score(x, "fashion-mnist", labels=labels)
        single_rows.append({"fd": s["fd"], "class_accuracy": s["class_accuracy"], "seconds": secs})
        print(json.dumps({"single": single_rows[-1], "seed": seed}), flush=True)

    def mean_fd(train_aug: bool | str, level: float) -> float:
        return statistics.mean(r["fd"] for r in sr_rows if r["train_aug"] == train_aug and r["sample_aug"] == level)

    if args.variant:  # kept beside the main comparison in the result file, under "variants"
        d = srs[args.variant].config.diffusion
        trained = {
            "lowres_aug": d.lowres_aug, "lowres_aug_clean": d.lowres_aug_clean,
            "updates": _summary(runs / args.variant)["step"], "base_steps": args.base_steps or args.steps,
        }  # fmt: skip
        rows = [{"variant": args.variant, **trained, **r} for r in sr_rows]
        for r in rows:
            del r["train_aug"], r["fd_floor"]
        path = ROOT / "docs" / "results" / "cascade.json"
        result = json.loads(path.read_text())
        key = (args.variant, trained["base_steps"])
        kept = [r for r in result.get("variants", []) if (r["variant"], r.get("base_steps", args.steps)) != key]
        result["variants"] = kept + rows
        result.setdefault("variant_commands", {})[f"{key[0]}, base {key[1]} steps"] = command_line(
            "benchmarks/cascade.py"
        )
        path.write_text(json.dumps(result, indent=2) + "\n")
        for level in args.levels:
            fds = [r["fd"] for r in sr_rows if r["sample_aug"] == level]
            sd = statistics.stdev(fds) if len(fds) > 1 else 0.0
            print(f"{args.variant} at aug {level}: FD {mean_fd(args.variant, level):.3f} +- {sd:.3f}")
        print(f"wrote the rows of {args.variant} to {path}")
        return

    best = min(args.levels, key=lambda lv: mean_fd(True, lv))
    chosen = [r for r in sr_rows if r["train_aug"] and r["sample_aug"] == best]
    summaries = {name: _summary(runs / name) for name in ("base", "sr-aug", "single")}
    cascade_seconds = summaries["base"]["seconds"] + summaries["sr-aug"]["seconds"]
    per_image = statistics.median(base_seconds) / args.n + statistics.median(sr_seconds) / args.n
    rows = [
        {
            "model": "cascade", "train_seconds": round(cascade_seconds, 1),
            "updates": [summaries["base"]["step"], summaries["sr-aug"]["step"]],
            "fd": round(statistics.mean(r["fd"] for r in chosen), 4),
            "fd_sd": round(statistics.stdev(r["fd"] for r in chosen), 4) if len(chosen) > 1 else 0.0,
            "class_accuracy": round(statistics.mean(r["class_accuracy"] for r in chosen), 4),
            "seconds_per_image": round(per_image, 5), "sample_aug": best,
        },
        {
            "model": "single", "train_seconds": round(summaries["single"]["seconds"], 1),
            "updates": [summaries["single"]["step"]],
            "fd": round(statistics.mean(r["fd"] for r in single_rows), 4),
            "fd_sd": round(statistics.stdev(r["fd"] for r in single_rows), 4) if len(single_rows) > 1 else 0.0,
            "class_accuracy": round(statistics.mean(r["class_accuracy"] for r in single_rows), 4),
            "seconds_per_image": round(statistics.median(r["seconds"] for r in single_rows) / args.n, 5),
        },
    ]  # fmt: skip
    result = {
        "command": command_line("benchmarks/cascade.py"),
        "train_command": (runs / "train_command.txt").read_text().strip()
        if (runs / "train_command.txt").is_file()
        else "unknown",
        "machine": machine_info(),
        "date": date.today().isoformat(),
        "samples_per_score": args.n,
        "sampler": f"ddim, {args.steps} steps per stage, guidance 2",
        "sample_aug_unit": "fraction of the noise schedule's time t (cosine schedule)",
        "train_aug": "uniform in [0, 0.5] of t (configs/cascade-fmnist-sr.yaml diffusion.lowres_aug)",
        "rows": rows,
        "sr_aug": sr_rows,
    }
    print(f"wrote {write_result('cascade', result)}")
    for r in rows:
        print(json.dumps(r))


def render_cascade(data: dict) -> str:
    """The RESULTS.md section: both rows, then FD by training and sampling augmentation (mean, sd over seeds)."""
    from report import table

    out = [
        f"Trained by `{data.get('train_command', 'unknown')}`"
        + (f" ({data['train_note']})." if "train_note" in data else "."),
        "",
        f"Fashion-MNIST, class-conditional, {data['samples_per_score']} samples per score, {data['sampler']}; "
        f"sampling augmentation level as a {data['sample_aug_unit']}; training augmentation {data['train_aug']}.",
        "",
        table(
            ["model", "train s", "updates", "FD (mean, sd over seeds)", "class accuracy", "s / image"],
            [
                [
                    r["model"] + (f" (sample aug {r['sample_aug']})" if "sample_aug" in r else ""),
                    r["train_seconds"],
                    " + ".join(map(str, r["updates"])),
                    f"{r['fd']:.3f} +- {r['fd_sd']:.3f}",
                    r["class_accuracy"],
                    r["seconds_per_image"],
                ]
                for r in data["rows"]
            ],
        ),  # fmt: skip
        "",
        "Super-resolution stage fed with the base stage's samples:",
        "",
    ]
    levels = sorted({r["sample_aug"] for r in data["sr_aug"]})
    body = []
    for train_aug in (True, False):
        row: list[object] = ["with augmentation" if train_aug else "without"]
        for level in levels:
            fds = [r["fd"] for r in data["sr_aug"] if r["train_aug"] == train_aug and r["sample_aug"] == level]
            sd = statistics.stdev(fds) if len(fds) > 1 else 0.0
            row.append(f"{statistics.mean(fds):.3f} +- {sd:.3f}")
        body.append(row)
    out.append(table(["trained", *[f"FD at aug {lv}" for lv in levels]], body))
    variants = data.get("variants", [])
    if variants:
        out += [
            "",
            "Other super-resolution stages and base samplers (training augmentation level uniform in "
            "[0, lowres_aug] of t, a fraction lowres_aug_clean of each batch left clean; `sr-aug` and "
            "`sr-noaug` are the two stages above, here fed with the base stage sampled in fewer DDIM steps):",
            "",
        ]
        body = []
        for name, steps in dict.fromkeys((r["variant"], r.get("base_steps", 25)) for r in variants):
            rows = [r for r in variants if r["variant"] == name and r.get("base_steps", 25) == steps]
            cells: list[object] = [f"`{name}`", steps, rows[0]["lowres_aug"], rows[0]["lowres_aug_clean"]]
            cells += [rows[0]["updates"], len({r["seed"] for r in rows})]
            for level in levels:
                fds = [r["fd"] for r in rows if r["sample_aug"] == level]
                sd = statistics.stdev(fds) if len(fds) > 1 else 0.0
                cells.append(f"{statistics.mean(fds):.3f} +- {sd:.3f}" if fds else "-")
            body.append(cells)
        header = ["run", "base steps", "lowres_aug", "clean share", "updates", "seeds"]
        header += [f"FD at aug {lv}" for lv in levels]
        out.append(table(header, body))
        trained = data.get("variant_train_commands", {})
        out += ["", "Trained by " + "; ".join(f"`{c}`" for c in trained.values())] if trained else []
        out += ["", "Scored by " + "; ".join(f"`{c}`" for c in data.get("variant_commands", {}).values())]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("train", "eval"))
    p.add_argument("--runs", default="runs/cascade", help="folder of the four runs (default: %(default)s)")
    p.add_argument("--base-minutes", type=float, default=15.0)
    p.add_argument("--sr-minutes", type=float, default=25.0)
    p.add_argument("--n", type=int, default=500, help="samples per score")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--levels", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.5])
    p.add_argument("--steps", type=int, default=25, help="DDIM steps per stage")
    p.add_argument("--base-steps", type=int, help="eval --variant: DDIM steps of the base stage (default: --steps)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variant", metavar="NAME", help="eval: score only the super-resolution stage RUNS/NAME (printed)")
    args = p.parse_args()
    train(args) if args.what == "train" else evaluate(args)


if __name__ == "__main__":
    main()
