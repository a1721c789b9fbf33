"""Sample-quality metrics on feature vectors: Frechet distance and k-NN precision / recall.

- Frechet distance (Heusel et al. 2017, "GANs trained by a two time-scale update rule converge to a
  local Nash equilibrium", eq. 6; Dowson & Landau 1982): the 2-Wasserstein distance between the
  Gaussians fitted to two feature sets,
  ``FD = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``.
- Improved precision and recall (Kynkaanniemi et al. 2019, "Improved precision and recall metric for
  assessing generative models", eqs. 1-3): each set's manifold is the union of balls around its
  points whose radius is the distance to the point's k-th nearest neighbour within the set;
  precision = fraction of generated points inside the real manifold, recall = fraction of real
  points inside the generated manifold.

Both accept torch tensors or numpy arrays of shape (N, D) and compute in float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


def _as_2d_float64(x: Any, what: str) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array (N, D) of feature vectors, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return a


def gaussian_stats(feats: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D), float64, of feature vectors (N, D) with N >= 2."""
    a = _as_2d_float64(feats, "feats")
    if a.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors to estimate a covariance, got {a.shape[0]}")
    return a.mean(axis=0), np.cov(a, rowvar=False).reshape(a.shape[1], a.shape[1])


def _psd_eigh(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of a symmetric PSD matrix; eigenvalues within round-off of 0 are set to 0.

    The cut-off ``d * eps * max|w|`` (as in ``numpy.linalg.matrix_rank``) stops round-off in the
    null space of a singular covariance from adding ``sqrt(eps)``-sized terms to square roots.
    """
    w, v = np.linalg.eigh((s + s.T) / 2)
    tol = s.shape[0] * np.finfo(np.float64).eps * max(float(np.abs(w).max(initial=0.0)), np.finfo(np.float64).tiny)
    return np.where(w > tol, w, 0.0), v


def frechet_distance_from_stats(mu_a: Any, sigma_a: Any, mu_b: Any, sigma_b: Any) -> float:
    """Frechet distance between N(mu_a, sigma_a) and N(mu_b, sigma_b) (Heusel et al. 2017, eq. 6).

    ``tr((S_a S_b)^(1/2))`` is computed as ``sum(sqrt(eig(A S_b A)))`` with ``A = S_a^(1/2)``: the matrix
    ``A S_b A`` is symmetric PSD and similar to ``S_a S_b``, so a symmetric eigen-decomposition in
    float64 gives real eigenvalues (those within round-off of 0 are set to 0). This avoids the complex
    output and the imaginary round-off of a general ``sqrtm(S_a S_b)``, and works for singular
    covariances (fewer samples than dimensions, dead features).
    """
    mu_a, mu_b = np.asarray(mu_a, np.float64).ravel(), np.asarray(mu_b, np.float64).ravel()
    s_a, s_b = np.atleast_2d(np.asarray(sigma_a, np.float64)), np.atleast_2d(np.asarray(sigma_b, np.float64))
    d = mu_a.shape[0]
    if mu_b.shape != (d,) or s_a.shape != (d, d) or s_b.shape != (d, d):
        raise ValueError(
            f"shape mismatch: mu_a {mu_a.shape}, sigma_a {s_a.shape}, mu_b {mu_b.shape}, sigma_b {s_b.shape}"
        )
    w, v = _psd_eigh(s_a)
    root_a = (v * np.sqrt(w)) @ v.T  # the symmetric square root of S_a
    m = root_a @ s_b @ root_a
    tr_covmean = float(np.sqrt(_psd_eigh(m)[0]).sum())
    diff = mu_a - mu_b
    fd = float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2.0 * tr_covmean)
    return max(fd, 0.0)  # a squared distance: clip round-off below zero


def frechet_distance(feats_a: Any, feats_b: Any) -> float:
    """Frechet distance between the Gaussians fitted to feature sets (N_a, D) and (N_b, D).

    With Inception features this is FID; difflab uses its own feature nets (``load_feature_net``),
    so values are comparable only between runs that use the same net and sample counts.
    """
    a, b = _as_2d_float64(feats_a, "feats_a"), _as_2d_float64(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets differ in dimension: {a.shape[1]} vs {b.shape[1]}")
    return frechet_distance_from_stats(*gaussian_stats(a), *gaussian_stats(b))


def _block_rows(n_rows: int, n_cols: int, max_elements: int) -> int:
    return max(1, min(n_rows, max_elements // max(n_cols, 1)))


def _sq_dists(a: Tensor, b: Tensor, b_sq: Tensor) -> Tensor:
    """Squared Euclidean distances (len(a), len(b)) in float64, clipped at 0."""
    d = (a * a).sum(1, keepdim=True) + b_sq[None, :] - 2.0 * (a @ b.T)
    return d.clamp_min_(0.0)


def knn_radii(feats: Any, k: int = 3, max_elements: int = 10_000_000) -> Tensor:
    """Squared distance (N,) from each point to its k-th nearest neighbour in the same set (self excluded).

    Computed in row blocks of at most ``max_elements`` distances, so 10k x 10k or larger fits in memory.
    """
    x = torch.from_numpy(_as_2d_float64(feats, "feats"))
    n = x.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be in 1..{n - 1} for {n} points, got {k}")
    x_sq = (x * x).sum(1)
    rows = _block_rows(n, n, max_elements)
    out = torch.empty(n, dtype=torch.float64)
    for i in range(0, n, rows):
        d = _sq_dists(x[i : i + rows], x, x_sq)
        out[i : i + rows] = d.kthvalue(k + 1, dim=1).values  # the 1st is the point itself (distance 0)
    return out


def manifold_coverage(query: Any, support: Any, radii: Tensor, max_elements: int = 10_000_000) -> float:
    """Fraction of ``query`` points inside the union of balls (centre ``support[j]``, squared radius ``radii[j]``)."""
    q = torch.from_numpy(_as_2d_float64(query, "query"))
    s = torch.from_numpy(_as_2d_float64(support, "support"))
    if q.shape[1] != s.shape[1]:
        raise ValueError(f"feature sets differ in dimension: {q.shape[1]} vs {s.shape[1]}")
    if q.shape[0] == 0:
        raise ValueError("manifold_coverage needs at least one query point")
    s_sq = (s * s).sum(1)
    rows = _block_rows(q.shape[0], s.shape[0], max_elements)
    inside = 0
    for i in range(0, q.shape[0], rows):
        d = _sq_dists(q[i : i + rows], s, s_sq)
        inside += int((d <= radii[None, :]).any(dim=1).sum())
    return inside / q.shape[0]


def precision_recall(
    real_feats: Any, fake_feats: Any, k: int = 3, max_elements: int = 10_000_000
) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of generated vs real feature sets.

    Returns ``(precision, recall)``: precision = fraction of fake points within the k-NN manifold of
    the real set (fidelity), recall = fraction of real points within the k-NN manifold of the fake
    set (diversity). The paper uses k = 3 and equally large sets. Distances are computed in blocks
    of at most ``max_elements`` entries (80 MB in float64 by default).
    """
    real = _as_2d_float64(real_feats, "real_feats")
    fake = _as_2d_float64(fake_feats, "fake_feats")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sets differ in dimension: {real.shape[1]} vs {fake.shape[1]}")
    precision = manifold_coverage(fake, real, knn_radii(real, k, max_elements), max_elements)
    recall = manifold_coverage(real, fake, knn_radii(fake, k, max_elements), max_elements)
    return precision, recall
