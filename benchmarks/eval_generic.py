"""Does the generic feature net rank models as the shipped feature nets do? Spearman agreement of FDs.

``difflab eval`` scores digits and Fashion-MNIST in the features of classifiers trained on their
labels and shipped with difflab; every other image data set is scored with the *generic* feature
net (``src/difflab/eval/generic.py``: trained by difflab on the data itself to tell an image's
rotation, and its class when there are class folders). On the two data sets that have a shipped
net, this script scores the same samples with both and reports the Spearman rank correlation of
the two FDs over many models of different quality: 1.0 means the generic net orders the models
exactly as the shipped one does.

Models. The trainer keeps only its last checkpoint, so the script trains one run per data set
itself, from its recipe (``configs/digits.yaml``; ``configs/fashion-mnist-cfg.yaml`` made
unconditional), with ``train.steps`` set to the last snapshot: ``Trainer.fit(until=s)`` pauses at
each snapshot step ``s`` (the learning rate follows the schedule of the whole run; pausing and
continuing gives the same weights as one run) and draws ``--n`` samples from the EMA weights with
DDIM at each of ``--sampling-steps``. Every (snapshot, sampling steps) pair is one point; both FDs
of a point come from the same samples. The runs live in a temporary folder unless ``--runs``.

Generic nets. Two per data set, as ``difflab eval`` would train them: without labels (the rotation
task alone: a folder without class sub-folders, the common case) and with the data set's class
labels (class x rotation: a folder with one sub-folder per class). They are cached as by
``difflab eval`` (``--cache``: another cache folder). ``--feature-updates`` shortens their training
(for trials only: the cache key includes it).

    .venv/bin/python benchmarks/eval_generic.py                     # both data sets (hours on 2 CPU cores)
    .venv/bin/python benchmarks/eval_generic.py --datasets digits   # digits only (about half an hour)

A quick check of the script itself (a couple of minutes; writes to --out, not to docs/results)::

    .venv/bin/python benchmarks/eval_generic.py --datasets digits --snapshots 2 4 6 --n 40 \\
        --sampling-steps 2 5 --feature-updates 20 --threads 1 --out /tmp/eval_generic.json

Without ``--out`` the result goes to ``docs/results/eval_generic.json`` (keys ``command``,
``machine``, ``date``, ``feature``, ``agreement``: one ``{"dataset", "labels", "spearman", ...}``
per data set and generic net, and ``points``: every score) and docs/RESULTS.md is regenerated.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import command_line, machine_info, result_path, write_result  # noqa: E402

RECIPES = {  # data set -> (recipe, overrides, default snapshot steps)
    "digits": ("configs/digits.yaml", [], [100, 250, 500, 1000, 2000]),
    "fashion-mnist": (
        "configs/fashion-mnist-cfg.yaml",
        ["data.conditions=[]", "sample.guidance=1.0"],
        [150, 300, 600, 1200, 2400, 4500],
    ),
}


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman rank correlation (Pearson correlation of the ranks, ties sharing their mean rank)."""
    if len(a) != len(b):
        raise ValueError("spearman needs two lists of equal length")
    if len(a) < 3:
        return None

    def ranks(v: list[float]) -> torch.Tensor:
        x = torch.tensor(v, dtype=torch.float64)
        order = torch.argsort(x)
        r = torch.empty_like(x)
        r[order] = torch.arange(len(v), dtype=torch.float64)
        for value in x.unique():  # ties: the mean of their ranks
            tie = x == value
            r[tie] = r[tie].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / denom if denom > 0 else None


def feature_description() -> str:
    from difflab.eval import generic

    r = generic.RECIPE
    return (
        f"generic: difflab's FeatureNet, widths {tuple(r['widths'])}, depths {tuple(r['depths'])}, "
        f"{r['feature_dim']}-d penultimate-layer features, trained on the training images to predict "
        "the rotation (0/90/180/270 degrees) applied to an image, alone (labels false) or jointly with the class "
        "(labels true); random shifts and flips; images shrunk to at most "
        f"{generic.MAX_RESOLUTION} pixels; {generic.EPOCHS} epochs clipped to "
        f"[{generic.UPDATES_MIN}, {generic.UPDATES_MAX}] updates of {r['batch']} (src/difflab/eval/generic.py). "
        "shipped: the classifiers of scripts/train_feature_nets.py (src/difflab/eval/weights)"
    )


def run_dataset(name: str, args: argparse.Namespace, runs: Path) -> dict:
    """Train the run of ``name`` snapshot by snapshot; score every (snapshot, sampling steps) point."""
    from difflab.eval import evaluate, generic
    from difflab.train.config import load_run_config
    from difflab.train.stage import crop_padding, generate
    from difflab.train.trainer import Trainer

    recipe, overrides, default_snapshots = RECIPES[name]
    snapshots = sorted(args.snapshots or default_snapshots)
    cfg = load_run_config(
        ROOT / recipe,
        [
            *overrides, f"train.steps={snapshots[-1]}", "train.progress=false", "train.sample_every=0",
            "train.ckpt_every=0", "sample.n=4", f"train.threads={args.threads}", f"train.seed={args.seed}",
        ],
    )  # fmt: skip
    refs = {}
    for labels in (False, True):
        t0 = time.perf_counter()
        refs[labels] = generic.generic_reference(
            name, {}, updates=args.feature_updates, cache=args.cache, labels=labels, progress=None
        )
        meta = refs[labels].meta
        print(
            f"[{name}] generic net, labels={labels}: {meta.get('updates')} updates, trained in "
            f"{meta.get('train_seconds')} s, task accuracy {meta.get('task_accuracy')} (ready after "
            f"{time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    trainer = Trainer(cfg, runs / name)
    points = []
    try:
        for step in snapshots:
            t0 = time.perf_counter()
            trainer.fit(until=step)
            train_s = time.perf_counter() - t0
            for k in args.sampling_steps:
                x, _ = generate(
                    trainer.ema.module, cfg, tuple(trainer.image_shape), args.n, steps=k, seed=args.seed,
                    device=trainer.device,
                )  # fmt: skip
                x = crop_padding(x, cfg)
                shipped = evaluate(x, name)
                row = {
                    "step": step, "sampling_steps": k, "fd_shipped": shipped["fd"],
                    "fd_floor_shipped": shipped["fd_floor"], "precision_shipped": shipped["precision"],
                    "recall_shipped": shipped["recall"],
                }  # fmt: skip
                for labels, ref in refs.items():
                    g = generic.evaluate_generic(x, ref)
                    tag = "labels" if labels else "rotation"
                    row.update(
                        {f"fd_generic_{tag}": g["fd"], f"fd_floor_generic_{tag}": g["fd_floor"],
                         f"precision_generic_{tag}": g["precision"], f"recall_generic_{tag}": g["recall"]}
                    )  # fmt: skip
                points.append(row)
                print(
                    f"[{name}] step {step} ({train_s:.0f} s of training), DDIM {k}: FD shipped {row['fd_shipped']:.4g}"
                    f" (floor {row['fd_floor_shipped']:.3g}), generic {row['fd_generic_rotation']:.4g} "
                    f"(floor {row['fd_floor_generic_rotation']:.3g}), generic with labels "
                    f"{row['fd_generic_labels']:.4g}",
                    flush=True,
                )
    finally:
        trainer.close()
    agreement = []
    for labels in (False, True):
        tag = "labels" if labels else "rotation"
        fd_s, fd_g = [p["fd_shipped"] for p in points], [p[f"fd_generic_{tag}"] for p in points]
        by_steps = {
            str(k): spearman([p["fd_shipped"] for p in points if p["sampling_steps"] == k],
                             [p[f"fd_generic_{tag}"] for p in points if p["sampling_steps"] == k])
            for k in args.sampling_steps
        }  # fmt: skip
        meta = refs[labels].meta
        agreement.append(
            {
                "dataset": name, "labels": labels, "spearman": spearman(fd_s, fd_g), "points": len(points),
                "spearman_by_sampling_steps": by_steps, "feature_net_updates": meta.get("updates"),
                "feature_net_train_seconds": meta.get("train_seconds"),
                "feature_net_task_accuracy": meta.get("task_accuracy"),
            }
        )  # fmt: skip
    return {"agreement": agreement, "points": [{"dataset": name, **p} for p in points]}


def keep_other_datasets(res: dict, path: Path, measured: set[str]) -> dict:
    """Add the rows of data sets this run did not measure from the result file already at ``path``.

    ``--datasets fashion-mnist`` then adds to a file that holds digits instead of replacing it; each
    agreement row keeps the command that measured it (``command`` of the whole file: this run's).
    """
    if not path.exists():
        return res
    old = json.loads(path.read_text())
    old_command = old.get("command")
    kept = [
        dict(a, command=a.get("command", old_command)) for a in old.get("agreement", []) if a["dataset"] not in measured
    ]
    points = [q for q in old.get("points", []) if q["dataset"] not in measured]
    return {**res, "agreement": kept + res["agreement"], "points": points + res["points"]}


def render(data: dict) -> str:
    """The RESULTS.md section: agreement per data set and generic net, then every point."""
    from report import table

    rows = [
        [a["dataset"], "class x rotation" if a["labels"] else "rotation", a["spearman"], a["points"],
         a.get("feature_net_task_accuracy"), a.get("feature_net_train_seconds")]
        for a in data["agreement"]
    ]  # fmt: skip
    points = [
        [p["dataset"], p["step"], p["sampling_steps"], p["fd_shipped"], p["fd_floor_shipped"],
         p["fd_generic_rotation"], p["fd_floor_generic_rotation"], p["fd_generic_labels"]]
        for p in data.get("points", [])
    ]  # fmt: skip
    commands = {}
    for a in data["agreement"]:
        commands.setdefault(a.get("command", data["command"]), []).append(a["dataset"])
    measured_by = [
        f"- {', '.join(sorted(set(names)))}: `{cmd}`" for cmd, names in commands.items()
    ] if len(commands) > 1 else []  # fmt: skip
    return "\n".join(
        [
            f"Features: {data['feature']}.",
            "",
            *(["Measured by:", *measured_by, ""] if measured_by else []),
            table(["data set", "generic task", "Spearman", "points", "task accuracy", "train s"], rows),
            "",
            table(
                ["data set", "step", "DDIM steps", "FD shipped", "floor", "FD generic", "floor", "FD generic (labels)"],
                points,
            ),
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", choices=sorted(RECIPES), default=sorted(RECIPES))
    p.add_argument("--snapshots", type=int, nargs="+", help="training steps to score at (default: per data set)")
    p.add_argument("--sampling-steps", type=int, nargs="+", default=[10, 50], help="DDIM steps (default: 10 50)")
    p.add_argument("--n", type=int, default=1000, help="samples per point (default: %(default)s)")
    p.add_argument("--feature-updates", type=int, help="updates of the generic nets (default: their recipe's)")
    p.add_argument("--cache", help="cache folder of the generic nets (default: difflab eval's)")
    p.add_argument("--runs", help="keep the training runs in this folder (default: a temporary folder)")
    p.add_argument("--threads", type=int, default=0, help="torch threads for training (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the JSON here instead of docs/results/eval_generic.json")
    args = p.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="eval-generic-") as tmp:
        runs = Path(args.runs) if args.runs else Path(tmp)
        parts = [run_dataset(name, args, runs) for name in args.datasets]
    command = command_line("benchmarks/eval_generic.py")
    for part in parts:  # each row says which command measured it
        for row in part["agreement"]:
            row["command"] = command
    res = {
        "command": command,
        "machine": machine_info(),
        "date": dt.date.today().isoformat(),
        "seconds": round(time.perf_counter() - t0, 1),
        "feature": feature_description(),
        "samples_per_point": args.n,
        "agreement": [a for part in parts for a in part["agreement"]],
        "points": [q for part in parts for q in part["points"]],
    }
    if not args.out:
        res = keep_other_datasets(res, result_path("eval_generic"), set(args.datasets))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {args.out}")
    else:
        print(f"wrote {write_result('eval_generic', res)}")
    for a in res["agreement"]:
        print(f"{a['dataset']:>14} labels={a['labels']!s:<5}  Spearman {a['spearman']}")


if __name__ == "__main__":
    main()
