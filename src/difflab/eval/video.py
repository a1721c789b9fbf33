"""Video metrics for moving-item clips: a shipped video classifier, frame / video FD, identity and motion scores.

The videos of ``difflab.data.video.MovingItems`` are grey clips (1, F, 32, 32) in [-1, 1] on a black
background, holding one or two real items (20 kinds, ``difflab.data.scenes.ITEMS``) that each
bounce off the walls at a constant velocity. A generated clip can go wrong in three ways, each
with a score here, and each score has a real-data floor (:func:`real_floor`):

- *content*: ``frame_fd`` (Frechet distance between per-frame features, an FID over all frames);
- *temporal coherence*: ``video_fd`` (Frechet distance between clip features, an FVD analogue) and
  ``identity_consistency`` (do the items keep their kind from frame to frame?);
- *physics*: ``motion_error`` (pixels between each item's centroid and where constant-velocity
  motion with wall bounces puts it).

The classifier (``VideoClassifier``) is factorised: a 2-D CNN encodes every frame on its own (frames
as a batch) into a *frame feature* vector; 1-D convolutions over time then mix neighbouring frames
and a mean over time gives the *video feature* vector (half motion, half content). It is trained
(``scripts/train_video_classifier.py``) on real ``MovingItems("train")`` clips of 16 frames for
three heads: the item kinds in each frame (multi-label), the item kinds in the clip (multi-label),
and whether the frames are in their real order or shuffled / partly reversed, so that video
features see motion and not only content.
It is shipped as ``weights/moving-items.safetensors`` plus JSON metadata (config, accuracies on
real test clips, training command, date, sha256); loading never unpickles.

    from difflab.eval.video import frame_fd, identity_consistency, motion_error, real_floor, reference_videos, video_fd
    ref = reference_videos("test", n=500)          # real clips (500, 1, 16, 32, 32), cached
    frame_fd(samples, ref), video_fd(samples, ref) # FD in the classifier's frame / clip features
    identity_consistency(samples)                  # 1.0 = items never change kind
    motion_error(samples, count=1)                 # px from constant-velocity bouncing motion
    real_floor(n=500)                              # the same four scores for real clips
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.data.scenes import ITEMS

from .featurenet import ShippedNet, checked_config, conv_block, save_feature_net
from .metrics import frechet_distance

VIDEO_CLASSIFIER = "moving-items"  # the shipped weights: weights/moving-items.{safetensors,json}
_SCRIPT = "scripts/train_video_classifier.py"
WINDOW = 16  # clips longer than this, and a multiple of it, are scored as consecutive windows by video_fd
MIN_FRAMES = 4  # the shortest clip the video features are defined for
MOMENTS = 5  # fixed intensity moments appended to each frame feature: mass, centroid (row, col), spread (row, col)
POSITION_SCALE = 8.0  # the temporal part reads moments and places times this: motion stands out from the start
PLACES = 4  # outputs of the place head: the items' mean centre (row, col) and |difference| (row, col)
BRIGHT = 0.1  # default threshold on the intensity (x + 1) / 2 for a pixel to belong to an item


@dataclass(frozen=True)
class VideoClassifierConfig:
    """Architecture of the video classifier (stored in its JSON metadata).

    Frame encoder: ``len(widths)`` stages of ``depths[i]`` [3x3 conv, BatchNorm, ReLU] blocks of
    ``widths[i]`` channels with a 2x2 max-pool between stages. The last stage's map feeds three paths:
    *items* (the frame head: a 1x1 conv to ``num_items`` logits per cell, maximised over cells: an
    item is in the frame where some cell sees it, so two items do not blur into one), *what* (the
    map's global maximum per channel) and *where* (``keypoints`` spatial soft-argmaxes: a 1x1 conv to
    ``keypoints`` channels, each turned by a softmax over positions into an expected (row, col) in
    [-1, 1]: where the items are, to sub-cell precision). *What* and *where*, concatenated, go
    through a ``frame_dim`` linear layer with ReLU (the embedding). The frame feature
    (``feature_dim = frame_dim + num_items + 5`` entries) is the embedding, the item probabilities
    (sigmoid of the frame head's logits) and 5 fixed intensity moments (``VideoClassifier.moments``). Temporal
    part, giving the ``video_dim`` video feature: its first ``video_dim // 2`` entries (*motion*) are
    the frame feature and the place head's 4 outputs (moments and places scaled by
    ``POSITION_SCALE``) through ``temporal_layers`` 1-D convolutions over frames (kernel
    ``temporal_kernel``, zero padding, ``temporal_width`` channels, ReLU), a mean over time and a
    linear layer with ReLU; the rest (*content*) the frame features' mean over time through a linear
    layer with ReLU. ``frame_size`` is the frame height and width the net takes.
    """

    frame_size: int = 32
    widths: tuple[int, ...] = (16, 32, 64)  # stages at 32, 16 and 8 pixels square
    depths: tuple[int, ...] = (1, 1, 2)
    keypoints: int = 16
    frame_dim: int = 64
    temporal_width: int = 64
    temporal_kernel: int = 3
    temporal_layers: int = 2
    video_dim: int = 64
    dropout: float = 0.1
    num_items: int = len(ITEMS)

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        if len(self.widths) != len(self.depths) or not self.widths or min(self.widths) < 1 or min(self.depths) < 1:
            raise ValueError(f"widths and depths must be non-empty, positive and of equal length, got {self}")
        if self.frame_size < 1 or self.frame_size % (1 << (len(self.widths) - 1)):
            raise ValueError(f"frame_size {self.frame_size} must halve {len(self.widths) - 1} times (one per stage)")
        if self.temporal_kernel < 1 or self.temporal_kernel % 2 == 0 or self.temporal_layers < 1:
            raise ValueError(f"temporal_kernel must be odd and temporal_layers >= 1, got {self}")
        if (
            min(self.keypoints, self.frame_dim, self.temporal_width, self.video_dim - 1, self.num_items) < 1
            or not 0 <= self.dropout < 1
        ):
            raise ValueError(f"invalid video classifier config {self}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VideoClassifierConfig:
        """Build from a dict; an unknown key is a ValueError naming the valid keys."""
        return checked_config(cls, d, "video classifier")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        d = asdict(self)
        d["widths"], d["depths"] = list(self.widths), list(self.depths)
        return d


class VideoClassifier(nn.Module):
    """Factorised classifier for grey videos (B, 1, F, H, W) in [-1, 1] (see the module and config docs).

    - ``frame_features(x)`` (B, F, feature_dim): each frame encoded on its own;
    - ``video_features(x)`` (B, video_dim): motion (the frame features mixed over time, averaged),
      then content (the frame features averaged);
    - ``frame_items(x)`` (B, F, num_items): per-frame multi-label logits of the item kinds present;
    - ``forward(x)``: (frame item logits (B, F, num_items), video item logits (B, num_items), order
      logit (B,): positive for frames in their real order, negative for shuffled / partly reversed).
      The clip item head reads the content half of the video feature, the order head the motion half.

    ``place_head`` maps a frame feature to where the items are (``PLACES`` = 4 numbers: the mean of
    the items' centres (row, col) and the absolute difference between them, the canvas spanning
    [-1, 1]; trained on the true tracks); the temporal part reads it next to the frame feature,
    which makes jumps in position, hence frame order, easy to see. ``encode(frames)`` gives the
    features and item logits of single frames (N, 1, S, S); ``temporal(h)`` and ``video_heads(v)``
    work on frame features, so a training step can shuffle the frames of a clip without encoding
    them again.
    """

    def __init__(self, config: VideoClassifierConfig | None = None) -> None:
        super().__init__()
        self.config = c = VideoClassifierConfig() if config is None else config
        layers: list[nn.Module] = []
        channels = 1
        for i, (w, depth) in enumerate(zip(c.widths, c.depths, strict=True)):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(depth):
                layers += conv_block(channels, w)
                channels = w
        self.encoder = nn.Sequential(*layers)
        self.where = nn.Conv2d(channels, c.keypoints, 1)
        side = c.frame_size >> (len(c.widths) - 1)
        axis = torch.linspace(-1.0, 1.0, side)
        grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(side * side, 2)
        self.register_buffer("grid", grid, persistent=False)  # (P, 2) (row, col) of each cell in [-1, 1]
        width = channels + 2 * c.keypoints
        self.embed = nn.Sequential(nn.Linear(width, c.frame_dim), nn.ReLU(inplace=True))
        convs: list[nn.Module] = []
        self.frame_head = nn.Conv2d(channels, c.num_items, 1)  # item logits per cell of the last map
        self.feature_dim = c.frame_dim + c.num_items + MOMENTS  # embedding, item probabilities, moments
        self.place_head = nn.Linear(self.feature_dim, PLACES)
        channels = self.feature_dim + PLACES
        for _ in range(c.temporal_layers):
            convs += [nn.Conv1d(channels, c.temporal_width, c.temporal_kernel, padding=c.temporal_kernel // 2)]
            convs += [nn.ReLU(inplace=True)]
            channels = c.temporal_width
        self.mix = nn.Sequential(*convs)
        half = c.video_dim // 2
        self.pool = nn.Sequential(nn.Linear(channels, half), nn.ReLU(inplace=True))  # motion
        self.content = nn.Sequential(nn.Linear(self.feature_dim, c.video_dim - half), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(c.dropout)
        self.item_head = nn.Linear(c.video_dim - half, c.num_items)  # reads the content half
        self.order_head = nn.Linear(half, 1)  # reads the motion half

    def prepare(self, videos: Tensor, min_frames: int = 1) -> Tensor:
        """Check a batch (B, 1, F, S, S) of float videos (S = ``frame_size``, F >= ``min_frames``), clamp it to [-1, 1].

        Anything else is a one-line ValueError. The result is on the net's device and dtype.
        """
        s = self.config.frame_size
        if not isinstance(videos, Tensor):
            raise ValueError(f"videos must be a torch.Tensor (B, 1, F, H, W), got {type(videos).__name__}")
        if videos.ndim != 5 or videos.shape[1] != 1 or tuple(videos.shape[3:]) != (s, s):
            raise ValueError(f"video classifier expects grey videos (B, 1, F, {s}, {s}), got {tuple(videos.shape)}")
        if videos.shape[2] < min_frames:
            raise ValueError(f"need clips of at least {min_frames} frames, got {videos.shape[2]}")
        if not videos.is_floating_point():
            raise ValueError(f"video classifier expects float videos in [-1, 1], got {videos.dtype} (use from_levels)")
        param = next(self.parameters())
        return videos.detach().to(device=param.device, dtype=param.dtype).clamp(-1.0, 1.0)

    def encode(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """(frame features (N, feature_dim), item logits (N, num_items)) of single frames (N, 1, S, S).

        The item logit of a kind is its largest per-cell logit over the last map (an item is in the
        frame where some cell sees it, so two items do not blur into one); the frame feature is the
        embedding, the item probabilities (sigmoid of those logits) and the moments, concatenated.
        """
        m = self.encoder(frames)
        logits = self.frame_head(m).amax((2, 3))
        attention = torch.softmax(self.where(m).flatten(2), -1)  # (N, keypoints, P)
        what, where = m.amax((2, 3)), (attention @ self.grid).flatten(1)  # (N, C), (N, 2 * keypoints)
        embedding = self.embed(torch.cat([what, where], 1))
        return torch.cat([embedding, torch.sigmoid(logits), self.moments(frames)], 1), logits

    def encode_frames(self, x: Tensor) -> Tensor:
        """Frame features (B, F, feature_dim) of a checked batch (B, 1, F, S, S): frames as one 2-D batch."""
        b, _, f, h, w = x.shape
        return self.encode(x.transpose(1, 2).reshape(b * f, 1, h, w))[0].reshape(b, f, -1)

    def frames_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(frame features (B, F, feature_dim), frame item logits (B, F, num_items)) of a checked batch."""
        b, _, f, h, w = x.shape
        feats, logits = self.encode(x.transpose(1, 2).reshape(b * f, 1, h, w))
        return feats.reshape(b, f, -1), logits.reshape(b, f, -1)

    @staticmethod
    def moments(frames: Tensor) -> Tensor:
        """(N, MOMENTS) fixed features of frames (N, 1, S, S) in [-1, 1], with intensity v = (x + 1) / 2:
        4 x the mean intensity, the intensity-weighted centroid (row, col) and standard deviation
        (row, col), coordinates scaled so that the frame spans [-1, 1] (zeros for a black frame)."""
        n, _, h, w = frames.shape
        v = ((frames[:, 0] + 1.0) / 2.0).clamp_min(0.0)
        mass = v.sum((1, 2))
        rows = torch.linspace(-1.0, 1.0, h, device=v.device, dtype=v.dtype)
        cols = torch.linspace(-1.0, 1.0, w, device=v.device, dtype=v.dtype)
        pr, pc = v.sum(2), v.sum(1)  # (N, H), (N, W) marginals
        safe = mass.clamp_min(1e-6)
        r, c = (pr @ rows) / safe, (pc @ cols) / safe
        sr = ((pr @ rows.square()) / safe - r.square()).clamp_min(0.0).sqrt()
        sc = ((pc @ cols.square()) / safe - c.square()).clamp_min(0.0).sqrt()
        return torch.stack([4.0 * mass / (h * w), r, c, sr, sc], 1)

    def temporal(self, h: Tensor) -> Tensor:
        """Video features (B, video_dim) from frame features (B, F, feature_dim).

        The first ``video_dim // 2`` entries are *motion*: the frame features with the place head's
        output appended (moments and places times ``POSITION_SCALE``) through the 1-D convs over
        time, averaged over time, then a linear layer with ReLU (the order head reads these). The
        rest are *content*: the frame features averaged over time, then a linear layer with ReLU
        (the clip item head reads these). Kept apart, the item loss does not crowd out motion.
        """
        x = torch.cat([h[..., :-MOMENTS], POSITION_SCALE * torch.cat([h[..., -MOMENTS:], self.place_head(h)], -1)], -1)
        motion = self.pool(self.mix(x.transpose(1, 2)).mean(2))
        return torch.cat([motion, self.content(h.mean(1))], 1)

    def video_heads(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """(video item logits (B, num_items), order logit (B,)) from video features (B, video_dim)."""
        v = self.dropout(v)
        half = self.config.video_dim // 2
        return self.item_head(v[:, half:]), self.order_head(v[:, :half]).squeeze(1)

    def frame_features(self, x: Tensor) -> Tensor:
        """Frame features (B, F, feature_dim) of videos (B, 1, F, S, S) in [-1, 1]."""
        return self.encode_frames(self.prepare(x))

    def video_features(self, x: Tensor) -> Tensor:
        """Video features (B, video_dim) of clips (B, 1, F, S, S) in [-1, 1] with F >= 4."""
        return self.temporal(self.encode_frames(self.prepare(x, MIN_FRAMES)))

    def frame_items(self, x: Tensor) -> Tensor:
        """Per-frame multi-label item logits (B, F, num_items)."""
        return self.frames_and_logits(self.prepare(x))[1]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(frame item logits (B, F, num_items), video item logits (B, num_items), order logit (B,))."""
        h, logits = self.frames_and_logits(self.prepare(x, MIN_FRAMES))
        items, order = self.video_heads(self.temporal(h))
        return logits, items, order


# --- shipped weights ------------------------------------------------------------------------------------------


def save_video_classifier(
    net: VideoClassifier, weights_dir: str | os.PathLike[str] | None = None, **metadata: Any
) -> tuple[Path, Path]:
    """Write ``net`` as ``moving-items.safetensors`` + ``.json`` (config, sha256, ``metadata``)."""
    return save_feature_net(net, VIDEO_CLASSIFIER, weights_dir, **metadata)  # type: ignore[arg-type]


_SHIPPED = ShippedNet(
    VIDEO_CLASSIFIER, lambda c: VideoClassifier(VideoClassifierConfig.from_dict(c)), "video classifier", _SCRIPT
)


def video_classifier_metadata(weights_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The JSON metadata of the video classifier (config, accuracies, training command, date, sha256)."""
    return _SHIPPED.metadata(weights_dir)


def load_video_classifier(
    weights_dir: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu", cache: bool = True
) -> VideoClassifier:
    """The shipped video classifier in eval mode, after checking its sha256; cached per process.

    ``weights_dir`` overrides the shipped folder; ``cache=False`` loads a fresh copy. A missing file is
    a FileNotFoundError naming the file and the training script, a corrupt one (sha256 mismatch,
    unreadable tensors, tensors that do not fit the config) a ValueError.
    """
    return _SHIPPED.load(weights_dir, device, cache)  # type: ignore[return-value]


def clear_video_cache() -> None:
    """Forget the cached classifier and real reference clips / features (e.g. after retraining)."""
    _SHIPPED.clear()
    _REAL_CACHE.clear()
    _FEATURE_CACHE.clear()


# --- features and predictions ---------------------------------------------------------------------------------


def _net(net: VideoClassifier | None) -> VideoClassifier:
    return load_video_classifier() if net is None else net


@torch.no_grad()
def _batched(net: VideoClassifier, videos: Tensor, batch_size: int, fn: str, min_frames: int = 1) -> Tensor:
    net.prepare(videos[:1], min_frames)  # validate before any work (an empty batch by its shape only)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = net.training
    net.eval()
    out = []
    try:
        for i in range(0, videos.shape[0], batch_size):
            h, logits = net.frames_and_logits(net.prepare(videos[i : i + batch_size], min_frames))
            if fn == "frame":
                out.append(h)
            elif fn == "video":
                out.append(net.temporal(h))
            else:
                out.append(logits)
            out[-1] = out[-1].float().cpu()
    finally:
        net.train(was_training)
    if out:
        return torch.cat(out)
    c = net.config
    f = videos.shape[2]
    return torch.zeros({"frame": (0, f, net.feature_dim), "video": (0, c.video_dim)}.get(fn, (0, f, c.num_items)))


def video_frame_features(videos: Tensor, net: VideoClassifier | None = None, batch_size: int = 64) -> Tensor:
    """Frame features (B, F, feature_dim), float32 on CPU, of videos (B, 1, F, 32, 32) in [-1, 1]."""
    return _batched(_net(net), videos, batch_size, "frame")


def windows(videos: Tensor, window: int = WINDOW) -> Tensor:
    """Clips as ``video_fd`` scores them: (B, 1, F, H, W) -> (B * F / window, 1, window, H, W) when F is a
    multiple of ``window`` above it (consecutive non-overlapping windows, video by video), else unchanged."""
    b, c, f, h, w = videos.shape
    if f > window and f % window == 0:
        k = f // window
        return videos.reshape(b, c, k, window, h, w).transpose(1, 2).reshape(b * k, c, window, h, w)
    return videos


def clip_features(
    videos: Tensor, net: VideoClassifier | None = None, batch_size: int = 64, window: int = WINDOW
) -> Tensor:
    """Video features (N, video_dim), float32 on CPU, of clips (B, 1, F, 32, 32) in [-1, 1] with F >= 4.

    Clips longer than ``window`` frames whose length is a multiple of it are cut into consecutive
    non-overlapping windows (``windows``), each a row: N = B * F / window. Otherwise N = B.
    """
    if isinstance(videos, Tensor) and videos.ndim == 5:
        videos = windows(videos, window)
    return _batched(_net(net), videos, batch_size, "video", MIN_FRAMES)


def frame_item_sets(
    videos: Tensor, net: VideoClassifier | None = None, batch_size: int = 64, threshold: float = 0.5
) -> Tensor:
    """Which item kinds the frame head sees in each frame: bool (B, F, num_items), sigmoid >= ``threshold``."""
    return torch.sigmoid(_batched(_net(net), videos, batch_size, "items")) >= threshold


def _set_codes(sets: Tensor) -> Tensor:
    """(..., K) bool -> (...) int64: each set as a bit mask (K <= 62)."""
    weights = 2 ** torch.arange(sets.shape[-1], dtype=torch.int64)
    return (sets.to(torch.int64) * weights).sum(-1)


def identity_scores(videos: Tensor, net: VideoClassifier | None = None, batch_size: int = 64) -> Tensor:
    """Per video (B,) float32: the share of frames whose predicted item set equals the clip's most common one.

    The set of a frame is the frame head's kinds with sigmoid >= 0.5 (``frame_item_sets``); the most
    common set of a clip is its mode over frames (ties: the one with the smallest bit mask). 1.0 means
    the classifier sees the same kinds in every frame; a clip whose item turns from a shirt into a
    bag half-way scores about 0.5. An empty set counts as a set like any other.
    """
    codes = _set_codes(frame_item_sets(videos, net, batch_size))
    if codes.numel() == 0:
        return torch.zeros(codes.shape[0])
    mode = codes.mode(dim=1).values
    return (codes == mode[:, None]).float().mean(1)


def identity_consistency(videos: Tensor, net: VideoClassifier | None = None, batch_size: int = 64) -> float:
    """Item identity consistency in [0, 1] (a share of frames, no unit): ``identity_scores`` averaged over videos.

    Measures whether items keep their kind over time (1.0: never change). Real clips score below 1
    by the classifier's own per-frame errors, mostly on two overlapping items (0.82 for 500 real
    test clips of one or two items with the shipped net; see ``real_floor``): compare with that.
    """
    scores = identity_scores(videos, net, batch_size)
    if scores.numel() == 0:
        raise ValueError("identity_consistency needs at least one video")
    return float(scores.double().mean())


# --- Frechet distances ----------------------------------------------------------------------------------------


def _features_of(
    reference: Tensor | str, kind: str, frames: int, net: VideoClassifier | None, batch_size: int
) -> Tensor:
    if not isinstance(reference, str):
        fn = video_frame_features if kind == "frame" else clip_features
        feats = fn(reference, net, batch_size)
        return feats.reshape(-1, feats.shape[-1])
    key = (reference, frames, kind)
    if net is None and key in _FEATURE_CACHE:
        return _FEATURE_CACHE[key]
    feats = _features_of(reference_videos(reference, frames=frames), kind, frames, net, batch_size)
    if net is None:
        _FEATURE_CACHE[key] = feats
    return feats


def frame_fd(
    videos: Tensor, reference: Tensor | str, net: VideoClassifier | None = None, batch_size: int = 64
) -> float:
    """Frechet distance (``frechet_distance``) between the frame features of all frames of two sets of videos.

    ``videos`` (B, 1, F, 32, 32) and ``reference`` (real videos, any count and length, or a split
    name: the first 500 real ``MovingItems`` clips of that split with as many frames, cached) in
    [-1, 1]. Every frame is one feature vector (B * F of them). It measures per-frame content (item
    kinds, looks, positions, brightness), blind to the order of frames. Unit: squared distance in
    the frame-feature space (ReLU activations, item probabilities and intensity moments, each of
    order 1), comparable only for the same shipped net and equal sample counts. Biased upward for
    small counts: compare with ``real_floor``.
    """
    frames = int(videos.shape[2]) if isinstance(videos, Tensor) and videos.ndim == 5 else WINDOW
    ref = _features_of(reference, "frame", frames, net, batch_size)
    return frechet_distance(ref, _features_of(videos, "frame", frames, net, batch_size))


def video_fd(
    videos: Tensor, reference: Tensor | str, net: VideoClassifier | None = None, batch_size: int = 64
) -> float:
    """Frechet distance between clip features (``clip_features``) of two sets of videos: an FVD analogue.

    ``videos`` (B, 1, F, 32, 32) in [-1, 1] with F >= 4 frames, and ``reference`` likewise (or a split
    name, as in ``frame_fd``). Each clip is one feature vector, except that a clip of more than 16
    frames whose length is a multiple of 16 is scored as its consecutive non-overlapping 16-frame
    windows, each one vector (the classifier is trained on 16-frame clips); other lengths are scored
    whole. The video features see content and temporal coherence (the classifier learns to tell
    real frame order from shuffled), so shuffled frames raise it while ``frame_fd`` stays put. Unit:
    squared feature-space distance; compare with ``real_floor`` at the same count and length.
    """
    frames = int(videos.shape[2]) if isinstance(videos, Tensor) and videos.ndim == 5 else WINDOW
    ref = _features_of(reference, "video", frames, net, batch_size)
    return frechet_distance(ref, _features_of(videos, "video", frames, net, batch_size))


# --- real reference clips and floors --------------------------------------------------------------------------

_REAL_CACHE: dict[tuple[str, int, int, int, str], tuple[Tensor, Tensor]] = {}
_FEATURE_CACHE: dict[tuple[str, int, str], Tensor] = {}


def real_videos(
    split: str = "test", n: int = 500, frames: int = WINDOW, items: str = "1-2", start: int = 0
) -> tuple[Tensor, Tensor]:
    """(videos (n, 1, frames, 32, 32) float32 in [-1, 1], item counts (n,) int64) of real ``MovingItems``
    clips ``start .. start + n - 1`` of ``split``; cached per process."""
    key = (split, int(n), int(frames), int(start), str(items))
    if key not in _REAL_CACHE:
        from difflab.data.video import MovingItems

        if n < 2 or start < 0:
            raise ValueError(f"need n >= 2 real videos from start >= 0, got n={n}, start={start}")
        data = MovingItems(split, n=start + n, frames=frames, items=items)
        xs, counts = [], []
        for i in range(start, start + n):
            x, cond = data[i]
            xs.append(x)
            counts.append(int((cond["labels"] >= 0).sum()))
        _REAL_CACHE[key] = (torch.stack(xs).float(), torch.tensor(counts, dtype=torch.int64))
    return _REAL_CACHE[key]


def reference_videos(split: str = "test", n: int = 500, frames: int = WINDOW, items: str = "1-2") -> Tensor:
    """The first ``n`` real ``MovingItems(split)`` clips (n, 1, frames, 32, 32) in [-1, 1]; cached per process."""
    return real_videos(split, n, frames, items)[0]


def real_floor(
    split: str = "test",
    n: int = 500,
    frames: int = WINDOW,
    items: str = "1-2",
    net: VideoClassifier | None = None,
    batch_size: int = 64,
) -> dict[str, float]:
    """The scores of real data against real data: what a perfect generator of ``n`` clips would get.

    Clips ``n .. 2n - 1`` of ``split`` (disjoint from ``reference_videos(split, n, ...)``, clips
    ``0 .. n - 1``) are scored against that reference: ``frame_fd`` and ``video_fd`` (same sample
    count, so the FD's small-sample bias is the same as for ``n`` generated clips), and on their own
    ``identity_consistency`` and ``motion_error`` (each clip with its true item count). Returns those
    four plus ``n`` and ``frames`` (clips are generated on demand, so any ``n`` works; the test
    split's usual 500 are the reference). Cost: rendering and scoring 2 n clips (a few seconds for
    n = 500 on one CPU thread). Compare a model's scores with these at the same ``n`` and ``frames``.
    """
    ref = reference_videos(split, n, frames, items)
    other, counts = real_videos(split, n, frames, items, start=n)
    return {
        "frame_fd": frame_fd(other, ref, net, batch_size),
        "video_fd": video_fd(other, ref, net, batch_size),
        "identity_consistency": identity_consistency(other, net, batch_size),
        "motion_error": motion_error(other, counts),
        "n": n,
        "frames": frames,
    }


# --- item centroids and motion --------------------------------------------------------------------------------


def _check_videos(videos: Tensor, min_frames: int) -> Tensor:
    if not isinstance(videos, Tensor) or videos.ndim != 5 or videos.shape[1] != 1:
        shape = tuple(videos.shape) if isinstance(videos, Tensor) else type(videos).__name__
        raise ValueError(f"expected grey videos (B, 1, F, H, W) in [-1, 1], got {shape}")
    if not videos.is_floating_point():
        raise ValueError(f"expected float videos in [-1, 1], got {videos.dtype} (use from_levels)")
    if videos.shape[2] < min_frames:
        raise ValueError(f"need at least {min_frames} frames, got {videos.shape[2]}")
    return videos.detach().to(device="cpu", dtype=torch.float32)


def _weighted_centroids(coords: Tensor, w: Tensor, assign: Tensor) -> Tensor:
    """(B, 2, 2) weighted centroids of the two clusters (NaN for a cluster without weight)."""
    m = F.one_hot(assign, 2).to(w.dtype) * w[..., None]  # (B, P, 2)
    mass = m.sum(1)  # (B, 2)
    c = m.transpose(1, 2) @ coords  # (B, 2, 2)
    return torch.where(mass[..., None] > 0, c / mass[..., None].clamp_min(1e-12), torch.nan)


def _principal_split(coords: Tensor, w: Tensor) -> Tensor:
    """(B, 2, 2) initial centroids: the bright pixels split across their weighted principal axis."""
    mass = w.sum(1, keepdim=True).clamp_min(1e-12)  # (B, 1)
    mu = (w @ coords) / mass  # (B, 2)
    d = coords[None] - mu[:, None]  # (B, P, 2)
    cov = (d * w[..., None]).transpose(1, 2) @ d / mass[..., None]  # (B, 2, 2)
    axis = torch.linalg.eigh(cov)[1][..., 1]  # (B, 2) the eigenvector of the largest eigenvalue
    side = ((d * axis[:, None]).sum(-1) > 0).long()  # (B, P)
    return _weighted_centroids(coords, w, side)


def _two_means(coords: Tensor, w: Tensor, init: Tensor, iterations: int) -> Tensor:
    """Weighted 2-means (Lloyd) of pixel ``coords`` (P, 2) with weights ``w`` (B, P) from ``init`` (B, 2, 2)."""
    c = init
    for _ in range(iterations):
        d = (coords[None, :, None, :] - torch.nan_to_num(c, nan=1e6)[:, None]).square().sum(-1)  # (B, P, 2)
        new = _weighted_centroids(coords, w, d.argmin(-1))
        if torch.equal(torch.nan_to_num(new, nan=-1.0), torch.nan_to_num(c, nan=-1.0)):
            break
        c = new
    return c


def centroid_tracks(
    videos: Tensor, count: int = 1, threshold: float = BRIGHT, iterations: int = 10, batch_size: int = 256
) -> Tensor:
    """Each item's intensity-weighted centroid per frame: float32 (B, F, count, 2) of (row, col) in pixels.

    A pixel is *bright* when its intensity ``(x + 1) / 2`` exceeds ``threshold``; it weighs its
    intensity. ``count=1``: the weighted centroid of the frame's bright pixels. ``count=2``: the bright
    pixels are split by weighted 2-means (Lloyd, at most ``iterations`` steps), started in the first
    frame (and whenever no item has been seen yet) from a split across the pixels' principal axis,
    and in later frames from each item's last known centroid; the two centroids are then matched to
    the previous ones by least total distance, so item ``k`` stays the same item across frames (two
    crossing items may swap). NaN marks an item not found (a frame without bright pixels; for
    ``count=2`` also a cluster left without pixels). Pixel (r, c) has coordinates (r, c), so a square
    covering rows 3..6 has centroid row 4.5.
    """
    v = (_check_videos(videos, 1) + 1.0) / 2.0
    if count not in (1, 2):
        raise ValueError(f"count must be 1 or 2 items, got {count}")
    b, _, f, h, w = v.shape
    weights = torch.where(v > threshold, v, 0.0)[:, 0].reshape(b, f, h * w)  # (B, F, P)
    rows, cols = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    coords = torch.stack([rows.reshape(-1), cols.reshape(-1)], 1)  # (P, 2)
    if count == 1:
        mass = weights.sum(-1, keepdim=True)
        c = (weights @ coords) / mass.clamp_min(1e-12)
        return torch.where(mass > 0, c, torch.nan)[:, :, None, :]
    out = torch.full((b, f, 2, 2), torch.nan)
    for s in range(0, b, batch_size):
        wb = weights[s : s + batch_size]
        last = torch.full((wb.shape[0], 2, 2), torch.nan)  # each item's last known centroid
        for t in range(f):
            known = ~last.isnan().any(-1).any(-1)  # (b,) both items seen before
            init = torch.where(known[:, None, None], last, _principal_split(coords, wb[:, t]))
            c = _two_means(coords, wb[:, t], init, iterations)
            keep = (c - last).norm(dim=-1).sum(-1)
            swap = (c.flip(1) - last).norm(dim=-1).sum(-1)
            c = torch.where((known & (swap < keep))[:, None, None], c.flip(1), c)
            out[s : s + batch_size, t] = c
            last = torch.where(c.isnan(), last, c)
    return out


def missing_error(height: int, width: int) -> float:
    """The motion error charged for an item not found (empty frame): the frame's diagonal in pixels.

    That is the largest distance two points of the frame can have (45.25 px at 32x32), so a clip
    whose items vanish scores at least as badly as any clip whose items are visible.
    """
    return math.hypot(height, width)


def motion_errors(videos: Tensor, count: int | Sequence[int] | Tensor = 1, threshold: float = BRIGHT) -> Tensor:
    """Per video (B,) float32: mean pixels between each item's centroid and its constant-velocity bounce prediction.

    Centroids come from ``centroid_tracks(videos, count, threshold)``. For frame ``t >= 2`` (the 3rd
    to the F-th) and each item, the prediction from the two previous centroids is
    ``q = 2 p[t-1] - p[t-2]``, mirrored at the walls: on each axis, the item's minimum and maximum
    centroid over the clip (where it turned); ``q`` beyond a wall is reflected back inside (and
    clipped to the walls should it overshoot the other one). The error is the Euclidean distance
    ``|q - p[t]|`` in pixels, averaged over frames 3..F and items. An item missing in any of the
    three frames (no bright pixels) costs ``missing_error(H, W)`` (45.25 px at 32x32) instead.
    ``count`` is 1 or 2 items for all videos, or one count per video (e.g. the true counts).
    Real clips score a little above 0 (0.43 px for 500 test clips with their true counts): 8-bit
    rounding and the threshold, bounces between frames, overlapping items (see ``real_floor``).
    """
    x = _check_videos(videos, 3)
    b, _, _, h, w = x.shape
    if isinstance(count, int):
        counts = torch.full((b,), count, dtype=torch.int64)
    else:
        counts = torch.as_tensor(count).reshape(-1).to(torch.int64)
        if counts.shape[0] != b:
            raise ValueError(f"got {b} videos but {counts.shape[0]} item counts")
    if bool(((counts < 1) | (counts > 2)).any()):
        raise ValueError("item counts must be 1 or 2")
    out = torch.empty(b)
    for k in (1, 2):
        idx = (counts == k).nonzero().squeeze(1)
        if len(idx) == 0:
            continue
        p = centroid_tracks(x[idx], k, threshold)  # (n, F, k, 2)
        lo = torch.where(p.isnan(), torch.inf, p).amin(1, keepdim=True)
        hi = torch.where(p.isnan(), -torch.inf, p).amax(1, keepdim=True)
        q = 2.0 * p[:, 1:-1] - p[:, :-2]
        q = torch.where(q > hi, 2.0 * hi - q, q)
        q = torch.where(q < lo, 2.0 * lo - q, q)
        q = torch.minimum(torch.maximum(q, lo), hi)
        err = (q - p[:, 2:]).norm(dim=-1)  # (n, F - 2, k)
        out[idx] = torch.nan_to_num(err, nan=missing_error(h, w)).mean((1, 2))
    return out


def motion_error(videos: Tensor, count: int | Sequence[int] | Tensor = 1, threshold: float = BRIGHT) -> float:
    """Motion error in pixels: ``motion_errors`` averaged over videos (0 = items move exactly like
    constant-velocity sprites bouncing off walls; 45.25 = no items at all in 32x32 frames)."""
    errors = motion_errors(videos, count, threshold)
    if errors.numel() == 0:
        raise ValueError("motion_error needs at least one video")
    return float(errors.double().mean())
