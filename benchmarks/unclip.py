"""unCLIP on the captioned scenes: CLIP, the two priors, unCLIP vs the Imagen-style cascade, variations.

Two steps (each prints what it does; ``eval`` writes docs/results/unclip.json)::

    python benchmarks/unclip.py train [--minutes 75]
    python benchmarks/unclip.py eval  [--n 32 --per-caption 2]

``train`` runs ``difflab train`` under ``RUNS`` (default runs/unclip), one thread each, side by side:
the decoder of configs/unclip-decoder.yaml for ``--minutes`` of wall time (it resumes when the
command is repeated, each repeat adding ``--minutes``), and the diffusion and autoregressive priors
of configs/unclip-prior.yaml and configs/unclip-prior-ar.yaml to the end of their recipes (skipped
once done). All use the CLIP run ``--clip`` (configs/clip-scenes.yaml, trained first when missing).
``--decoder NAME --decoder-config configs/unclip-decoder-text.yaml --decoder-init runs/unclip/decoder``
trains the paper's decoder, which reads the caption too, in RUNS/NAME, starting from the
embedding-only decoder; ``eval --decoder NAME`` scores with it.

``eval`` measures:

- CLIP: zero-shot item / colour / position accuracy on the one-item test scenes and text -> image
  recall@1 among the first 1,000 test scenes;
- priors: mean cosine between the prior's embedding (best of 2) and the true image embedding for the
  first ``--prior-n`` captions of each split, against the trivial baseline of the caption's own CLIP
  text embedding;
- unCLIP (prior -> decoder at w -> the super-resolution stage ``--sr``) vs the Imagen-style cascade
  (``--imagen-base`` at w -> the same super-resolution stage) on the same ``--n`` seen test captions x
  ``--per-caption`` samples, for each w in ``--guidance``: alignment, FD and diversity with the shipped
  scene classifier (as benchmarks/imagen.py; ``base_*``: the 16x16 stage alone);
- variations: for the first ``--variations`` test scenes, 4 decodings of each scene's image
  embedding; the share of variations that show every item of the source in its colour (anywhere,
  and in its quadrant);
- grids: docs/images/unclip-manipulations.png (variations, interpolations by embedding and by
  DDIM-inverted noise, text diffs) of the 16x16 decoder alone (the super-resolution stage is far
  less trained than it); ``python benchmarks/unclip.py grid`` draws only this picture.
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
    ROOT,
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
from imagen import caption_prompts, score_images  # noqa: E402

PRIORS = {  # kind -> (recipe, run folder under --runs)
    "diffusion": ("configs/unclip-prior.yaml", "prior-diffusion"),
    "autoregressive": ("configs/unclip-prior-ar.yaml", "prior-ar"),
}
VARIATIONS_PER_IMAGE = 4
IMAGE = ROOT / "docs" / "images" / "unclip-manipulations.png"


def train(args: argparse.Namespace) -> None:
    runs, clip = Path(args.runs), Path(args.clip)
    record_train_command(runs, "benchmarks/unclip.py")
    if not (clip / "checkpoint" / "format.json").is_file():
        wait_all(start_training("configs/clip-scenes.yaml", clip))
    use_clip = f"clip.path={clip.resolve()}"
    init = [f"train.init={Path(args.decoder_init).resolve()}", "train.init_strict=false"] if args.decoder_init else []
    procs = [
        start_training(
            args.decoder_config,
            runs / args.decoder,
            "--time-limit",
            str(args.minutes * 60),
            "train.steps=1000000",
            use_clip,
            *init,
        )  # fmt: skip
    ]
    for config, name in PRIORS.values():
        run = runs / name
        if (run / "summary.json").is_file() and run_summary(run).get("status") == "done":
            print(f"{name}: done ({run_summary(run)['step']} updates)")
            continue
        procs.append(start_training(config, run, use_clip))
    wait_all(*procs)
    for name in (args.decoder, *(name for _, name in PRIORS.values())):
        s = run_summary(runs / name)
        print(f"{name:>22}: {s['step']} updates in {training_seconds(runs / name):.0f} s ({s['status']})")


def _variation_consistency(pipe: Any, n: int, seed: int) -> dict:
    """Share of decodings of a test scene's embedding that show each source item in its colour, and
    the same score of the real sources shrunk to the decoder's size (what the classifier allows)."""
    import torch
    import torch.nn.functional as F

    from difflab.data import get_dataset
    from difflab.eval.alignment import attribute_hits, predict_scene

    data = get_dataset("scenes", "test")
    images = torch.stack([data[i][0] for i in range(n)])
    labels = torch.stack([data[i][1]["labels"] for i in range(n)])
    emb = pipe.embed(images).repeat_interleave(VARIATIONS_PER_IMAGE, 0)
    x = pipe.decode(emb, seed=seed, steps=25)[0]  # the decoder's 16x16 output (the classifier up-samples)
    lab = labels.repeat_interleave(VARIATIONS_PER_IMAGE, 0)
    items, colours = predict_scene(x.clamp(-1, 1))
    hits = attribute_hits(items, colours, lab)
    slot = hits["slot"]
    in_place = ((hits["item"] & hits["colour"]) | ~slot).all(1)
    anywhere = torch.ones(len(x), dtype=torch.bool)
    for s in range(2):  # the source's (item, colour) in any quadrant
        found = ((items == lab[:, s, 0:1]) & (colours == lab[:, s, 1:2])).any(1)
        anywhere &= found | ~slot[:, s]
    real = F.avg_pool2d(images, images.shape[-1] // x.shape[-1])  # the sources at the decoder's size
    real_items, real_colours = predict_scene(real)
    real_hits = attribute_hits(real_items, real_colours, labels)
    real_ok = ((real_hits["item"] & real_hits["colour"]) | ~real_hits["slot"]).all(1)
    return {
        "anywhere": round(float(anywhere.float().mean()), 4),
        "in_place": round(float(in_place.float().mean()), 4),
        "real_floor_in_place": round(float(real_ok.float().mean()), 4),
        "images": n,
        "variations_per_image": VARIATIONS_PER_IMAGE,
    }


def _manipulations_grid(pipe: Any, path: Path, seed: int) -> Path:
    """Rows: a source and 6 variations; two interpolations (by embedding, by inverted noise); two
    text diffs (colour, item). Every row: 7 images at the pipeline's output size, shown 4x larger
    (nearest neighbour); sources are the 64x64 test scenes, shown shrunk to that size."""
    import torch
    import torch.nn.functional as F

    from difflab.data import get_dataset, resize_images, save_grid
    from difflab.data.scenes import COLOURS, ITEMS, describe_labels

    data = get_dataset("scenes", "test")
    one = [i for i in range(200) if int(data[i][1]["labels"][1, 0]) < 0][:3]
    a, b, c = (data[i][0] for i in one)
    a_, b_, c_ = (resize_images(x[None], pipe.image_shape[-2:]) for x in (a, b, c))
    rows = [torch.cat([a_, pipe.variations(a, 6, seed=seed)])]
    for mode in ("embedding", "noise"):
        rows.append(torch.cat([a_, pipe.interpolate(a, b, 5, mode=mode, seed=seed), b_]))
    lab = data[one[2]][1]["labels"]
    source = describe_labels(lab)
    recoloured, other_item = lab.clone(), lab.clone()
    recoloured[0, 1] = (int(lab[0, 1]) + 1) % len(COLOURS)
    other_item[0, 0] = (int(lab[0, 0]) + 1) % len(ITEMS)
    for target in (describe_labels(recoloured), describe_labels(other_item)):
        moved = pipe.text_diff(c, source, target, (0.0, 0.2, 0.35, 0.5, 0.65, 0.8), seed=seed)
        rows.append(torch.cat([c_, moved]))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = F.interpolate(torch.cat(rows).clamp(-1, 1), scale_factor=4, mode="nearest")
    return save_grid(grid, path, nrow=7)


def evaluate(args: argparse.Namespace) -> None:
    import torch

    import difflab
    from difflab.methods.clip import embedding_probe, retrieval_recall_at_1, zero_shot_accuracy
    from difflab.methods.unclip.pipeline import UnCLIP
    from difflab.methods.unclip.prior import prior_cosine, text_baseline_cosine

    torch.set_num_threads(args.threads)
    runs = Path(args.runs)
    priors = {k: difflab.load(runs / name) for k, (_, name) in PRIORS.items() if (runs / name).is_dir()}
    decoder, sr = difflab.load(runs / args.decoder), difflab.load(args.sr)
    pipe = UnCLIP(priors["diffusion"], decoder, sr)
    clip = pipe.clip
    print("CLIP ...", flush=True)
    zero_shot = zero_shot_accuracy(clip, "test")
    clip_scores = {
        "zero_shot": zero_shot, "r_at_1": retrieval_recall_at_1(clip, "test", 1000), "probe": embedding_probe(clip)
    }  # fmt: skip
    print(json.dumps(clip_scores), flush=True)
    prior_scores: dict[str, dict[str, float]] = {}
    for split in ("test", "unseen", "paraphrase"):
        for kind, prior in priors.items():
            prior_scores.setdefault(kind, {})[split] = round(prior_cosine(prior, split, args.prior_n), 4)
        prior_scores.setdefault("text_baseline", {})[split] = round(text_baseline_cosine(clip, split, args.prior_n), 4)
    print(json.dumps(prior_scores), flush=True)

    sr_opts = {"steps": [args.steps, args.sr_steps], "threshold": "none", "sampler": ["ddim", args.sr_sampler],
               "aug": args.aug}  # fmt: skip
    imagen = difflab.load([args.imagen_base, args.sr])
    prompts, labels = caption_prompts("seen", args.n, args.per_caption)
    others = {
        f"unclip:{name}": UnCLIP(priors["diffusion"], difflab.load(runs / name), sr) for name in args.also_decoder
    }
    pipes = {"unclip": pipe, **others}
    rows, seconds = [], {}
    for w in args.guidance:
        for model in (*pipes, "imagen"):
            t0 = time.perf_counter()
            if model in pipes:
                low, x = pipes[model].sample(prompts, seed=0, guidance=[w, 1.0], **sr_opts)
            else:
                low, x = imagen.sample(len(prompts), prompts=prompts, seed=0, guidance=[w, 1.0], **sr_opts)
            seconds.setdefault(model, []).append((time.perf_counter() - t0) / len(prompts))
            rows.append({"model": model, "guidance": w, **score_images(x, low, labels, "seen", args.per_caption)})
            print(json.dumps(rows[-1]), flush=True)
    variations = _variation_consistency(pipe, args.variations, seed=0)
    print(json.dumps(variations), flush=True)
    other_variations = {model: _variation_consistency(p, args.variations, seed=0) for model, p in others.items()}
    print(f"wrote {_manipulations_grid(UnCLIP(None, decoder), IMAGE, seed=0)}")
    result = {
        "command": command_line("benchmarks/unclip.py"),
        "train_command": train_commands(runs),
        "machine": machine_info(),
        "date": date.today().isoformat(),
        "clip": clip_scores,
        "prior_cosine": {k: v["test"] for k, v in prior_scores.items()},
        "prior_cosine_by_split": prior_scores,
        "prior_captions": args.prior_n,
        "captions_per_score": args.n,
        "samples_per_caption": args.per_caption,
        "sampler": f"ddim, {args.steps} steps (16x16); {args.sr_sampler}, {args.sr_steps} steps at w = 1 and "
        f"augmentation level {args.aug} (super-resolution {args.sr}); prior: its recipe's sampler, best of 2",
        "imagen_base": args.imagen_base,
        "decoder": {
            "run": str(runs / args.decoder), "conditions": list(decoder.conditions),
            "init": decoder.config.train.init,
        },
        "train": {
            name: {"updates": run_summary(runs / name)["step"], "seconds": round(training_seconds(runs / name), 1)}
            for name in (args.decoder, *args.also_decoder, *(PRIORS[k][1] for k in priors))
        },
        "seconds_per_image": {k: round(statistics.median(v), 4) for k, v in seconds.items()},
        "rows": rows,
        "variation_consistency": variations["anywhere"],
        "variation_consistency_detail": variations,
        "variation_consistency_other_decoders": other_variations,
        "image": str(IMAGE.relative_to(ROOT)),
    }  # fmt: skip
    print(f"wrote {write_result('unclip', result)}")


def render_unclip(data: dict) -> str:
    """The RESULTS.md section."""
    from report import table

    clip = data["clip"]
    zs = clip["zero_shot"]
    out = [
        f"Trained by `{data.get('train_command', 'unknown')}`; {data['sampler']}.",
        "",
        *_decoder_lines(data.get("decoder")),
        table(["part", "updates", "train s"], [[k, v["updates"], v["seconds"]] for k, v in data["train"].items()]),
        "",
        f"CLIP zero-shot accuracy on {zs.get('scenes')} one-item test scenes: item {zs['item']}, colour "
        f"{zs['colour']}, position {zs['position']}; text -> image recall@1 among 1,000: {clip['r_at_1']}.",
        "",
        *_probe_lines(clip.get("probe")),
        f"Prior cosine to the true image embedding ({data['prior_captions']} captions per split):",
        "",
    ]
    by_split = data["prior_cosine_by_split"]
    splits = list(next(iter(by_split.values())))
    out.append(table(["prior", *splits], [[k, *[v[s] for s in splits]] for k, v in by_split.items()]))
    out += [
        "",
        f"unCLIP vs the Imagen-style cascade ({data['imagen_base']}), {data['captions_per_score']} seen captions x "
        f"{data['samples_per_caption']} samples; seconds per image: {data['seconds_per_image']}:",
        "",
    ]
    keys = ["alignment", "base_alignment", "item", "colour", "position", "fd", "diversity"]
    rows = sorted(data["rows"], key=lambda r: (r["model"], r["guidance"]))
    out.append(table(["model", "w", *keys], [[r["model"], r["guidance"], *[r[k] for k in keys]] for r in rows]))
    v = data["variation_consistency_detail"]
    out += [
        "",
        f"Variations keep every source item in its colour: {v['anywhere']} (in its quadrant too: {v['in_place']}; "
        f"the real sources at the decoder's size: {v.get('real_floor_in_place', 'not measured')}); "
        f"{v['images']} test scenes x {v['variations_per_image']} variations.",
        *[
            f"With decoder `{k.split(':', 1)[1]}`: {o['anywhere']} (in its quadrant too: {o['in_place']})."
            for k, o in data.get("variation_consistency_other_decoders", {}).items()
        ],
        "",
        f"![unCLIP manipulations]({Path(data['image']).relative_to('docs')})",
    ]
    return "\n".join(out)


def _decoder_lines(decoder: dict | None) -> list[str]:
    if not decoder:
        return []
    reads = (
        "the CLIP image embedding and the caption (the caption in text to image, the null caption in the manipulations)"
        if "caption" in decoder["conditions"]
        else "the CLIP image embedding alone"
    )
    start = f", started from the weights of `{decoder['init']}`" if decoder.get("init") else ""
    return [f"Decoder `{decoder['run']}`: reads {reads}{start}.", ""]


def _probe_lines(probe: dict | None) -> list[str]:
    """The linear read-out of (item, colour) pairs from the image embedding (methods.clip.embedding_probe)."""
    if not probe:
        return []
    return [
        f"What the image embedding holds: a linear read-out (logistic regression on {probe['train_scenes']:,} "
        f"training scenes) finds every item in its colour in {probe['pairs']} of {probe['test_scenes']:,} test "
        f"scenes (one item: {probe['one_item']}, two items: {probe['two_items']}). A decoder that sees only the "
        "embedding, as in variations, can hardly keep more.",
        "",
    ]


def grid(args: argparse.Namespace) -> None:
    """Only the picture of the manipulations (as ``eval`` draws it)."""
    import torch

    import difflab
    from difflab.methods.unclip.pipeline import UnCLIP

    torch.set_num_threads(args.threads)
    print(f"wrote {_manipulations_grid(UnCLIP(None, difflab.load(Path(args.runs) / args.decoder)), IMAGE, seed=0)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("train", "eval", "grid"))
    p.add_argument("--runs", default="runs/unclip", help="folder of the runs (default: %(default)s)")
    p.add_argument("--clip", default="runs/clip-scenes", help="the CLIP run (default: %(default)s)")
    p.add_argument("--sr", default="runs/imagen/sr-aug", help="super-resolution stage (default: %(default)s)")
    p.add_argument("--imagen-base", default="runs/imagen/base-minilm", help="Imagen base (default: %(default)s)")
    p.add_argument("--minutes", type=float, default=75.0, help="wall time of the decoder's training")
    p.add_argument("--decoder", default="decoder", help="the decoder's run folder under --runs (default: %(default)s)")
    p.add_argument(
        "--also-decoder",
        nargs="*",
        default=[],
        metavar="NAME",
        help="eval: more decoder runs under --runs, scored beside --decoder (rows 'unclip:NAME')",
    )
    p.add_argument(
        "--decoder-config",
        default="configs/unclip-decoder.yaml",
        help="train: the decoder's recipe (configs/unclip-decoder-text.yaml: it reads the caption too)",
    )
    p.add_argument(
        "--decoder-init", default="",
        help="train: start a new decoder from this run's weights (train.init; tensors it lacks start fresh)",
    )  # fmt: skip
    p.add_argument("--n", type=int, default=32, help="captions per score")
    p.add_argument("--per-caption", type=int, default=2, help="samples per caption")
    p.add_argument("--prior-n", type=int, default=256, help="captions per prior cosine")
    p.add_argument("--variations", type=int, default=64, help="test scenes for variation consistency")
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 3.0, 5.0, 8.0])
    p.add_argument("--aug", type=float, default=0.1, help="super-resolution sampling augmentation level")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps of the 16x16 stages")
    p.add_argument("--sr-sampler", default="ddpm", help="sampler of the super-resolution stage (default: %(default)s)")
    p.add_argument("--sr-steps", type=int, default=25, help="steps of the super-resolution stage")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    {"train": train, "eval": evaluate, "grid": grid}[args.what](args)


if __name__ == "__main__":
    main()
