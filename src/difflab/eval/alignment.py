"""Text-to-image alignment for captioned scenes: an attribute classifier, alignment, diversity and scene FD.

The scenes of ``difflab.data.scenes`` hold one or two items (20 kinds), each tinted one of 8 colours
and placed inside one of the 4 image quadrants (an item never crosses a quadrant border). A caption's
content is therefore fully described by its labels, and a generated image can be scored by asking
a classifier what lies in each quadrant.

The classifier (``SceneClassifier``) cuts a 64x64 image in [-1, 1] into its four 32x32 quadrants
(in ``POSITIONS`` order, index = 2 * row + column) and classifies each: the *item* there (20 kinds
or ``EMPTY``) by a small CNN (a ``FeatureNet`` of ``difflab.eval.featurenet``) on the quadrant's
brightness, which does not depend on the tint, and its *colour* (8) by a small MLP on the
quadrant's chromaticity. Smaller square inputs (e.g. 16x16 base-stage samples) are first
up-sampled bilinearly to 64x64. The image's feature vector (for FD and diversity) concatenates the
four quadrants' penultimate layers (shape and colour), in quadrant order.

Like the feature nets, it is trained by difflab (``scripts/train_scene_classifier.py``) on real
``CaptionedScenes("train")`` images and shipped as ``weights/scenes-attributes.safetensors`` plus
JSON metadata (config, accuracies, training command, date, sha256); loading never unpickles.

    from difflab.eval import alignment, alignment_rates, diversity, scene_fd, scene_features
    scores = alignment(samples, labels)          # (N,) fraction of each caption's attributes found
    rates = alignment_rates(samples, labels)     # {"alignment", "item", "colour", "position", "exact", ...}
    fd = scene_fd(samples, "test")               # FD in the classifier's features vs real test scenes
    div = diversity(scene_features(samples), caption_ids)
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.data.scenes import COLOURS, ITEMS, POSITIONS

from .featurenet import FeatureNet, FeatureNetConfig, ShippedNet, checked_config, save_feature_net
from .metrics import frechet_distance

SCENE_CLASSIFIER = "scenes-attributes"  # the shipped weights: weights/scenes-attributes.{safetensors,json}
_SCRIPT = "scripts/train_scene_classifier.py"
EMPTY = len(ITEMS)  # the item class of a quadrant without an item
ATTRIBUTES = ("item", "colour", "position")
_GRID = 2  # quadrants per side


@dataclass(frozen=True)
class SceneClassifierConfig:
    """Architecture of the scene attribute classifier (stored in its JSON metadata).

    ``widths`` / ``depths`` / ``feature_dim`` / ``dropout`` configure the shared per-quadrant shape
    ``FeatureNet``; ``colour_dim`` is the hidden width of the colour path. An image's feature vector
    has ``4 * (feature_dim + colour_dim)`` entries. ``image_size`` is the input size that smaller
    inputs are up-sampled to.
    """

    image_size: int = 64
    widths: tuple[int, ...] = (16, 32, 64, 128)  # four stages: 32, 16, 8 and 4 pixels square
    depths: tuple[int, ...] = (1, 1, 2, 2)
    feature_dim: int = 64
    colour_dim: int = 8
    dropout: float = 0.1
    num_items: int = len(ITEMS) + 1  # the item kinds and EMPTY
    num_colours: int = len(COLOURS)

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        if self.image_size < _GRID or self.image_size % _GRID:
            raise ValueError(f"image_size must be an even number >= 2, got {self.image_size}")
        if self.num_items < 2 or self.num_colours < 1 or self.colour_dim < 1:
            raise ValueError(f"invalid scene classifier config {self}")
        self.shape_config()  # validates widths, depths, feature_dim

    def shape_config(self) -> FeatureNetConfig:
        """The config of the per-quadrant shape ``FeatureNet`` (its classifier is the item head)."""
        return FeatureNetConfig(
            in_channels=1,
            image_size=self.image_size // _GRID,
            widths=self.widths,
            depths=self.depths,
            feature_dim=self.feature_dim,
            num_classes=self.num_items,
            dropout=self.dropout,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SceneClassifierConfig:
        """Build from a dict; an unknown key is a ValueError naming the valid keys."""
        return checked_config(cls, d, "scene classifier")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        d = asdict(self)
        d["widths"], d["depths"] = list(self.widths), list(self.depths)
        return d


class SceneClassifier(nn.Module):
    """Per-quadrant item and colour classifier for scene images in [-1, 1] (see the module doc).

    Each 32x32 quadrant goes two ways. The *shape* path, a ``FeatureNet`` on the quadrant's
    brightness (the maximum of its R, G, B channels: for every palette colour, whose brightest
    component is 1, exactly the item's grey intensity), predicts the item; it sees no hue, so an
    item is recognised equally well in every colour, including item-colour pairs never trained on.
    The *colour* path takes the quadrant's chromaticity (each pixel's RGB divided by its
    brightness, averaged with weights brightness squared: the palette RGB for a tinted item) through
    a small MLP to the colour logits.

    ``forward(images)`` gives item logits (N, 4, num_items) and colour logits (N, 4, num_colours);
    ``features(images)`` the feature vector (N, 4 * (feature_dim + colour_dim)): per quadrant, the
    shape net's penultimate layer and the colour MLP's hidden layer. Both accept any square size up
    to ``image_size`` (smaller inputs are up-sampled bilinearly); ``crop_logits`` works on quadrants.
    """

    def __init__(self, config: SceneClassifierConfig | None = None) -> None:
        super().__init__()
        self.config = SceneClassifierConfig() if config is None else config
        self.shape = FeatureNet(self.config.shape_config())  # shape.head: the item head
        self.colour = nn.Sequential(nn.Linear(3, self.config.colour_dim), nn.ReLU())
        self.colour_head = nn.Linear(self.config.colour_dim, self.config.num_colours)

    def prepare(self, images: Tensor) -> Tensor:
        """Check a batch (N, 3, S, S) of float images, clamp it to [-1, 1], up-sample it to ``image_size``.

        A wrong shape, a size above ``image_size`` or a non-float dtype is a one-line ValueError.
        """
        size = self.config.image_size
        if not isinstance(images, Tensor):
            raise ValueError(f"images must be a torch.Tensor (N, 3, H, W), got {type(images).__name__}")
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
            raise ValueError(f"scene classifier expects RGB images (N, 3, S, S), got shape {tuple(images.shape)}")
        if not 1 <= images.shape[2] <= size:
            raise ValueError(f"scene classifier expects images of at most {size}x{size}, got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"scene classifier expects float images in [-1, 1], got {images.dtype} (use from_levels)")
        param = next(self.parameters())
        x = images.detach().to(device=param.device, dtype=param.dtype).clamp(-1.0, 1.0)
        if x.shape[2] != size and x.shape[0] > 0:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return x

    @staticmethod
    def quadrants(x: Tensor) -> Tensor:
        """(N, C, S, S) -> (N * 4, C, S/2, S/2): the quadrants of each image in ``POSITIONS`` order."""
        n, c, s, _ = x.shape
        h = s // _GRID
        q = x.reshape(n, c, _GRID, h, _GRID, h).permute(0, 2, 4, 1, 3, 5)
        return q.reshape(n * _GRID * _GRID, c, h, h)

    @staticmethod
    def chromaticity(crops: Tensor) -> Tensor:
        """(M, 3): each crop's RGB / brightness, averaged over pixels with weights brightness squared."""
        v = (crops + 1.0) / 2.0
        b = v.amax(1, keepdim=True)
        w = b * b
        return (v * b).sum((2, 3)) / w.sum((2, 3)).clamp_min(1e-6)  # sum(w * v / b) / sum(w)

    def _paths(self, crops: Tensor) -> tuple[Tensor, Tensor]:
        shape = self.shape.features(crops.amax(1, keepdim=True))
        return shape, self.colour(self.chromaticity(crops))

    def crop_features(self, crops: Tensor) -> Tensor:
        """Feature vectors (M, feature_dim + colour_dim) of quadrant crops (M, 3, S/2, S/2) in [-1, 1]."""
        return torch.cat(self._paths(crops), 1)

    def crop_logits(self, crops: Tensor) -> tuple[Tensor, Tensor]:
        """(item logits (M, num_items), colour logits (M, num_colours)) of quadrant crops."""
        shape, colour = self._paths(crops)
        return self.shape.head(self.shape.dropout(shape)), self.colour_head(colour)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(item logits (N, 4, num_items), colour logits (N, 4, num_colours)) of images (N, 3, S, S)."""
        x = self.prepare(images)
        item, colour = self.crop_logits(self.quadrants(x))
        n = x.shape[0]
        return item.reshape(n, _GRID * _GRID, -1), colour.reshape(n, _GRID * _GRID, -1)

    def features(self, images: Tensor) -> Tensor:
        """Feature vectors (N, 4 * (feature_dim + colour_dim)): the quadrants' features, concatenated."""
        x = self.prepare(images)
        return self.crop_features(self.quadrants(x)).reshape(x.shape[0], -1)


# --- shipped weights ------------------------------------------------------------------------------------------


def save_scene_classifier(
    net: SceneClassifier, weights_dir: str | os.PathLike[str] | None = None, **metadata: Any
) -> tuple[Path, Path]:
    """Write ``net`` as ``scenes-attributes.safetensors`` + ``.json`` (config, sha256, ``metadata``)."""
    return save_feature_net(net, SCENE_CLASSIFIER, weights_dir, **metadata)  # type: ignore[arg-type]


_SHIPPED = ShippedNet(
    SCENE_CLASSIFIER, lambda c: SceneClassifier(SceneClassifierConfig.from_dict(c)), "scene classifier", _SCRIPT
)


def scene_classifier_metadata(weights_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The JSON metadata of the scene classifier (config, accuracies, training command, date, sha256)."""
    return _SHIPPED.metadata(weights_dir)


def load_scene_classifier(
    weights_dir: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu", cache: bool = True
) -> SceneClassifier:
    """The shipped scene attribute classifier in eval mode, after checking its sha256; cached per process.

    ``weights_dir`` overrides the shipped folder; ``cache=False`` loads a fresh copy. A missing file is
    a FileNotFoundError, a corrupt one (sha256 mismatch, unreadable tensors) a ValueError.
    """
    return _SHIPPED.load(weights_dir, device, cache)  # type: ignore[return-value]


def clear_scene_cache() -> None:
    """Forget the cached classifier and reference features (e.g. after retraining)."""
    _SHIPPED.clear()
    _REFERENCE_CACHE.clear()


# --- predictions ----------------------------------------------------------------------------------------------


@torch.no_grad()
def _batched(net: SceneClassifier, images: Tensor, batch_size: int, fn: str) -> list[Any]:
    net.prepare(images[:1])  # validate before any work (an empty batch is validated by shape only)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = net.training
    net.eval()
    out = []
    try:
        for i in range(0, images.shape[0], batch_size):
            x = images[i : i + batch_size]
            out.append(net.features(x).float().cpu() if fn == "features" else [t.cpu() for t in net(x)])
    finally:
        net.train(was_training)
    return out


def _net(net: SceneClassifier | None) -> SceneClassifier:
    return load_scene_classifier() if net is None else net


def scene_features(images: Tensor, net: SceneClassifier | None = None, batch_size: int = 500) -> Tensor:
    """Classifier features (N, 4 * (feature_dim + colour_dim)), float32 on CPU, of images (N, 3, S, S) in [-1, 1]."""
    net = _net(net)
    out = _batched(net, images, batch_size, "features")
    width = _GRID * _GRID * (net.config.feature_dim + net.config.colour_dim)
    return torch.cat(out) if out else torch.zeros(0, width)


def predict_scene(images: Tensor, net: SceneClassifier | None = None, batch_size: int = 500) -> tuple[Tensor, Tensor]:
    """What the classifier sees in each quadrant: (items (N, 4), colours (N, 4)), int64 on CPU.

    ``items[n, q]`` is an index into ``ITEMS`` or ``EMPTY``; ``colours[n, q]`` an index into
    ``COLOURS``, or -1 where the quadrant is empty. Quadrant ``q`` is ``POSITIONS[q]``.
    """
    out = _batched(_net(net), images, batch_size, "logits")
    if not out:
        return torch.zeros(0, 4, dtype=torch.int64), torch.zeros(0, 4, dtype=torch.int64)
    items = torch.cat([item for item, _ in out]).argmax(-1)
    colours = torch.cat([colour for _, colour in out]).argmax(-1)
    return items, torch.where(items == EMPTY, -1, colours)


def check_labels(labels: Any, n: int | None = None) -> Tensor:
    """Validate scene labels (N, 2, 3) (rows of item, colour, position; a second row of -1 if absent).

    Returns them as an int64 CPU tensor; anything else is a one-line ValueError.
    """
    t = torch.as_tensor(labels)
    if t.ndim != 3 or tuple(t.shape[1:]) != (2, 3):
        raise ValueError(f"labels must have shape (N, 2, 3) (item, colour, position per slot), got {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got {t.dtype}")
    t = t.to(device="cpu", dtype=torch.int64)
    if n is not None and t.shape[0] != n:
        raise ValueError(f"got {n} images but {t.shape[0]} labels")
    present = t[..., 0] >= 0
    if not bool(present[:, 0].all()):
        raise ValueError("labels need an item in the first slot of every scene (item index >= 0)")
    bounds = torch.tensor([len(ITEMS), len(COLOURS), len(POSITIONS)])
    ok = ((t >= 0) & (t < bounds)).all(-1)
    if not bool(ok[present].all()):
        raise ValueError(
            f"labels out of range: need item < {len(ITEMS)}, colour < {len(COLOURS)}, position < {len(POSITIONS)}"
        )
    if bool((present[:, 1] & (t[:, 0, 2] == t[:, 1, 2])).any()):
        raise ValueError("labels put two items in the same position")
    return t


def attribute_hits(items: Tensor, colours: Tensor, labels: Any) -> dict[str, Tensor]:
    """Which of the caption's attributes the predictions (``predict_scene``) find; see ``alignment``.

    Returns ``slot`` (N, 2) bool (the label slot holds an item), ``item``, ``colour``, ``position``
    (N, 2) bool (False on empty slots), ``exact`` (N,) bool (all four quadrants exactly as labelled:
    items and colours where labelled, EMPTY elsewhere) and ``alignment`` (N,) float32.
    """
    labels = check_labels(labels, items.shape[0])
    if items.shape != colours.shape or items.shape[1:] != (_GRID * _GRID,):
        raise ValueError(f"items and colours must have shape (N, 4), got {tuple(items.shape)}, {tuple(colours.shape)}")
    slot = labels[..., 0] >= 0
    where = labels[..., 2].clamp_min(0)  # (N, 2) quadrant of each slot
    seen_item, seen_colour = items.gather(1, where), colours.gather(1, where)
    occupied = slot & (seen_item != EMPTY)
    item = slot & (seen_item == labels[..., 0])
    colour = occupied & (seen_colour == labels[..., 1])
    want_item = torch.full_like(items, EMPTY)
    want_colour = torch.full_like(colours, -1)
    for s in range(2):
        rows = slot[:, s].nonzero().squeeze(1)
        want_item[rows, where[rows, s]] = labels[rows, s, 0]
        want_colour[rows, where[rows, s]] = labels[rows, s, 1]
    extra = ((items != EMPTY) & (want_item == EMPTY)).any(1)  # an item where the caption puts none
    position = occupied & ~extra[:, None]
    exact = ((items == want_item) & (colours == want_colour)).all(1)
    found = (item.sum(1) + colour.sum(1) + position.sum(1)).float()
    return {
        "slot": slot,
        "item": item,
        "colour": colour,
        "position": position,
        "exact": exact,
        "alignment": found / (len(ATTRIBUTES) * slot.sum(1)).float(),
    }


def summarize_hits(hits: dict[str, Tensor]) -> dict[str, float]:
    """Rates from ``attribute_hits``: mean ``alignment``, ``item`` / ``colour`` / ``position`` (fraction of
    labelled slots whose attribute is found), ``exact`` (fraction of exactly recognised scenes), counts."""
    n_slots = int(hits["slot"].sum())
    if n_slots == 0:
        raise ValueError("need at least one image to compute rates")
    out = {"alignment": float(hits["alignment"].double().mean())}
    out.update({a: int(hits[a].sum()) / n_slots for a in ATTRIBUTES})
    out.update(exact=float(hits["exact"].double().mean()), n_images=int(hits["slot"].shape[0]), n_slots=n_slots)
    return out


def alignment(images: Tensor, labels: Any, net: SceneClassifier | None = None, batch_size: int = 500) -> Tensor:
    """Text-image alignment (N,) float32: the fraction of each caption's attributes found in its image.

    ``labels`` (N, 2, 3) are the caption's slots (item, colour, position), as in ``CaptionedScenes``
    (a second row of -1 for a one-item caption). The classifier (default: the shipped one) predicts,
    for each quadrant ``q``, an item ``I[q]`` (a kind or EMPTY) and, where not empty, a colour ``C[q]``.
    Each labelled slot ``(i, c, p)`` has three attributes:

    - *item*: ``I[p] == i``;
    - *colour*: ``I[p] != EMPTY`` and ``C[p] == c`` (a colour needs an item to carry it);
    - *position*: ``I[p] != EMPTY`` and every quadrant the caption does not name is EMPTY (the items
      are where the caption puts them, and nowhere else: an image full of items everywhere, such as
      noise, does not get the positions for free).

    ``alignment[n] = (attributes found) / (3 * labelled slots)``, so 1/3, 2/3 or 1 for one item and
    multiples of 1/6 for two. ``exact`` in ``alignment_rates`` also checks the kinds and colours of
    every quadrant. Inputs smaller than 64x64 are up-sampled bilinearly.
    """
    labels = check_labels(labels, images.shape[0] if isinstance(images, Tensor) else None)
    items, colours = predict_scene(images, net, batch_size)
    return attribute_hits(items, colours, labels)["alignment"]


def alignment_rates(
    images: Tensor, labels: Any, net: SceneClassifier | None = None, batch_size: int = 500
) -> dict[str, float]:
    """Alignment report for a set of images: ``alignment`` (mean of :func:`alignment`), ``item``,
    ``colour``, ``position`` (fraction of labelled slots with that attribute found), ``exact`` (fraction
    of images whose four quadrants are all exactly as labelled, no extra items), ``n_images``, ``n_slots``."""
    labels = check_labels(labels, images.shape[0] if isinstance(images, Tensor) else None)
    items, colours = predict_scene(images, net, batch_size)
    return summarize_hits(attribute_hits(items, colours, labels))


# --- diversity and FD -----------------------------------------------------------------------------------------


def diversity(features: Tensor, groups: Sequence[Hashable] | Tensor) -> float:
    """Mean pairwise Euclidean distance between feature vectors of the same group, averaged over groups.

    ``features`` (N, D) (e.g. ``scene_features`` of samples), ``groups`` (N,) a caption id per sample
    (ints or any hashable, e.g. the caption). For each group with at least two samples the mean
    distance over its pairs ``i < j`` is taken; the result is the unweighted mean over those groups.
    Distances are exact differences in float64: identical features give exactly 0.
    """
    f = torch.as_tensor(features).detach().to(device="cpu", dtype=torch.float64)
    if f.ndim != 2:
        raise ValueError(f"features must have shape (N, D), got {tuple(f.shape)}")
    if not bool(torch.isfinite(f).all()):
        raise ValueError("features contain NaN or infinite values")
    keys = groups.reshape(-1).tolist() if isinstance(groups, Tensor) else list(groups)
    if len(keys) != f.shape[0]:
        raise ValueError(f"got {f.shape[0]} feature vectors but {len(keys)} group ids")
    members: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    means = []
    for idx in members.values():
        if len(idx) < 2:
            continue
        g = f[idx]
        d = torch.cdist(g, g, compute_mode="donot_use_mm_for_euclid_dist")
        k = len(idx)
        means.append(float(d.triu(1).sum()) / (k * (k - 1) / 2))
    if not means:
        raise ValueError("diversity needs at least one group with two or more samples")
    return sum(means) / len(means)


_REFERENCE_CACHE: dict[tuple[str, int | None, int, int, str | None], Tensor] = {}


def scene_reference_features(
    split: str = "test", n: int | None = None, size: int = 64, seed: int = 0, net: SceneClassifier | None = None
) -> Tensor:
    """Classifier features of the first ``n`` real ``CaptionedScenes(split, size=size)`` images (all if None).

    Cached per process for the shipped classifier.
    """
    from difflab.data import from_levels
    from difflab.data.scenes import CaptionedScenes

    key = (split, n, size, seed, None)
    if net is None and key in _REFERENCE_CACHE:
        return _REFERENCE_CACHE[key]
    data = CaptionedScenes(split, n=n, size=size, seed=seed)
    images = from_levels(torch.stack([data.scene(i)[0] for i in range(len(data))]), 256)
    feats = scene_features(images, net)
    if net is None:
        _REFERENCE_CACHE[key] = feats
    return feats


def scene_fd(
    samples: Tensor, reference: Tensor | str = "test", net: SceneClassifier | None = None, batch_size: int = 500
) -> float:
    """Frechet distance (``frechet_distance``) between samples and real scenes in the classifier's features.

    ``reference`` is either real images (M, 3, S, S) in [-1, 1] or a split name of ``CaptionedScenes``
    (all its images at the samples' size, so a 16x16 base stage meets 16x16 real scenes; features
    cached per process). Like FID it is biased upward at small sample counts: compare runs with
    equal counts, or with the FD of as many real images.
    """
    fake = scene_features(samples, net, batch_size)
    if isinstance(reference, str):
        ref = scene_reference_features(reference, size=int(samples.shape[-1]), net=net)
    else:
        ref = scene_features(reference, net, batch_size)
    return frechet_distance(ref, fake)
