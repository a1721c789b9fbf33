"""The pretrained models shipped in src/difflab/pretrained/: how each was made, and its metrics re-measured.

Run from the repository root::

    .venv/bin/python benchmarks/pretrained.py export [NAME ...]   # rebuild model folders from the runs below;
                                                                  # measures each card's metric (seed 0)
    .venv/bin/python benchmarks/pretrained.py measure [NAME ...]  # re-measure (seed 1) + time to a first sample

``export`` needs the training runs named in :data:`MODELS` (each with the command that made it); it
writes the model folder (fp16 weights unless the run's are bf16 already), measures the card metric on
the exported weights with seed 0 and writes ``card.json``, ``README.md`` and ``checksums.json``.
``measure`` measures the same metric with seeds 1 and 2 (``--seeds``) (other sampling noise; deterministic metrics,
a codec's bits per dimension or a zero-shot accuracy, must agree exactly), the wall time of a fresh
``difflab`` process from start to its first output (a sample, a coded file, a vocoded file) and the
app's first response per tab, and writes ``docs/results/pretrained.json`` (rows of models not named
this time are kept, with the command and date that measured them).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import command_line, machine_info, result_path, training_seconds, write_result  # noqa: E402

DIFFLAB = [sys.executable, "-m", "difflab"]
CPU = "AMD EPYC, 2 cores (shared)"
GPU = "NVIDIA H200"
CLIP = {"runs/clip-scenes": "pretrained:clip-scenes", str(ROOT / "runs/clip-scenes"): "pretrained:clip-scenes"}
TTI_PROMPTS = ["a red bag at the top left", "a blue shoe at the bottom right"]

# name -> how it was made. "parts": sub-folder -> run (a pipeline); else "source": the run. "train": the
# training command(s); "data", "machine": for the card; "dtype": weights as shipped ("keep": as stored).
MODELS: dict[str, dict[str, Any]] = {
    "digits": {
        "method": "image", "source": "outputs/digits", "dtype": "fp16",
        "description": "unconditional 8x8 digits: the model `make demo` trains",
        "data": "the 1,797 8x8 handwritten digits embedded in difflab (train split)",
        "train": "difflab train configs/digits.yaml --out outputs/digits   (what `make demo` runs)",
        "machine": f"{CPU}, 2 torch threads",
    },
    "fashion-mnist-cfg": {
        "method": "image", "source": "runs/pretrained/fashion-mnist-cfg", "dtype": "fp16",
        "description": "class-conditional Fashion-MNIST with classifier-free guidance (sample at w = 2)",
        "data": "Fashion-MNIST train split (60,000 28x28 images, Debian package dataset-fashion-mnist)",
        "train": "difflab train configs/fashion-mnist-cfg.yaml --out runs/pretrained/fashion-mnist-cfg "
        "train.threads=1 train.steps=2500 train.sample_every=2500",
        "machine": f"{CPU}, 1 torch thread beside other jobs",
    },
    "fashion-mnist-4step": {
        "method": "distilled", "source": "runs/pretrained/fashion-mnist-distilled/steps-0004", "dtype": "fp16",
        "teacher": "fashion-mnist-cfg",
        "description": "4-step student of fashion-mnist-cfg by progressive distillation, guidance w = 1.5 built in",
        "data": "Fashion-MNIST train split (the teacher's)",
        "train": "difflab distill runs/pretrained/fashion-mnist-cfg --from-steps 32 --to-steps 4 --updates 400 "
        "--guidance 1.5 --out runs/pretrained/fashion-mnist-distilled threads=1   (32 -> 16 -> 8 -> 4 DDIM steps)",
        "machine": f"{CPU}, 1 torch thread beside other jobs",
    },
    "ardm-fashion-mnist": {
        "method": "ardm", "source": "artifacts/ardm-fmnist-ft", "dtype": "keep", "extra": ["ardm_steps.json"],
        "description": "order-agnostic ARDM for lossless compression of 28x28 grey images (`difflab compress`)",
        "data": "Fashion-MNIST train split; ardm_steps.json (per-step losses for budget plans) from test images "
        "9,000-9,999",
        "train": "difflab ardm-train configs/ardm-fashion-mnist.yaml on an H200, then four fine-tuning rounds "
        "(artifacts/README.md lists every command)",
        "machine": f"{GPU} (base and rounds 3-4), {CPU} (rounds 1-2)",
    },
    "wavegrad": {
        "method": "wavegrad", "source": "artifacts/wavegrad-priorgrad", "dtype": "keep",
        "description": "WaveGrad vocoder with PriorGrad's prior, 16 kHz speech from 80-band log-mels, searched "
        "6-step schedule",
        "data": "asterisk-core-sounds-en-g722 (one English speaker, 16 kHz), train split",
        "train": "OUT=... bash scripts/gpu/wavegrad.sh, then OUT=... MINUTES=6.3 bash scripts/gpu/finetune.sh; "
        "schedule: difflab wavegrad-search artifacts/wavegrad-priorgrad --steps 6 --clips 8 --seconds 2.8",
        "machine": f"{GPU} (training), {CPU} (schedule search)",
    },
    "clip-scenes": {
        "method": "clip", "source": "runs/clip-scenes", "dtype": "fp16", "extra": ["text_encoder.safetensors"],
        "description": "CLIP (image and text towers) of the captioned scenes; the text encoder of text-to-image "
        "and unclip",
        "data": "captioned scenes: real Fashion-MNIST items with a colour and a position, with captions",
        "train": "difflab train configs/clip-scenes.yaml --out runs/clip-scenes",
        "machine": f"{CPU}, 2 torch threads",
    },
    "text-to-image": {
        "method": "text-to-image", "parts": {"base": "runs/imagen/base-clip", "sr": "runs/imagen/sr-aug"},
        "dtype": "fp16", "rename": CLIP,
        "description": "Imagen-style cascade: 16x16 base on the frozen CLIP text tower, 16 -> 64 super-resolution "
        "with noise conditioning augmentation",
        "data": "captioned scenes (train split)",
        "train": "python benchmarks/imagen.py train, resumed in five rounds: --minutes 72, --minutes 18, --minutes 90 "
        "(stopped after 9), --minutes 95 (stopped after 4), --minutes 115 (stopped after 95)",
        "machine": f"{CPU}, 1 torch thread per stage, stages side by side",
    },
    "unclip": {
        "method": "unclip",
        "parts": {
            "prior": "runs/unclip/prior-diffusion", "decoder": "runs/unclip/decoder-text", "sr": "runs/imagen/sr-aug"
        },
        "dtype": "fp16", "rename": CLIP,
        "description": "unCLIP: diffusion prior (caption -> CLIP image embedding), 16x16 decoder reading the "
        "embedding and the caption, the text-to-image super-resolution stage",
        "data": "captioned scenes (train split); CLIP: clip-scenes",
        "train": "python benchmarks/unclip.py train --minutes 75 (the embedding-only decoder, 8,176 updates; priors: "
        "difflab train configs/unclip-prior.yaml), then difflab train configs/unclip-decoder-text.yaml --out "
        "runs/unclip/decoder-text --time-limit 3300 train.steps=1000000 train.threads=1 "
        "train.init=runs/unclip/decoder train.init_strict=false (the decoder shipped); super-resolution: "
        "text-to-image's",
        "machine": f"{CPU}, 1 torch thread per run, runs side by side",
    },
}  # fmt: skip


# -- metrics ---------------------------------------------------------------------------------
def _cli_json(*args: str) -> dict:
    out = subprocess.run([*DIFFLAB, *args], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"difflab {' '.join(args)} failed: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout[out.stdout.index("{") :])


def _fd(name: str, seed: int) -> tuple[str, float, str]:
    cmd = ("eval", f"pretrained:{name}", "--n", "1000", "--seed", str(seed), "--json")
    return "fd", _cli_json(*cmd)["fd"], "difflab " + " ".join(cmd)


def _test_pngs(folder: Path, n: int) -> list[Path]:
    from PIL import Image

    from difflab.data import load_fashion_mnist

    images, _ = load_fashion_mnist("test")
    paths = []
    for i in range(n):
        paths.append(folder / f"{i:05d}.png")
        Image.fromarray(images[i, 0]).save(paths[-1])
    return paths


def _codec_bpd(name: str, seed: int, n: int = 20, budget: int = 98) -> tuple[str, float, str]:
    """Bits per dimension of the real coded file of the first ``n`` test images (``seed`` unused: the codec
    is deterministic), with ``budget`` network calls per image."""
    with tempfile.TemporaryDirectory() as tmp:
        pngs = _test_pngs(Path(tmp), n)
        out = Path(tmp) / "x.ardm"
        cmd = ["compress", f"pretrained:{name}", *map(str, pngs), "-o", str(out), "--budget", str(budget)]
        subprocess.run([*DIFFLAB, *cmd], cwd=ROOT, check=True, capture_output=True)
        bpd = out.stat().st_size * 8 / (n * 28 * 28)
    return "bpd", bpd, f"difflab compress pretrained:{name} TEST_0..{n - 1}.png -o x.ardm --budget {budget}"


def _stoi(name: str, seed: int, n: int = 5) -> tuple[str, float, str]:
    import numpy as np
    import torch
    from pystoi import stoi

    import difflab
    from difflab.methods.wavegrad.data import load_asterisk

    voc = difflab.load(f"pretrained:{name}")
    refs = load_asterisk().split("test")[:n]
    scores = []
    for ref in refs:
        mel = voc.mel(torch.from_numpy(ref))[0]
        gen = voc(mel, steps=6, seed=seed).numpy()
        m = min(len(ref), len(gen))
        scores.append(stoi(ref[:m].astype(np.float64), gen[:m].astype(np.float64), 16000, extended=False))
    return "stoi", float(np.mean(scores)), f"STOI at 6 steps on the first {n} test utterances (seed {seed})"


def _zero_shot(name: str, seed: int) -> tuple[str, float, str]:
    import difflab
    from difflab.methods.clip import zero_shot_accuracy

    acc = zero_shot_accuracy(difflab.load(f"pretrained:{name}"), "test")["item"]
    return "zero_shot_item", acc, "difflab.methods.clip.zero_shot_accuracy(clip, 'test')['item'] (deterministic)"


def _alignment(name: str, seed: int, n: int = 256) -> tuple[str, float, str]:
    cmd = ("eval", f"pretrained:{name}", "--n", str(n), "--seed", str(seed), "--steps", "32", "--json")
    return "alignment", _cli_json(*cmd)["alignment"], "difflab " + " ".join(cmd)


def _prior_cosine(name: str, seed: int, n: int = 256) -> tuple[str, float, str]:
    import difflab
    from difflab.methods.unclip.prior import prior_cosine

    pipe = difflab.load(f"pretrained:{name}")
    value = prior_cosine(pipe.prior, "test", n, seed=seed)
    return "prior_cosine", value, f"difflab.methods.unclip.prior.prior_cosine(prior, 'test', {n}, seed={seed})"


DETERMINISTIC = ("ardm", "clip")  # the codec's file size and zero-shot accuracy do not depend on a seed
METRICS = {
    "image": _fd, "distilled": _fd, "ardm": _codec_bpd, "wavegrad": _stoi, "clip": _zero_shot,
    "text-to-image": _alignment, "unclip": _prior_cosine,
}  # fmt: skip


def first_sample_seconds(name: str, method: str) -> float:
    """Wall seconds of a fresh ``difflab`` process from start to its first output."""
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        if method in ("image", "distilled"):
            cmd = ["sample", f"pretrained:{name}", "--n", "1", "--out", str(t / "x.png")]
        elif method in ("text-to-image", "unclip"):
            cmd = ["generate", TTI_PROMPTS[0], "--pretrained", name, "--n", "1", "--out", str(t / "x.png")]
        elif method == "ardm":
            png = _test_pngs(t, 1)[0]
            cmd = ["compress", f"pretrained:{name}", str(png), "-o", str(t / "x.ardm"), "--budget", "98"]
        elif method == "wavegrad":
            wav = t / "in.wav"
            _speech_wav(wav)
            cmd = ["vocode", f"pretrained:{name}", str(wav), "-o", str(t / "out.wav")]
        elif method == "clip":
            return float("nan")
        else:
            raise ValueError(method)
        t0 = time.perf_counter()
        subprocess.run([*DIFFLAB, *cmd], cwd=ROOT, check=True, capture_output=True)
        return time.perf_counter() - t0


def _speech_wav(path: Path) -> None:
    import numpy as np
    import soundfile as sf

    from difflab.methods.wavegrad.data import load_asterisk

    sf.write(path, np.asarray(load_asterisk().split("test")[0], dtype=np.float32), 16000)


# -- export ----------------------------------------------------------------------------------
def _run_info(run: Path) -> dict[str, Any]:
    from difflab.train.checkpoint import checkpoint_path, read_meta

    meta = read_meta(checkpoint_path(run))
    secs = meta.get("train_seconds")
    if secs is None and (run / "metrics.jsonl").is_file():
        secs = training_seconds(run)
    return {"steps": meta.get("step"), "train_seconds": round(float(secs), 1) if secs else None}


def _clip_identities(run: Path) -> dict[str, str]:
    """An unCLIP run records the identity (a weight hash) of the CLIP it was trained on; the shipped CLIP
    is that model in fp16, so its identity is another: the exported run names the shipped one."""
    from difflab.train.checkpoint import checkpoint_path, read_meta

    trained = read_meta(checkpoint_path(run)).get("clip_identity")
    if not trained:
        return {}
    import difflab
    from difflab.methods.unclip.embeddings import clip_identity

    return {trained: clip_identity(difflab.load("pretrained:clip-scenes"))}


def export(name: str) -> dict[str, Any]:
    from difflab.pretrained import SHIPPED
    from difflab.pretrained.export import export_checkpoint, write_card

    spec = MODELS[name]
    target = SHIPPED / name
    sources = spec.get("parts") or {"": spec["source"]}
    parts, params, runs = [], 0, {}
    for part, run in sources.items():
        extra = tuple(spec.get("extra", ()))
        rename = {**spec.get("rename", {}), **_clip_identities(ROOT / run)}
        info = export_checkpoint(ROOT / run, target / part, dtype=spec["dtype"], rename=rename, extra_files=extra)
        params += info["params"]
        runs[part or name] = {"run": run, **_run_info(ROOT / run), **info}
        if part:
            parts.append(part)
    card: dict[str, Any] = {
        "name": name, "method": spec["method"], "description": spec["description"], "params": params,
        "data": spec["data"], "train_command": spec["train"], "machine": spec["machine"], "runs": runs,
        "date": dt.date.today().isoformat(),
    }  # fmt: skip
    if parts:
        card["parts"] = parts
    if spec.get("teacher"):
        card["teacher"] = spec["teacher"]
    write_card(target, card, "")  # checksums first: measuring loads the model by name
    metric, value, how = METRICS[spec["method"]](name, 0) if spec["method"] in METRICS else ("", None, "")
    card["metric"] = {"name": metric, "value": round(value, 4), "command": how, "seed": 0}
    write_card(target, card, readme(card))
    print(json.dumps({"name": name, "metric": card["metric"], "params": params}), flush=True)
    return card


def readme(card: dict[str, Any]) -> str:
    runs = card["runs"]
    lines = [
        f"# pretrained:{card['name']}", "", card["description"] + ".", "",
        "```", "difflab models   # this model and the others", *usage(card), "```", "",
        "| | |", "|---|---|",
        f"| method | {card['method']} |",
        f"| parameters | {card['params']:,} |",
        f"| data | {card['data']} |",
        f"| training command | `{card['train_command']}` |",
        f"| machine | {card['machine']} |",
    ]  # fmt: skip
    for part, r in runs.items():
        wall = f"{r['train_seconds'] / 60:.1f} min" if r.get("train_seconds") else "see the command"
        lines.append(
            f"| {part} | run `{r['run']}`, {r['steps']:,} updates, {wall} of training; weights {r['weights_dtype']} "
            f"(largest relative change from the stored weights: {r['max_rel_weight_error']:.1e}) |"
        )
    m = card["metric"]
    lines += [
        f"| metric | {m['name']} = {m['value']} (seed {m['seed']}): `{m['command']}` |",
        f"| made | {card['date']} by `python benchmarks/pretrained.py export {card['name']}` |",
        "", "`python benchmarks/pretrained.py measure` re-measures the metric with another seed "
        "(docs/results/pretrained.json).",
    ]  # fmt: skip
    return "\n".join(lines)


def usage(card: dict[str, Any]) -> list[str]:
    n = card["name"]
    return {
        "image": [f"difflab sample pretrained:{n} --n 64", f"difflab eval pretrained:{n} --n 1000"],
        "distilled": [f"difflab sample pretrained:{n} --n 64 --labels 0,1,2,3,4,5,6,7,8,9"],
        "ardm": [f"difflab compress pretrained:{n} a.png -o x.ardm",f"difflab decompress pretrained:{n} x.ardm -o d/"],
        "wavegrad": [f"difflab vocode pretrained:{n} speech.wav -o out.wav --steps 6"],
        "clip": [f"text.path: pretrained:{n}   # in a run config: the frozen text encoder"],
        "text-to-image": [f'difflab generate "{TTI_PROMPTS[0]}" --pretrained {n} --n 4'],
        "unclip": [f'difflab generate "{TTI_PROMPTS[0]}" --pretrained {n} --n 4'],
    }.get(card["method"], [])  # fmt: skip


# -- measure ---------------------------------------------------------------------------------
def app_latency() -> dict[str, float | None]:
    """benchmarks/app_latency.py: the app's first response per tab, in headless Chromium."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/app_latency.py")], cwd=ROOT, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"benchmarks/app_latency.py failed: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def agreement(card: float, values: list[float]) -> dict[str, Any]:
    """Whether the card's value lies within the seed-to-seed spread of the re-measured ``values``: within
    2 standard deviations of a new draw from their mean (sd over the seeds, times sqrt(1 + 1/k)); a
    deterministic metric (one value, or all equal) must match to 1e-4."""
    import statistics

    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    bound = max(2 * sd * (1 + 1 / len(values)) ** 0.5, 1e-4)
    return {"seed_mean": round(mean, 4), "seed_sd": round(sd, 4), "agrees": bool(abs(card - mean) <= bound)}


def measure(names: list[str], app: bool, seeds: list[int]) -> None:
    from difflab.pretrained import get, list_models

    rows = []
    for name in names:
        info = get(name)
        metric, value, how = METRICS[info.method](name, seeds[0])
        # the seed-to-seed spread: the same metric with the other seeds (none for deterministic metrics)
        others = [] if info.method in DETERMINISTIC else [METRICS[info.method](name, s)[1] for s in seeds[1:]]
        values = [value, *others]
        card = info.metric.get("value")
        first = first_sample_seconds(name, info.method)
        row = {
            "name": name, "method": info.method, "params": info.params, "bytes": info.bytes, "metric": metric,
            "value": round(value, 4), "card_value": card, "command": how,
            "values": {str(s): round(v, 4) for s, v in zip(seeds, values, strict=False)},
            **agreement(card, values), "first_sample_s": None if first != first else round(first, 2),
        }  # fmt: skip
        print(json.dumps(row), flush=True)
        rows.append(row)
    path = result_path("pretrained")
    old = json.loads(path.read_text()) if path.is_file() else {}
    measured = {r["name"] for r in rows}
    shipped = {m.name for m in list_models()}
    before = old.get("models", []) + old.get("components", [])
    kept = [r for r in before if r["name"] not in measured and r["name"] in shipped]
    for r in kept:  # measured by an earlier run: its own command and date stay with it
        r.setdefault("measured", {"command": old.get("command"), "date": old.get("date")})
        if "values" not in r:  # written before rows kept every seed's value
            seed2 = r.pop("value_seed2", r["value"])
            r["values"] = {"1": r["value"]} if r["method"] in DETERMINISTIC else {"1": r["value"], "2": seed2}
            r.pop("seed_spread", None)
        r.update(agreement(r["card_value"], list(r["values"].values())))
    rows = sorted(kept + rows, key=lambda r: r["name"])
    write_result(
        "pretrained",
        {
            "command": command_line("benchmarks/pretrained.py"), "machine": machine_info(),
            "date": dt.date.today().isoformat(), "seed": 1, "card_seed": 0,
            # models: one per method; components: networks shipped for them (the CLIP of text-to-image, unclip)
            "models": [r for r in rows if r["method"] != "clip"],
            "components": [r for r in rows if r["method"] == "clip"],
            "total_bytes": sum(m.bytes for m in list_models()),
            "app_first_response_s": app_latency() if app else old.get("app_first_response_s"),
            "app_command": "python benchmarks/app_latency.py" if app else old.get("app_command"),
        },
    )  # fmt: skip


def render(data: dict) -> str:
    lines = [
        "Every shipped model (`difflab models`) with its card's metric (seed 0, measured when exported) beside the "
        "same metric re-measured with other seeds, and the wall time of a fresh `difflab` process from start to its "
        "first output (one sample; for the codec one coded image; for the vocoder one vocoded utterance).", "",
        "| model | method | params | MB | metric | card (seed 0) | re-measured (seed) | sd | agrees | first (s) |",
        "|---|---|---:|---:|---|---:|---|---:|---|---:|",
    ]  # fmt: skip
    everything = data["models"] + data.get("components", [])
    for r in everything:
        first = "-" if r["first_sample_s"] is None else f"{r['first_sample_s']:.1f}"
        seeds = ", ".join(f"{v} ({k})" for k, v in r["values"].items())
        lines.append(
            f"| {r['name']} | {r['method']} | {r['params'] / 1e6:.2f}M | {r['bytes'] / 2**20:.1f} | {r['metric']} | "
            f"{r['card_value']} | {seeds} | {r['seed_sd']} | {'yes' if r['agrees'] else 'NO'} | {first} |"
        )
    lines += [
        "", "Agrees: the card's value lies within 2 standard deviations of a new draw from the re-measured values "
        "(their mean; their sd over seeds times sqrt(1 + 1/k)); the deterministic codec size and zero-shot "
        "accuracy must match to 1e-4. Metric commands (shown with the first re-measured seed):", "",
        *[
            f"- {r['name']}: `{r['command']}`"
            + (f" (row from `{r['measured']['command']}`, {r['measured']['date']})" if r.get("measured") else "")
            for r in everything
        ],
    ]  # fmt: skip
    lines += ["", f"All models together: {data['total_bytes'] / 2**20:.1f} MB (budget 80 MB)."]
    app = data.get("app_first_response_s")
    if app:
        lines += [
            "", f"`difflab app`, first response per tab (`{data['app_command']}`: headless Chromium, seconds from "
            "the click to the output shown, loading the model included; the shipped models at each tab's defaults):",
            "", "| tab | seconds |", "|---|---:|",
            *[f"| {tab} | {'-' if v is None else round(v, 2)} |" for tab, v in app.items()],
        ]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("export", "measure"))
    p.add_argument("names", nargs="*", help="models (default: all)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    p.add_argument("--no-app", action="store_true", help="measure: skip the app's latency per tab")
    p.add_argument(
        "--seeds", type=int, nargs="+", default=[1, 2], help="measure: seeds to re-measure with (default: 1 2)"
    )
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    names = args.names or list(MODELS)
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        p.error(f"unknown models {unknown}; known: {', '.join(MODELS)}")
    if args.action == "export":
        for name in names:
            export(name)
    else:
        from difflab.pretrained import list_models

        shipped = {m.name for m in list_models()}
        measure([n for n in names if n in shipped], app=not args.no_app, seeds=args.seeds)


if __name__ == "__main__":
    main()
