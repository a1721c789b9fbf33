"""Plots of a metric against the number of sampling steps (matplotlib, imported lazily, Agg backend)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

LABEL_KEYS = ("label", "method", "sampler", "name")


def plot_metric_vs_steps(
    rows: Iterable[Mapping[str, Any]],
    path: str | os.PathLike[str],
    metric: str = "fd",
    *,
    title: str | None = None,
    floor_key: str | None = None,
    logy: bool = False,
    x: str = "steps",
    xlabel: str = "sampling steps",
) -> Path:
    """Plot ``metric`` against ``steps`` (log x-axis), one line per label, and save it as an image.

    ``x`` names another key for the x-axis (e.g. a guidance weight), ``xlabel`` its label.
    ``rows`` are dicts with ``steps`` (or ``x``), ``metric`` and optionally a label under one of ``label``,
    ``method``, ``sampler``, ``name`` (rows without one form a single line). A floor (by default
    ``fd_floor`` when ``metric`` is ``fd``) is drawn as a dashed horizontal line at its mean.
    ``logy`` puts the metric on a log axis too. Returns the written path; the format follows its
    suffix (PNG, SVG, PDF).
    """
    rows = list(rows)
    if not rows:
        raise ValueError("plot_metric_vs_steps needs at least one row")
    for i, row in enumerate(rows):
        missing = [key for key in (x, metric) if key not in row]
        if missing:
            raise ValueError(f"row {i} lacks {', '.join(missing)}; its keys: {', '.join(map(str, row))}")
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("plotting needs matplotlib: pip install 'difflab[plot]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if floor_key is None and metric == "fd":
        floor_key = "fd_floor"
    lines: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        label = next((str(row[key]) for key in LABEL_KEYS if key in row), "")
        lines.setdefault(label, []).append((float(row[x]), float(row[metric])))
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    try:
        for label, points in lines.items():
            xs, ys = zip(*sorted(points), strict=True)
            ax.plot(xs, ys, marker="o", label=label or None)
        floors = [float(r[floor_key]) for r in rows if floor_key and floor_key in r]
        if floors:
            ax.axhline(sum(floors) / len(floors), color="grey", linestyle="--", linewidth=1, label=floor_key)
        ax.set_xscale("log")
        if logy:  # metrics that span decades (FD from 40 at 1 step to 0.2 at 256)
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric)
        if title:
            ax.set_title(title)
        if any(lines) or floors:
            ax.legend()
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out
