"""A feature net for any image data set: trained by difflab on the data itself, cached by its content.

The shipped feature nets (:mod:`.featurenet`) cover digits and Fashion-MNIST. For every other image
data set -- a folder of your own images above all -- :func:`generic_reference` trains the same small
:class:`~.featurenet.FeatureNet` architecture on the training images, once, caches it, and gives
the real-data features that Frechet distance, its floor and precision / recall compare samples with.

**The task.** FD needs features that respond to what generated images get wrong (shapes, parts in
the wrong place, textures, blur, noise), and it must work without labels. The net learns to tell
which of the four rotations (0, 90, 180, 270 degrees) was applied to an image (Gidaris et al. 2018,
"Unsupervised representation learning by predicting image rotations"): it can only do that by
recognising what the content looks like upright -- eyes above a mouth, ground below sky, the
outline of an object. When the data have class labels (an image folder with one sub-folder per
class, 2 classes or more) the net predicts class and rotation together (``4 x classes`` outputs),
so its features also separate the classes. Every training image is also shifted by up to 1/8 of
its side (edge pixels repeated) and mirrored left-right half the time, so that the features do
not hinge on exact pixel positions.

Limits: data without a usual orientation (textures, aerial views, cells under a microscope) leave
the rotation task unlearnable. The net's accuracy on its own task is recorded (``task_accuracy``,
on training images, upright and rotated; chance is ``1 / (4 x classes)``) with its accuracy on
the rotation alone (``rotation_accuracy``, chance 0.25); below ``WEAK_TASK`` a warning says that
FD is then a weak measure. Mirrored images have the same features.

**Size.** Images are scored at ``feature_resolution(size)`` (at most 64 pixels: larger images are
shrunk by averaging), quantized to 8 bits exactly as real images are, so samples and data go
through the same steps. Four stages of one 3x3 convolution each, widths (16, 32, 64, 128), 128
features (the penultimate layer): about 115k parameters, 16M multiply-adds per 64x64 RGB image --
a third of the cost of the Fashion-MNIST net's (16, 32, 64) x (1, 2, 2) layout at that size,
which would not train in two minutes on a CPU. Training takes ``clip(EPOCHS x images / BATCH,
UPDATES_MIN, UPDATES_MAX)`` updates of ``BATCH`` images (AdamW, one-cycle learning rate, label
smoothing 0.1), on one torch thread while the machine is busy (:func:`_busy_machine_threads`).

**Cache.** The key (:func:`cache_key`) is the sha256 of the recipe (:data:`RECIPE`, the update
count) and of the data's content hash: the images as the data set delivers them (uint8 levels
after its resize / crop / channels, in data-set order) and their labels -- so moving or renaming
the folder keeps the key, changing a pixel or an option such as ``size`` changes it. The net
lives in ``cache_dir() / "features" / KEY[:24]`` as
``generic.safetensors`` and ``generic.json`` (:func:`~.featurenet.save_feature_net`; the sha256 of
the weights is checked on loading, and a corrupt entry is retrained). ``cache_dir()`` is
``$DIFFLAB_CACHE``, else ``$XDG_CACHE_HOME/difflab``, else ``~/.cache/difflab``.

**Reference and floor.** At most ``MAX_IMAGES`` training images (a seeded subset if there are more)
are split at random into two halves: samples are compared with the first (the reference set,
at most ``n_ref`` images), and the *floor* is the FD between the reference set and as many images
of the second half as there are samples: what a perfect generator of the training images would
score at that sample count.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cache import cache_dir
from .featurenet import (
    FeatureNet,
    FeatureNetConfig,
    class_logits,
    feature_net_metadata,
    features,
    load_checked_weights,
    save_feature_net,
)

NAME = "generic"
MAX_RESOLUTION = 64  # images are scored at this many pixels a side at most
MAX_IMAGES = 10_000  # training images read (a seeded subset of larger data sets)
BATCH = 64
EPOCHS = 12
UPDATES_MIN = 200
UPDATES_MAX = 600
WEAK_TASK = 0.5  # rotation accuracy (chance 0.25) below which FD is flagged as a weak measure
RECIPE = {
    "version": 1,
    "task": "rotation (0/90/180/270) x class",
    "widths": [16, 32, 64, 128],
    "depths": [1, 1, 1, 1],
    "feature_dim": 128,
    "dropout": 0.1,
    "batch": BATCH,
    "lr": 3e-3,
    "weight_decay": 5e-4,
    "label_smoothing": 0.1,
    "shift": "1/8 of the side, edge pixels repeated",
    "hflip": 0.5,
}


def feature_resolution(size: int) -> int:
    """The side at which images of side ``size`` are scored: ``size`` shrunk by the smallest integer
    factor that brings it to at most ``MAX_RESOLUTION``."""
    return size // math.ceil(size / MAX_RESOLUTION)


def to_feature_levels(x: Tensor, resolution: int, levels: int = 256) -> Tensor:
    """Images (N, C, H, W) -> uint8 levels (N, C, r, r) at the feature resolution: floats in [-1, 1]
    are first quantized to ``levels`` levels (what saving them would do), uint8 levels taken as they
    are; then shrunk by averaging and quantized to 256 levels. Real images and samples both pass here."""
    from ..data import from_levels, to_levels

    if not x.is_floating_point():
        x = from_levels(x, levels)
    else:
        x = from_levels(to_levels(x.float().clamp(-1.0, 1.0), levels), levels)
    if x.shape[-1] != resolution or x.shape[-2] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="area")
    return to_levels(x, 256)


@dataclass
class RealImages:
    """The training images of a data set as the generic feature net sees them."""

    levels: Tensor  # uint8 (N, C, r, r) at the feature resolution
    labels: Tensor  # int64 (N,)
    num_classes: int  # 1: no classes
    data_shape: tuple[int, int, int]  # (C, H, W) of the data set's images (and of samples)
    data_levels: int
    key: str  # sha256 of the images at data resolution (uint8 levels, in data-set order) and their labels
    total: int  # images in the split (len(levels) may be fewer: MAX_IMAGES)
    summary: str


def _eval_options(name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """``options`` with random crops and flips turned off (the reference images must not vary)."""
    from ..data import dataset_options

    out = dict(options or {})
    valid = dataset_options(name)
    if "crop" in valid and out.get("crop") == "random":
        out["crop"] = "center"
    if "flip" in valid:
        out["flip"] = False
    out.pop("discrete", None)
    return out


def read_images(
    name: str,
    options: dict[str, Any] | None = None,
    *,
    seed: int = 0,
    max_images: int = MAX_IMAGES,
    progress: bool | None = None,
    labels: bool = True,
) -> RealImages:
    """Read (and hash) the training images of data set ``name`` (with their class labels, if it has
    them and ``labels``); a data set that is not made of images (C, H, W) is a ValueError."""
    from ..data import get_dataset

    data = get_dataset(name, "train", **_eval_options(name, options))
    total = len(data)
    first, _ = data.get_levels(0)
    if first.ndim != 3:
        raise ValueError(
            f"difflab eval scores image data sets; {name!r} yields items of shape {tuple(first.shape)} "
            "(videos: see difflab.eval.video and docs/video.md)"
        )
    shape = tuple(int(v) for v in first.shape)
    if total > max_images:
        idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:max_images].sort().values.tolist()
    else:
        idx = list(range(total))
    try:
        info = data.info
        num_classes = int(info.num_classes or 1) if labels and "class" in getattr(data, "cond_keys", ()) else 1
    except (AttributeError, NotImplementedError):
        num_classes = 1
    resolution = feature_resolution(shape[-1])
    h = hashlib.sha256()
    h.update(json.dumps({"shape": shape, "levels": data.levels, "classes": num_classes}).encode())
    out, labels, chunk = [], [], 256
    bar = _bar(len(idx), f"reading {name} images", "img", progress if len(idx) >= 2000 else False)
    for start in range(0, len(idx), chunk):
        items = [data.get_levels(i) for i in idx[start : start + chunk]]
        k = torch.stack([item[0] for item in items])
        if tuple(k.shape[1:]) != shape:
            raise ValueError(f"{name}: images of shape {tuple(k.shape[1:])} and {shape}; cannot score them together")
        y = torch.tensor([int(item[1]) if num_classes > 1 else 0 for item in items], dtype=torch.int64)
        h.update(k.contiguous().numpy().tobytes())
        h.update(y.numpy().tobytes())
        out.append(to_feature_levels(k, resolution, data.levels))
        labels.append(y)
        if bar is not None:
            bar.update(len(items))
    if bar is not None:
        bar.close()
    given = ", ".join(f"{k}={v}" for k, v in sorted((options or {}).items()))
    summary = f"{name} ({given})" if given else name
    return RealImages(
        levels=torch.cat(out), labels=torch.cat(labels), num_classes=num_classes, data_shape=shape,  # type: ignore[arg-type]
        data_levels=data.levels, key=h.hexdigest(), total=total, summary=summary,
    )  # fmt: skip


def _bar(total: int, desc: str, unit: str, progress: bool | None) -> Any:
    if progress is False:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=None if progress is None else False, leave=False)


def _shift(x: Tensor, shift: int, generator: torch.Generator) -> Tensor:
    """Shift each image by up to +-``shift`` pixels in each direction, repeating the edge pixels."""
    if shift < 1:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (shift,) * 4, mode="replicate")
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(n, c, h, w + 2 * shift)
    padded = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(n, c, h, w)
    return padded.gather(3, cols)


def _rotate(x: Tensor, quarter_turns: Tensor) -> Tensor:
    """Rotate image i by ``quarter_turns[i]`` x 90 degrees (square images)."""
    out = x.clone()
    for k in range(1, 4):
        sel = quarter_turns == k
        if bool(sel.any()):
            out[sel] = torch.rot90(x[sel], k, dims=(2, 3))
    return out


@contextlib.contextmanager
def _busy_machine_threads() -> Any:
    """One torch thread while the machine is busy (1-minute load average at least the core count less
    one half), else torch's setting. Measured on a 2-core machine at load 8: an update of this small
    net took 20x longer with 2 threads than with 1, whose waits for a busy core dominate."""
    before = torch.get_num_threads()
    cores = os.cpu_count() or 1
    busy = hasattr(os, "getloadavg") and os.getloadavg()[0] >= cores - 0.5
    if busy and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def default_updates(n_images: int) -> int:
    """Optimizer updates for ``n_images`` training images: ``EPOCHS`` epochs, clipped to
    [``UPDATES_MIN``, ``UPDATES_MAX``]."""
    return int(min(max(round(EPOCHS * n_images / BATCH), UPDATES_MIN), UPDATES_MAX))


def task_accuracy(net: FeatureNet, images: RealImages, n: int = 250) -> tuple[float, float]:
    """(accuracy of ``net`` on its own task, class x rotation; and on the rotation alone) over the first
    ``n`` images, each under all four rotations."""
    from ..data import from_levels

    x = from_levels(images.levels[:n], 256)
    y = images.labels[:n]
    hits = turns = 0
    for k in range(4):
        pred = class_logits(net, torch.rot90(x, k, dims=(2, 3))).argmax(1)
        hits += int((pred == y * 4 + k).sum())
        turns += int((pred % 4 == k).sum())
    return hits / (4 * len(y)), turns / (4 * len(y))


def train_generic(
    images: RealImages, *, updates: int | None = None, seed: int = 0, progress: bool | None = None
) -> tuple[FeatureNet, dict[str, Any]]:
    """Train the generic feature net on ``images`` (module doc); return it (eval mode) and its statistics."""
    from ..data import from_levels

    n, (c, r) = images.levels.shape[0], (images.levels.shape[1], images.levels.shape[-1])
    updates = default_updates(n) if updates is None else int(updates)
    config = FeatureNetConfig(
        in_channels=c, image_size=r, widths=tuple(RECIPE["widths"]), depths=tuple(RECIPE["depths"]),
        feature_dim=RECIPE["feature_dim"], num_classes=4 * images.num_classes, dropout=RECIPE["dropout"],
    )  # fmt: skip
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = FeatureNet(config).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=RECIPE["lr"], weight_decay=RECIPE["weight_decay"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=RECIPE["lr"], total_steps=updates, pct_start=0.25)
    shift = max(1, r // 8)
    bar = _bar(updates, f"training a feature net on {n} images (once; cached)", "update", progress)
    start, order, pos = time.perf_counter(), torch.randperm(n, generator=gen), 0
    net.train()
    for _ in range(updates):
        if pos + BATCH > n:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos : pos + BATCH]
        pos += BATCH
        x = _shift(from_levels(images.levels[idx], 256), shift, gen)
        flip = torch.rand(len(idx), generator=gen) < RECIPE["hflip"]
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        turns = torch.randint(0, 4, (len(idx),), generator=gen)
        x = _rotate(x, turns).contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(net(x), images.labels[idx] * 4 + turns, label_smoothing=RECIPE["label_smoothing"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    net = net.to(memory_format=torch.contiguous_format).eval()
    task, rotation = task_accuracy(net, images)
    stats = {
        "updates": updates,
        "train_seconds": round(seconds, 1),
        "task_accuracy": round(task, 4),
        "chance_accuracy": round(1.0 / (4 * images.num_classes), 4),
        "rotation_accuracy": round(rotation, 4),
    }
    return net, stats


@dataclass
class GenericReference:
    """What scoring samples of one data set with its generic feature net needs (module doc)."""

    net: FeatureNet
    meta: dict[str, Any]
    folder: Path | None  # the cache entry (None: could not be written)
    images: RealImages
    ref: Tensor  # features of the reference half
    held_out: Tensor  # features of the other half (the floor)
    ref_labels: Tensor
    trained_now: bool
    floors: dict[int, float] = field(default_factory=dict)

    @property
    def resolution(self) -> int:
        return int(self.images.levels.shape[-1])

    def sample_features(self, samples: Tensor, batch_size: int = 500) -> Tensor:
        """Features of generated images (N, C, H, W) in [-1, 1] at the data set's shape."""
        from ..data import from_levels

        if tuple(samples.shape[1:]) != self.images.data_shape:
            raise ValueError(
                f"samples of shape {tuple(samples.shape[1:])}, but the data set's images are {self.images.data_shape}"
            )
        if not bool(torch.isfinite(samples).all()):
            raise ValueError("samples contain NaN or infinite values")
        k = to_feature_levels(samples.detach().float(), self.resolution, self.images.data_levels)
        return features(self.net, from_levels(k, 256), batch_size)

    def floor(self, n_samples: int) -> tuple[float, int]:
        """(FD between the reference set and ``min(n_samples, held-out size)`` held-out images, that count)."""
        from .metrics import frechet_distance

        n = min(int(n_samples), self.held_out.shape[0])
        if n not in self.floors:
            self.floors[n] = frechet_distance(self.ref, self.held_out[:n])
        return self.floors[n], n


_REFERENCES: dict[str, GenericReference] = {}


def cache_key(images: RealImages, updates: int) -> str:
    """The cache key of the net trained on ``images`` in ``updates`` updates: sha256 of the recipe,
    the update count and the images' content hash."""
    return hashlib.sha256(json.dumps([RECIPE, updates, images.key]).encode()).hexdigest()


def clear_generic_cache() -> None:
    """Forget the generic references held in this process (the files in the cache folder stay)."""
    _REFERENCES.clear()


def _load_cached(folder: Path) -> tuple[FeatureNet, dict[str, Any]] | None:
    """The cached net in ``folder``, or None if there is none; a corrupt entry warns and is retrained."""
    if not (folder / f"{NAME}.json").is_file():
        return None
    try:
        meta = feature_net_metadata(NAME, folder)
        net = FeatureNet(FeatureNetConfig.from_dict(meta["config"]))
        load_checked_weights(net, NAME, folder, meta, "generic feature net", "difflab eval")
    except (OSError, ValueError, KeyError, TypeError) as e:
        warnings.warn(f"ignoring the cached feature net in {folder} ({e}); training it again", stacklevel=3)
        return None
    return net, meta


def generic_reference(
    name: str,
    options: dict[str, Any] | None = None,
    *,
    n_ref: int = 10_000,
    seed: int = 0,
    progress: bool | None = None,
    cache: str | os.PathLike[str] | None = None,
    updates: int | None = None,
    batch_size: int = 500,
    labels: bool = True,
) -> GenericReference:
    """Read data set ``name`` (with ``options``), load its generic feature net from the cache or train
    it (with a progress bar), and compute the features of the reference and held-out halves.
    ``updates`` overrides the recipe's update count; ``labels=False`` ignores class labels (the net
    learns the rotation task alone, as for an unlabelled folder). Held per process: a second call
    with the same arguments returns the same object."""
    where = Path(cache) if cache is not None else cache_dir() / "features"
    memo = json.dumps([name, options or {}, n_ref, seed, str(where), updates, labels], sort_keys=True, default=str)
    if memo not in _REFERENCES:
        with _busy_machine_threads():
            _REFERENCES[memo] = _build_reference(
                name, options, n_ref, seed, progress, where, updates, batch_size, labels
            )
    return _REFERENCES[memo]


def _build_reference(
    name: str,
    options: dict[str, Any] | None,
    n_ref: int,
    seed: int,
    progress: bool | None,
    root: Path,
    updates: int | None,
    batch_size: int,
    labels: bool,
) -> GenericReference:
    from ..data import from_levels

    images = read_images(name, options, seed=seed, progress=progress, labels=labels)
    n = images.levels.shape[0]
    if n < 8:
        raise ValueError(f"{images.summary}: {n} image(s); FD and precision/recall need at least 8 real images")
    updates = default_updates(n) if updates is None else int(updates)
    folder: Path | None = root / cache_key(images, updates)[:24]
    cached = _load_cached(folder)  # type: ignore[arg-type]
    trained_now = cached is None
    if cached is not None:
        net, meta = cached
    else:
        net, stats = train_generic(images, updates=updates, seed=seed, progress=progress)
        meta = {
            "task": RECIPE["task"], "dataset": images.summary, "content_sha256": images.key,
            "images": n, "images_in_split": images.total, "classes": images.num_classes,
            "data_shape": list(images.data_shape), "resolution": int(images.levels.shape[-1]),
            "recipe": RECIPE, **stats,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }  # fmt: skip
        try:
            save_feature_net(net, NAME, folder, **meta)
            meta = feature_net_metadata(NAME, folder)
        except OSError as e:
            warnings.warn(f"could not cache the feature net in {folder} ({e}); it is used uncached", stacklevel=2)
            folder = None
    if float(meta.get("rotation_accuracy", 1.0)) < WEAK_TASK:
        warnings.warn(
            f"the feature net for {images.summary} tells the rotation of only {meta['rotation_accuracy']:.0%} "
            "of the images (chance 25%): these images may have no usual orientation, so FD measured with it "
            "says little",
            stacklevel=3,
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    half = n - n // 2
    ref_idx, held_idx = perm[:half][:n_ref], perm[half:]
    x = from_levels(images.levels, 256)
    ref_feats = features(net, x[ref_idx], batch_size)
    held_feats = features(net, x[held_idx], batch_size)
    return GenericReference(net, meta, folder, images, ref_feats, held_feats, images.labels[ref_idx], trained_now)


def evaluate_generic(
    samples: Tensor, ref: GenericReference, labels: Tensor | None = None, k: int = 3, batch_size: int = 500
) -> dict[str, Any]:
    """Score samples with a :class:`GenericReference`: the keys of :func:`difflab.eval.evaluate`."""
    from .metrics import frechet_distance, precision_recall

    n = samples.shape[0]
    if n <= k:
        raise ValueError(f"evaluate needs more than k={k} samples, got {n}")
    fake = ref.sample_features(samples, batch_size)
    fd = frechet_distance(ref.ref, fake)
    floor, n_floor = ref.floor(n)
    precision, recall = precision_recall(ref.ref[: min(n, ref.ref.shape[0])], fake, k=k)
    out: dict[str, Any] = {"fd": fd, "fd_floor": floor, "precision": precision, "recall": recall}
    if labels is not None and ref.images.num_classes > 1:
        out["class_accuracy"] = _class_accuracy(ref, fake_images=samples, labels=labels, batch_size=batch_size)
    out.update(
        n_samples=n,
        n_ref=int(ref.ref.shape[0]),
        n_floor=n_floor,
        feature_net="generic",
        feature_net_path=str(ref.folder) if ref.folder is not None else None,
        feature_net_sha256=ref.meta.get("sha256"),
        feature_task_accuracy=ref.meta.get("task_accuracy"),
    )
    return out


def _class_accuracy(ref: GenericReference, fake_images: Tensor, labels: Tensor, batch_size: int) -> float:
    """Share of samples whose upright class (the class with the largest rotation-0 logit) is ``labels``."""
    from ..data import from_levels

    labels = torch.as_tensor(labels).reshape(-1).to(torch.int64)
    if labels.shape[0] != fake_images.shape[0]:
        raise ValueError(f"got {fake_images.shape[0]} images but {labels.shape[0]} labels")
    k = to_feature_levels(fake_images.detach().float(), ref.resolution, ref.images.data_levels)
    logits = class_logits(ref.net, from_levels(k, 256), batch_size)
    upright = logits.view(len(labels), ref.images.num_classes, 4)[:, :, 0]
    return float((upright.argmax(1) == labels).double().mean())
