"""Benchmark for issue 6, WaveGrad (Chen et al. 2021) and PriorGrad (Lee et al. 2022) on real speech.

Run from the repository root, with run folders of ``difflab wavegrad-train`` (e.g. the GPU script's
``$OUT/wavegrad-standard`` and ``$OUT/wavegrad-priorgrad``)::

    .venv/bin/python benchmarks/wavegrad.py --standard RUN_A --priorgrad RUN_B [--threads 1]
    .venv/bin/python benchmarks/wavegrad.py --standard RUN_A --quick     # 6-step schedules only
    .venv/bin/python benchmarks/wavegrad.py --runs RUN_C --speakers en heldout-ru --steps 6 --update

``--speakers`` picks the test voices: ``en`` (the 20 English utterances below) and ``heldout-LANG``
(the first 20 test utterances of another asterisk voice, e.g. ``heldout-ru``, which no shipped
model trains on); each row names its ``speaker`` and the voices its model was trained on
(``train_voices``). ``--runs`` adds runs of either prior (read from the run) without a curve.

On the 20 test utterances of asterisk-core-sounds-en-g722 (the first 20 top-level files of
``en_US_f_Allison``, sorted by name, lasting >= 2 s; 80 mels, n_fft 1024, hop 256, fmax 8000,
natural-log magnitude mel floored at 1e-5) it scores re-synthesis from the real recording's mel for
6 (searched), 6 (naive), 25, 50 and 1000 steps (1000 on the first 3 utterances only), for each
prior, beside Griffin-Lim (librosa, 32 iterations) on the same mel: PESQ (wideband, ``pesq``),
STOI (``pystoi``), log-mel L1 (mel of the output vs the conditioning mel), multi-resolution STFT
distance (spectral convergence + log-magnitude L1 at FFT sizes 512/1024/2048) and the real-time
factor (synthesis seconds / audio seconds, on this CPU with ``--threads`` torch threads). With
snapshots in a run (``RUN/snapshots/``), it also scores each at 6 steps for the quality-vs-training-time
curve. Writes ``docs/results/wavegrad.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import command_line, machine_info, result_path, write_result  # noqa: E402
from difflab.methods.wavegrad.audio import MEL_PRESETS, log_mel  # noqa: E402
from difflab.methods.wavegrad.data import VOICES, load_asterisk  # noqa: E402
from difflab.methods.wavegrad.vocoder import Vocoder, griffin_lim  # noqa: E402

MEL = MEL_PRESETS["16k"]
PLAN = [("searched", 6), ("naive", 6), ("fixed", 25), ("fixed", 50), ("fixed", 1000)]
N_1000 = 3


def mrstft(ref: np.ndarray, gen: np.ndarray) -> float:
    """Mean over FFT sizes 512/1024/2048 of spectral convergence + mean |log magnitude difference|."""
    r, g = torch.from_numpy(ref), torch.from_numpy(gen)
    total = 0.0
    for n_fft in (512, 1024, 2048):
        w = torch.hann_window(n_fft)
        R = torch.stft(r, n_fft, n_fft // 4, window=w, return_complex=True).abs().clamp(min=1e-7)
        G = torch.stft(g, n_fft, n_fft // 4, window=w, return_complex=True).abs().clamp(min=1e-7)
        total += float(torch.linalg.norm(R - G) / torch.linalg.norm(R)) + float((R.log() - G.log()).abs().mean())
    return total / 3


def score(ref: np.ndarray, gen: np.ndarray, mel: torch.Tensor) -> dict[str, float]:
    from pesq import pesq
    from pystoi import stoi

    n = min(len(ref), len(gen))
    ref, gen = ref[:n].astype(np.float64), gen[:n].astype(np.float64)
    m = log_mel(torch.from_numpy(gen).float(), MEL)[..., : mel.shape[-1]]
    return {
        "pesq": float(pesq(MEL.sample_rate, ref, gen, "wb")),
        "stoi": float(stoi(ref, gen, MEL.sample_rate, extended=False)),
        "mel_l1": float((m - mel[..., : m.shape[-1]]).abs().mean()),
        "mrstft": mrstft(ref.astype(np.float32), gen.astype(np.float32)),
    }


def evaluate(synth, refs: list[np.ndarray]) -> dict[str, float]:
    """Average scores and the real-time factor of ``synth(mel) -> audio`` over ``refs``."""
    rows, seconds, audio_seconds = [], 0.0, 0.0
    for ref in refs:
        n = len(ref) // MEL.hop
        mel = log_mel(torch.from_numpy(ref[: n * MEL.hop]), MEL)[..., :n]
        t0 = time.perf_counter()
        gen = synth(mel)
        seconds += time.perf_counter() - t0
        audio_seconds += len(gen) / MEL.sample_rate
        rows.append(score(ref, gen, mel))
    out = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]}
    out["rtf"] = round(seconds / audio_seconds, 4)
    return out


def wavegrad_synth(voc: Vocoder, betas: list[float], deterministic: bool | None = None):
    return lambda mel: voc(mel, betas=betas, seed=0, deterministic=deterministic).numpy()


def teacher_rows(voc: Vocoder, refs: list[np.ndarray], base: dict) -> list[dict]:
    """A distilled student's baselines: its teacher by DDIM on the teacher's own schedule (what the student
    imitates) and on the student's (the same few steps, undistilled)."""
    d = voc.distilled
    teacher = Vocoder.load(d["teacher"])
    rows = []
    for betas in (d["teacher_betas"], d["betas"]):
        r = evaluate(wavegrad_synth(teacher, betas, deterministic=True), refs)
        row = {**base, "schedule": "teacher-ddim", "steps": len(betas), "distilled": False, "run": d["teacher"], **r}
        row["train_hours"] = round(float(teacher.meta.get("train_seconds", 0)) / 3600, 4)
        rows.append({**row, "utterances": len(refs), "load_average": round(os.getloadavg()[0], 2)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def train_voices(run: str) -> str:
    """The voices a WaveGrad run trained on (comma-joined languages), from its config."""
    from difflab.config import load_yaml
    from difflab.train.checkpoint import checkpoint_path

    opts = (load_yaml(checkpoint_path(run) / "config.yaml").get("data") or {}).get("options") or {}
    if opts.get("source", "asterisk") == "cache":  # a GPU run's training cache (scripts/gpu/make_speech_cache.py)
        from difflab.methods.wavegrad.data import training_cache_voices

        root = Path(opts.get("root", ""))
        return ",".join(training_cache_voices(root)) if root.is_file() else "en"  # the committed runs' cache: English
    voices = opts.get("voices") or ["en"]
    return ",".join([voices] if isinstance(voices, str) else voices)


def test_voice(speaker: str) -> str:
    """``en`` or ``heldout-LANG`` -> the asterisk language whose test split is scored."""
    lang = speaker.removeprefix("heldout-")
    if lang not in VOICES or (speaker != "en" and not speaker.startswith("heldout-")):
        raise SystemExit(
            f"--speakers: {speaker!r}; valid: en, " + ", ".join(f"heldout-{v}" for v in VOICES if v != "en")
        )
    return lang


def bench_run(
    run: str, prior: str | None, refs: list[np.ndarray], plan, curve: bool, speaker: str = "en"
) -> tuple[list[dict], list[dict]]:
    voc = Vocoder.load(run)
    if prior is None:
        prior = voc.config.prior
    if voc.config.prior != prior:
        raise SystemExit(f"{run} was trained with prior {voc.config.prior!r}, not {prior!r}")
    voices = train_voices(run)
    if speaker != "en" and test_voice(speaker) in voices.split(","):
        raise SystemExit(f"{run} trained on {voices}: {speaker} is not held out for it")
    hours = round(float(voc.meta.get("train_seconds", 0)) / 3600, 4)
    voc(voc.mel(refs[0][:16000]), betas=[0.1])  # warm-up (oneDNN primitive creation)
    rows = []
    if voc.distilled:  # a student has one schedule, its own (sampled by DDIM)
        plan, curve = [("distilled", voc.distilled["steps"])], False
    for kind, steps in plan:
        if kind == "searched" and str(steps) not in (voc.meta.get("schedules") or {}):
            print(f"{run}: no searched {steps}-step schedule; skipped (run difflab wavegrad-search)")
            continue
        use = refs[:N_1000] if steps == 1000 else refs
        r = evaluate(wavegrad_synth(voc, voc.schedule(steps, kind)), use)
        row = {"method": "wavegrad", "prior": prior, "schedule": kind, "steps": steps, "train_hours": hours, **r}
        row.update(speaker=speaker, train_voices=voices, distilled=bool(voc.distilled), run=str(run))
        row["utterances"] = len(use)
        row["load_average"] = round(os.getloadavg()[0], 2)  # the RTF depends on what else runs
        print(json.dumps(row), flush=True)
        rows.append(row)
        if voc.distilled:
            rows += teacher_rows(
                voc, use, {k: row[k] for k in ("method", "prior", "train_hours", "speaker", "train_voices")}
            )
    points = []
    snaps = sorted((Path(run) / "snapshots").glob("*.safetensors")) if curve else []
    kind = "searched" if "6" in (voc.meta.get("schedules") or {}) else "fixed"
    for snap in [*snaps, None]:
        if not curve:
            break
        v = Vocoder.load(snap) if snap is not None else voc
        r = evaluate(wavegrad_synth(v, voc.schedule(6, kind)), refs)
        secs = float(v.meta.get("train_seconds", 0))
        points.append({"prior": prior, "train_seconds": secs, "step": v.meta.get("step"), "schedule": kind, **r})
        print(json.dumps(points[-1]), flush=True)
    for f in sorted((Path(run) / "snapshots").glob("*.json")) if curve else []:  # scored during training
        m = json.loads(f.read_text())
        if "val_mel_l1_6" in m:
            keys = ("train_seconds", "step", "val_mel_l1_6")
            points.append({"prior": prior, "kind": "validation", **{k: m[k] for k in keys}})
    return rows, points


def merge_curve(old: list[dict], new: list[dict]) -> list[dict]:
    """The quality-vs-time points of ``old`` and ``new``, one per (prior, kind, training second): a point
    measured again in ``new`` replaces the old one (and a point listed twice is kept once)."""
    merged = {(c["prior"], c.get("kind", "test"), round(c["train_seconds"])): c for c in [*old, *new]}
    return sorted(merged.values(), key=lambda c: (c["prior"], c.get("kind", "test"), c["train_seconds"]))


def row_key(r: dict) -> tuple:
    """What makes a result row distinct (rows written before speakers existed are English, one voice, not distilled)."""
    voices = r.get("train_voices", "en" if r["method"] == "wavegrad" else None)
    return (
        r["method"],
        r["prior"],
        r["schedule"],
        r["steps"],
        r.get("speaker", "en"),
        voices,
        r.get("distilled", False),
    )


def speaker_checks(rows: list[dict]) -> list[str]:
    """Issue 20's targets per 6-step WaveGrad row: PESQ >= 2.0, STOI >= 0.92 and RTF <= 0.25 on English; on a
    held-out voice, STOI no worse than Griffin-Lim's on the same utterances minus 0.05."""
    gl = {r.get("speaker", "en"): r for r in rows if r["method"] == "griffin-lim"}
    out = []
    for r in rows:
        if r["method"] != "wavegrad" or r["steps"] > 6 or r["schedule"] not in ("searched", "distilled"):
            continue
        speaker = r.get("speaker", "en")
        what = f"{r['prior']}, trained on {r.get('train_voices', 'en')}" + (", distilled" if r.get("distilled") else "")
        what += f", {r['steps']} {r['schedule']} steps"
        if speaker == "en":
            parts = {
                f"PESQ {r['pesq']:.2f} (>= 2.0)": r["pesq"] >= 2.0,
                f"STOI {r['stoi']:.3f} (>= 0.92)": r["stoi"] >= 0.92,
                f"RTF {r['rtf']:.3f} at {r.get('threads', '?')} thread(s) (<= 0.25 at 2)": r["rtf"] <= 0.25
                and r.get("threads") == 2,
            }
            verdicts = ", ".join(f"{k} {'met' if ok else 'missed'}" for k, ok in parts.items())
            out.append(f"- en, {what}: {verdicts}: {'met' if all(parts.values()) else 'missed'}")
        elif speaker in gl:
            bar = gl[speaker]["stoi"] - 0.05
            out.append(f"- {speaker}, {what}: STOI {r['stoi']:.3f} vs Griffin-Lim {gl[speaker]['stoi']:.3f} - 0.05 "
                       f"= {bar:.3f}: {'met' if r['stoi'] >= bar else 'missed'}")  # fmt: skip
    return out


def render_wavegrad(data: dict) -> str:
    """Markdown tables for docs/RESULTS.md from docs/results/wavegrad.json."""
    held = data.get("heldout_utterances", {})
    lines = [
        f"{len(data['test_utterances'])} test utterances of asterisk-core-sounds-en-g722 (Allison, speaker `en`)"
        + "".join(f", {len(v)} of the `{k}` voice" for k, v in held.items())
        + ", re-synthesised from the real recording's log-mel (80 bins, n_fft 1024, hop 256). `trained on` lists "
        "the voices of the model's training data (a held-out speaker is never among them). Real-time factor on "
        f"{data['machine'].get('cpu', '?')} with the torch threads of each row, beside whatever else ran "
        "(`load_average` in the JSON).",
        "",
        "| speaker | method | prior | trained on | schedule | steps | train h | PESQ | STOI | log-mel L1 | MR-STFT "
        "| RTF | threads |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data["rows"]:
        steps = f"{r['steps']}" + (f" ({r['utterances']} utt.)" if r.get("utterances", 20) < 20 else "")
        voices = r.get("train_voices", "en") if r["method"] == "wavegrad" else "-"
        method = r["method"] + (" (distilled)" if r.get("distilled") else "")
        lines.append(
            f"| {r.get('speaker', 'en')} | {method} | {r['prior'] or '-'} | {voices} | {r['schedule']} | {steps} | "
            f"{r['train_hours']:.3f} | {r['pesq']:.2f} | {r['stoi']:.3f} | {r['mel_l1']:.3f} | {r['mrstft']:.3f} | "
            f"{r['rtf']:.3f} | {r.get('threads', data.get('threads', '?'))} |"
        )
    first = [r for r in data["rows"] if r.get("speaker", "en") == "en" and r.get("train_voices", "en") == "en"]
    by = {
        (r["prior"], r["schedule"], r["steps"]): r
        for r in first
        if r["method"] == "wavegrad" and not r.get("distilled")
    }
    checks = []
    for prior in ("standard", "priorgrad"):
        s6, s50 = by.get((prior, "searched", 6)), by.get((prior, "fixed", 50))
        if s6 and s50:
            ratio = s6["mel_l1"] / s50["mel_l1"]
            checks.append(
                f"- {prior} prior: searched 6-step log-mel L1 {s6['mel_l1']:.3f} vs 50 steps {s50['mel_l1']:.3f}: "
                f"ratio {ratio:.3f} (target <= 1.10: {'met' if ratio <= 1.10 else 'missed'})"
            )
    std6, pg6 = by.get(("standard", "searched", 6)), by.get(("priorgrad", "searched", 6))
    if std6 and pg6 and abs(std6["train_hours"] - pg6["train_hours"]) < 0.01:
        checks.append(
            f"- equal training time ({std6['train_hours'] * 3600:.0f} s each), searched 6 steps: PriorGrad log-mel "
            f"L1 {pg6['mel_l1']:.3f} vs standard {std6['mel_l1']:.3f} "
            f"({'lower' if pg6['mel_l1'] < std6['mel_l1'] else 'NOT lower'})"
        )
    checks += speaker_checks(data["rows"])
    if checks:
        lines += ["", "Targets:", "", *checks]
    test_curve = [p for p in data.get("curve", []) if "pesq" in p]
    if test_curve:
        head = "| prior | train s | step | PESQ | STOI | log-mel L1 |\n|---|---:|---:|---:|---:|---:|"
        lines += ["", "Quality vs training time (test utterances, 6 steps):", "", head]
        restart = "train s counts from the start of the weights' training; the step restarts at 0 in a run continued"
        restart += " from earlier weights (train.init), with a fresh optimizer and learning-rate schedule."
        for p in test_curve:
            lines.append(
                f"| {p['prior']} | {p['train_seconds']:.0f} | {p['step']} | {p['pesq']:.2f} | {p['stoi']:.3f} | "
                f"{p['mel_l1']:.3f} |"
            )
        lines += ["", restart]
    val_curve = [p for p in data.get("curve", []) if "val_mel_l1_6" in p]
    if val_curve:
        lines += ["", "Validation log-mel L1 during training (the 6 validation utterances of at least 1.5 s, a 1.5 s "
                  "clip of each; fixed 6-step schedule; step as above):", "",
                  "| prior | train s | step | val log-mel L1 |", "|---|---:|---:|---:|"]  # fmt: skip
        for p in sorted(val_curve, key=lambda p: (p["prior"], p["train_seconds"])):
            lines.append(f"| {p['prior']} | {p['train_seconds']:.0f} | {p['step']} | {p['val_mel_l1_6']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--standard", metavar="RUN", help="run trained with the standard prior")
    p.add_argument("--priorgrad", metavar="RUN", help="run trained with PriorGrad's prior")
    p.add_argument("--runs", nargs="+", default=[], metavar="RUN", help="more runs of either prior (no curve)")
    p.add_argument(
        "--speakers", nargs="+", default=["en"], help="test voices: en and/or heldout-LANG (default: %(default)s)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    p.add_argument("--n", type=int, default=20, help="test utterances (default: the issue's 20)")
    p.add_argument("--quick", action="store_true", help="6-step schedules only (no 25, 50, 1000)")
    p.add_argument("--steps", type=int, nargs="+", help="only these step counts of 6 25 50 1000 (default: all)")
    p.add_argument(
        "--update",
        action="store_true",
        help="merge into the existing docs/results/wavegrad.json: its rows for other step counts, priors or "
        "schedules are kept (e.g. run 1000 steps on its own later)",
    )
    p.add_argument("--no-curve", action="store_true", help="skip the snapshots' quality-vs-time curve")
    p.add_argument("--no-write", action="store_true", help="print only; do not write docs/results/wavegrad.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    plan = PLAN[:2] if args.quick else PLAN
    if args.steps:
        bad = sorted(set(args.steps) - {n for _, n in PLAN})
        if bad:
            p.error(f"--steps: {bad} not among the benchmark's step counts {sorted({n for _, n in PLAN})}")
        plan = [(k, n) for k, n in plan if n in args.steps]
    rows: list[dict] = []
    curve: list[dict] = []
    utterances: dict[str, list[str]] = {}
    for speaker in args.speakers:
        corpus = load_asterisk(voices=[test_voice(speaker)])
        names, refs = corpus.split_names("test")[: args.n], corpus.split("test")[: args.n]
        utterances[speaker] = names
        gl = evaluate(lambda mel: griffin_lim(mel, MEL), refs)
        rows.append({"method": "griffin-lim", "prior": None, "schedule": "fixed", "steps": 32, "train_hours": 0.0,
                     "speaker": speaker, **gl})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
        for prior in ("standard", "priorgrad"):
            run = getattr(args, prior)
            if run:
                r, c = bench_run(run, prior, refs, plan, curve=not args.no_curve and speaker == "en", speaker=speaker)
                rows += r
                curve += c
        for run in args.runs:
            rows += bench_run(run, None, refs, plan, curve=False, speaker=speaker)[0]
    names = utterances.get("en", [])
    for r in rows:
        r["threads"] = args.threads  # the RTF depends on it; rows merged with --update may differ
    res = {
        "command": command_line("benchmarks/wavegrad.py"),
        "machine": machine_info(),
        "date": dt.date.today().isoformat(),
        "threads": args.threads,
        "test_utterances": names,
        "heldout_utterances": {k: v for k, v in utterances.items() if k != "en"},
        "rows": rows,
        "curve": curve,
        "runs": {"standard": args.standard, "priorgrad": args.priorgrad},
    }
    old_path = result_path("wavegrad")
    if args.update and old_path.exists():
        old = json.loads(old_path.read_text())
        if names and old.get("test_utterances") != names:
            raise SystemExit(f"--update: {old_path} was measured on other test utterances; run without --update")
        res["test_utterances"] = old.get("test_utterances", names)
        res["heldout_utterances"] = {**old.get("heldout_utterances", {}), **res["heldout_utterances"]}
        key = row_key
        new_keys = {key(r) for r in rows}
        kept = [{"threads": old.get("threads"), **r} for r in old["rows"] if key(r) not in new_keys]
        res["rows"] = kept + rows
        res["rows"].sort(key=lambda r: (r.get("speaker", "en"), r["method"] != "griffin-lim", str(r["prior"]),
                                        r.get("train_voices", "en"), r["steps"], r["schedule"]))  # fmt: skip
        # the curve grows: points of earlier runs stay unless this run measured the same point again
        res["curve"] = merge_curve(old.get("curve", []), curve)
        res["commands"] = [*old.get("commands", [old.get("command")]), res["command"]]
        res["runs"] = {k: v or old.get("runs", {}).get(k) for k, v in res["runs"].items()}
    print(render_wavegrad(res))
    if not args.no_write:
        print(f"wrote {write_result('wavegrad', res)}")


if __name__ == "__main__":
    main()
