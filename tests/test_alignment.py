"""Tests for the text-to-image alignment metric: the shipped scene classifier, alignment, diversity, scene FD."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from difflab.data import from_levels
from difflab.data.scenes import COLOURS, ITEMS, MAX_JITTER, QUADRANT, SPRITE, CaptionedScenes, source_images
from difflab.eval import (
    SceneClassifier,
    alignment,
    alignment_rates,
    diversity,
    load_scene_classifier,
    predict_scene,
    scene_classifier_metadata,
    scene_fd,
    scene_features,
)
from difflab.eval.alignment import EMPTY, SCENE_CLASSIFIER
from difflab.eval.featurenet import weight_paths

N = 200


def _real(split: str, n: int, size: int = 64, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    data = CaptionedScenes(split, n=start + n, size=size)
    scenes = [data.scene(i) for i in range(start, start + n)]
    return from_levels(torch.stack([s[0] for s in scenes]), 256), torch.stack([s[2] for s in scenes])


@pytest.fixture(scope="module")
def test_scenes() -> tuple[torch.Tensor, torch.Tensor]:
    return _real("test", N)


def _one_line_value_error(fn, match: str) -> None:
    with pytest.raises(ValueError, match=match) as e:
        fn()
    assert "\n" not in str(e.value)


def test_shipped_classifier_aligns_real_test_scenes(test_scenes) -> None:
    images, labels = test_scenes
    scores = alignment(images, labels)
    assert scores.shape == (N,) and scores.dtype == torch.float32
    assert float(scores.mean()) >= 0.975
    rates = alignment_rates(images, labels)
    assert rates["alignment"] == pytest.approx(float(scores.mean()), abs=1e-6)
    assert min(rates["item"], rates["colour"], rates["position"]) >= 0.95
    assert rates["n_images"] == N and rates["n_slots"] == int((labels[:, :, 0] >= 0).sum())
    meta = scene_classifier_metadata()
    assert min(meta["accuracy"]["test"]["64x64"][a] for a in ("item", "colour", "position")) >= 0.95
    assert "train_command" in meta


def test_shuffled_labels_score_far_lower(test_scenes) -> None:
    images, labels = test_scenes
    real = float(alignment(images, labels).mean())
    shuffled = labels[torch.randperm(N, generator=torch.Generator().manual_seed(0))]
    assert float(alignment(images, shuffled).mean()) < min(0.5, real - 0.4)


def _render(item: int, colour: int, position: int, k: int, jitter: tuple[int, int]) -> torch.Tensor:
    """A one-item 64x64 scene drawn like CaptionedScenes: test sprite ``k`` of ``item`` times the colour's RGB."""
    grey = source_images(item, "test")[k].astype(np.float32) / 255.0
    canvas = np.zeros((64, 64, 3), dtype=np.float32)
    top, left = QUADRANT * (position // 2) + jitter[0], QUADRANT * (position % 2) + jitter[1]
    canvas[top : top + SPRITE, left : left + SPRITE] = grey[:, :, None] * np.array(COLOURS[colour][1], np.float32)
    levels = torch.from_numpy(np.rint(canvas * 255).astype(np.uint8).transpose(2, 0, 1).copy())
    return from_levels(levels, 256)


def test_retinted_item_loses_colour_only() -> None:
    rng = np.random.default_rng(0)
    originals, retinted, labels, others = [], [], [], []
    for item in range(len(ITEMS)):
        colour, other = (int(c) for c in rng.choice(len(COLOURS), size=2, replace=False))
        position, k = int(rng.integers(4)), int(rng.integers(25))
        jitter = (int(rng.integers(MAX_JITTER + 1)), int(rng.integers(MAX_JITTER + 1)))
        originals.append(_render(item, colour, position, k, jitter))
        retinted.append(_render(item, other, position, k, jitter))
        labels.append([[item, colour, position], [-1, -1, -1]])
        others.append(other)
    x, y, lab = torch.stack(originals), torch.stack(retinted), torch.tensor(labels)
    before, after = alignment_rates(x, lab), alignment_rates(y, lab)
    assert before["colour"] >= 0.9 and before["position"] == 1.0
    assert after["colour"] == 0.0
    assert after["item"] == before["item"] >= 0.8 and after["position"] == 1.0
    items_x, _ = predict_scene(x)
    items_y, colours_y = predict_scene(y)
    assert torch.equal(items_x, items_y)  # the item path sees brightness only: the tint does not matter
    seen = colours_y[torch.arange(len(ITEMS)), lab[:, 0, 2]]
    assert (seen == torch.tensor(others)).float().mean() >= 0.9  # the new colour is what is seen


def test_alignment_definition_on_known_predictions() -> None:
    from difflab.eval import attribute_hits

    labels = torch.tensor([[[3, 2, 0], [12, 5, 3]], [[7, 1, 2], [-1, -1, -1]], [[0, 4, 1], [-1, -1, -1]]])
    items = torch.tensor([[3, EMPTY, EMPTY, 12], [9, EMPTY, 7, EMPTY], [EMPTY, EMPTY, 0, EMPTY]])
    colours = torch.tensor([[2, -1, -1, 6], [3, -1, 0, -1], [-1, -1, 4, -1]])
    hits = attribute_hits(items, colours, labels)
    # scene 0: all found but the second colour (5/6); scene 1: the item (1/3): an extra item in quadrant 0
    # costs the position, and the colour is wrong; scene 2: nothing at the caption's quadrant (0)
    assert torch.allclose(hits["alignment"], torch.tensor([5 / 6, 1 / 3, 0.0]))
    assert hits["position"].tolist() == [[True, True], [False, False], [False, False]]
    assert hits["exact"].tolist() == [False, False, False]
    assert attribute_hits(items[:1], torch.tensor([[2, -1, -1, 5]]), labels[:1])["exact"].tolist() == [True]


def test_diversity(test_scenes) -> None:
    images = test_scenes[0][:6]
    same = scene_features(images[:1].expand(4, -1, -1, -1))
    assert diversity(same, [0, 0, 0, 0]) == 0.0
    feats = scene_features(images)
    assert diversity(feats, [0, 0, 0, 1, 1, 1]) > 0.0
    assert diversity(feats, torch.tensor([0, 1, 2, 3, 4, 4])) == pytest.approx(float((feats[4] - feats[5]).norm()))
    _one_line_value_error(lambda: diversity(feats, [0, 1, 2, 3, 4, 5]), "two or more samples")
    _one_line_value_error(lambda: diversity(feats, [0, 0]), "group ids")


def test_scene_fd_real_vs_real_far_below_noise() -> None:
    a, _ = _real("test", 300)
    b, _ = _real("test", 300, start=300)
    noise = torch.rand(300, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    real = scene_fd(a, b)
    assert real < 0.1 * scene_fd(noise, b)
    _, labels = _real("test", 300)
    assert alignment_rates(noise, labels)["position"] < 0.2  # items everywhere: no position for free


def test_small_inputs_are_upsampled() -> None:
    images, labels = _real("test", 100, size=16)
    scores = alignment(images, labels)
    assert scores.shape == (100,) and float(scores.mean()) > 0.95
    assert scene_features(images).shape[1] == scene_features(torch.zeros(2, 3, 64, 64)).shape[1]


def test_bad_inputs_are_one_line_value_errors(test_scenes) -> None:
    images, labels = test_scenes
    _one_line_value_error(lambda: alignment(images[:4, :1], labels[:4]), r"\(N, 3, S, S\)")
    _one_line_value_error(lambda: alignment(images[:4], labels[:4, 0]), r"shape \(N, 2, 3\)")
    _one_line_value_error(lambda: alignment(images[:4], labels[:3]), "4 images but 3 labels")
    _one_line_value_error(lambda: alignment(images[:4].mul(127).to(torch.uint8), labels[:4]), "float images")
    _one_line_value_error(lambda: alignment(torch.zeros(1, 3, 128, 128), labels[:1]), "at most 64x64")
    bad = labels[:4].clone()
    bad[0, 0, 1] = len(COLOURS)
    _one_line_value_error(lambda: alignment(images[:4], bad), "out of range")


def test_corrupt_weights_are_rejected(tmp_path) -> None:
    for p in weight_paths(SCENE_CLASSIFIER):
        shutil.copy(p, tmp_path / p.name)
    net = load_scene_classifier(tmp_path, cache=False)
    assert isinstance(net, SceneClassifier) and not net.training
    w_path, _ = weight_paths(SCENE_CLASSIFIER, tmp_path)
    data = bytearray(w_path.read_bytes())
    data[-1] ^= 0xFF
    w_path.write_bytes(bytes(data))
    _one_line_value_error(lambda: load_scene_classifier(tmp_path, cache=False), "sha256")
    with pytest.raises(FileNotFoundError):
        load_scene_classifier(tmp_path / "missing")
    assert load_scene_classifier() is load_scene_classifier()  # cached per process
