"""The ``difflab demo``: every sampler on a 2-D Gaussian mixture with an exact denoiser.

Until the training stack exists, the demo needs no trained network: the data are a
mixture of 8 elongated Gaussians on a ring with unequal weights (1 : 2 : ... : 8), and
:meth:`difflab.analytic.GaussianMixture.denoise` is the exact ``E[x | z_lam]``. So every
difference between the samples and the data comes from the sampler and its step count.

For each sampler in :data:`difflab.diffusion.SAMPLERS` and each step count the demo
samples ``n`` points from the same pure noise on the cosine schedule's grid uniform in
``t`` (``CosineSchedule().lams(steps, "t")``; for this data it gives a lower SW2 and ODE
error than the grid uniform in log-SNR (``spacing="lam"``) for DDPM, DDIM and DPM-Solver++
at 4 to 16 steps), except Heun, which needs the log-SNR grid (``spacing="auto"``), and reports

- NFE: the number of denoiser calls (Heun makes two per step except the last);
- SW2: the sliced 2-Wasserstein distance to the data (:class:`SlicedW2`), beside the
  "noise floor" that ``n`` exact samples score;
- ODE error (deterministic samplers): the rms distance to the probability-flow ODE solution
  from the same noise, which keeps falling after SW2 has reached the noise floor;
- weight TV: the total-variation error of the mixture weights, each sample assigned to
  the component with the largest posterior at the clean end;
- wall time.

It then shows classifier-free guidance (Ho & Salimans 2021) on the class-conditional
mixture (label -1 is the null label) for one class at weights 0, 1, 3 and 8, and Imagen's
dynamic thresholding (Saharia et al. 2022) at weight 8. Writes ``demo.png`` and
``metrics.json``. Computation is in float64 on one CPU thread; the same seed gives the same
numbers (all but the wall times).
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .analytic import Gaussian, GaussianMixture
from .diffusion import SAMPLERS, CosineSchedule, cfg, ddim, dpmpp_2m, dynamic_threshold, get_sampler

DEFAULT_STEPS = (2, 4, 8, 16, 64)
GUIDANCE_WEIGHTS = (0.0, 1.0, 3.0, 8.0)
GUIDANCE_CLASS = 2  # a light component (weight 3/36) with heavier neighbours on both sides
GUIDANCE_STEPS = 32
THRESHOLD_QUANTILE = 0.995
SPACINGS = ("auto", "t", "lam")
# "auto": uniform in t, except Heun, whose trapezoidal correction needs small log-SNR steps
# at the noisy end (see difflab.diffusion.heun) and so gets the grid uniform in log-SNR.
AUTO_SPACING = {"heun": "lam"}
ODE_REFERENCE_MIN_STEPS = 256  # the reference ODE solution uses max(this, 4 x the largest step count)
STOCHASTIC = {"ddpm"}


@dataclass
class DemoConfig:
    """Settings of :func:`run_demo` (the ``difflab demo`` options)."""

    out: Path | None = Path("outputs/demo")
    n: int = 2000
    seed: int = 0
    steps: Sequence[int] = DEFAULT_STEPS
    samplers: Sequence[str] = field(default_factory=lambda: list(SAMPLERS))
    spacing: str = "auto"
    progress: bool = False
    plot: bool = True

    def validate(self) -> None:
        if not isinstance(self.n, int) or self.n < 10:
            raise ValueError(f"n must be an integer >= 10, got {self.n!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if not self.steps or any(not isinstance(s, int) or s < 1 for s in self.steps):
            raise ValueError(f"steps must be a non-empty list of integers >= 1, got {list(self.steps)}")
        if self.spacing not in SPACINGS:
            raise ValueError(f"spacing must be one of {', '.join(SPACINGS)}, got {self.spacing!r}")
        if not self.samplers:
            raise ValueError("samplers must name at least one sampler")
        for name in self.samplers:
            get_sampler(name)  # unknown names: ValueError listing the valid ones
        if self.out is not None and Path(self.out).exists() and not Path(self.out).is_dir():
            raise ValueError(f"output folder {self.out} exists and is not a directory; choose another path")


def spacing_for(config: DemoConfig, sampler: str) -> str:
    """The grid spacing ("t" or "lam") the demo uses for ``sampler``."""
    return AUTO_SPACING.get(sampler, "t") if config.spacing == "auto" else config.spacing


# -- the data -------------------------------------------------------------------------------
def ring_mixture(
    components: int = 8, radius: float = 0.75, radial_std: float = 0.04, tangent_std: float = 0.12
) -> GaussianMixture:
    """Gaussians on a ring, elongated along it, with weights proportional to 1, 2, ..., K."""
    comps = []
    for k in range(components):
        th = 2 * math.pi * k / components
        u = torch.tensor([math.cos(th), math.sin(th)], dtype=torch.float64)
        v = torch.tensor([-math.sin(th), math.cos(th)], dtype=torch.float64)
        cov = radial_std**2 * torch.outer(u, u) + tangent_std**2 * torch.outer(v, v)
        comps.append(Gaussian(radius * u, cov))
    return GaussianMixture([k + 1.0 for k in range(components)], comps)


# -- metrics --------------------------------------------------------------------------------
class SlicedW2:
    """Sliced 2-Wasserstein distance to a fixed reference sample (Rabin et al. 2011,
    "Wasserstein Barycenter and its Application to Texture Mixing"; Bonneel et al. 2015).

    ``SW2(x, ref)^2 = mean over directions u of W2^2(<x, u>, <ref, u>)``; in 1-D, W2 compares
    quantile functions, so the sorted projections of ``x`` (levels ``(i + 0.5) / n``) are
    compared with the reference's interpolated quantiles at the same levels. In 2-D the
    directions are ``m`` evenly spaced angles in [0, pi), a deterministic quadrature of the
    integral over the circle; in higher dimension, Gaussian directions from a fixed seed.
    A reference much larger than ``x`` leaves mostly the sampling noise of ``x`` itself:
    see :func:`run_demo`'s ``floor``.
    """

    def __init__(self, ref: Tensor, directions: int = 64) -> None:
        d = ref.shape[1]
        if d == 2:
            ang = torch.arange(directions, dtype=torch.float64) * math.pi / directions
            u = torch.stack([ang.cos(), ang.sin()], 1)
        else:
            u = torch.randn(directions, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
            u = u / u.norm(dim=1, keepdim=True)
        self.u = u.T.to(ref.dtype)
        self.ref_sorted = (ref @ self.u).sort(0).values  # (N, m)

    def __call__(self, x: Tensor) -> float:
        n, big = x.shape[0], self.ref_sorted.shape[0]
        pos = ((torch.arange(n, dtype=torch.float64) + 0.5) / n * big - 0.5).clamp(0, big - 1)
        lo = pos.floor().long()
        hi = (lo + 1).clamp(max=big - 1)
        frac = (pos - lo).to(self.ref_sorted)[:, None]
        q = self.ref_sorted[lo] * (1 - frac) + self.ref_sorted[hi] * frac
        return float(((x @ self.u).sort(0).values - q).pow(2).mean().sqrt())


def assign(mixture: GaussianMixture, x: Tensor) -> Tensor:
    """Label each sample with its most probable component at the clean end (lam = +inf)."""
    return mixture.posterior(x, torch.tensor(math.inf, dtype=x.dtype)).argmax(1)


def weight_tv(mixture: GaussianMixture, labels: Tensor) -> float:
    """Total-variation distance ``0.5 sum_k |f_k - w_k|`` between label frequencies and weights."""
    k = len(mixture.components)
    freq = torch.bincount(labels, minlength=k).double() / labels.numel()
    return float(0.5 * (freq - mixture.weights).abs().sum())


def _counted(denoiser: Callable) -> tuple[Callable, list[int]]:
    calls = [0]

    def f(z: Tensor, lam: Tensor, cond: Any = None) -> Tensor:
        calls[0] += 1
        return denoiser(z, lam, cond)

    return f, calls


def _gen(seed: int, stream: int) -> torch.Generator:
    """Independent generator per purpose, so each run's numbers depend only on the seed."""
    return torch.Generator().manual_seed(seed * 16 + stream)


# -- the demo -------------------------------------------------------------------------------
def run_demo(config: DemoConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the demo, print its tables with ``log``, write the files; return the metrics."""
    config.validate()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is as fast and avoids thread contention on busy CPUs
    try:
        metrics, samples = _compute(config)
    finally:
        torch.set_num_threads(threads)
    log(format_tables(metrics))
    if config.out is not None:
        out = Path(config.out)
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / "metrics.json", metrics)
        written = [out / "metrics.json"]
        if config.plot:
            try:
                written.insert(0, plot_demo(metrics, samples, out / "demo.png"))
            except ImportError as e:
                log(f"no figure: {e} (install the plot extra: pip install 'difflab[plot]')")
        log("wrote " + ", ".join(str(p) for p in written))
    return metrics


def _compute(config: DemoConfig) -> tuple[dict[str, Any], dict[Any, tuple[Tensor, Tensor]]]:
    """The numbers (a JSON-able dict) and the samples with their labels, keyed for the figure."""
    n, seed, steps = config.n, config.seed, sorted(set(config.steps))
    mix = ring_mixture()
    schedule = CosineSchedule()
    sw2 = SlicedW2(mix.sample(max(20_000, 10 * n), _gen(seed, 0))[0])
    data = mix.sample(n, _gen(seed, 1))[0]  # shown beside the samples
    g = _gen(seed, 2)
    draws = [mix.sample(n, g)[0] for _ in range(8)]  # what n exact samples score: the noise floor
    d_sw2 = [sw2(x) for x in draws]
    d_tv = [weight_tv(mix, assign(mix, x)) for x in draws]
    floor = {
        "sw2": sum(d_sw2) / len(draws),
        "weight_tv": sum(d_tv) / len(draws),
        "sw2_range": [min(d_sw2), max(d_sw2)],
        "weight_tv_range": [min(d_tv), max(d_tv)],
    }
    z0 = torch.randn(n, 2, generator=_gen(seed, 3), dtype=torch.float64)
    runs = [(s, k) for s in config.samplers for k in steps]
    from tqdm.auto import tqdm  # lazy: keep `import difflab` cheap

    bar = tqdm(total=1 + len(runs) + len(GUIDANCE_WEIGHTS) + 1, desc="demo", unit="run", disable=not config.progress)
    # The probability-flow ODE solution for the same noise, to measure the deterministic
    # samplers' own error (which keeps falling after SW2 has reached the sampling noise floor).
    ode_steps = max(ODE_REFERENCE_MIN_STEPS, 4 * steps[-1])
    x_ode = None
    if any(name not in STOCHASTIC for name in config.samplers):
        x_ode = dpmpp_2m(mix.denoise, z0.clone(), schedule.lams(ode_steps, "t"))
    bar.update(1)
    rows, samples = [], {"data": (data, assign(mix, data))}
    for name, k in runs:
        den, calls = _counted(mix.denoise)
        t0 = time.perf_counter()
        with warnings.catch_warnings():  # Heun's few-step grids are unstable by design: the table shows it
            warnings.filterwarnings("ignore", "heun: a grid step", RuntimeWarning)
            x = get_sampler(name)(den, z0.clone(), schedule.lams(k, spacing_for(config, name)), generator=_gen(seed, 4))
        dt = time.perf_counter() - t0
        labels = assign(mix, x)
        ode = None if x_ode is None or name in STOCHASTIC else float((x - x_ode).pow(2).sum(1).mean().sqrt())
        stats = {"nfe": calls[0], "sw2": sw2(x), "ode_error": ode, "weight_tv": weight_tv(mix, labels), "time_s": dt}
        rows.append({"sampler": name, "steps": k, **stats})
        samples[(name, k)] = (x, labels)
        bar.update(1)

    guided = []
    zg = torch.randn(n, 2, generator=_gen(seed, 5), dtype=torch.float64)
    label, null = torch.full((n,), GUIDANCE_CLASS), torch.full((n,), -1)
    mu = mix.components[GUIDANCE_CLASS].mean
    guidance_lams = schedule.lams(GUIDANCE_STEPS, spacing_for(config, "ddim"))
    for w, thr in [(w, False) for w in GUIDANCE_WEIGHTS] + [(GUIDANCE_WEIGHTS[-1], True)]:
        den = cfg(mix.denoise, w, null)
        if thr:
            den = dynamic_threshold(den, THRESHOLD_QUANTILE)
        peak = [0.0]

        def track(info: dict, peak: list[float] = peak) -> None:
            peak[0] = max(peak[0], float(info["x_hat"].abs().max()))

        x = ddim(den, zg.clone(), guidance_lams, cond=label, callback=track)
        labels = assign(mix, x)
        guided.append(
            {
                "weight": w,
                "dynamic_threshold": THRESHOLD_QUANTILE if thr else None,
                "in_class": float((labels == GUIDANCE_CLASS).double().mean()),
                "rms_to_class_mean": float((x - mu).pow(2).sum(1).mean().sqrt()),
                "mean_radius": float(x.norm(dim=1).mean()),
                "max_abs_x_hat": peak[0],
            }
        )
        samples[("cfg", w, thr)] = (x, labels)
        bar.update(1)
    bar.close()
    metrics = {
        "config": {
            "n": n,
            "seed": seed,
            "steps": steps,
            "samplers": list(config.samplers),
            "schedule": "CosineSchedule() (lam_min=-20, lam_max=20)",
            "grid": (
                'CosineSchedule().lams(steps, "t"); "lam" for heun'
                if config.spacing == "auto"
                else f'CosineSchedule().lams(steps, "{config.spacing}")'
            ),
            "reference_size": sw2.ref_sorted.shape[0],
            "ode_reference": f"dpmpp_2m, {ode_steps} steps",
            "dtype": "float64",
        },
        "data": {"weights": mix.weights.tolist(), "means": [c.mean.tolist() for c in mix.components]},
        "floor": floor,
        "runs": rows,
        "guidance": {
            "class": GUIDANCE_CLASS,
            "class_weight": float(mix.weights[GUIDANCE_CLASS]),
            "sampler": "ddim",
            "steps": GUIDANCE_STEPS,
            "runs": guided,
        },
    }
    return metrics, samples


def format_tables(m: dict[str, Any]) -> str:
    """The two tables the demo prints: samplers x steps, and guidance."""
    c = m["config"]
    lines = [
        f"difflab demo: 8-component 2-D Gaussian mixture, exact denoiser, n={c['n']}, seed={c['seed']}, "
        f"grid {c['grid']}",
        f"{'sampler':<9} {'steps':>5} {'NFE':>5} {'SW2':>8} {'ODE error':>9} {'weight TV':>9} {'time ms':>8}",
    ]
    for r in m["runs"]:
        ode = "-" if r["ode_error"] is None else f"{r['ode_error']:.2e}"
        lines.append(
            f"{r['sampler']:<9} {r['steps']:>5} {r['nfe']:>5} {r['sw2']:>8.4f} {ode:>9} {r['weight_tv']:>9.4f} "
            f"{r['time_s'] * 1e3:>8.1f}"
        )
    f = m["floor"]
    lines += [
        f"{'exact':<9} {'':>5} {'':>5} {f['sw2']:>8.4f} {'':>9} {f['weight_tv']:>9.4f}"
        f"   <- {c['n']} exact samples: the noise floor (mean of 8 draws;",
        f"{'':>33}SW2 from {f['sw2_range'][0]:.4f} to {f['sw2_range'][1]:.4f}, weight TV from "
        f"{f['weight_tv_range'][0]:.4f} to {f['weight_tv_range'][1]:.4f})",
        f"SW2: sliced 2-Wasserstein distance to {c['reference_size']} fresh data samples",
        f"ODE error: rms distance to the probability-flow ODE solution from the same noise ({c['ode_reference']})",
        "weight TV: total-variation distance between the mixture weights and the shares of the samples",
        "  assigned to each component (the most probable one at the clean end)",
    ]
    g = m["guidance"]
    lines += [
        "",
        f"classifier-free guidance towards component {g['class']} (weight {g['class_weight']:.3f}), "
        f"{g['sampler']} {g['steps']} steps; w=0 unconditional, w=1 conditional",
        f"{'w':>4} {'dyn.thr':>7} {'in class':>8} {'rms to mean':>11} {'mean radius':>11} {'max|x_hat|':>10}",
    ]
    for r in g["runs"]:
        thr = "-" if r["dynamic_threshold"] is None else f"{r['dynamic_threshold']:g}"
        lines.append(
            f"{r['weight']:>4g} {thr:>7} {r['in_class']:>8.3f} {r['rms_to_class_mean']:>11.4f} "
            f"{r['mean_radius']:>11.4f} {r['max_abs_x_hat']:>10.3f}"
        )
    lines += [
        f"in class: share of samples assigned to component {g['class']}; rms to mean: rms distance to its mean;",
        "max|x_hat|: largest |coordinate| of the guided x_hat while sampling (the data lie inside [-1, 1])",
    ]
    return "\n".join(lines)


def _write_json(path: Path, obj: Any) -> None:
    """Write atomically: a temporary name in the same folder, then rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


# -- the figure -------------------------------------------------------------------------------
LIM = 1.25  # axis limits of every scatter plot (the data lie inside radius ~1)


def plot_demo(metrics: dict[str, Any], samples: dict[Any, tuple[Tensor, Tensor]], path: Path) -> Path:
    """Scatter plots (samplers x steps, the data, guidance) and metric-vs-NFE plots, as a PNG."""
    import matplotlib  # lazy: the optional extra "plot"

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.gridspec import GridSpecFromSubplotSpec
    from matplotlib.patches import Ellipse, Rectangle
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    cfg_, g = metrics["config"], metrics["guidance"]
    palette = np.array(plt.get_cmap("tab10").colors)
    means = np.array(metrics["data"]["means"])
    names, steps = cfg_["samplers"], cfg_["steps"]
    rows = {(r["sampler"], r["steps"]): r for r in metrics["runs"]}
    ns, nt, ng = len(names), len(steps), len(g["runs"])
    nside = 4
    top = max(ns, 3)
    width = 2.25 * (max(nt, ng - 1.6) + 1.6)
    fig = plt.figure(figsize=(width, 2.25 * (top + 1.3) + 0.6))
    outer = fig.add_gridspec(
        2, 2, width_ratios=[width / 2.25 - 1.6, 1.6], height_ratios=[top, 1.3], left=0.05, right=0.98, bottom=0.03,
        top=1 - 0.75 / fig.get_figheight(), wspace=0.12, hspace=0.2,
    )  # fmt: skip
    grid = GridSpecFromSubplotSpec(ns, nt, outer[0, 0], wspace=0.08, hspace=0.3)
    side = GridSpecFromSubplotSpec(nside, 1, outer[0, 1], hspace=0.55)
    bottom = GridSpecFromSubplotSpec(1, ng, outer[1, :], wspace=0.2)

    def scatter(ax, key: Any, title: str, note: str = "", left: bool = False, center=(0.0, 0.0), half=LIM) -> None:
        x, lab = (t.numpy() for t in samples[key])
        inside = (np.abs(x - np.asarray(center)) <= half).all(1)
        ax.scatter(x[inside, 0], x[inside, 1], s=1.5, c=palette[lab[inside]], alpha=0.5, lw=0, rasterized=True)
        ax.set(xlim=(center[0] - half, center[0] + half), ylim=(center[1] - half, center[1] + half), aspect="equal")
        if half == LIM:
            ax.set(xticks=[-1, 0, 1], yticks=[-1, 0, 1])
        else:
            ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.yaxis.set_major_locator(MaxNLocator(4))
        ax.tick_params(labelsize=6, length=2, labelleft=left)
        ax.set_title(title, fontsize=7.5, pad=3)
        off = int((~inside).sum())
        if off:
            note = f"{note}\n{off} points off the plot".strip()
        if note:
            ax.text(0.03, 0.03, note, transform=ax.transAxes, fontsize=6, va="bottom", color="0.1")

    for i, name in enumerate(names):
        for j, k in enumerate(steps):
            r = rows[(name, k)]
            ax = fig.add_subplot(grid[i, j])
            scatter(ax, (name, k), f"{name}, {k} steps ({r['nfe']} NFE)", f"SW2 {r['sw2']:.3f}", left=j == 0)
            if j == 0:
                ax.set_ylabel(name, fontsize=10, fontweight="bold")

    ax = fig.add_subplot(side[0])
    scatter(ax, "data", f"true data, n={cfg_['n']}\nweight of component k \u221d k + 1", left=True)
    for k, m in enumerate(means):
        ax.annotate(str(k), m * 1.38, fontsize=7, ha="center", va="center", color=palette[k], fontweight="bold")

    panels = [
        ("sw2", "SW2 to data", "distance to the data vs NFE"),
        ("ode_error", "rms ODE error", "error vs the exact ODE solution"),
        ("weight_tv", "weight TV error", "mixture-weight error vs NFE"),
    ]
    for slot, (key, ylabel, title) in enumerate(panels, start=1):
        ax = fig.add_subplot(side[slot])
        for i, name in enumerate(names):
            pts = [(rows[(name, k)]["nfe"], rows[(name, k)][key]) for k in steps if rows[(name, k)][key] is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), "o-", ms=3, lw=1.2, color=f"C{i}", label=name)
        if key in metrics["floor"]:
            ax.axhline(metrics["floor"][key], color="0.4", ls="--", lw=1, label="exact samples (range)")
            ax.axhspan(*metrics["floor"][key + "_range"], color="0.5", alpha=0.15, lw=0)
        ax.set(xscale="log", yscale="log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("network evaluations (NFE)", fontsize=7, labelpad=1)
        ax.set_ylabel(ylabel, fontsize=7)
        ax.set_title(title, fontsize=7.5, pad=3)
        ax.tick_params(labelsize=6)
        ax.grid(True, which="major", alpha=0.3)
        if slot == 1:
            ax.legend(fontsize=6, handlelength=1.5, loc="upper right")

    mu = means[g["class"]]
    comp = ring_mixture().components[g["class"]]
    ev, evec = comp.evals.numpy(), comp.evecs.numpy()
    angle = float(np.degrees(np.arctan2(evec[1, 0], evec[0, 0])))
    zoom = 0.4
    for j, r in enumerate(g["runs"]):
        thr = r["dynamic_threshold"] is not None
        what = {0.0: " (unconditional)", 1.0: " (conditional)"}.get(r["weight"], "")
        title = f"CFG w={r['weight']:g}{what}" + (f" + dyn. threshold {r['dynamic_threshold']}" if thr else "")
        note = f"in class {g['class']}: {r['in_class']:.1%}\nrms to its mean {r['rms_to_class_mean']:.3f}"
        note += f"\nmax |x_hat| while sampling: {r['max_abs_x_hat']:.2f}"
        ax = fig.add_subplot(bottom[j])
        key = ("cfg", r["weight"], thr)
        if j == 0:
            scatter(ax, key, title, note, left=True)
            ax.add_patch(Rectangle(mu - zoom, 2 * zoom, 2 * zoom, fill=False, ls=":", lw=1, color="k"))
            ax.set_ylabel("guidance", fontsize=10, fontweight="bold")
        else:
            scatter(ax, key, title + " (zoom)", note, left=True, center=mu, half=zoom)
        ax.plot(*mu, "kx", ms=8, mew=1.5)
        ell = Ellipse(mu, 4 * ev[0] ** 0.5, 4 * ev[1] ** 0.5, angle=angle, fill=False, ls="--", lw=0.8, color="k")
        ax.add_patch(ell)
    fig.suptitle(
        f"difflab demo: every sampler with the exact denoiser of a 2-D Gaussian mixture "
        f"(seed {cfg_['seed']}, grid {cfg_['grid']}; colour = most probable component)\n"
        f"bottom row: classifier-free guidance towards component {g['class']} (x; dashed: its 2-sigma ellipse), "
        f"{g['sampler']} {g['steps']} steps; right: metrics vs network evaluations (log-log)",
        fontsize=9,
    )
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
