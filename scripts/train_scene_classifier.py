"""Train the scene attribute classifier that difflab's text-to-image alignment metric uses.

Deterministic on one machine: fixed seeds, one CPU thread, ``torch.use_deterministic_algorithms``.
It renders the first ``--scenes`` real ``CaptionedScenes("train")`` images at 64x64 (200,000 by
default: the split's scenes beyond its usual 50,000 are further scenes of the same train photos and
seen item-colour pairs, so the shape net sees ~92% of the Fashion-MNIST train photos instead of
~46%), cuts them into quadrants and trains ``difflab.eval.SceneClassifier`` on them. Each epoch
sees every quadrant holding clothing, a random quarter of those holding a digit (digits are learnt
much faster) and a random 3% of the empty ones, with light augmentation: shifts of up to 2 pixels
(an item stays in its quadrant, at worst losing 2 pixels at its edge), left-right flips of clothing
(digits are not symmetric), and a fifth of the crops taken from the 16x16 rendering (area-averaged
from the 64x64 levels, within one level of the dataset's own) up-sampled to 64x64, as base-stage
samples are. The learning rate warms up over the first 15% of the steps, then decays on a cosine
(one-cycle); the loss is label-smoothed cross-entropy on item and colour. It then reports
per-attribute accuracy on real ``test``, ``unseen`` and ``paraphrase`` images, at 64x64 and at
16x16 (the dataset's 16x16 rendering, up-sampled), and writes
``src/difflab/eval/weights/scenes-attributes.safetensors`` plus ``.json`` (config, accuracies,
training command, date, wall-clock and CPU seconds, sha256 of the weights).

    python scripts/train_scene_classifier.py                  # the shipped weights (~20 min, one thread)
    python scripts/train_scene_classifier.py --scenes 5000 --epochs 2 --out /tmp/w   # a quick trial
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from difflab.data import from_levels
from difflab.data.scenes import CaptionedScenes
from difflab.eval.alignment import (
    EMPTY,
    SceneClassifier,
    SceneClassifierConfig,
    attribute_hits,
    predict_scene,
    save_scene_classifier,
    summarize_hits,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_feature_nets import augment  # noqa: E402  (random shifts with a black fill)

EVAL_SPLITS = ("test", "unseen", "paraphrase")
LOW_RES = 16  # the base stage's resolution


@dataclass(frozen=True)
class Recipe:
    """How the scene classifier is trained."""

    config: SceneClassifierConfig
    scenes: int = 200_000  # four times the diffusion models' 50,000: ~92% of the clothing photos get drawn
    epochs: int = 5
    batch_size: int = 128  # quadrant crops per step
    lr: float = 3e-3
    warmup: float = 0.15  # share of the steps spent warming up to ``lr`` (one-cycle; cosine decay after)
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    shift: int = 2
    empty_fraction: float = 0.03  # share of empty quadrants trained on each epoch (they are plain black)
    digit_fraction: float = 0.25  # share of digit quadrants trained on each epoch (digits are learnt fast)
    low_res: float = 0.2  # share of crops taken from the 16x16 rendering, up-sampled


RECIPE = Recipe(SceneClassifierConfig())


def render(split: str, n: int, size: int) -> tuple[Tensor, Tensor]:
    """(uint8 images (n, 3, size, size), int64 labels (n, 2, 3)) of the first ``n`` scenes of ``split``."""
    data = CaptionedScenes(split, n=n, size=size)
    images = torch.empty(n, 3, size, size, dtype=torch.uint8)
    labels = torch.empty(n, 2, 3, dtype=torch.int64)
    for i in range(n):
        images[i], _, labels[i] = data.scene(i)
    return images, labels


def quadrant_targets(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Per quadrant (n, 4): the item (EMPTY where none) and its colour (-1 where none)."""
    n = labels.shape[0]
    items = torch.full((n, 4), EMPTY, dtype=torch.int64)
    colours = torch.full((n, 4), -1, dtype=torch.int64)
    for s in range(2):
        rows = (labels[:, s, 0] >= 0).nonzero().squeeze(1)
        items[rows, labels[rows, s, 2]] = labels[rows, s, 0]
        colours[rows, labels[rows, s, 2]] = labels[rows, s, 1]
    return items, colours


def crops_of(images: Tensor, scene: Tensor, quadrant: Tensor, size: int, low: int | None = None) -> Tensor:
    """Float quadrant crops (B, 3, size/2, size/2) of ``images[scene]`` (uint8, any size, up-sampled).

    With ``low``, the scenes are first area-averaged to ``low`` x ``low`` levels (as ``CaptionedScenes``
    renders them, to within one level: it averages before rounding) and up-sampled back.
    """
    x = images[scene]
    if low is not None and low != x.shape[-1]:
        x = F.avg_pool2d(x.float(), x.shape[-1] // low).round().to(torch.uint8)
    x = from_levels(x, 256)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return SceneClassifier.quadrants(x).reshape(len(scene), 4, 3, size // 2, size // 2)[
        torch.arange(len(scene)), quadrant
    ]


def evaluate_split(net: SceneClassifier, images: Tensor, labels: Tensor) -> dict[str, float]:
    """Rates (see ``alignment_rates``) plus the item rate on clothing and on digits."""
    items, colours = predict_scene(net=net, images=from_levels(images, 256))
    hits = attribute_hits(items, colours, labels)
    out = summarize_hits(hits)
    for name, mask in (("item_clothing", labels[..., 0].lt(10)), ("item_digits", labels[..., 0].ge(10))):
        mask = mask & hits["slot"]
        out[name] = int((hits["item"] & mask).sum()) / max(int(mask.sum()), 1)
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in out.items()}


def train(recipe: Recipe, seed: int, log_eval: tuple[Tensor, Tensor] | None) -> tuple[SceneClassifier, float, float]:
    """Train the classifier; return it (eval mode), the training wall-clock and CPU seconds."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    start, cpu_start = time.perf_counter(), time.process_time()
    hi, labels = render("train", recipe.scenes, 64)
    items, colours = quadrant_targets(labels)
    print(f"rendered {recipe.scenes} train scenes ({time.perf_counter() - start:.0f} s)", flush=True)
    clothing = (items < 10).nonzero()  # (M, 2): scene, quadrant
    digits = ((items >= 10) & (items != EMPTY)).nonzero()
    empty = (items == EMPTY).nonzero()
    n_digits, n_empty = int(recipe.digit_fraction * len(digits)), int(recipe.empty_fraction * len(empty))
    per_epoch = len(clothing) + n_digits + n_empty
    steps_per_epoch = math.ceil(per_epoch / recipe.batch_size)

    net = SceneClassifier(recipe.config).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=recipe.lr, total_steps=max(recipe.epochs * steps_per_epoch, 10), pct_start=recipe.warmup
    )
    for epoch in range(recipe.epochs):
        net.train()
        pick_digits = digits[torch.randperm(len(digits), generator=generator)[:n_digits]]
        pick_empty = empty[torch.randperm(len(empty), generator=generator)[:n_empty]]
        pool = torch.cat([clothing, pick_digits, pick_empty])
        pool = pool[torch.randperm(len(pool), generator=generator)]
        low = torch.rand(len(pool), generator=generator) < recipe.low_res
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(steps_per_epoch):
            sl = slice(i * recipe.batch_size, (i + 1) * recipe.batch_size)
            scene, quadrant, is_low = pool[sl, 0], pool[sl, 1], low[sl]
            x = torch.empty(len(scene), 3, 32, 32)
            if bool((~is_low).any()):
                x[~is_low] = crops_of(hi, scene[~is_low], quadrant[~is_low], 64)
            if bool(is_low.any()):
                x[is_low] = crops_of(hi, scene[is_low], quadrant[is_low], 64, low=LOW_RES)
            y_item, y_colour = items[scene, quadrant], colours[scene, quadrant]
            x = augment(x, recipe.shift, False, generator)
            flip = (torch.rand(len(x), generator=generator) < 0.5) & (y_item < 10)  # clothing only
            x = torch.where(flip[:, None, None, None], x.flip(3), x).contiguous(memory_format=torch.channels_last)
            item_logits, colour_logits = net.crop_logits(x)
            loss = F.cross_entropy(item_logits, y_item, label_smoothing=recipe.label_smoothing)
            loss = loss + F.cross_entropy(
                colour_logits, y_colour, ignore_index=-1, label_smoothing=recipe.label_smoothing
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += len(y_item)
            correct += int((item_logits.argmax(1) == y_item).sum())
            loss_sum += float(loss.detach()) * len(y_item)
            if (i + 1) % 200 == 0:
                elapsed = time.perf_counter() - start
                print(f"  epoch {epoch + 1} step {i + 1}/{steps_per_epoch}  ({elapsed:.0f} s)", flush=True)
        line = f"epoch {epoch + 1}/{recipe.epochs}  loss {loss_sum / total:.4f}  train item acc {correct / total:.4f}"
        if log_eval is not None:
            r = evaluate_split(net.eval(), *log_eval)
            line += f"  test item {r['item']:.4f} colour {r['colour']:.4f} exact {r['exact']:.4f}"
        print(f"{line}  ({time.perf_counter() - start:.0f} s)", flush=True)
    net = net.to(memory_format=torch.contiguous_format).eval()
    return net, time.perf_counter() - start, time.process_time() - cpu_start


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenes", type=int, default=None, help="override the number of train scenes")
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (for quick trials)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: the shipped weights folder)")
    args = ap.parse_args(argv)
    if (args.scenes is not None and args.scenes < 10) or (args.epochs is not None and args.epochs < 1):
        ap.error("--scenes must be >= 10 and --epochs >= 1")

    torch.set_num_threads(1)  # deterministic and, on small convs, also the fastest on a shared CPU
    torch.use_deterministic_algorithms(True)
    command = "python " + " ".join(shlex.quote(a) for a in ["scripts/train_scene_classifier.py", *sys.argv[1:]])
    recipe = RECIPE
    if args.scenes is not None or args.epochs is not None:
        recipe = Recipe(
            **{**vars(recipe), "scenes": args.scenes or recipe.scenes, "epochs": args.epochs or recipe.epochs}
        )
    evals = {(split, size): render(split, 1000, size) for split in EVAL_SPLITS for size in (64, LOW_RES)}
    net, seconds, cpu_seconds = train(recipe, args.seed, evals[("test", 64)])
    accuracy: dict[str, dict[str, dict[str, float]]] = {}
    for split in EVAL_SPLITS:
        accuracy[split] = {}
        for size in (64, LOW_RES):
            r = evaluate_split(net, *evals[(split, size)])
            accuracy[split][f"{size}x{size}"] = r
            print(
                f"{split:>10} {size:>2}x{size:<2}  item {r['item']:.4f} (clothing {r['item_clothing']:.4f}, "
                f"digits {r['item_digits']:.4f})  colour {r['colour']:.4f}  position {r['position']:.4f}  "
                f"exact {r['exact']:.4f}  alignment {r['alignment']:.4f}",
                flush=True,
            )
    w_path, j_path = save_scene_classifier(
        net,
        args.out,
        accuracy=accuracy,
        accuracy_note=(
            "real scenes, first 1000 of each split; 16x16 = the dataset's 16x16 rendering up-sampled bilinearly; "
            "item/colour/position = fraction of labelled items whose attribute is found (alignment's "
            "definition), exact = all four quadrants exactly right (items, colours, empty ones)"
        ),
        train_seconds=round(seconds, 1),
        train_cpu_seconds=round(cpu_seconds, 1),
        recipe={k: v for k, v in vars(recipe).items() if k != "config"},
        feature_layer=(
            f"per quadrant: shape FeatureNet's global-average-pooled conv features -> Linear -> ReLU "
            f"({recipe.config.feature_dim}), then the colour MLP's hidden layer ({recipe.config.colour_dim}); "
            f"the 4 quadrants concatenated ({4 * (recipe.config.feature_dim + recipe.config.colour_dim)})"
        ),
        seed=args.seed,
        train_command=command,
        date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        machine=f"{platform.machine()} {platform.processor() or 'cpu'}, 1 thread, torch {torch.__version__}",
    )
    size = w_path.stat().st_size / 1024
    print(f"trained in {seconds:.0f} s ({cpu_seconds:.0f} s CPU) ({size:.0f} KiB) -> {w_path}, {j_path}", flush=True)


if __name__ == "__main__":
    main()
