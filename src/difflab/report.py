"""One self-contained HTML page for a run or a model (``difflab report RUN_OR_MODEL --out report.html``).

The page needs nothing but itself: images, GIFs, audio and video are embedded as ``data:`` URIs,
charts are inline SVG drawn here, the style and the one small script are inline, and a
Content-Security-Policy forbids every network request. It holds, as far as the folder has them:

- a summary (method, data set, status, step, wall time, parameters) and ``summary.json``;
- the config (``config.yaml`` as written) and the checkpoint's ``format.json``;
- training curves from ``metrics.jsonl`` (loss, learning rate, gradient norm, throughput vs step);
- metric-vs-step charts of every other numeric key: eval entries of ``metrics.jsonl``, score files
  ``samples/step_N.json`` (CLIP, unCLIP priors) and WaveGrad's ``snapshots/*.json``;
- sample grids over training (``samples/step_N.png|gif|wav|mp4``, latest first, at most ``max_samples``)
  and other media in ``samples/`` and the folder itself (``difflab sample`` grids, vocoded WAVs, GIFs);
- ``eval.json`` (``difflab eval RUN --out``), a model card ``README.md``, and the folder's files.

A partial run (no metrics yet, no samples, no summary) gives a page that says what is missing.
Only the standard library and PyYAML (to read the config) are used.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
import time
import wave
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MAX_EMBED_BYTES = 5 * 2**20  # one embedded file at most (larger ones are listed with a note)
MAX_PAGE_BYTES = 40 * 2**20  # all embedded files together
MEDIA_TYPES = {
    ".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
    ".webp": "image/webp", ".wav": "audio/wav", ".mp3": "audio/mpeg", ".ogg": "audio/ogg",
    ".flac": "audio/flac", ".mp4": "video/mp4", ".webm": "video/webm",
}  # fmt: skip
TRAIN_CURVES = {
    "loss": "loss",
    "lr": "learning rate",
    "grad_norm": "gradient norm",
    "images_per_s": "throughput (examples/s)",
    "threads": "CPU threads (difflab.threads)",
}
NOT_METRICS = {"step", "elapsed_s", "epoch", "seed", "n_samples", "n_ref", "n_floor"}
MAX_POINTS = 1500  # per chart; longer series are thinned evenly
STEP_FILE = re.compile(r"step_(\d+)")


# -- reading the folder ---------------------------------------------------------------------
def _kind(root: Path) -> str:
    """``"run"`` or ``"model"``; a one-line error for anything else."""
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder")
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder; give a run folder or an exported model folder")
    run_marks = ("metrics.jsonl", "summary.json", "samples", "checkpoint", ".checkpoint.old", "snapshots")
    if any((root / m).exists() for m in run_marks):
        return "run"
    if (root / "format.json").is_file():
        return "model"
    if (root / "config.yaml").is_file():
        return "run"  # a run that has only started
    raise ValueError(
        f"{root}: not a difflab run or model folder (no config.yaml, metrics.jsonl, checkpoint/ or format.json)"
    )


def _read_json(path: Path, notes: list[str]) -> Any:
    """The JSON in ``path``, or None (with a note if the file exists but does not parse)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        notes.append(f"{path.name}: unreadable ({' '.join(str(e).split())})")
        return None


def _read_metrics(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl; lines that do not parse (a line being written) are counted in a note."""
    if not path.is_file():
        return []
    records, bad = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), (int, float)):
            records.append(rec)
        else:
            bad += 1
    if bad:
        notes.append(f"metrics.jsonl: {bad} line(s) skipped (not a JSON record with a step)")
    return sorted(records, key=lambda r: r["step"])


def _number(v: Any) -> float | None:
    """``v`` as a finite-or-not float if it is a real number (not a bool), else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def _series(records: Iterable[dict[str, Any]], skip: Iterable[str] = ()) -> dict[str, list[tuple[float, float]]]:
    """Numeric keys of records with a step -> [(step, value), ...] in step order."""
    out: dict[str, list[tuple[float, float]]] = {}
    skip = set(skip) | NOT_METRICS
    for rec in records:
        step = _number(rec.get("step"))
        if step is None:
            continue
        for k, v in rec.items():
            x = _number(v)
            if k not in skip and x is not None:
                out.setdefault(k, []).append((step, x))
    return {k: sorted(v) for k, v in out.items()}


def _step_of(path: Path) -> int | None:
    m = STEP_FILE.search(path.stem)
    return int(m.group(1)) if m else None


def _score_records(folder: Path, notes: list[str]) -> list[dict[str, Any]]:
    """The JSON objects of ``folder/*.json`` with their step (from the object or the file name)."""
    records = []
    for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        rec = _read_json(f, notes)
        if isinstance(rec, dict):
            step = rec.get("step", _step_of(f))
            if _number(step) is not None:
                records.append({**rec, "step": step})
    return records


def _wall_time(records: list[dict[str, Any]]) -> float | None:
    """Seconds over all sessions: ``elapsed_s`` restarts at each resume, so add each session's last value."""
    total, last, seen = 0.0, None, False
    for rec in records:
        e = _number(rec.get("elapsed_s"))
        if e is None:
            continue
        if last is not None and e < last:
            total += last
        last, seen = e, True
    return total + last if seen and last is not None else None


def _safetensors_parameters(files: Iterable[Path]) -> int | None:
    """Number of values in a safetensors file, from its header alone (no torch)."""
    for f in files:
        try:
            with open(f, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                header = json.loads(fh.read(n)) if 0 < n < 100 * 2**20 else {}
        except (OSError, ValueError):
            continue
        shapes = [v["shape"] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
        if shapes:
            return sum(math.prod(s) for s in shapes)
    return None


# -- formatting -----------------------------------------------------------------------------
def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v: Any) -> str:
    """A value for a table cell: numbers short, lists and dicts as compact JSON."""
    if isinstance(v, bool) or v is None:
        return str(v).lower() if v is not None else "null"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(", ", ": "))
    return str(v)


def _duration(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _table(rows: Iterable[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_fmt(v))}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>' if body else ""


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


# -- charts (inline SVG) --------------------------------------------------------------------
def _nice_ticks(lo: float, hi: float, n: int = 5, least: float = 0.0) -> list[float]:
    """About ``n`` round numbers (1, 2, 2.5, 5 x 10^k apart, at least ``least``) between ``lo`` and ``hi``."""
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = max(least, next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw))
    first = math.ceil(lo / step - 1e-9)
    return [i * step for i in range(first, int(math.floor(hi / step + 1e-9)) + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1, 2, 5 x 10^k inside [10^lo, 10^hi] (log10 values); only powers of ten over many decades."""
    mults = (1, 2, 5) if hi - lo <= 3 else (1,)
    out = [math.log10(m) + k for k in range(math.floor(lo), math.ceil(hi) + 1) for m in mults]
    return [t for t in out if lo - 1e-9 <= t <= hi + 1e-9]


def _tick_label(v: float) -> str:
    if abs(v) >= 1000 and v == int(v):
        return f"{v / 1000:g}k"
    return f"{v:.3g}"


def svg_chart(title: str, points: list[tuple[float, float]], width: int = 380, height: int = 220) -> str:
    """A line chart of (step, value) points as an inline ``<svg>`` in a ``<figure>`` with a caption.

    Non-finite values are left out (and counted in the caption); a positive series spanning more
    than a decade gets a log axis; long series are thinned to :data:`MAX_POINTS` points."""
    good = [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]
    dropped = len(points) - len(good)
    if not good:
        return f'<figure class="chart empty"><figcaption>{_e(title)}: no finite values</figcaption></figure>'
    (last_x, last_y), best = good[-1], min(y for _, y in good)
    if len(good) > MAX_POINTS:
        stride = math.ceil(len(good) / MAX_POINTS)
        good = good[::stride] + ([good[-1]] if (len(good) - 1) % stride else [])
    ys = [y for _, y in good]
    log = min(ys) > 0 and max(ys) / min(ys) > 10
    ty = [math.log10(y) for y in ys] if log else ys
    x0, x1 = good[0][0], good[-1][0]
    x0, x1 = (x0 - 1, x1 + 1) if x0 == x1 else (x0, x1)
    y0, y1 = min(ty), max(ty)
    pad = (y1 - y0) * 0.05 or (abs(y0) * 0.1 or 1.0)
    y0, y1 = y0 - pad, y1 + pad
    left, right, top, bottom = 52, 10, 10, 24
    pw, ph = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return top + (y1 - y) / (y1 - y0) * ph

    parts = [f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="plot"/>']
    for t in _log_ticks(y0, y1) if log else _nice_ticks(y0, y1):
        y = py(t)
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        label = _tick_label(10**t if log else t)
        parts.append(f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end">{_e(label)}</text>')
    for t in _nice_ticks(x0, x1, 4, least=1.0):  # steps are whole numbers
        x = px(t)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + ph}" class="grid"/>')
        parts.append(f'<text x="{x:.1f}" y="{height - 8}" text-anchor="middle">{_e(_tick_label(t))}</text>')
    coords = [(px(x), py(y)) for (x, _), y in zip(good, ty, strict=True)]
    path = " ".join(f"{a:.1f},{b:.1f}" for a, b in coords)
    parts.append(f'<polyline points="{path}" class="line"/>')
    if len(coords) <= 40:
        parts += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.5" class="dot"/>' for a, b in coords]
    caption = f"{title}: {_fmt(last_y)} at step {_fmt(int(last_x))}; min {_fmt(best)}; {len(points)} points"
    caption += (", log scale" if log else "") + (f", {dropped} non-finite left out" if dropped else "")
    svg = (
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{_e(title)} vs step"><title>{_e(title)} vs step</title>{"".join(parts)}</svg>'
    )
    return f'<figure class="chart">{svg}<figcaption>{_e(caption)}</figcaption></figure>'


# -- media ----------------------------------------------------------------------------------
class _Embedder:
    """Turns media files into inline elements, within a size budget per file and per page."""

    def __init__(self, max_file: int = MAX_EMBED_BYTES, max_total: int = MAX_PAGE_BYTES) -> None:
        self.max_file, self.left = max_file, max_total

    def figure(self, path: Path, caption: str) -> str:
        mime = MEDIA_TYPES[path.suffix.lower()]
        try:
            size = path.stat().st_size
            if size > self.max_file:
                raise ValueError(f"{_size(size)}, over the {_size(self.max_file)} limit per file; not embedded")
            if size > self.left:
                raise ValueError(f"{_size(size)}; the page's size limit is reached; not embedded")
            data = path.read_bytes()
        except (OSError, ValueError) as e:
            return f'<figure class="media skipped"><figcaption>{_e(caption)}: {_e(e)}</figcaption></figure>'
        self.left -= len(data)
        uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        if mime.startswith("image/"):
            tag = f'<img src="{uri}" alt="{_e(caption)}">'
        elif mime.startswith("audio/"):
            tag = f'<audio controls preload="auto" src="{uri}"></audio>'
            caption += _wav_info(path)
        else:
            tag = f'<video controls loop muted playsinline preload="auto" src="{uri}"></video>'
        return f'<figure class="media">{tag}<figcaption>{_e(caption)}</figcaption></figure>'


def _wav_info(path: Path) -> str:
    """`` (1.5 s, 16000 Hz)`` for a readable WAV file, else nothing."""
    try:
        with wave.open(str(path)) as w:
            return f" ({w.getnframes() / w.getframerate():.2f} s, {w.getframerate()} Hz)"
    except (OSError, EOFError, wave.Error, ZeroDivisionError):
        return ""


def _media_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in MEDIA_TYPES]


def _gallery(figures: list[str]) -> str:
    return f'<div class="gallery">{"".join(figures)}</div>'


# -- the page -------------------------------------------------------------------------------
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:0 16px 40px;color:#222}
h1{margin:18px 0 4px}h2{border-bottom:1px solid #ccc;padding-bottom:2px;margin-top:28px}
nav a{margin-right:10px}.note{color:#8a5a00;background:#fff7e0;padding:4px 8px;border-radius:3px}
table.kv{border-collapse:collapse}table.kv th{text-align:left;padding:2px 12px 2px 0;color:#555;
font-weight:normal;vertical-align:top}table.kv td{padding:2px 0;font-family:monospace;word-break:break-all}
pre{background:#f6f6f6;padding:8px;overflow:auto;max-height:480px;font-size:12px}
.charts,.gallery{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}
figcaption{font-size:12px;color:#555;max-width:380px}
svg.chart text{font-size:10px;fill:#555}svg.chart .plot{fill:#fff;stroke:#999}
svg.chart .grid{stroke:#eee}svg.chart .line{fill:none;stroke:#1f6fb4;stroke-width:1.5}
svg.chart .dot{fill:#1f6fb4}figure.media img{image-rendering:pixelated;min-width:200px;max-width:100%}
figure.media video{max-width:100%}
"""

# Marks the body once the page has loaded: data-images-decoded="k/n" counts the <img> that decode in
# full (img.decode() resolves and naturalWidth > 0), data-images-loaded="true" when all do, and
# data-media-loaded="k/n" counts the <audio>/<video> whose metadata loaded.
SCRIPT = """
(function () {
  var body = document.body;
  window.addEventListener("load", function () {
    var imgs = Array.prototype.slice.call(document.images);
    Promise.all(imgs.map(function (im) {
      return im.decode().then(function () { return im.naturalWidth > 0 ? 1 : 0; }, function () { return 0; });
    })).then(function (ok) {
      var n = ok.reduce(function (a, b) { return a + b; }, 0);
      body.dataset.imagesDecoded = n + "/" + imgs.length;
      if (n === imgs.length) body.dataset.imagesLoaded = "true";
    });
  });
  var media = document.querySelectorAll("audio, video"), ready = 0;
  media.forEach(function (m) {
    var done = function () { ready += 1; body.dataset.mediaLoaded = ready + "/" + media.length; };
    if (m.readyState >= 1) done(); else m.addEventListener("loadedmetadata", done, {once: true});
  });
})();
"""

CSP = "default-src 'none'; img-src data:; media-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def _section(anchor: str, title: str, body: str) -> tuple[str, str, str]:
    return anchor, title, f'<section id="{anchor}"><h2>{_e(title)}</h2>{body}</section>'


def _load_config(text: str | None, notes: list[str]) -> dict[str, Any]:
    if text is None:
        return {}
    import yaml

    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        notes.append(f"config.yaml does not parse: {' '.join(str(e).split())[:200]}")
        return {}
    return cfg if isinstance(cfg, dict) else {}


def _files_table(root: Path) -> str:
    rows = []
    for f in sorted(root.iterdir()):
        if f.is_dir():
            inner = [g for g in f.rglob("*") if g.is_file()]
            size = sum(g.stat().st_size for g in inner)
            rows.append((f.name + "/", f"{len(inner)} files, {_size(size)}"))
        elif f.is_file():
            rows.append((f.name, _size(f.stat().st_size)))
    return _table(rows) or _note("The folder is empty.")


def build_report(path: str | os.PathLike[str], *, max_samples: int = 12) -> str:
    """The HTML text of the report of a run folder or an exported model folder (see the module doc)."""
    root = Path(path)
    kind = _kind(root)
    notes: list[str] = []
    ckpt = next((root / d for d in ("checkpoint", ".checkpoint.old") if (root / d).is_dir()), root)
    cfg_file = next((f for f in (root / "config.yaml", ckpt / "config.yaml") if f.is_file()), None)
    cfg_text = cfg_file.read_text(encoding="utf-8", errors="replace") if cfg_file else None
    cfg = _load_config(cfg_text, notes)
    meta = _read_json(ckpt / "format.json", notes)
    meta = meta if isinstance(meta, dict) else {}
    summary = _read_json(root / "summary.json", notes)
    summary = summary if isinstance(summary, dict) else None
    records = _read_metrics(root / "metrics.jsonl", notes)
    evaluation = _read_json(root / "eval.json", notes)
    embed = _Embedder()
    sections = []

    # summary
    train = cfg.get("train") if isinstance(cfg.get("train"), dict) else {}
    data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    step = (summary or {}).get("step", records[-1]["step"] if records else meta.get("step"))
    target = train.get("steps")
    params = (summary or {}).get("parameters", meta.get("parameters"))
    if params is None and kind == "model":
        params = _safetensors_parameters(sorted(root.glob("*.safetensors")))
    wall = _wall_time(records)
    facts = [
        ("folder", str(root.resolve())),
        ("kind", "training run" if kind == "run" else "exported model"),
        ("method", meta.get("method", cfg.get("method", "diffusion" if cfg else None))),
        ("data set", meta.get("dataset", data.get("name"))),
        ("status", (summary or {}).get("status") if summary else None),
        ("step", f"{_fmt(step)} of {_fmt(target)}" if step is not None and target else step),
        ("wall time (all sessions, from metrics.jsonl)", _duration(wall) if wall is not None else None),
        ("parameters", params),
        ("sample shape", meta.get("image_shape")),
        ("parameterization", meta.get("parameterization")),
        ("conditions", meta.get("conditions") or None),
        ("difflab version", meta.get("difflab_version")),
    ]
    body = _table((k, v) for k, v in facts if v is not None)
    if kind == "run" and summary is None:
        body += _note("No summary.json: the run is still training, or it stopped before writing one.")
    if kind == "run" and not (ckpt / "format.json").is_file():
        body += _note("No checkpoint yet.")
    if summary:
        body += "<h3>summary.json</h3>" + _table(summary.items())
    sections.append(_section("summary", "Summary", body))

    card = root / "README.md"
    if card.is_file():
        sections.append(_section("card", "Model card", f"<pre>{_e(card.read_text(errors='replace'))}</pre>"))

    # training curves
    if kind == "run":
        series = _series(records)
        charts = [svg_chart(t, series[k]) for k, t in TRAIN_CURVES.items() if k in series]
        body = f'<div class="charts">{"".join(charts)}</div>' if charts else ""
        if not records:
            body += _note("No metrics.jsonl records yet: no training step has been logged.")
        sections.append(_section("curves", "Training curves", body))

    # metrics vs step
    sources = [
        ("metrics.jsonl", _series(records, skip=TRAIN_CURVES)),
        ("samples/step_*.json", _series(_score_records(root / "samples", notes))),
        ("snapshots/*.json", _series(_score_records(root / "snapshots", notes), skip=("train_seconds",))),
    ]
    body = "".join(
        f"<h3>from {_e(name)}</h3>" + f'<div class="charts">{"".join(svg_chart(k, v) for k, v in s.items())}</div>'
        for name, s in sources
        if s
    )
    if body or kind == "run":
        sections.append(_section("metrics", "Metrics vs step", body or _note("No evaluation metrics logged.")))

    # samples over training, then other media
    if kind == "run":
        grids = sorted((f for f in _media_files(root / "samples") if _step_of(f) is not None), key=_step_of)[::-1]
        figures = [embed.figure(f, f"step {_fmt(_step_of(f))} ({f.name})") for f in grids[:max_samples]]
        body = _gallery(figures) if figures else _note("No sample files samples/step_* yet.")
        if not figures and list((root / "samples").glob("step_*.json")):
            body = _note("samples/ holds score files (JSON), no images: see their charts under Metrics vs step.")
        elif not figures and _media_files(root / "samples"):
            body = _note("No sample files samples/step_* from training; other samples are shown below.")
        if len(grids) > max_samples:
            body += _note(f"{len(grids) - max_samples} older sample file(s) not shown (max_samples={max_samples}).")
        sections.append(_section("samples", "Samples over training", body))
    others = [f for f in _media_files(root / "samples") if _step_of(f) is None] + _media_files(root)
    others = sorted(others, key=lambda f: f.stat().st_mtime, reverse=True)
    if others:
        figures = [embed.figure(f, str(f.relative_to(root))) for f in others[:max_samples]]
        body = _gallery(figures)
        if len(others) > max_samples:
            body += _note(f"{len(others) - max_samples} more media file(s) not shown.")
        sections.append(_section("media", "Other samples and media", body))

    if isinstance(evaluation, dict):
        sections.append(_section("eval", "Evaluation (eval.json)", _table(evaluation.items())))

    # config and metadata
    body = f"<pre>{_e(cfg_text)}</pre>" if cfg_text is not None else _note("No config.yaml.")
    if meta:
        rows = _table((k, v) for k, v in meta.items() if k != "model_config")
        where = "format.json" if ckpt == root else f"{ckpt.name}/format.json"
        body += f"<h3>{_e(where)}</h3>{rows}"
        if isinstance(meta.get("model_config"), dict):
            text = _e(json.dumps(meta["model_config"], indent=1))
            body += f"<details><summary>model_config</summary><pre>{text}</pre></details>"
    sections.append(_section("config", "Config", body))
    sections.append(_section("files", "Files", _files_table(root)))
    if notes:
        sections.append(_section("notes", "Notes", "".join(_note(n) for n in notes)))

    name = cfg.get("name") or root.resolve().name
    title = f"difflab report: {name}"
    nav = " ".join(f'<a href="#{a}">{_e(t)}</a>' for a, t, _ in sections)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    from . import __version__

    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{STYLE}</style></head>\n<body>"
        f"<h1>{_e(title)}</h1><nav>{nav}</nav>\n"
        + "\n".join(s for _, _, s in sections)
        + f'\n<footer><p class="small">written by difflab {_e(__version__)} on {stamp}</p></footer>'
        f"<script>{SCRIPT}</script></body></html>\n"
    )


def write_report(path: str | os.PathLike[str], out_html: str | os.PathLike[str], *, max_samples: int = 12) -> Path:
    """Write the report of the run or model folder ``path`` to ``out_html`` (atomically); return its path."""
    if max_samples < 0:
        raise ValueError(f"max_samples must be >= 0, got {max_samples}")
    text = build_report(path, max_samples=max_samples)
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    return out
