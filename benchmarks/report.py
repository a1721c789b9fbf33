"""Regenerate docs/RESULTS.md from the JSON files in docs/results/.

Every benchmark writes ``docs/results/NAME.json`` with at least ``command``, ``machine`` and
``date``; this module renders each file into one section, so the tables in RESULTS.md always
agree with the data. A benchmark adds its section by adding a renderer to ``RENDERERS``, keyed
by its JSON file name; files without a renderer get a generic section (their scalar values).

    .venv/bin/python benchmarks/report.py
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "docs" / "results"
RESULTS_MD = ROOT / "docs" / "RESULTS.md"

Renderer = Callable[[dict], str]


# -- helpers -------------------------------------------------------------------------------------
def _fmt(v: object, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:.0f}"
        return f"{v:.2f}" if abs(v) >= 1 else f"{v:.{digits}g}"
    return str(v)


def table(header: list[str], rows: list[list[object]]) -> str:
    """A Markdown table; numbers right-aligned."""
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def provenance(data: dict) -> str:
    """The command, machine and date that produced a result file."""
    m = data.get("machine", {})
    if isinstance(m, dict):
        parts = [str(m.get("cpu", "?")), f"{m.get('cores', '?')} cores"]
        if m.get("torch_threads"):
            parts.append(f"torch threads: {m['torch_threads']}")
        if m.get("load_average"):
            parts.append(f"load average {m['load_average']} at start")
        if m.get("malloc") == "kept":
            parts.append("freed memory kept in the process (difflab/allocator.py)")
        parts += [f"{k} {m[k]}" for k in ("torch", "diffusers", "python") if m.get(k)]
        machine = ", ".join(parts)
    else:
        machine = str(m)
    cmds = data.get("commands") or [data.get("command", "?")]
    head = (
        f"Command: `{cmds[0]}`"
        if len(cmds) == 1
        else "Commands (rows merged with `--update`; the machine line is the last run's): "
        + ", then ".join(f"`{c}`" for c in cmds)
    )
    return f"{head}  \nMachine: {machine}  \nDate: {data.get('date', '?')}"


# -- sections ------------------------------------------------------------------------------------
def render_core(data: dict) -> str:
    """Section for benchmarks/core.py (issue "Core diffusion engine")."""
    out = ["## Core diffusion engine", "", provenance(data), ""]

    imp = data["import_seconds"]
    out += [
        "### Import time",
        "",
        "Wall time of a fresh `python -c ...` process, median of 7 runs (3 for `difflab.diffusion`).",
        "",
        table(
            ["code", "ms"],
            [
                ["pass (bare interpreter)", imp["python_bare"] * 1e3],
                ["import difflab", imp["difflab"] * 1e3],
                ["import difflab.diffusion (pulls torch)", imp["difflab_diffusion"] * 1e3],
            ],
        ),
        "",
        f"`import difflab` imports torch: {_fmt(imp.get('difflab_imports_torch'))}.",
        "",
    ]

    shape = "x".join(str(s) for s in data.get("batch_shape", []))
    ex = data.get("sampler_extras_us", {})
    rows = []
    for name, r in data["sampler_step_us"].items():
        rows.append([name, r.get("difflab"), r.get("diffusers"), r.get("ratio"), r.get("difflab_unchecked")])
    out += [
        "### Sampler overhead",
        "",
        f"Microseconds per step, batch {shape} float32, {data.get('steps')}-step loops, median of "
        f"{data.get('repeats')} runs, difflab and diffusers runs interleaved. Both are driven by the same "
        "trivial eps-network (`0.1 * z`), so this is the sampler's own cost. Heun counts one step per grid "
        "interval (two network calls, one for the last interval), which is one diffusers "
        "`set_timesteps` step (two `step()` calls). `no check`: difflab with `check_finite=False`.",
        "",
        table(["sampler", "difflab", "diffusers", "difflab / diffusers", "difflab, no check"], rows),
        "",
        f"Per call: the network {_fmt(ex.get('net_call_us'))} us, a `make_denoiser` call "
        f"{_fmt(ex.get('make_denoiser_call_us'))} us, the finiteness check (one sum, "
        f"`torch.isfinite(x.sum())`, element-wise only when that fails) {_fmt(ex.get('finite_check_us'))} us "
        f"(an element-wise `torch.isfinite(x).all()` would cost {_fmt(ex.get('finite_check_elementwise_us'))} us).",
        "",
    ]

    setup = data.get("order_setup", {})
    steps = setup.get("steps") or list(next(iter(data["order_errors"].values())).keys())
    rows = []
    for name, slope in data["order_slopes"].items():
        errs = data["order_errors"][name]
        fine = data.get("order_slopes_finest", {}).get(name)
        rows.append([name, slope, fine, data.get("order_expected", {}).get(name)] + [errs[str(n)] for n in steps])
    out += [
        "### Convergence order",
        "",
        f"Error of the exact output distribution ({setup.get('error', '')}) on {setup.get('data', '')}; "
        f"grid {setup.get('grid', '')}. Slope of -log(error) against log(steps).",
        "",
        table(["sampler", "slope", "slope, last pair", "expected"] + [f"error, {n} steps" for n in steps], rows),
        "",
    ]
    kc, ks = data.get("known_coordinates"), data.get("known_coordinates_setup", {})
    if kc:
        out += [
            "### Conditioning on known coordinates",
            "",
            f"2-D Gaussian data with correlation {ks.get('correlation')}, exact denoiser, DDPM with "
            f"{ks.get('steps')} steps, {ks.get('n')} samples of x_b given x_a = {ks.get('known_value')} "
            f"(`difflab.analytic.known_coordinates_experiment`); reconstruction guidance weight "
            f"w_r = {ks.get('weight')}.",
            "",
            table(
                ["method", "mean of x_b", "error vs E[x_b | x_a]"],
                [["true conditional mean", kc["truth"], 0.0]]
                + [[m, kc[m], abs(kc[m] - kc["truth"])] for m in ("replacement", "reconstruction")],
            ),
            "",
        ]
    return "\n".join(out)


def render_generic(name: str, data: dict) -> str:
    """Fallback for a result file without a renderer: its provenance and scalar values."""
    rows = [[k, v] for k, v in data.items() if isinstance(v, (int, float, str, bool)) and k not in ("command", "date")]
    return "\n".join([f"## {name}", "", provenance(data), "", table(["key", "value"], rows), ""])


def render_feature_nets() -> list[str]:
    """The shipped feature networks (for Frechet distance), from their metadata in the package."""
    metas = [json.loads(p.read_text()) for p in sorted((ROOT / "src/difflab/eval/weights").glob("*.json"))]
    metas = [m for m in metas if "test_accuracy" in m]  # the scene classifiers report in the text-to-image section
    if not metas:
        return []
    rows = [
        [
            m["name"],
            m["num_parameters"],
            f"{100 * m['test_accuracy']:.2f}%",
            m["test_size"],
            m["train_seconds"],
            m["date"],
        ]
        for m in metas
    ]
    return [
        "### Feature networks for Frechet distance",
        "",
        f"Trained by `{metas[0]['train_command']}` ({metas[0]['machine']}); the weights ship in "
        "`src/difflab/eval/weights/` with this metadata. Features: the 128-d penultimate layer.",
        "",
        table(["data set", "parameters", "test accuracy", "test images", "train seconds", "date"], rows),
        "",
    ]


def render_training(data: dict) -> str:
    """The issue "Training stack and image pipeline": parts present in training.json."""
    out = ["## Training stack and image pipeline", ""]
    out += render_feature_nets()
    parts = data.get("parts", {})
    if "throughput_images_per_s" in data:
        setup, rate = data.get("throughput_setup", {}), data["throughput_images_per_s"]
        params = setup.get("params", {})
        out += [
            "### Training throughput",
            "",
            provenance(parts.get("throughput", data)),
            "",
            f"Training steps (forward, backward, AdamW; v-parameterization loss) at batch {setup.get('batch')} "
            f"on 1x28x28 inputs; the two models alternate step by step, median over {setup.get('timed_steps')} "
            "steps each. difflab config: `" + json.dumps(setup.get("difflab_config")) + "`; diffusers "
            "`UNet2DModel` config: `" + json.dumps(setup.get("diffusers_config")) + "`.",
            "",
            table(
                ["model", "parameters", "images / s"],
                [[k, f"{params.get(k, 0) / 1e6:.2f}M", rate[k]] for k in ("difflab", "diffusers")],
            ),
            "",
            f"difflab / diffusers: {_fmt(data.get('throughput_ratio'))}",
            "",
        ]
        gmac = setup.get("forward_gmac_per_image")
        if gmac:
            out += [
                "Work per image (one forward pass: convolutions, matrix products and attention, counted by "
                f"torch.utils.flop_counter): difflab {gmac['difflab']:.3f} "
                f"GMAC, diffusers {gmac['diffusers']:.3f} GMAC.",
                "",
            ]
    if data.get("throughput"):
        keys = ["device", "library", "compile", "precision", "batch", "threads", "images_per_s", "first_step_s"]
        out += [
            "Every variant measured (`--compile` adds torch.compile'd copies; a GPU run adds its device's rows; the "
            "first step includes compilation):",
            "",
            table(keys, [[r.get(k) for k in keys] for r in data["throughput"]]),
            "",
        ]
    if "shared_cpu" in data:
        sc = data["shared_cpu"]
        out += [
            "### Training beside other work (thread counts)",
            "",
            provenance(parts.get("shared", data)),
            "",
            f"make demo's training (`configs/digits.yaml`) for {sc['seconds']:.0f} s per measurement, alone and "
            f"beside one busy process ({sc['busy']}) on {sc['cores']} cores; the policies interleaved, median of "
            f"{sc['rounds']} rounds. `auto` is difflab's default, `train.threads: 0`: as many threads as the cores "
            "other processes leave free, re-measured every 5 s (difflab/threads.py).",
            "",
            table(
                ["policy", "alone (steps/s)", "beside a busy process", "busy / alone", "threads used alone / busy"],
                [
                    [
                        r["policy"],
                        r["alone_steps_per_s"],
                        r["busy_steps_per_s"],
                        r["busy_over_alone"],
                        f"{r['threads_alone']} / {r['threads_busy']}",
                    ]
                    for r in sc["rows"]
                ],
            ),  # fmt: skip
            "",
        ]
    if "demo_seconds" in data:
        d = data["digits"]
        out += [
            "### `make demo`: training on digits",
            "",
            provenance(parts.get("demo", data)),
            "",
            "`make demo` from a warm set-up: the analytic sampler demo, then `difflab train "
            "configs/digits.yaml`, `difflab sample` and `difflab eval` (FD of 1,000 EMA samples to the "
            "train split features, floor = FD between train and test features).",
            "",
            table(
                ["wall time", "FD", "FD floor", "FD / floor", "precision", "recall"],
                [
                    [
                        f"{data['demo_seconds'] / 60:.1f} min",
                        d["fd"],
                        d["fd_floor"],
                        d["fd_ratio"],
                        d["precision"],
                        d["recall"],
                    ]
                ],
            ),
            "",
        ]
    if "fashion_mnist_cond" in data:
        f = data["fashion_mnist_cond"]
        out += [
            "### Fashion-MNIST, class-conditional with classifier-free guidance",
            "",
            provenance(parts.get("fashion", data)),
            "",
            f"`difflab train configs/fashion-mnist-cfg.yaml` ({f['steps']} steps), then `{f.get('eval_command')}`: "
            "1,000 guided samples with labels cycling through the 10 classes; class accuracy by the shipped "
            "Fashion-MNIST classifier (92.1% on real test images).",
            "",
            table(
                ["training", "guidance w", "class accuracy", "FD", "FD floor", "precision", "recall"],
                [
                    [
                        f"{f['train_minutes']:.1f} min",
                        f["guidance"],
                        f["class_accuracy"],
                        f["fd"],
                        f["fd_floor"],
                        f["precision"],
                        f["recall"],
                    ]
                ],
            ),  # fmt: skip
            "",
        ]
    return "\n".join(out)


def _section_from(module: str, function: str, title: str | None = None) -> Renderer:
    """A renderer that lives in its benchmark script (imported when used: those import torch);
    with ``title``, the section heading and provenance are added here."""

    def render_section(data: dict) -> str:
        body = getattr(__import__(module), function)(data)
        return body if title is None else "\n".join([f"## {title}", "", provenance(data), "", body, ""])

    return render_section


RENDERERS: dict[str, Renderer] = {
    "core.json": render_core,
    "training.json": render_training,
    "distillation.json": _section_from("distillation", "render"),
    "ardm.json": _section_from("ardm", "render_ardm"),
    "wavegrad.json": _section_from("wavegrad", "render_wavegrad", "WaveGrad vocoder"),
    "cascade.json": _section_from("cascade", "render_cascade", "Cascade: base + super-resolution vs one model"),
    "imagen.json": _section_from("imagen", "render_imagen", "Text to image (Imagen-style cascade)"),
    "unclip.json": _section_from("unclip", "render_unclip", "unCLIP: CLIP, priors, decoder, manipulations"),
    "video.json": _section_from("video", "render_video", "Video diffusion: joint training, extension, interpolation"),
    "eval_generic.json": _section_from("eval_generic", "render", "Generic feature net vs the shipped ones"),
    "diffusers_distill.json": _section_from("diffusers_distill", "render"),
    "pretrained.json": _section_from("pretrained", "render", "Pretrained models"),
}


def render(results_dir: Path = RESULTS_DIR) -> str:
    """The whole RESULTS.md text: known sections in RENDERERS order, then any others by name."""
    files = {p.name: p for p in sorted(results_dir.glob("*.json"))}
    order = [n for n in RENDERERS if n in files] + [n for n in files if n not in RENDERERS]
    parts = [
        "# Results",
        "",
        "Generated by `benchmarks/report.py` from the JSON files in `docs/results/`; do not edit by hand.",
        "Each section names the command, machine and date that produced its numbers.",
        "",
    ]
    for n in order:
        data = json.loads(files[n].read_text())
        renderer = RENDERERS.get(n)
        parts.append(renderer(data) if renderer else render_generic(n.removesuffix(".json"), data))
    return "\n".join(parts).rstrip() + "\n"


def main() -> Path:
    """Write docs/RESULTS.md and return its path."""
    RESULTS_MD.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS_MD.with_suffix(".md.tmp")
    tmp.write_text(render())
    tmp.replace(RESULTS_MD)
    return RESULTS_MD


if __name__ == "__main__":
    print(main())
