"""Train the feature networks that difflab's Frechet distance and precision/recall use.

Deterministic on one machine: fixed seeds, one CPU thread, ``torch.use_deterministic_algorithms``.
For each data set (digits 8x8, Fashion-MNIST 28x28) it trains a small CNN classifier
(``difflab.eval.FeatureNet``) on the train split with light augmentation (random shifts, and
horizontal flips for clothing), prints the test accuracy, and writes
``src/difflab/eval/weights/NAME.safetensors`` plus ``NAME.json`` (architecture config, test
accuracy, accuracy on the first 2,000 test images, training command, date, sha256 of the weights).

    python scripts/train_feature_nets.py                     # both (~10 min on a laptop CPU)
    python scripts/train_feature_nets.py --only digits       # the 8x8 digits net only (~1 min)
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

from difflab.data import get_dataset
from difflab.eval.featurenet import FeatureNet, FeatureNetConfig, class_accuracy, save_feature_net

SUBSET = 2000  # the test subset whose accuracy is also recorded (the fast test uses it)


@dataclass(frozen=True)
class Recipe:
    """How one feature net is trained."""

    config: FeatureNetConfig
    epochs: int
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    shift: int = 2  # random translation of up to +-shift pixels
    hflip: bool = False  # random horizontal flips (clothing is left-right symmetric; digits are not)
    log_every: int = 1  # evaluate on the test split every N epochs (does not change the weights)


RECIPES = {
    "digits": Recipe(
        FeatureNetConfig(in_channels=1, image_size=8, widths=(32, 64, 128), depths=(1, 1, 1), feature_dim=128),
        epochs=60,
        batch_size=64,
        shift=1,
        log_every=10,
    ),
    "fashion-mnist": Recipe(
        FeatureNetConfig(
            in_channels=1, image_size=28, widths=(16, 32, 64), depths=(1, 2, 2), feature_dim=128, dropout=0.1
        ),
        epochs=8,
        batch_size=128,
        shift=1,
        hflip=True,
    ),
}


def augment(x: Tensor, shift: int, hflip: bool, generator: torch.Generator) -> Tensor:
    """Shift each image by up to +-``shift`` pixels (background -1 fills in), optionally flip it left-right."""
    n, _, h, w = x.shape
    if shift > 0:
        padded = F.pad(x, (shift,) * 4, value=-1.0)
        dy = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
        rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(n, x.shape[1], h, w + 2 * shift)
        padded = padded.gather(2, rows)
        cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(n, x.shape[1], h, w)
        x = padded.gather(3, cols)
    if hflip:
        flip = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


def train_one(name: str, recipe: Recipe, seed: int) -> tuple[FeatureNet, dict[str, object]]:
    """Train feature net ``name``; return it (eval mode) and the numbers for its metadata."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x_train, cond_train = get_dataset(name, "train").tensors()
    x_test, cond_test = get_dataset(name, "test").tensors()
    y_train, y_test = cond_train["class"], cond_test["class"]
    net = FeatureNet(recipe.config).to(memory_format=torch.channels_last)  # ~20% faster convs on CPU
    opt = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps_per_epoch = math.ceil(len(x_train) / recipe.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch, pct_start=0.25
    )
    start = time.perf_counter()
    for epoch in range(recipe.epochs):
        net.train()
        order = torch.randperm(len(x_train), generator=generator)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(steps_per_epoch):
            idx = order[i * recipe.batch_size : (i + 1) * recipe.batch_size]
            x = augment(x_train[idx], recipe.shift, recipe.hflip, generator).contiguous(
                memory_format=torch.channels_last
            )
            y = y_train[idx]
            logits = net(x)
            loss = F.cross_entropy(logits, y, label_smoothing=recipe.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += len(y)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(loss.detach()) * len(y)
        if (epoch + 1) % recipe.log_every == 0 or epoch + 1 == recipe.epochs:
            acc = class_accuracy(net, x_test, y_test)
            print(
                f"[{name}] epoch {epoch + 1}/{recipe.epochs}  loss {loss_sum / total:.4f}  "
                f"train acc {correct / total:.4f}  test acc {acc:.4f}  ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    net = net.to(memory_format=torch.contiguous_format).eval()
    train_seconds = time.perf_counter() - start
    n_sub = min(SUBSET, len(x_test))
    stats = {
        "test_accuracy": round(class_accuracy(net, x_test, y_test), 6),
        "test_size": len(x_test),
        "test_accuracy_subset": {
            "n": n_sub,
            "which": f"first {n_sub} images of the test split",
            "accuracy": round(class_accuracy(net, x_test[:n_sub], y_test[:n_sub]), 6),
        },
        "train_seconds": round(train_seconds, 1),
        "recipe": {k: v for k, v in vars(recipe).items() if k not in ("config", "log_every")},
    }
    return net, stats


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=sorted(RECIPES), action="append", help="train only this net (repeatable)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (for quick trials)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: the shipped weights folder)")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)  # deterministic and, on small convs, also the fastest on a shared CPU
    torch.use_deterministic_algorithms(True)
    command = "python " + " ".join(shlex.quote(a) for a in ["scripts/train_feature_nets.py", *sys.argv[1:]])
    for name in args.only or list(RECIPES):
        recipe = RECIPES[name]
        if args.epochs is not None:
            recipe = Recipe(**{**vars(recipe), "epochs": args.epochs})
        net, stats = train_one(name, recipe, args.seed)
        w_path, j_path = save_feature_net(
            net,
            name,
            args.out,
            **stats,
            feature_layer="penultimate: global-average-pooled conv features -> Linear -> ReLU",
            seed=args.seed,
            train_command=command,
            date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            machine=f"{platform.machine()} {platform.processor() or 'cpu'}, 1 thread, torch {torch.__version__}",
        )
        print(
            f"[{name}] test accuracy {stats['test_accuracy']:.4f} "
            f"({w_path.stat().st_size / 1024:.0f} KiB) -> {w_path}, {j_path}",
            flush=True,
        )


if __name__ == "__main__":
    main()
