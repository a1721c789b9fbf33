"""Train the moving-items video classifier that difflab's video metrics (frame / video FD, identity) use.

It trains ``difflab.eval.video.VideoClassifier`` on real ``MovingItems("train", frames=16,
items="1-2")`` clips, rendered on the fly (video ``i`` of a fixed random order of the first
``--videos`` train clips; each clip is a pure function of its index). Every step encodes a batch of
clips frame by frame once (10 clips), together with single frames of other train clips (224; the
frames of one clip show the same sprites, so these add variety for the frame head at the same
cost), and trains three heads and a helper:

- per frame, the item kinds in the frame (multi-label, 20 kinds; an item is in every frame of its
  clip), on the clips' frames and the single frames;
- per clip, the item kinds in the clip (multi-label), on real-order and corrupted clips alike;
- per clip, real order (label 1) vs corrupted order (label 0). The negatives are the batch's own
  clips with their frame features reordered, so they differ from the positives only in order: a
  random shuffle, a reversed segment (not the whole clip), or two frames at least 2 apart swapped
  (a third each). A whole clip played backwards is a *positive* (bouncing motion is
  time-reversible), drawn half of the time; half of the batches use a random sub-clip of 4..16
  frames for the temporal heads, so clip features are defined for any length from 4 frames;
- per frame, the place head: where the items are (the mean of their centres and the absolute
  difference between them, from the true tracks), squared error; the temporal part reads it.

Light augmentation: a left-right flip of the whole clip (half of the clips that hold no digit).
The loss is binary cross-entropy on each head (summed over the 20 kinds, averaged over frames /
clips; weight 2 on the order loss, 3 on the place loss); the item heads' biases start at the
prior (1.5 kinds of 20). AdamW; the learning rate warms up over the first 5% of the run, then
decays on a cosine.
The run length is a wall-clock budget (``--minutes``: the schedule follows the elapsed share of
it, so the step count depends on the machine's speed) or an exact step count (``--steps``:
deterministic on one machine with one thread). The metadata records the steps taken, so
``--steps N`` repeats a ``--minutes`` run's schedule.

It then reports accuracies on the 500 real test clips (``MovingItems("test")``, the clips that
``reference_videos`` uses): per-frame item accuracy (the frame head's set, sigmoid >= 0.5, exactly
the frame's item set), clip item-set accuracy (the clip head's set exactly right) and order
accuracy (each test clip in real order and one corrupted copy: a shuffle, reversed segment or swap
in turn), plus ``real_floor`` (n = 500), and writes ``src/difflab/eval/weights/moving-items.safetensors``
plus ``.json`` (config, accuracies, floor, training command, date, wall-clock and CPU seconds, sha256).

    python scripts/train_video_classifier.py --minutes 22 --threads 1   # the shipped weights (2388 steps)
    python scripts/train_video_classifier.py --steps 50 --out /tmp/w     # a quick trial
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import platform
import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.data import from_levels
from difflab.data.scenes import ITEMS, NUM_FASHION
from difflab.data.video import MovingItems
from difflab.eval.video import (
    WINDOW,
    VideoClassifier,
    VideoClassifierConfig,
    frame_item_sets,
    real_floor,
    save_video_classifier,
)

NEGATIVES = ("shuffle", "reversed segment", "swap")


@dataclass(frozen=True)
class Recipe:
    """How the video classifier is trained."""

    config: VideoClassifierConfig
    videos: int = 100_000  # distinct train clips drawn from (their sprites are Fashion-MNIST / digit train images)
    batch_size: int = 10  # clips per step (each also gives one corrupted-order negative)
    extra_frames: int = 224  # single frames of other train clips per step, for the frame head only
    lr: float = 3e-3
    warmup: float = 0.05
    weight_decay: float = 5e-4
    crop: float = 0.5  # share of batches whose temporal heads see a random sub-clip of 4..16 frames
    reverse: float = 0.5  # share of positives played backwards
    flip: float = 0.5  # share of digit-free clips flipped left-right
    order_weight: float = 2.0  # weight of the order loss
    items_weight: float = 1.0  # weight of the clip item loss
    place_weight: float = 3.0  # weight of the place head's loss (squared error of [-1, 1] coordinates)


RECIPE = Recipe(VideoClassifierConfig())


def render(data: MovingItems, indices: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(videos (B, 1, F, S, S) in [-1, 1], item sets (B, 20) float, frame item sets (B, F, 20) float, places).

    ``places`` (B, F, 4) float: per frame, the mean of the items' centres (row, col) and the absolute
    difference between them (0 for one item), scaled so that the canvas spans [-1, 1]; an order-free
    summary of where the items are, the target of the training-only position head.
    """
    xs, sets, frame_sets, places = [], [], [], []
    for i in indices.tolist():
        k, labels, tracks = data.video(int(i))
        xs.append(k)
        present = torch.zeros(len(ITEMS))
        per_frame = torch.zeros(k.shape[1], len(ITEMS))
        for slot, kind in enumerate(labels.tolist()):
            if kind >= 0:
                present[kind] = 1.0
                per_frame[:, kind] = torch.maximum(per_frame[:, kind], tracks[:, slot].isfinite().all(-1).float())
        sets.append(present)
        frame_sets.append(per_frame)
        centres = (tracks + (data.item_size - 1) / 2) * (2.0 / (data.size - 1)) - 1.0  # (F, 2, 2)
        second = torch.where(centres[:, 1].isfinite(), centres[:, 1], centres[:, 0])
        places.append(torch.cat([(centres[:, 0] + second) / 2, (centres[:, 0] - second).abs()], 1))
    return from_levels(torch.stack(xs), 256), torch.stack(sets), torch.stack(frame_sets), torch.stack(places)


def corrupt(length: int, kind: int, generator: torch.Generator) -> Tensor:
    """A frame order (length,) that is neither the real one nor its reversal: ``NEGATIVES[kind]``."""
    ident = torch.arange(length)
    while True:
        if kind == 0:
            perm = torch.randperm(length, generator=generator)
        elif kind == 1:
            a, b = sorted(torch.randint(0, length, (2,), generator=generator).tolist())
            perm = ident.clone()
            perm[a : b + 1] = ident[a : b + 1].flip(0)
        else:
            i, j = torch.randint(0, length, (2,), generator=generator).tolist()
            perm = ident.clone()
            if abs(i - j) >= 2:
                perm[i], perm[j] = j, i
        if not torch.equal(perm, ident) and not torch.equal(perm, ident.flip(0)):
            return perm


def flip_digit_free(
    x: Tensor, sets: Tensor, places: Tensor, share: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Flip left-right a random ``share`` of the clips (B, 1, F, H, W) that hold no digit (item sets (B, 20))."""
    flip = (sets[:, NUM_FASHION:].sum(1) == 0) & (torch.rand(x.shape[0], generator=generator) < share)
    mirrored = places * torch.tensor([1.0, -1.0, 1.0, 1.0])  # the mean column changes sign
    return torch.where(flip[:, None, None, None, None], x.flip(-1), x), torch.where(
        flip[:, None, None], mirrored, places
    )


def lr_factor(progress: float, warmup: float) -> float:
    """Learning-rate multiplier at ``progress`` in [0, 1]: linear warm-up, then cosine decay to 0."""
    if progress < warmup:
        return max(progress / warmup, 0.01)
    return 0.5 * (1.0 + math.cos(math.pi * min((progress - warmup) / (1.0 - warmup), 1.0)))


def bce(logits: Tensor, targets: Tensor) -> Tensor:
    """Binary cross-entropy summed over the last (kind) axis, averaged over the rest."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(-1).mean()


@torch.no_grad()
def evaluate(net: VideoClassifier, videos: Tensor, sets: Tensor, frame_sets: Tensor, seed: int) -> dict[str, float]:
    """Accuracies on real clips: per-frame item set, clip item set, order vs corrupted order (and per negative)."""
    net.eval()
    out: dict[str, float] = {}
    seen = frame_item_sets(videos, net)
    exact = (seen == frame_sets.bool()).all(-1)  # (B, F)
    two = sets.sum(1) > 1
    out["frame_items"] = float(exact.float().mean())
    out["frame_items_one_kind"] = float(exact[~two].float().mean()) if bool((~two).any()) else float("nan")
    out["frame_items_two_kinds"] = float(exact[two].float().mean()) if bool(two.any()) else float("nan")
    generator = torch.Generator().manual_seed(seed)
    hits = {name: [] for name in ("real", *NEGATIVES)}
    item_hits = []
    for i in range(0, videos.shape[0], 64):
        h = net.encode_frames(net.prepare(videos[i : i + 64]))
        kinds = [(i + j) % len(NEGATIVES) for j in range(h.shape[0])]
        perms = torch.stack([corrupt(h.shape[1], k, generator) for k in kinds])
        shuffled = h.gather(1, perms[..., None].expand_as(h))
        items, order = net.video_heads(net.temporal(h))
        _, order_neg = net.video_heads(net.temporal(shuffled))
        item_hits.append(((items >= 0) == sets[i : i + 64].bool()).all(1))
        hits["real"].append(order > 0)
        for k, neg in zip(kinds, order_neg, strict=True):
            hits[NEGATIVES[k]].append((neg < 0)[None])
    out["video_items"] = float(torch.cat(item_hits).float().mean())
    per = {name: torch.cat(v).float() for name, v in hits.items()}
    out["order"] = float(torch.cat(list(per.values())).mean())
    out.update({f"order_{name.replace(' ', '_')}": float(v.mean()) for name, v in per.items()})
    return {k: round(v, 6) for k, v in out.items()}


def train(
    recipe: Recipe,
    seed: int,
    minutes: float | None,
    steps: int | None,
    monitor: tuple[Tensor, Tensor, Tensor],
    log_every: int,
) -> tuple[VideoClassifier, dict[str, float]]:
    """Train the classifier; return it (eval mode) and its run numbers (steps, clips, seconds)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    data = MovingItems("train", n=recipe.videos, frames=WINDOW, items="1-2")
    stills = MovingItems("train", n=recipe.videos, frames=1, items="1-2")  # frame 0 of each clip
    order = torch.randperm(recipe.videos, generator=generator)
    still_order = torch.randperm(recipe.videos, generator=generator)
    net = VideoClassifier(recipe.config).to(memory_format=torch.channels_last)
    prior = math.log(0.75 / (len(ITEMS) - 0.75))  # 1.5 kinds of 20 in a clip on average
    for head in (net.frame_head, net.item_head):
        nn.init.constant_(head.bias, prior)
    opt = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    b, e = recipe.batch_size, recipe.extra_frames
    start, cpu_start = time.perf_counter(), time.process_time()
    step, clips, sums = 0, 0, {"loss": 0.0, "frame": 0.0, "order": 0.0, "place": 0.0, "n": 0}
    while True:
        progress = step / steps if steps is not None else (time.perf_counter() - start) / (60.0 * minutes)  # type: ignore[operator]
        if progress >= 1.0:
            break
        for group in opt.param_groups:
            group["lr"] = recipe.lr * lr_factor(progress, recipe.warmup)
        net.train()
        x, sets, frame_sets, places = render(data, order[torch.arange(clips, clips + b) % recipe.videos])
        still_idx = still_order[torch.arange(step * e, (step + 1) * e) % recipe.videos]
        xs, _, still_sets, still_places = render(stills, still_idx)
        clips += b
        x, places = flip_digit_free(x, sets, places, recipe.flip, generator)
        xs, still_places = flip_digit_free(xs, still_sets[:, 0], still_places, recipe.flip, generator)

        frames = torch.cat([x[:, 0].flatten(0, 1), xs[:, 0, 0]])  # (B * F + E, H, W): every frame on its own
        hb, frame_logits = net.encode(frames[:, None])  # (B * F + E, D), (B * F + E, 20)
        h = hb[: b * WINDOW].reshape(b, WINDOW, -1)  # (B, F, D)
        frame_targets = torch.cat([frame_sets.flatten(0, 1), still_sets[:, 0]])
        loss_frame = bce(frame_logits, frame_targets)
        place_targets = torch.cat([places.flatten(0, 1), still_places[:, 0]])
        loss_place = recipe.place_weight * F.mse_loss(net.place_head(hb), place_targets, reduction="none").sum(1).mean()
        backwards = torch.rand(b, generator=generator) < recipe.reverse
        hp = torch.where(backwards[:, None, None], h.flip(1), h)
        if float(torch.rand(1, generator=generator)) < recipe.crop:
            length = int(torch.randint(4, WINDOW + 1, (1,), generator=generator))
            first = int(torch.randint(0, WINDOW - length + 1, (1,), generator=generator))
            hp = hp[:, first : first + length]
        kinds = torch.randint(0, len(NEGATIVES), (b,), generator=generator).tolist()
        perms = torch.stack([corrupt(hp.shape[1], k, generator) for k in kinds])
        hn = hp.gather(1, perms[..., None].expand_as(hp))
        items, order_logit = net.video_heads(net.temporal(torch.cat([hp, hn])))
        loss_items = bce(items, torch.cat([sets, sets]))
        target = torch.cat([torch.ones(b), torch.zeros(b)])
        loss_order = F.binary_cross_entropy_with_logits(order_logit, target)
        loss = loss_frame + recipe.items_weight * loss_items + recipe.order_weight * loss_order + loss_place
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1

        with torch.no_grad():
            sums["loss"] += float(loss)
            sums["frame"] += float(((frame_logits >= 0) == frame_targets.bool()).all(-1).float().mean())
            sums["order"] += float(((order_logit > 0).float() == target).float().mean())
            sums["place"] += float(loss_place) / recipe.place_weight
            sums["n"] += 1
        if step % log_every == 0:
            n = sums["n"]
            line = (
                f"step {step}  clips {clips}  lr {opt.param_groups[0]['lr']:.2e}  loss {sums['loss'] / n:.4f}  "
                f"train frame items {sums['frame'] / n:.3f}  order {sums['order'] / n:.3f}  "
                f"place mse {sums['place'] / n:.4f}"
            )
            sums = {"loss": 0.0, "frame": 0.0, "order": 0.0, "place": 0.0, "n": 0}
            if step % (log_every * 5) == 0:
                r = evaluate(net, *monitor, seed)
                line += f"  | test frame items {r['frame_items']:.3f} clip items {r['video_items']:.3f}"
                line += f" order {r['order']:.3f}"
            print(f"{line}  ({time.perf_counter() - start:.0f} s)", flush=True)
    net = net.to(memory_format=torch.contiguous_format).eval()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return net, {"steps": step, "clips": clips, "train_seconds": round(seconds, 1), "train_cpu_seconds": round(cpu, 1)}


def feature_layers(c: VideoClassifierConfig) -> str:
    """What the frame and video feature vectors hold (for the metadata)."""
    half = c.video_dim // 2
    return (
        f"frame ({c.frame_dim + c.num_items + 5}): Linear -> ReLU ({c.frame_dim}) of the last conv map's channel "
        f"maxima and {c.keypoints} keypoint coordinates, the {c.num_items} item probabilities (frame head), 5 "
        f"intensity moments; video ({c.video_dim}): motion ({half}: frame features and place head -> "
        f"{c.temporal_layers} temporal convs -> mean over time -> Linear -> ReLU), then content "
        f"({c.video_dim - half}: mean of the frame features over time -> Linear -> ReLU)"
    )


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    run = ap.add_mutually_exclusive_group()
    run.add_argument("--minutes", type=float, default=20.0, help="wall-clock training budget (default 20)")
    run.add_argument("--steps", type=int, default=None, help="train exactly this many steps instead (deterministic)")
    ap.add_argument("--videos", type=int, default=None, help="number of distinct train clips (default 100,000)")
    ap.add_argument("--batch-size", type=int, default=None, help="clips per step (default 10)")
    ap.add_argument("--extra-frames", type=int, default=None, help="single frames per step (default 224)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: deterministic)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-videos", type=int, default=500, help="real test clips for the accuracies (default 500)")
    ap.add_argument("--floor-n", type=int, default=500, help="clips per set for the recorded real floor (0: skip)")
    ap.add_argument("--log-every", type=int, default=50, help="steps between progress lines (test every 5th)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: the shipped weights folder)")
    args = ap.parse_args(argv)
    if args.minutes is not None and args.minutes <= 0 or args.steps is not None and args.steps < 1:
        ap.error("--minutes must be > 0 and --steps >= 1")
    if args.threads < 1 or args.eval_videos < 2 or args.floor_n < 0 or args.log_every < 1:
        ap.error("--threads >= 1, --eval-videos >= 2, --floor-n >= 0 and --log-every >= 1 needed")

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    command = "python " + " ".join(shlex.quote(a) for a in ["scripts/train_video_classifier.py", *sys.argv[1:]])
    recipe = replace(
        RECIPE,
        videos=args.videos or RECIPE.videos,
        batch_size=args.batch_size or RECIPE.batch_size,
        extra_frames=RECIPE.extra_frames if args.extra_frames is None else args.extra_frames,
    )
    t0 = time.perf_counter()
    test = render(MovingItems("test", n=args.eval_videos, frames=WINDOW, items="1-2"), torch.arange(args.eval_videos))
    test = test[:3]
    monitor = tuple(t[:100] for t in test)
    print(f"rendered {args.eval_videos} test clips ({time.perf_counter() - t0:.0f} s)", flush=True)
    minutes = None if args.steps is not None else args.minutes
    net, run = train(recipe, args.seed, minutes, args.steps, monitor, args.log_every)  # type: ignore[arg-type]
    accuracy = evaluate(net, *test, args.seed)
    print("test accuracy: " + "  ".join(f"{k} {v:.4f}" for k, v in accuracy.items()), flush=True)
    floor = None
    if args.floor_n:
        floor = real_floor("test", n=args.floor_n, net=net)
        floor = {k: round(v, 6) if isinstance(v, float) else v for k, v in floor.items()}
        print("real floor: " + "  ".join(f"{k} {v}" for k, v in floor.items()), flush=True)
    w_path, j_path = save_video_classifier(
        net,
        args.out,
        accuracy=accuracy,
        accuracy_note=(
            f"first {args.eval_videos} real MovingItems('test', frames=16, items='1-2') clips; frame_items = share "
            "of frames whose predicted item set (frame head, sigmoid >= 0.5) is exactly the frame's set; "
            "video_items = share of clips whose clip-head set is exactly right; order = share of right "
            "real-vs-corrupted decisions over each clip in real order and one corrupted copy (shuffle, reversed "
            "segment or swap of two frames >= 2 apart, in turn)"
        ),
        real_floor=floor,
        real_floor_note="difflab.eval.video.real_floor('test', n): clips n..2n-1 scored against clips 0..n-1",
        **run,
        recipe={k: v for k, v in vars(recipe).items() if k != "config"},
        feature_layers=feature_layers(recipe.config),
        seed=args.seed,
        train_command=command,
        date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        machine=f"{platform.machine()} {platform.processor() or 'cpu'}, {args.threads} thread(s), "
        f"torch {torch.__version__}",
    )
    size = w_path.stat().st_size / 1024
    print(
        f"trained {run['steps']} steps in {run['train_seconds']:.0f} s ({size:.0f} KiB), total "
        f"{time.perf_counter() - t0:.0f} s -> {w_path}, {j_path}",
        flush=True,
    )


if __name__ == "__main__":
    main()
