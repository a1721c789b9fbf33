"""Text-to-image cascades (Imagen) on the captioned scenes: guidance and thresholding, text encoders,
noise-conditioning augmentation.

Two steps (each prints what it does; ``eval`` writes docs/results/imagen.json)::

    python benchmarks/imagen.py train [--minutes 80]
    python benchmarks/imagen.py eval  [--n 64 --per-caption 4]

``train`` runs ``difflab train`` under ``RUNS`` (default runs/imagen), five runs of one thread each,
side by side for ``--minutes`` of wall time (equal shares of the machine): the three 16x16 base
stages of configs/imagen-base.yaml that differ only in ``text.encoder`` (minilm: the frozen
pretrained all-MiniLM-L6-v2; clip: the frozen text tower of the CLIP run ``--clip``, trained by
configs/clip-scenes.yaml first when missing; scratch: a small transformer trained with the diffusion
model), and the 16 -> 64 super-resolution stage of configs/imagen-sr.yaml with noise-conditioning
augmentation and without it (``diffusion.lowres_aug=0``). Every run resumes from its checkpoint
when the command is repeated (each repeat adds ``--minutes``).

``eval`` draws ``--per-caption`` samples for each of the first ``--n`` captions of a split and scores
the 64x64 cascade output with the shipped scene classifier (difflab.eval.alignment): alignment (the
share of the caption's item / colour / position attributes found), FD in its features against the
split's real images, diversity (mean pairwise feature distance among one caption's samples) and the
share of saturated base-stage pixels (|x| >= 0.99). Sweeps: guidance w x thresholding (none, static,
dynamic) with the MiniLM base stage on seen captions; each encoder at w = ``--encoder-guidance`` with
dynamic thresholding on the seen, unseen-combination and paraphrase splits; and the super-resolution
stage with and without augmentation, fed with the same base samples, at every sampling level (a
fraction of the noise schedule's t), ``--seeds`` seeds; and dynamic thresholding at other quantiles
(``--quantiles``, at ``--quantile-guidance``). Base stages sample with DDIM ``--steps``,
super-resolution stages with ``--sr-sampler`` (default ancestral: DDIM leaves a grain in these
stages' black backgrounds, see docs/text-to-image.md) in ``--sr-steps`` steps at w = 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    command_line,
    machine_info,
    record_train_command,
    run_summary,
    start_training,
    train_commands,
    training_seconds,
    wait_all,
    write_result,
)

ENCODERS = ("minilm", "clip", "scratch")
SPLITS = ("seen", "unseen", "paraphrase")
DATA_SPLIT = {"seen": "test", "unseen": "unseen", "paraphrase": "paraphrase"}
QUANTILE = 0.995  # the runs' sample.threshold_quantile (Imagen's percentile)


def train(args: argparse.Namespace) -> None:
    runs = Path(args.runs)
    record_train_command(runs, "benchmarks/imagen.py")
    clip = Path(args.clip)
    if not (clip / "text_encoder.safetensors").is_file():
        wait_all(start_training("configs/clip-scenes.yaml", clip))
    limit = ["--time-limit", str(args.minutes * 60), "train.steps=1000000", *args.train_options]
    options = {
        "base-minilm": ("configs/imagen-base.yaml", []),
        "base-clip": ("configs/imagen-base.yaml", ["text.encoder=clip", f"text.path={clip.resolve()}"]),
        "base-scratch": ("configs/imagen-base.yaml", ["text.encoder=scratch"]),
        "sr-aug": ("configs/imagen-sr.yaml", []),
        "sr-noaug": ("configs/imagen-sr.yaml", ["diffusion.lowres_aug=0"]),
    }
    # all five side by side for the same wall time: equal shares of the machine, so the three base
    # stages get equal diffusion-training time and the two super-resolution stages about equal updates
    wait_all(*(start_training(config, runs / name, *limit, *extra) for name, (config, extra) in options.items()))
    for name in (*(f"base-{e}" for e in ENCODERS), "sr-aug", "sr-noaug"):
        s = run_summary(runs / name)
        print(f"{name:>12}: {s['step']} updates in {training_seconds(runs / name):.0f} s ({s['status']})")


def caption_prompts(split: str, n: int, per_caption: int) -> tuple[list[str], Any]:
    """The first ``n`` captions of a split, each repeated ``per_caption`` times, and their labels."""
    import torch

    from difflab.data import get_dataset

    data = get_dataset("scenes", DATA_SPLIT[split])
    items = [data[i][1] for i in range(n)]
    prompts = [c["caption"] for c in items for _ in range(per_caption)]
    labels = torch.stack([c["labels"] for c in items for _ in range(per_caption)])
    return prompts, labels


def score_images(x64, base, labels, split: str, per_caption: int) -> dict:
    import torch

    from difflab.eval.alignment import alignment_rates, diversity, scene_fd, scene_features

    rates = alignment_rates(x64, labels)
    low = alignment_rates(base.clamp(-1, 1), labels)  # the base stage alone (the classifier reads 16x16 too)
    groups = torch.arange(len(x64)) // per_caption
    return {
        "alignment": round(rates["alignment"], 4),
        "item": round(rates["item"], 4), "colour": round(rates["colour"], 4), "position": round(rates["position"], 4),
        "base_alignment": round(low["alignment"], 4), "base_position": round(low["position"], 4),
        "fd": round(scene_fd(x64, DATA_SPLIT[split]), 4),
        "diversity": round(diversity(scene_features(x64), groups), 4),
        "saturated": round(float((base.abs() >= 0.99).float().mean()), 4),
    }  # fmt: skip


def sr_on_real_scenes(stage, n: int, sr_opts: dict, args: argparse.Namespace) -> list[dict]:
    """The super-resolution stage alone, fed with the first ``n`` real test scenes shrunk to 16x16, with
    each of ``--sr-compare``'s samplers: how much of the caption survives it (the real 16x16 input
    first, as the ceiling)."""
    import torch

    from difflab.data import Rescaled, get_dataset
    from difflab.eval.alignment import alignment_rates, scene_fd

    real = Rescaled(get_dataset("scenes", "test"), 4, 0)
    items = [real[i] for i in range(n)]
    low = torch.stack([x for x, _ in items])
    labels = torch.stack([c["labels"] for _, c in items])
    prompts = [c["caption"] for _, c in items]

    def row(name: str, x) -> dict:
        rates = alignment_rates(x, labels)
        keys = ("alignment", "item", "colour", "position")
        return {"sampler": name, **{k: round(rates[k], 4) for k in keys}}

    rows = [row("real 16x16 input", low)]
    for sampler in args.sr_compare:
        x = stage.sample(n, prompts=prompts, cond={"lowres": low}, aug=args.aug, seed=1000,
                         **{**sr_opts, "sampler": sampler})  # fmt: skip
        rows.append({**row(sampler, x), "steps": args.sr_steps, "fd": round(scene_fd(x, "test"), 4)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def encoder_probe(bases: dict, n_train: int) -> list[dict]:
    """What each text encoder makes readable: a logistic-regression probe per attribute (item, colour,
    position) on the pooled vector of single-item captions, fitted on the first ``n_train`` training
    scenes' captions and scored on seen-template test captions and on paraphrase captions (whose words
    never occur in training). An upper sketch of what a model reading the encoder linearly can transfer
    to paraphrases; chance is 1/20 (item), 1/8 (colour), 1/4 (position)."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from difflab.data import get_dataset

    def single_items(split: str, n: int) -> tuple[list[str], np.ndarray]:
        data = get_dataset("scenes", split)
        pairs = [(c["caption"], c["labels"][0].numpy()) for _, c in (data[i] for i in range(min(n, len(data))))
                 if c["labels"][1, 0] < 0]  # fmt: skip
        return [c for c, _ in pairs], np.stack([lab for _, lab in pairs])

    sets = {"train": single_items("train", n_train), "seen": single_items("test", 1000),
            "paraphrase": single_items("paraphrase", 1000)}  # fmt: skip
    rows = []
    for name, stage in bases.items():
        encoder = stage.net.encoder
        with torch.no_grad():
            feats = {k: torch.cat([encoder.encode(caps[i : i + 256]).pooled.float() for i in range(0, len(caps), 256)])
                     .numpy() for k, (caps, _) in sets.items()}  # fmt: skip
        scale = StandardScaler().fit(feats["train"])
        row: dict = {"encoder": name, "train_captions": len(sets["train"][0])}
        for a, attribute in enumerate(("item", "colour", "position")):
            probe = LogisticRegression(max_iter=3000).fit(scale.transform(feats["train"]), sets["train"][1][:, a])
            for split in ("seen", "paraphrase"):
                row[f"{attribute}_{split}"] = round(
                    float(probe.score(scale.transform(feats[split]), sets[split][1][:, a])), 4
                )
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def evaluate(args: argparse.Namespace) -> None:
    import torch

    import difflab
    from difflab.eval.alignment import scene_classifier_metadata, scene_fd

    torch.set_num_threads(args.threads)
    runs = Path(args.runs)
    sr = {True: difflab.load(runs / "sr-aug"), False: difflab.load(runs / "sr-noaug")}
    sr_opts = {"steps": args.sr_steps, "guidance": 1.0, "threshold": "none", "sampler": args.sr_sampler}
    rows, sr_rows, seconds = [], [], {}

    def cascade(base, prompts, w, threshold, seed, stage=sr[True], aug=args.aug, quantile=None):
        t0 = time.perf_counter()
        low = base.sample(len(prompts), prompts=prompts, guidance=w, threshold=threshold, steps=args.steps,
                          sampler="ddim", seed=seed, threshold_quantile=quantile)  # fmt: skip
        t1 = time.perf_counter()
        x = stage.sample(len(prompts), prompts=prompts, cond={"lowres": low.clamp(-1, 1)}, aug=aug, seed=1000 + seed,
                         **sr_opts)  # fmt: skip
        seconds.setdefault("base", []).append((t1 - t0) / len(prompts))
        seconds.setdefault("sr", []).append((time.perf_counter() - t1) / len(prompts))
        return low, x

    def report(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)

    sr_real = sr_on_real_scenes(sr[True], args.n * args.per_caption, sr_opts, args)
    bases = {e: difflab.load(runs / f"base-{e}") for e in ENCODERS if (runs / f"base-{e}").is_dir()}
    probe = encoder_probe(bases, args.probe_n) if args.probe_n else []
    seen, seen_labels = caption_prompts("seen", args.n, args.per_caption)
    for w in args.guidance:  # guidance x thresholding, MiniLM, seen captions
        for threshold in ("none", "static", "dynamic"):
            low, x = cascade(bases["minilm"], seen, w, threshold, 0)
            scores = score_images(x, low, seen_labels, "seen", args.per_caption)
            quantile = {"quantile": QUANTILE} if threshold == "dynamic" else {}
            report({"encoder": "minilm", "guidance": w, "threshold": threshold, **quantile, "split": "seen", **scores})
    for w in args.quantile_guidance:  # dynamic thresholding at other quantiles of |x|
        for q in args.quantiles:
            low, x = cascade(bases["minilm"], seen, w, "dynamic", 0, quantile=q)
            scores = score_images(x, low, seen_labels, "seen", args.per_caption)
            report({"encoder": "minilm", "guidance": w, "threshold": "dynamic", "quantile": q, "split": "seen",
                    **scores})  # fmt: skip
    for encoder, base in bases.items():  # encoders on every split
        for split in SPLITS:
            if encoder == "minilm" and split == "seen" and args.encoder_guidance in args.guidance:
                continue  # already in the sweep
            prompts, labels = caption_prompts(split, args.n, args.per_caption)
            low, x = cascade(base, prompts, args.encoder_guidance, args.encoder_threshold, 0)
            scores = score_images(x, low, labels, split, args.per_caption)
            report({"encoder": encoder, "guidance": args.encoder_guidance, "threshold": args.encoder_threshold,
                    "split": split, **scores})  # fmt: skip
    for seed in args.seeds:  # super-resolution with and without augmentation, the same base samples
        prompts, labels = caption_prompts("seen", args.n, args.per_caption)
        base = bases["minilm"]
        low = base.sample(len(prompts), prompts=prompts, guidance=args.encoder_guidance,
                          threshold=args.encoder_threshold, steps=args.steps, sampler="ddim", seed=seed)  # fmt: skip
        low = low.clamp(-1, 1)
        for noise_aug, stage in sr.items():
            for level in args.levels:
                x = stage.sample(len(prompts), prompts=prompts, cond={"lowres": low}, aug=level, seed=1000 + seed,
                                 **sr_opts)  # fmt: skip
                sr_rows.append({"noise_aug": noise_aug, "sample_aug": level, "seed": seed,
                                "fd": round(scene_fd(x, "test"), 4)})  # fmt: skip
                print(json.dumps(sr_rows[-1]), flush=True)
    meta = scene_classifier_metadata()
    from difflab.data import Rescaled, get_dataset

    real = Rescaled(get_dataset("scenes", "test"), 4, 0)  # the base stage's 16x16 images
    real_saturated = float(torch.stack([real[i][0] for i in range(len(real))]).abs().ge(0.99).float().mean())
    result = {
        "command": command_line("benchmarks/imagen.py"),
        "train_command": train_commands(runs),
        "machine": machine_info(),
        "date": date.today().isoformat(),
        "classifier_accuracy": meta["accuracy"],
        "captions_per_score": args.n, "samples_per_caption": args.per_caption,
        "encoder_guidance": args.encoder_guidance, "encoder_threshold": args.encoder_threshold,
        "sampler": f"ddim, {args.steps} steps (base); {args.sr_sampler}, {args.sr_steps} steps at w = 1 "
        "(super-resolution)",
        "sample_aug": f"{args.aug} of t (sweeps); sr_aug rows: the level shown",
        "train": {
            name: {"updates": run_summary(runs / name)["step"], "seconds": round(training_seconds(runs / name), 1)}
            for name in (*(f"base-{e}" for e in bases), "sr-aug", "sr-noaug")
        },
        "seconds_per_image": {k: round(statistics.median(v), 4) for k, v in seconds.items()},
        "rows": rows,
        "sr_aug": sr_rows,
        "sr_real": sr_real,
        "encoder_probe": probe,
        "saturated_real": round(real_saturated, 4),
    }  # fmt: skip
    print(f"wrote {write_result('imagen', result)}")
    print("wrote", *plot(result))


PLOTS = {"alignment": "images/imagen-guidance-alignment.png", "fd": "images/imagen-guidance-fd.png"}


def plot(data: dict) -> list[Path]:
    """The guidance sweep (MiniLM, seen captions) as two plots, alignment and FD against w, one line per
    thresholding, into docs/images (linked from RESULTS.md)."""
    from difflab.eval import plot_metric_vs_steps

    docs = Path(__file__).resolve().parents[1] / "docs"
    sweep = [
        {**r, "label": r["threshold"]}
        for r in data["rows"]
        if r["encoder"] == "minilm" and r["split"] == "seen" and r.get("quantile", QUANTILE) == QUANTILE
    ]
    return [
        plot_metric_vs_steps(
            sweep,
            docs / path,
            metric,
            x="guidance",
            xlabel="guidance weight w",
            floor_key="",
            title=f"cascade {metric} vs guidance (MiniLM, seen captions)",
        )  # fmt: skip
        for metric, path in PLOTS.items()
    ]


def render_imagen(data: dict) -> str:
    """The RESULTS.md section: training, the guidance x thresholding sweep, encoders x splits, and the
    super-resolution stage with / without augmentation (mean, sd over seeds)."""
    from report import table

    acc = data.get("classifier_accuracy", {}).get("test", {}).get("64x64", {})
    ceiling = ", ".join(f"{k} {acc[k]:.3f}" for k in ("alignment", "item", "colour", "position", "exact") if k in acc)
    out = [
        f"Trained by `{data.get('train_command', 'unknown')}`. {data['captions_per_score']} captions x "
        f"{data['samples_per_caption']} samples per score; {data['sampler']}; super-resolution sampled at "
        f"augmentation level {data['sample_aug']}. Scene classifier on real 64x64 test images: {ceiling}.",
        "",
        table(["stage", "updates", "train s"], [[k, v["updates"], v["seconds"]] for k, v in data["train"].items()]),
        "",
        f"Seconds per image: {data['seconds_per_image']}.",
        "",
        "Guidance and thresholding (MiniLM encoder, seen captions); saturated: share of base-stage pixels with "
        f"|x| >= 0.99, {data.get('saturated_real', 'not measured')} for real 16x16 test scenes (black backgrounds):",
        "",
    ]
    keys = ["alignment", "item", "colour", "position", "base_alignment", "fd", "diversity", "saturated"]
    default_q = [r for r in data["rows"] if r.get("quantile", QUANTILE) == QUANTILE]
    sweep = [r for r in default_q if r["encoder"] == "minilm" and r["split"] == "seen"]
    out.append(
        table(["w", "threshold", *keys], [[r["guidance"], r["threshold"], *[r[k] for k in keys]] for r in sweep])
    )
    out += ["", " ".join(f"![{metric} vs guidance]({path})" for metric, path in PLOTS.items())]
    others = [r for r in data["rows"] if r.get("quantile", QUANTILE) != QUANTILE]
    if others:
        out += ["", f"Dynamic thresholding at other quantiles of |x| (the sweep above: {QUANTILE}):", ""]
        out.append(table(["w", "quantile", *keys], [[r["guidance"], r["quantile"], *[r[k] for k in keys]]
                                                     for r in others]))  # fmt: skip
    out += ["", f"Text encoders ({data.get('encoder_threshold', 'dynamic')} thresholding):", ""]
    w = data["encoder_guidance"]
    enc = sorted(
        (r for r in default_q if r["threshold"] == data.get("encoder_threshold", "dynamic") and r["guidance"] == w),
        key=lambda r: (ENCODERS.index(r["encoder"]), SPLITS.index(r["split"])),
    )
    out.append(table(["encoder", "split", "w", *keys], [[r["encoder"], r["split"], r["guidance"], *[r[k] for k in keys]]
                                                         for r in enc]))  # fmt: skip
    if data.get("sr_real"):
        out += ["", "The super-resolution stage (with augmentation) fed with real 16x16 test scenes, by sampler "
                f"(augmentation level {data['sample_aug'].split()[0]}):", ""]  # fmt: skip
        keys_real = ["alignment", "item", "colour", "position", "fd"]
        out.append(table(["input / sampler", "steps", *keys_real],
                         [[r["sampler"], r.get("steps", "-"), *[r.get(k, "-") for k in keys_real]]
                          for r in data["sr_real"]]))  # fmt: skip
    if data.get("encoder_probe"):
        out += ["", "What each encoder's pooled vector lets a linear probe read (logistic regression per attribute "
                "on single-item captions, fitted on training captions; chance 0.05 / 0.125 / 0.25):", ""]  # fmt: skip
        cols = [f"{a}_{s}" for a in ("item", "colour", "position") for s in ("seen", "paraphrase")]
        out.append(table(["encoder", *cols], [[r["encoder"], *[r[c] for c in cols]] for r in data["encoder_probe"]]))
    out += ["", "Super-resolution fed with base-stage samples (scene FD at 64x64):", ""]
    levels = sorted({r["sample_aug"] for r in data["sr_aug"]})
    body = []
    for aug in (True, False):
        row: list[object] = ["with augmentation" if aug else "without"]
        for level in levels:
            fds = [r["fd"] for r in data["sr_aug"] if r["noise_aug"] == aug and r["sample_aug"] == level]
            sd = statistics.stdev(fds) if len(fds) > 1 else 0.0
            row.append(f"{statistics.mean(fds):.3f} +- {sd:.3f}" if fds else "-")
        body.append(row)
    out.append(table(["trained", *[f"FD at aug {lv}" for lv in levels]], body))
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("train", "eval", "plot"), help="plot: redraw the guidance plots from the result")
    p.add_argument("--runs", default="runs/imagen", help="folder of the runs (default: %(default)s)")
    p.add_argument("--clip", default="runs/clip-scenes", help="CLIP run of the clip encoder (default: %(default)s)")
    p.add_argument("--minutes", type=float, default=80.0, help="wall time of each training run (default: %(default)s)")
    p.add_argument("--train-options", nargs="*", default=[], metavar="KEY=VALUE",
                   help="train: config overrides for every run, e.g. train.device=cuda")  # fmt: skip
    p.add_argument("--n", type=int, default=64, help="captions per score")
    p.add_argument("--per-caption", type=int, default=4, help="samples per caption")
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 3.0, 5.0, 8.0, 12.0])
    p.add_argument("--encoder-guidance", type=float, default=5.0)
    p.add_argument(
        "--encoder-threshold", choices=("none", "static", "dynamic"), default="none",
        help="thresholding of the encoder rows and of the base samples fed to the super-resolution stages "
        "(default: %(default)s; dynamic lifts these scenes' black backgrounds, see docs/text-to-image.md)",
    )  # fmt: skip
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--levels", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.5])
    p.add_argument("--aug", type=float, default=0.1, help="sampling augmentation level of the sweeps")
    p.add_argument("--quantiles", type=float, nargs="*", default=[0.9, 0.99, 0.999],
                   help="dynamic thresholding at these quantiles of |x| too (default: %(default)s)")  # fmt: skip
    p.add_argument("--quantile-guidance", type=float, nargs="*", default=[5.0, 8.0],
                   help="guidance weights of the quantile rows (default: %(default)s)")  # fmt: skip
    p.add_argument("--steps", type=int, default=25, help="DDIM steps of the base stages")
    p.add_argument("--sr-sampler", default="ddpm", help="sampler of the super-resolution stage (default: %(default)s)")
    p.add_argument("--sr-steps", type=int, default=25, help="steps of the super-resolution stage")
    p.add_argument("--sr-compare", nargs="*", default=["ddim", "ddpm"],
                   help="super-resolution samplers to compare on real scenes (default: %(default)s)")  # fmt: skip
    p.add_argument("--probe-n", type=int, default=12000,
                   help="training scenes whose single-item captions fit the encoder probes (0: no probes)")  # fmt: skip
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if args.what == "plot":
        from common import result_path

        print("wrote", *plot(json.loads(result_path("imagen").read_text())))
    else:
        train(args) if args.what == "train" else evaluate(args)


if __name__ == "__main__":
    main()
