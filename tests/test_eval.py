"""Tests for difflab.eval: Frechet distance, precision / recall, the shipped feature nets, evaluate, plots."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from difflab.eval import (
    class_accuracy,
    class_predictions,
    evaluate,
    feature_net_metadata,
    features,
    frechet_distance,
    frechet_distance_from_stats,
    load_feature_net,
    plot_metric_vs_steps,
    precision_recall,
)


def _with_exact_stats(n: int, mean: np.ndarray, cov: np.ndarray, seed: int = 0) -> np.ndarray:
    """n samples whose empirical mean and (unbiased) covariance are exactly ``mean`` and ``cov``."""
    z = np.random.default_rng(seed).standard_normal((n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # whiten: cov(z) = I exactly
    return z @ np.linalg.cholesky(cov).T + mean


# --- Frechet distance ------------------------------------------------------------------------------------------


def test_fd_of_identical_sets_is_zero() -> None:
    x = torch.randn(500, 32)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_fd_matches_closed_form_for_diagonal_gaussians() -> None:
    d = 6
    mu_a, mu_b = np.zeros(d), np.linspace(-1, 2, d)
    var_a, var_b = np.linspace(0.5, 3, d), np.linspace(4, 0.2, d)
    expected = float(((mu_a - mu_b) ** 2).sum() + ((np.sqrt(var_a) - np.sqrt(var_b)) ** 2).sum())
    a = _with_exact_stats(300, mu_a, np.diag(var_a), seed=1)
    b = _with_exact_stats(400, mu_b, np.diag(var_b), seed=2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance_from_stats(mu_a, np.diag(var_a), mu_b, np.diag(var_b)) == pytest.approx(expected, rel=1e-12)


def test_fd_matches_scipy_sqrtm_for_full_covariances() -> None:
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(0)
    d = 20
    m_a, m_b = rng.standard_normal((d, d)), rng.standard_normal((d, d))
    s_a, s_b = m_a @ m_a.T / d, m_b @ m_b.T / d + 0.1 * np.eye(d)  # non-commuting covariances
    mu_a, mu_b = rng.standard_normal(d), rng.standard_normal(d)
    covmean = linalg.sqrtm(s_a @ s_b).real
    reference = float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * covmean))
    assert frechet_distance_from_stats(mu_a, s_a, mu_b, s_b) == pytest.approx(reference, rel=1e-8)


def test_fd_is_symmetric_and_handles_singular_covariances() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(50, 64, generator=g)  # fewer samples than dimensions: singular covariance
    b = torch.randn(80, 64, generator=g) * 1.5 + 0.3
    b[:, :10] = 0.0  # dead features
    fab, fba = frechet_distance(a, b), frechet_distance(b, a)
    assert np.isfinite(fab) and fab > 0
    assert fab == pytest.approx(fba, rel=1e-9)


def test_fd_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="dimension"):
        frechet_distance(torch.randn(10, 3), torch.randn(10, 4))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(torch.randn(1, 3), torch.randn(10, 3))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(torch.full((10, 3), float("nan")), torch.randn(10, 3))


# --- precision / recall ----------------------------------------------------------------------------------------


def test_precision_recall_identical_sets() -> None:
    x = torch.randn(400, 16, generator=torch.Generator().manual_seed(0))
    assert precision_recall(x, x, k=3) == (1.0, 1.0)


def test_precision_recall_far_apart_sets() -> None:
    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g) + 100.0
    assert precision_recall(real, fake) == (0.0, 0.0)


def test_precision_recall_of_a_subset() -> None:
    g = torch.Generator().manual_seed(2)
    cluster_a = torch.randn(300, 8, generator=g)
    cluster_b = torch.randn(300, 8, generator=g) + 50.0
    real = torch.cat([cluster_a, cluster_b])
    precision, recall = precision_recall(real, cluster_a[:200])  # mode dropping
    assert precision == pytest.approx(1.0)
    assert recall < 0.6


def test_precision_recall_blocking_does_not_change_the_result() -> None:
    g = torch.Generator().manual_seed(3)
    real, fake = torch.randn(257, 5, generator=g), torch.randn(301, 5, generator=g) * 1.3 + 0.2
    full = precision_recall(real, fake, k=5)
    blocked = precision_recall(real, fake, k=5, max_elements=20_000)  # blocks of ~70 rows
    assert full == blocked
    assert 0.0 < full[0] < 1.0 and 0.0 < full[1] < 1.0
    with pytest.raises(ValueError, match="k must be"):
        precision_recall(real[:3], fake, k=3)


# --- shipped feature nets --------------------------------------------------------------------------------------


def _fashion_mnist_or_skip() -> tuple[torch.Tensor, torch.Tensor]:
    from difflab.data import get_dataset

    try:
        x, cond = get_dataset("fashion-mnist", "test").tensors()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    return x, cond["class"]


def test_digits_feature_net_reproduces_its_recorded_accuracy() -> None:
    from difflab.data import get_dataset

    meta = feature_net_metadata("digits")
    net = load_feature_net("digits")
    x, cond = get_dataset("digits", "test").tensors()
    y = cond["class"]
    acc = class_accuracy(net, x, y)
    assert acc == pytest.approx(meta["test_accuracy"], abs=0.005)
    assert acc >= 0.97
    assert features(net, x[:10]).shape == (10, meta["config"]["feature_dim"])
    assert class_predictions(net, x[:10]).shape == (10,)
    assert len(meta["sha256"]) == 64 and meta["train_command"].startswith("python scripts/train_feature_nets.py")


def test_fashion_mnist_feature_net_reproduces_its_recorded_accuracy() -> None:
    x, y = _fashion_mnist_or_skip()
    meta = feature_net_metadata("fashion-mnist")
    subset = meta["test_accuracy_subset"]
    n = subset["n"]
    acc = class_accuracy(load_feature_net("fashion-mnist"), x[:n], y[:n])
    assert acc == pytest.approx(subset["accuracy"], abs=0.005)
    assert meta["test_accuracy"] >= 0.91


def test_feature_net_rejects_images_of_the_wrong_shape() -> None:
    net = load_feature_net("digits")
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        features(net, torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match="float images"):
        features(net, torch.zeros(2, 1, 8, 8, dtype=torch.uint8))


def test_corrupted_weight_file_gives_a_clear_error(tmp_path: Path) -> None:
    from difflab.eval.featurenet import weight_paths

    w_path, j_path = weight_paths("digits")
    shutil.copy(w_path, tmp_path / w_path.name)
    shutil.copy(j_path, tmp_path / j_path.name)
    load_feature_net("digits", weights_dir=tmp_path)  # the intact copy loads
    bad = tmp_path / w_path.name
    data = bytearray(bad.read_bytes())
    data[-5] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"corrupt feature net weights .*{bad.name}.*sha256"):
        load_feature_net("digits", weights_dir=tmp_path)
    bad.unlink()
    with pytest.raises(FileNotFoundError, match=bad.name):
        load_feature_net("digits", weights_dir=tmp_path)
    with pytest.raises(ValueError, match="valid names"):
        load_feature_net("cifar")


def test_metadata_with_wrong_config_is_rejected(tmp_path: Path) -> None:
    from difflab.eval.featurenet import weight_paths

    w_path, j_path = weight_paths("digits")
    shutil.copy(w_path, tmp_path / w_path.name)
    meta = json.loads(j_path.read_text())
    meta["config"]["feature_dim"] = 7
    (tmp_path / j_path.name).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="do not fit its config"):
        load_feature_net("digits", weights_dir=tmp_path)


# --- evaluate and plots ----------------------------------------------------------------------------------------


def test_evaluate_floor_is_small_compared_to_noise() -> None:
    from difflab.data import get_dataset

    x_test, cond = get_dataset("digits", "test").tensors()
    y_test = cond["class"]
    real = evaluate(x_test, "digits", labels=y_test)
    noise = evaluate(torch.rand(300, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1, "digits")
    assert real["n_floor"] == noise["n_floor"] == 300 and real["n_ref"] == 1497
    assert real["fd"] == pytest.approx(real["fd_floor"], rel=1e-6)  # all test images: the floor itself
    assert noise["fd_floor"] == real["fd_floor"]
    assert noise["fd"] > 50 * noise["fd_floor"]  # measured: floor 0.11, noise 34
    assert real["precision"] > 0.7 and real["recall"] > 0.7
    assert noise["precision"] < 0.2 and noise["recall"] < 0.2
    assert real["class_accuracy"] >= 0.97 and "class_accuracy" not in noise


def test_plot_metric_vs_steps(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rows = [
        {"method": m, "steps": s, "fd": 10.0 / s + (1.0 if m == "ddim" else 2.0), "fd_floor": 0.5}
        for m in ("ddim", "ddpm")
        for s in (1, 4, 16, 64)
    ]
    out = plot_metric_vs_steps(rows, tmp_path / "plots" / "fd.png")
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="lacks"):
        plot_metric_vs_steps([{"steps": 1}], tmp_path / "x.png", metric="precision")
    logy = plot_metric_vs_steps(rows, tmp_path / "plots" / "fd-logy.png", logy=True)
    assert logy.read_bytes() != out.read_bytes()  # the metric axis is drawn differently
    by_w = [{"label": t, "guidance": w, "fd": w + (t == "dynamic")} for t in ("none", "dynamic") for w in (1, 3, 8)]
    other = plot_metric_vs_steps(by_w, tmp_path / "w.png", x="guidance", xlabel="guidance weight w")
    assert other.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="row 0 lacks guidance"):
        plot_metric_vs_steps(rows, tmp_path / "y.png", x="guidance")


def test_import_is_light() -> None:
    code = (
        "import sys, difflab.eval; "
        "heavy = [m for m in ('scipy', 'sklearn', 'matplotlib', 'safetensors') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
