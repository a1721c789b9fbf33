"""Video diffusion on moving real items: joint image-video training, extension and interpolation.

Two steps (each prints what it does; ``eval`` writes docs/results/video.json)::

    python benchmarks/video.py train [--minutes 120]
    python benchmarks/video.py eval  [--n 32] [--n-long 12]
    python benchmarks/video.py interp --weights 1 2 5 10 20  (the result's interpolation again at other weights)
    python benchmarks/video.py plot  (redraws docs/images/video-extension-metrics.png from the result)

``train`` runs ``difflab train configs/video-moving.yaml`` under ``RUNS`` (default runs/video), three
runs of one thread each side by side for ``--minutes`` of wall time (equal shares of the machine, so
equal training compute): ``joint-0``, ``joint-4`` and ``joint-8`` append 0, 4 and 8 independent
images of the clip's class to every 16-frame clip (``data.image_frames``). Every run resumes from
its checkpoint when the command is repeated (each repeat adds ``--minutes``).

``eval`` scores with the shipped video classifier (difflab.eval.video), against real test clips of
the moving items (one or two items, 32x32):

- joint training: ``--n`` clips of each run, class-conditional (the test clips' classes, w =
  ``--guidance``): per-frame FD and video FD (the FVD analogue);
- extension: the first 16 frames of ``--n-long`` (default ``--n``) real 64-frame test videos
  extended to 64 frames by the ``--extend-run`` stage (new clips of 16 frames with 8 known ones),
  by reconstruction guidance at weights ``--weights`` and by replacement: identity consistency,
  motion error (px) and video FD of the 48 generated frames (three 16-frame windows);
- interpolation: frames 0, 4, ..., 16 of the same videos raised to 17 frames (4x) by reconstruction
  guidance (the same ``--weights``), replacement and linear blending: MSE of the 12 generated frames against the
  true ones and video FD of the first 16 frames;
- the real-data floor of every score (a disjoint set of ``--n`` real clips), the classifier's
  accuracy on real test clips, training wall time and seconds per sampled 16-frame clip.

It also writes docs/images/video-extension.png: one test video, its truth, and both extensions.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    ROOT,
    command_line,
    machine_info,
    record_train_command,
    result_path,
    train_commands,
    training_seconds,
    write_result,
)

DIFFLAB = [sys.executable, "-m", "difflab"]
IMAGE_FRAMES = (0, 4, 8)
CLIP, LONG, CONTEXT, FACTOR = 16, 64, 8, 4
SAMPLES_IMAGE = "docs/images/video-samples.png"
PLOT_IMAGE = "docs/images/video-extension-metrics.png"


def _train(out: Path, minutes: float, image_frames: int, options: list[str]) -> subprocess.Popen:
    out.parent.mkdir(parents=True, exist_ok=True)
    resume = ["--resume"] if (out / "checkpoint" / "format.json").is_file() else []
    cmd = [*DIFFLAB, "train", str(ROOT / "configs/video-moving.yaml"), "--out", str(out), "--no-progress", *resume,
           "--time-limit", str(minutes * 60), "train.threads=1", "train.steps=1000000",
           f"data.image_frames={image_frames}", *options]  # fmt: skip
    print("$", " ".join(cmd[2:]), flush=True)
    with open(out.with_suffix(".log"), "a") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def train(args: argparse.Namespace) -> None:
    runs = Path(args.runs)
    record_train_command(runs, "benchmarks/video.py")
    procs = [_train(runs / f"joint-{k}", args.minutes, k, args.train_options) for k in IMAGE_FRAMES]
    if any(p.wait() != 0 for p in procs):
        raise SystemExit("a training run failed: see the .log files beside the runs")
    for k in IMAGE_FRAMES:
        s = json.loads((runs / f"joint-{k}" / "summary.json").read_text())
        print(f"joint-{k}: {s['step']} updates in {training_seconds(runs / f'joint-{k}'):.0f} s ({s['status']})")


def _test_videos(n: int, start: int = 0):
    """(videos (n, 1, 64, 32, 32), classes (n,), item counts (n,)) of real test videos."""
    import torch

    from difflab.data import MovingItems

    data = MovingItems("test", n=start + n, frames=LONG)
    items = [data[i] for i in range(start, start + n)]
    videos = torch.stack([x for x, _ in items])
    classes = torch.stack([c["class"] for _, c in items])
    counts = torch.stack([(c["labels"] >= 0).sum() for _, c in items])
    return videos, classes, counts


def _scored_videos(n: int, n_long: int):
    """The test videos of ``eval`` (and ``interp``): the first ``n_long`` (videos, classes, item counts),
    extended and interpolated; the classes of the first ``n``, asked of the joint-training stages; and the
    reference clips, after the ``n`` floor videos that follow test video ``max(n, n_long) - 1``."""
    first = max(n, n_long)
    truth, classes, counts = _test_videos(first)
    reference = _test_videos(max(n, 256), start=first + n)[0][:, :, :CLIP]
    return (truth[:n_long], classes[:n_long], counts[:n_long]), classes[:n], reference


def evaluate(args: argparse.Namespace) -> None:
    import torch

    import difflab
    from difflab.data import save_filmstrip
    from difflab.eval.video import (
        frame_fd,
        identity_consistency,
        motion_error,
        video_classifier_metadata,
        video_fd,
    )
    from difflab.methods.video import extend

    torch.set_num_threads(args.threads)
    runs = Path(args.runs)
    opts = {"sampler": "ddim", "steps": args.steps, "guidance": args.guidance}
    n_long = args.n_long or args.n
    if min(args.n, n_long) < 2:
        raise SystemExit("--n and --n-long must be at least 2: a Frechet distance needs two videos")
    (truth, classes, counts), labels, reference = _scored_videos(args.n, n_long)
    floor_videos, _, floor_counts = _test_videos(args.n, start=max(args.n, n_long))

    def windows(v):  # (B, 1, 48, ...) -> (3B, 1, 16, ...)
        return v.unflatten(2, (-1, CLIP)).transpose(1, 2).flatten(0, 1)

    floors = {
        "frame_fd": round(frame_fd(floor_videos[:, :, :CLIP], reference), 4),
        "fvd": round(video_fd(floor_videos[:, :, :CLIP], reference), 4),
        "fvd_48": round(video_fd(windows(floor_videos[:, :, CLIP:]), reference), 4),
        "identity_consistency": round(identity_consistency(floor_videos), 4),
        "motion_error": round(motion_error(floor_videos, floor_counts), 4),
        "interpolation_mse": 0.0,
    }
    print("floors", json.dumps(floors), flush=True)

    joint, seconds, samples = [], {}, {}
    carried = _carried_joint(result_path("video")) if args.keep_joint else None
    for k in IMAGE_FRAMES:
        run = runs / f"joint-{k}"
        if carried or not run.is_dir():
            continue
        stage = difflab.load(run, device=args.device)
        t0 = time.perf_counter()
        x = stage.sample(args.n, labels=labels, seed=0, **opts)
        seconds[f"joint-{k}"] = (time.perf_counter() - t0) / args.n
        samples[k] = x[:2]
        scores = {"frame_fd": round(frame_fd(x, reference), 4), "fvd": round(video_fd(x, reference), 4)}
        joint.append({"image_frames": k, "updates": int(stage.meta["step"]), **scores})
        print(json.dumps(joint[-1]), flush=True)

    stage = difflab.load(runs / args.extend_run, device=args.device)
    if args.extend_run not in seconds:  # its seconds per clip, when the joint part did not time it
        t0 = time.perf_counter()
        stage.sample(2, labels=classes[:2], seed=0, **opts)
        seconds[args.extend_run] = (time.perf_counter() - t0) / 2
    given = truth[:, :, :CLIP]
    extension, strips = [], {"truth": truth[:1]}
    variants = [("reconstruction", w) for w in args.weights] + [("replacement", None)]
    for method, weight in variants:
        t0 = time.perf_counter()
        x = extend(stage, given, LONG, context=CONTEXT, method=method, weight=weight or 0.0, labels=classes, seed=1,
                   **opts).clamp(-1, 1)  # fmt: skip
        extension.append({
            "method": method, "weight": weight, "frames": LONG,
            "identity_consistency": round(identity_consistency(x), 4),
            "motion_error": round(motion_error(x, counts), 4),
            "fvd": round(video_fd(windows(x[:, :, CLIP:]), reference), 4),
            "seconds_per_video": round((time.perf_counter() - t0) / n_long, 2),
        })  # fmt: skip
        strips[f"{method} {weight or ''}".strip()] = x[:1]
        print(json.dumps(extension[-1]), flush=True)

    interpolation = _interpolation_rows(stage, truth, classes, reference, variants, opts)

    image = ROOT / "docs" / "images" / "video-extension.png"
    order = ["truth", *[k for k in strips if k != "truth"]]
    save_filmstrip(torch.cat([strips[k] for k in order])[:, :, ::4], image)
    if samples:  # two class-conditional clips of each joint-training run, every frame
        save_filmstrip(torch.cat([samples[k] for k in sorted(samples)]).clamp(-1, 1), ROOT / SAMPLES_IMAGE)
    meta = video_classifier_metadata()
    trained = [f"joint-{k}" for k in IMAGE_FRAMES] + [args.extend_run]
    train_info = {name: {"updates": json.loads((runs / name / "summary.json").read_text())["step"],
                         "seconds": round(training_seconds(runs / name), 1)}
                  for name in dict.fromkeys(trained) if (runs / name / "summary.json").is_file()}  # fmt: skip
    result = {
        "command": command_line("benchmarks/video.py"),
        "train_command": train_commands(runs),
        "machine": machine_info(),
        "date": date.today().isoformat(),
        "classifier_accuracy": meta.get("accuracy", {}),
        "videos": args.n, "long_videos": n_long, "sampler": f"ddim, {args.steps} steps, guidance {args.guidance}",
        "extend_run": args.extend_run,
        "floors": floors,
        "train": train_info,
        "seconds_per_clip": {k: round(v, 3) for k, v in seconds.items()},
        "extension": extension,
        "joint": joint,
        "interpolation": interpolation,
        "filmstrip": {"path": "docs/images/video-extension.png", "rows": order, "every": 4},
        "samples_filmstrip": {"path": SAMPLES_IMAGE, "rows": [f"joint-{k}" for k in sorted(samples) for _ in (0, 1)]},
    }  # fmt: skip
    if carried:  # the joint-training part of the earlier result, with what produced it
        result["joint"] = carried.pop("joint")
        result["samples_filmstrip"] = carried.pop("samples_filmstrip")
        result["train"] = train_info | carried.pop("train")  # the kept rows' runs as they were then
        result["seconds_per_clip"] = result["seconds_per_clip"] | carried.pop("seconds_per_clip")
        result["joint_source"] = carried
    print(f"wrote {write_result('video', result)}")
    print("wrote", plot(result))


def _interpolation_rows(stage, truth, classes, reference, variants: list, opts: dict) -> list[dict]:
    """Frames 0, 4, ..., 16 of ``truth`` raised to 17 frames by each (method, weight) of ``variants`` and by
    linear blending: MSE of the generated frames against the true ones, video FD of the first 16 frames."""
    import torch

    from difflab.eval.video import video_fd
    from difflab.methods.video import interpolate, linear_interpolate

    low = truth[:, :, : CLIP + 1 : FACTOR]  # 5 frames at a quarter of the rate
    real = truth[:, :, : CLIP + 1]
    between = torch.ones(CLIP + 1, dtype=torch.bool)
    between[::FACTOR] = False
    rows = []
    for method, weight in [*variants, ("linear", None)]:
        if method == "linear":
            x = linear_interpolate(low, FACTOR)
        else:
            x = interpolate(stage, low, FACTOR, method=method, weight=weight or 0.0, labels=classes, seed=2, **opts)
        x = x.clamp(-1, 1)
        rows.append({
            "method": method, "weight": weight,
            "mse": round(float((x[:, :, between] - real[:, :, between]).pow(2).mean()), 5),
            "fvd": round(video_fd(x[:, :, :CLIP], reference), 4),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def rescore_interpolation(args: argparse.Namespace) -> None:
    """``interp``: the interpolation rows of docs/results/video.json scored again with ``--weights`` by the
    result's own extend run, on the same test videos, sampler and seeds; the rest of the result is kept and
    the command is recorded beside the rows."""
    import torch

    import difflab

    torch.set_num_threads(args.threads)
    path = result_path("video")
    if not path.is_file():
        raise SystemExit(f"interp: no result at {path}; run eval first")
    result = json.loads(path.read_text())
    n, n_long, run = result["videos"], result.get("long_videos", result["videos"]), result["extend_run"]
    steps, guidance = (float(v) for v in re.findall(r"ddim, (\d+) steps, guidance ([\d.]+)", result["sampler"])[0])
    opts = {"sampler": "ddim", "steps": int(steps), "guidance": guidance}
    (truth, classes, _), _, reference = _scored_videos(n, n_long)
    stage = difflab.load(Path(args.runs) / run, device=args.device)
    variants = [("reconstruction", w) for w in args.weights] + [("replacement", None)]
    result["interpolation"] = _interpolation_rows(stage, truth, classes, reference, variants, opts)
    result["interpolation_command"] = command_line("benchmarks/video.py")
    print(f"wrote {write_result('video', result)}")


def _carried_joint(path: Path) -> dict:
    """The joint-training part of an earlier ``eval`` result at ``path`` (for ``--keep-joint``): its rows,
    training table, seconds per clip and samples filmstrip, with the commands, machine and date that made it."""
    if not path.is_file():
        raise SystemExit(f"--keep-joint: no earlier result at {path}; run eval without it first")
    old = json.loads(path.read_text())
    if not old.get("joint"):
        raise SystemExit(f"--keep-joint: {path} has no joint-training rows to keep")
    source = old.get("joint_source", {})
    names = {f"joint-{r['image_frames']}" for r in old["joint"]}
    return {
        "joint": old["joint"],
        "samples_filmstrip": old.get("samples_filmstrip", {"path": SAMPLES_IMAGE, "rows": []}),
        "seconds_per_clip": {k: v for k, v in old.get("seconds_per_clip", {}).items() if k in names},
        "train": {k: v for k, v in old.get("train", {}).items() if k in names},
        "floors": {k: old["floors"][k] for k in ("frame_fd", "fvd")},  # the joint table's floor row, as scored
        "command": source.get("command", old["command"]),
        "train_command": source.get("train_command", old.get("train_command", "unknown")),
        "machine": source.get("machine", old.get("machine")),
        "date": source.get("date", old["date"]),
    }


def plot(data: dict, out: Path | None = None) -> Path:
    """docs/images/video-extension-metrics.png: identity consistency, motion error and video FD of the
    extended videos against the reconstruction weight, replacement and the real videos as dashed lines."""
    # Not difflab.eval.plot_metric_vs_steps: that draws one metric per image with a single floor line;
    # here three metrics share one figure, each with two reference lines (replacement and real videos).
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recon = sorted((r for r in data["extension"] if r["method"] == "reconstruction"), key=lambda r: r["weight"])
    other = {r["method"]: r for r in data["extension"] if r["method"] != "reconstruction"}
    floors = data["floors"]
    panels = [("identity_consistency", "identity consistency", "identity_consistency"),
              ("motion_error", "motion error (px)", "motion_error"), ("fvd", "video FD", "fvd_48")]  # fmt: skip
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), dpi=110)
    try:
        for ax, (key, label, floor) in zip(axes, panels, strict=True):
            ax.plot([r["weight"] for r in recon], [r[key] for r in recon], marker="o", label="reconstruction guidance")
            for (name, row), colour in zip(other.items(), ("tab:red", "tab:green"), strict=False):
                ax.axhline(row[key], color=colour, linestyle="--", label=name)
            ax.axhline(floors[floor], color="grey", linestyle=":", label="real videos")
            ax.set_xscale("log")
            ax.set_xticks([r["weight"] for r in recon], [f"{r['weight']:g}" for r in recon])
            ax.set_xlabel("reconstruction weight")
            ax.set_title(label)
            ax.grid(True, alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"Extension from {CLIP} to {LONG} frames")
        fig.tight_layout()
        out = ROOT / PLOT_IMAGE if out is None else Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out


def targets(data: dict) -> list[str]:
    """The issue's three targets, each checked against the measured rows."""

    def verdict(ok: bool) -> str:
        return "met" if ok else "missed"

    recon = [r for r in data["extension"] if r["method"] == "reconstruction"]
    rep = next((r for r in data["extension"] if r["method"] == "replacement"), None)
    lines = []
    weights = [f"{r['weight']:g}" for r in recon]
    if recon and rep:
        wins = [r["weight"] for r in recon if r["identity_consistency"] > rep["identity_consistency"]
                and r["motion_error"] < rep["motion_error"] and r["fvd"] < rep["fvd"]]  # fmt: skip
        lines.append(f"- Reconstruction guidance beats replacement on identity consistency, motion error and video FD "
                     f"of extended videos: {verdict(bool(wins))} "
                     f"(at weights {', '.join(f'{w:g}' for w in wins) if wins else 'none'} of "
                     f"{', '.join(weights)}).")  # fmt: skip
    joint = {r["image_frames"]: r for r in data["joint"]}
    if 0 in joint and len(joint) > 1:
        better = [k for k, r in joint.items() if k and r["frame_fd"] < joint[0]["frame_fd"]]
        lines.append(f"- Joint image-video training improves per-frame FD at equal compute: {verdict(bool(better))} "
                     f"(lower than 0 image frames with {', '.join(map(str, better)) if better else 'none'} of "
                     f"{', '.join(str(k) for k in joint if k)} image frames).")  # fmt: skip
    inter = {r["method"]: r for r in data["interpolation"] if r["method"] != "reconstruction"}
    recon = [r for r in data["interpolation"] if r["method"] == "reconstruction"]
    if recon and {"replacement", "linear"} <= set(inter):
        bar = min(inter["replacement"]["mse"], inter["linear"]["mse"])
        best = min(recon, key=lambda r: r["mse"])
        at = f" at weight {best['weight']:g}" if best.get("weight") is not None and len(recon) > 1 else ""
        lines.append(f"- Interpolation by reconstruction guidance has lower error than replacement and linear "
                     f"blending: {verdict(best['mse'] < bar)} (best MSE {best['mse']:.4f}{at} vs "
                     f"{inter['replacement']['mse']:.4f} and {inter['linear']['mse']:.4f}).")  # fmt: skip
    return lines


def _joint_source_lines(source: dict | None) -> list[str]:
    if not source:
        return []
    return [f"(Kept from the earlier result of {source['date']}: trained by `{source['train_command']}`, scored by "
            f"`{source['command']}`.)", ""]  # fmt: skip


def render_video(data: dict) -> str:
    """The RESULTS.md section: floors, joint training, extension and interpolation tables, targets."""
    from report import table

    f = data["floors"]
    acc = data["classifier_accuracy"]
    names = {"frame_items": "per-frame items", "video_items": "clip items", "order": "real vs shuffled order"}
    accuracy = ", ".join(f"{label} {acc[k]:.3f}" for k, label in names.items() if k in acc)
    long_videos = data.get("long_videos", data["videos"])
    joint_floor = data.get("joint_source", {}).get("floors") or f  # kept rows keep the floor they were scored with
    out = [
        f"Trained by `{data.get('train_command', 'unknown')}`; scored by `{data['command']}` on {data['videos']} "
        f"test videos ({data['sampler']}). Video classifier on real test clips: {accuracy}.",
        "",
        table(
            ["stage", "updates", "train s", "s per clip"],
            [[k, v["updates"], v["seconds"], data["seconds_per_clip"].get(k, "-")] for k, v in data["train"].items()],
        ),
        "",
        "Joint image-video training (equal wall time):",
        "",
        *_joint_source_lines(data.get("joint_source")),
        table(
            ["image frames per clip", "frame FD", "video FD"],
            [[r["image_frames"], r["frame_fd"], r["fvd"]] for r in data["joint"]]
            + [["real floor", joint_floor["frame_fd"], joint_floor["fvd"]]],
        ),
        "",
    ]
    if "samples_filmstrip" in data:
        rows = data["samples_filmstrip"]["rows"]
        out += [
            f"![video samples](images/video-samples.png) Class-conditional samples, every frame; rows: "
            f"{', '.join(rows)}.",
            "",
        ]
    out += [
        f"Extension from 16 to 64 frames ({data['extend_run']}, {long_videos} test videos; video FD of the 48 new "
        "frames):",
        "",
        table(["method", "weight", "identity consistency", "motion error (px)", "video FD", "s per video"],
              [[r["method"], r["weight"] if r["weight"] is not None else "-", r["identity_consistency"],
                r["motion_error"], r["fvd"], r["seconds_per_video"]] for r in data["extension"]]
              + [["real videos", "-", f["identity_consistency"], f["motion_error"], f["fvd_48"], "-"]]),
        "",
        f"Interpolation 4x ({long_videos} test videos; MSE of the generated in-between frames; video FD of the first "
        "16 frames" + (f"; scored by `{data['interpolation_command']}`" if data.get("interpolation_command") else "")
        + "):",
        "",
        table(["method", "weight", "MSE", "video FD"],
              [[r["method"], r["weight"] if r.get("weight") is not None else "-", r["mse"], r["fvd"]]
               for r in data["interpolation"]]),  # fmt: skip
        "",
        f"![extension filmstrip](images/video-extension.png) Rows: {', '.join(data['filmstrip']['rows'])}; "
        "every 4th frame.",
        "",
        "![extension metrics](images/video-extension-metrics.png)",
        "",
        "Targets:",
        "",
        *targets(data),
    ]  # fmt: skip
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "what",
        choices=("train", "eval", "interp", "plot"),
        help="interp: score the result's interpolation again at --weights; plot: redraw the plot from the result",
    )
    p.add_argument("--runs", default="runs/video", help="folder of the runs (default: %(default)s)")
    p.add_argument("--minutes", type=float, default=120.0, help="wall time of each run (default: %(default)s)")
    p.add_argument("--n", type=int, default=32, help="videos per score (default: %(default)s)")
    p.add_argument(
        "--n-long", type=int, default=None, help="videos extended and interpolated (default: --n): the costly part"
    )
    p.add_argument("--steps", type=int, default=25, help="DDIM steps per clip (default: %(default)s)")
    p.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance weight (default: 2)")
    p.add_argument("--weights", type=float, nargs="+", default=[1.0, 2.0, 5.0], help="reconstruction weights")
    p.add_argument("--extend-run", default="joint-0", help="run under --runs that extends and interpolates")
    p.add_argument(
        "--keep-joint",
        action="store_true",
        help="keep the joint-training rows of the existing docs/results/video.json (with the commands that made "
        "them) instead of sampling the joint-k runs: for re-scoring only extension and interpolation",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="device the video stages sample on (default: cpu)")
    p.add_argument("--train-options", nargs="*", default=[], metavar="KEY=VALUE", help="train: config overrides")
    args = p.parse_args()
    if args.what == "plot":
        print("wrote", plot(json.loads(result_path("video").read_text())))
    else:
        {"train": train, "eval": evaluate, "interp": rescore_interpolation}[args.what](args)


if __name__ == "__main__":
    main()
