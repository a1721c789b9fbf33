"""Tests for the video metrics: centroid tracks, motion error, the shipped video classifier, identity, FD."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from difflab.data.video import MovingItems
from difflab.eval.featurenet import sha256_file, weight_paths
from difflab.eval.video import (
    VIDEO_CLASSIFIER,
    VideoClassifier,
    VideoClassifierConfig,
    centroid_tracks,
    clip_features,
    frame_fd,
    frame_item_sets,
    identity_consistency,
    identity_scores,
    load_video_classifier,
    missing_error,
    motion_error,
    motion_errors,
    real_floor,
    real_videos,
    video_classifier_metadata,
    video_fd,
    video_frame_features,
    windows,
)

SIZE, SIDE = 32, 14


@pytest.fixture(scope="module")
def sources() -> None:
    """Load the test sprites once (Fashion-MNIST test images: a few seconds on a loaded machine)."""
    MovingItems("test", n=1)


def _bouncing(frames: int, start: tuple[int, int], velocity: tuple[int, int], side: int = SIDE, jitter: int = 0):
    """A bright ``side`` x ``side`` square moving at integer ``velocity``, reflected at the walls; its top-left
    corners (F, 2). With ``jitter``, each frame is shifted by a random -jitter..jitter pixels per axis."""
    g = torch.Generator().manual_seed(0)
    video = -torch.ones(1, 1, frames, SIZE, SIZE)
    limit = SIZE - side
    pos, vel, corners = list(start), list(velocity), []
    for t in range(frames):
        r, c = pos
        if jitter:
            r = min(max(r + int(torch.randint(-jitter, jitter + 1, (1,), generator=g)), 0), limit)
            c = min(max(c + int(torch.randint(-jitter, jitter + 1, (1,), generator=g)), 0), limit)
        video[0, 0, t, r : r + side, c : c + side] = 1.0
        corners.append((r, c))
        for a in range(2):
            if not 0 <= pos[a] + vel[a] <= limit:
                vel[a] = -vel[a]
            pos[a] += vel[a]
    return video, torch.tensor(corners, dtype=torch.float32)


# --- centroids and motion (no classifier) ---------------------------------------------------------------------


def test_centroid_of_a_known_square_and_weighted_pixel() -> None:
    video = -torch.ones(1, 1, 2, SIZE, SIZE)
    video[0, 0, :, 3:7, 10:14] = 1.0  # rows 3..6, cols 10..13: centroid (4.5, 11.5), mass 16
    video[0, 0, 1, 20, 20] = 0.0  # intensity 0.5 (weight 0.5) in frame 1
    video[0, 0, :, 30, 0] = -0.9  # intensity 0.05: below the default threshold, ignored
    p = centroid_tracks(video)
    assert p.shape == (1, 2, 1, 2) and p.dtype == torch.float32
    assert p[0, 0, 0].tolist() == pytest.approx([4.5, 11.5])
    want = [(16 * 4.5 + 0.5 * 20) / 16.5, (16 * 11.5 + 0.5 * 20) / 16.5]
    assert p[0, 1, 0].tolist() == pytest.approx(want, abs=1e-5)


def test_bouncing_square_has_zero_motion_error_and_its_track() -> None:
    video, corners = _bouncing(16, (0, 0), (2, 3))  # rows hit the wall at 18 in frame 9, columns in frame 6
    p = centroid_tracks(video)[0, :, 0]
    assert torch.allclose(p, corners + (SIDE - 1) / 2)
    assert float(corners[:, 0].max()) == SIZE - SIDE and int(corners[:, 0].argmax()) not in (0, 15)  # it bounced
    assert motion_error(video) < 1e-5
    assert motion_error(video, count=2) < 1.0  # one square split in two halves still moves rigidly


def test_jittering_square_has_a_large_motion_error() -> None:
    smooth, _ = _bouncing(16, (0, 0), (2, 3))
    shaky, _ = _bouncing(16, (0, 0), (2, 3), jitter=3)
    assert motion_error(shaky) > 2.0 > motion_error(smooth) + 1.0


def test_empty_frames_cost_the_frame_diagonal() -> None:
    empty = -torch.ones(2, 1, 8, SIZE, SIZE)
    assert missing_error(SIZE, SIZE) == pytest.approx(32 * math.sqrt(2))
    assert motion_errors(empty).tolist() == pytest.approx([missing_error(SIZE, SIZE)] * 2)
    assert motion_error(empty, count=2) == pytest.approx(missing_error(SIZE, SIZE))
    assert centroid_tracks(empty, 2).isnan().all()
    video, _ = _bouncing(16, (0, 0), (2, 3))
    video[0, 0, 7] = -1.0  # the item vanishes in one frame: 3 of the 14 predictions have no centroid
    assert motion_error(video) == pytest.approx(3 / 14 * missing_error(SIZE, SIZE), rel=0.05)


def test_two_items_are_tracked_apart_and_matched_frame_to_frame() -> None:
    a, ca = _bouncing(12, (1, 0), (0, 2), side=6)  # along the top, to the right
    b, cb = _bouncing(12, (24, 26), (0, -2), side=6)  # along the bottom, to the left
    video = torch.maximum(a, b)
    p = centroid_tracks(video, 2)[0]  # (F, 2, 2)
    first = 0 if p[0, 0, 0] < p[0, 1, 0] else 1  # the item at the top in frame 0
    assert torch.allclose(p[:, first], ca + 2.5) and torch.allclose(p[:, 1 - first], cb + 2.5)
    assert motion_error(video, count=2) < 1e-5
    mixed = torch.cat([a, video])
    errors = motion_errors(mixed, torch.tensor([1, 2]))
    assert errors.shape == (2,) and float(errors.max()) < 1e-5
    with pytest.raises(ValueError, match="1 or 2"):
        motion_errors(mixed, torch.tensor([1, 3]))
    with pytest.raises(ValueError, match="item counts"):
        motion_errors(mixed, [1])


def test_real_clips_move_like_the_model_says(sources) -> None:
    data = MovingItems("test", n=12, items="1")
    videos = torch.stack([data[i][0] for i in range(12)])
    tracks = torch.stack([data[i][1]["tracks"] for i in range(12)])[:, :, 0]  # (B, F, 2) top-left corners
    p = centroid_tracks(videos)[:, :, 0]
    offset = p - tracks  # the sprite's own centroid: constant over a clip up to rounding
    assert float((offset - offset.mean(1, keepdim=True)).abs().max()) < 0.3
    assert motion_error(videos) < 1.0


def test_motion_input_errors_are_one_line() -> None:
    for bad, match in (
        (torch.zeros(2, 16, 32, 32), "grey videos"),
        (torch.zeros(1, 1, 2, 32, 32), "at least 3 frames"),
        (torch.zeros(1, 1, 4, 32, 32, dtype=torch.uint8), "float videos"),
    ):
        with pytest.raises(ValueError, match=match) as e:
            motion_error(bad)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="count must be 1 or 2"):
        centroid_tracks(torch.zeros(1, 1, 4, 32, 32), 3)


# --- the classifier's architecture (untrained) ----------------------------------------------------------------


def test_classifier_shapes_any_length_and_windows() -> None:
    torch.manual_seed(0)
    net = VideoClassifier().eval()
    c = net.config
    assert net.feature_dim == c.frame_dim + c.num_items + 5
    x = torch.rand(3, 1, 16, 32, 32) * 2 - 1
    frame_logits, items, order = net(x)
    assert frame_logits.shape == (3, 16, c.num_items) and items.shape == (3, c.num_items) and order.shape == (3,)
    assert net.frame_features(x).shape == (3, 16, net.feature_dim) and net.frame_items(x).shape == (3, 16, c.num_items)
    assert net.video_features(x[:, :, :5]).shape == (3, c.video_dim)
    with pytest.raises(ValueError, match="at least 4 frames"):
        net.video_features(x[:, :, :3])
    with pytest.raises(ValueError, match=r"\(B, 1, F, 32, 32\)"):
        net(torch.zeros(1, 1, 16, 16, 16))
    long = torch.cat([x, x.flip(2)], 2)  # 32 frames: two 16-frame windows per clip
    assert windows(long).shape == (6, 1, 16, 32, 32) and windows(x[:, :, :12]).shape == (3, 1, 12, 32, 32)
    feats = clip_features(long, net)
    assert feats.shape == (6, c.video_dim)
    assert torch.allclose(feats[0::2], clip_features(x, net), atol=1e-5)
    assert torch.allclose(feats[1::2], clip_features(x.flip(2), net), atol=1e-5)
    assert video_frame_features(x, net).shape == (3, 16, net.feature_dim)
    assert sum(p.numel() for p in net.parameters()) * 4 < 1_000_000  # well under 1 MB of float32 weights


def test_config_round_trip_and_errors() -> None:
    c = VideoClassifierConfig(widths=(8, 16), depths=(1, 1), keypoints=4)
    assert VideoClassifierConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown video classifier config key"):
        VideoClassifierConfig.from_dict({"width": 3})
    with pytest.raises(ValueError, match="halve"):
        VideoClassifierConfig(frame_size=30)
    with pytest.raises(ValueError, match="odd"):
        VideoClassifierConfig(temporal_kernel=2)


def test_missing_and_corrupt_weights(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="train_video_classifier.py"):
        load_video_classifier(tmp_path, cache=False)
    w_path, j_path = weight_paths(VIDEO_CLASSIFIER)
    shutil.copy(j_path, tmp_path / j_path.name)
    data = bytearray(w_path.read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / w_path.name).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_video_classifier(tmp_path, cache=False)


# --- the shipped classifier -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(sources) -> tuple[torch.Tensor, torch.Tensor]:
    return real_videos("test", 64)


def test_shipped_weights_load_match_their_sha256_and_accuracy() -> None:
    meta = video_classifier_metadata()
    w_path, _ = weight_paths(VIDEO_CLASSIFIER)
    assert meta["sha256"] == sha256_file(w_path) and meta["weights_file"] == w_path.name
    assert w_path.stat().st_size < 1_000_000 and "train_video_classifier.py" in meta["train_command"]
    acc = meta["accuracy"]
    assert acc["frame_items"] >= 0.65 and acc["video_items"] >= 0.6 and acc["order"] >= 0.95
    assert set(meta["real_floor"]) >= {"frame_fd", "video_fd", "identity_consistency", "motion_error"}
    net = load_video_classifier()
    assert net is load_video_classifier() and not net.training
    assert net.config == VideoClassifierConfig.from_dict(meta["config"])


def test_identity_consistency_drops_when_items_swap(real) -> None:
    videos, counts = real
    kinds = torch.stack([MovingItems("test", n=len(videos)).video(i)[1][0] for i in range(len(videos))])
    seen = frame_item_sets(videos)  # (B, F, 20)
    truth = torch.nn.functional.one_hot(kinds, seen.shape[-1]).bool()
    right = ((counts == 1) & (seen == truth[:, None]).all(-1).all(-1)).nonzero().squeeze(1).tolist()
    a = right[0]
    b = next(i for i in right if kinds[i] != kinds[a])  # two one-item clips of different kinds, read right
    pair = videos[[a, b]]
    assert identity_scores(pair).tolist() == [1.0, 1.0]
    halves = torch.cat([pair[0:1, :, :8], pair[1:2, :, 8:]], 2)  # a shirt becomes a bag half-way
    alternating = pair[0:1].clone()
    alternating[:, :, 1::2] = pair[1:2, :, 1::2]  # and back, every other frame
    assert identity_scores(torch.cat([halves, alternating])).tolist() == [0.5, 0.5]
    assert identity_consistency(videos) >= 0.7  # real clips: 0.80 here, 0.82 for 500 (the classifier errs on overlaps)


def test_frame_fd_and_video_fd(real) -> None:
    ref, other = real[0][:24], real[0][32:56]  # two disjoint sets of 24 real clips
    g = torch.Generator().manual_seed(0)
    shuffled = torch.stack([v[:, torch.randperm(16, generator=g)] for v in ref])
    # identical sets: the same frames in another order are the same set of frames for frame_fd
    assert frame_fd(shuffled[:16], ref[:16]) < 1e-4 and video_fd(ref[:16], ref[:16]) < 1e-4
    floor = video_fd(other, ref)  # real vs real: about 20 for 24 clips
    assert floor > 0 and video_fd(shuffled, ref) > 10 * floor  # the video features see the order (about 5000)
    with pytest.raises(ValueError, match="at least 4 frames"):
        video_fd(ref[:, :, :3], ref)


def test_real_floor_small() -> None:
    floor = real_floor(n=16)
    assert set(floor) == {"frame_fd", "video_fd", "identity_consistency", "motion_error", "n", "frames"}
    assert floor["identity_consistency"] >= 0.6 and floor["motion_error"] < 1.5
    assert all(math.isfinite(floor[k]) and floor[k] >= 0 for k in ("frame_fd", "video_fd"))
