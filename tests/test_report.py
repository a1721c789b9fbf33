"""``difflab report``: one self-contained HTML page for a run or a model, checked as text and in headless Chromium."""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

from app_models import tiny_wavegrad_config
from difflab import cli
from difflab.config import dump_yaml
from difflab.report import build_report, write_report

CONFIG = {
    "name": "tiny",
    "model": {"channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "heads": 2, "norm_groups": 4},
    "data": {"name": "digits", "batch_size": 8},
    "train": {"steps": 4, "log_every": 1, "sample_every": 2, "ckpt_every": 0, "progress": False, "threads": 1},
    "sample": {"steps": 2, "n": 4},
}
CURVES = ("loss", "learning rate", "gradient norm", "throughput (examples/s)", "CPU threads (difflab.threads)")


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("difflab: error: "), err
    return err[0]


def _self_contained(page: str) -> None:
    """No reference to anything outside the page: every src/href is a data: URI or an anchor."""
    assert "http://" not in page and "https://" not in page and "<link" not in page and "url(" not in page
    refs = re.findall(r'\b(?:src|href)="([^"]*)"', page)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), [r[:40] for r in refs]


def _data_uris(page: str, mime: str) -> list[bytes]:
    return [base64.b64decode(d) for d in re.findall(rf'src="data:{re.escape(mime)};base64,([^"]+)"', page)]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny digits run trained through the CLI (4 steps, grids at steps 2 and 4), with eval.json."""
    root = tmp_path_factory.mktemp("report")
    (root / "tiny.yaml").write_text(dump_yaml(CONFIG))
    assert cli.main(["train", str(root / "tiny.yaml"), "--out", str(root / "run")]) == 0
    argv = ["eval", str(root / "run"), "--n", "12", "--steps", "2", "--out", str(root / "run" / "eval.json")]
    assert cli.main(argv) == 0
    return root / "run"


@pytest.fixture(scope="module")
def wavegrad_run(tmp_path_factory) -> Path:
    """A tiny WaveGrad run (metrics, a validation snapshot) and a WAV vocoded with it into samples/."""
    from difflab.methods.wavegrad.train import train_wavegrad

    root = tmp_path_factory.mktemp("wavegrad")
    train = {"steps": 4, "log_every": 1, "ckpt_every": 0, "sample_every": 0, "progress": False, "threads": 1}
    cfg = tiny_wavegrad_config(root, train)
    result, _ = train_wavegrad(cfg, root / "run", snapshots=(0.0,), snapshot_weights=())
    assert result.status == "done"
    out = root / "run" / "samples" / "vocoded.wav"
    out.parent.mkdir(exist_ok=True)
    assert cli.main(["vocode", str(root / "run"), str(root / "speech" / "t1.wav"), "--steps", "3", "-o", str(out)]) == 0
    return root / "run"


def test_report_of_a_trained_run(run, tmp_path):
    out = write_report(run, tmp_path / "r" / "report.html")
    page = out.read_text()
    _self_contained(page)
    assert html.escape((run / "config.yaml").read_text()) in page  # the config, as written
    grids = sorted((run / "samples").glob("step_*.png"))
    assert [g.name for g in grids] == ["step_0000002.png", "step_0000004.png"]
    assert page.count("<img") == 2 and _data_uris(page, "image/png") == [g.read_bytes() for g in grids[::-1]]
    assert page.index("step 4 (step_0000004.png)") < page.index("step 2 (step_0000002.png)")  # latest first
    for title in CURVES:
        assert f'aria-label="{html.escape(title)} vs step"' in page
    assert page.count("<polyline") == len(CURVES) and "loss: " in page and " at step 4;" in page
    evaluation = json.loads((run / "eval.json").read_text())
    assert "Evaluation (eval.json)" in page and f"<td>{evaluation['fd']:.4g}</td>" in page
    for fact in ("<td>diffusion</td>", "<td>digits</td>", "<td>done</td>", "<td>4 of 4</td>", "parameters"):
        assert fact in page
    assert "No summary.json" not in page and "No metrics" not in page

    page = build_report(run, max_samples=1)
    assert page.count("<img") == 1 and "1 older sample file(s) not shown (max_samples=1)" in page


def test_a_partial_run_renders_and_says_what_is_missing(tmp_path):
    r = tmp_path / "partial"
    r.mkdir()
    (r / "config.yaml").write_text(dump_yaml({**CONFIG, "name": "<b>&'fresh'"}))
    page = build_report(r)
    _self_contained(page)
    for note in ("No summary.json", "No checkpoint yet", "No metrics.jsonl records yet", "No sample files"):
        assert note in page
    assert "&lt;b&gt;&amp;" in page and "<b>" not in page  # text is escaped

    # a run being written: a half line, a NaN loss, eval entries; an unreadable summary; score files
    lines = [json.dumps({"step": s, "loss": 1 / s, "lr": 1e-3, "fd": 5.0 / s}) for s in (1, 2, 3)]
    lines += ['{"step": 4, "loss": NaN}', '{"step": 5, "lo']
    (r / "metrics.jsonl").write_text("\n".join(lines))
    (r / "summary.json").write_text("{not json")
    (r / "samples").mkdir()
    for s in (10, 20):
        (r / "samples" / f"step_{s:07d}.json").write_text(json.dumps({"step": s, "recall_at_1": s / 40}))
    page = build_report(r)
    assert 'aria-label="fd vs step"' in page and 'aria-label="recall_at_1 vs step"' in page
    assert "1 non-finite left out" in page and "1 line(s) skipped" in page and "summary.json: unreadable" in page
    assert "score files" in page and "<img" not in page


def test_report_of_a_wavegrad_run_embeds_audio(wavegrad_run, tmp_path):
    page = write_report(wavegrad_run, tmp_path / "wg.html").read_text()
    _self_contained(page)
    wav = wavegrad_run / "samples" / "vocoded.wav"
    assert page.count("<audio controls") == 1 and _data_uris(page, "audio/wav") == [wav.read_bytes()]
    assert 'aria-label="val_mel_l1_6 vs step"' in page and "from snapshots/*.json" in page
    assert "<td>wavegrad</td>" in page and "Hz)" in page


def test_report_of_an_exported_model(tmp_path):
    run, model = tmp_path / "ardm", tmp_path / "model"
    tiny = ["train.steps=2", "model.unet.channels=8", "model.unet.channel_mult=[1]", "model.unet.num_blocks=1",
            "model.unet.attn_levels=[]", "model.unet.norm_groups=4", "data.batch_size=8"]  # fmt: skip
    assert cli.main(["ardm-train", "configs/ardm-digits.yaml", *tiny, "--out", str(run), "--no-progress"]) == 0
    assert cli.main(["ardm-export", str(run), str(model)]) == 0
    (model / "README.md").write_text("# Tiny ARDM\n\nTrained for 2 steps <on digits>.\n")
    page = write_report(model, tmp_path / "model.html").read_text()
    _self_contained(page)
    meta = json.loads((model / "format.json").read_text())
    assert "exported model" in page and "Model card" in page and "2 steps &lt;on digits&gt;" in page
    assert html.escape((model / "config.yaml").read_text()) in page and "model.safetensors" in page
    assert f"<td>{meta['parameters']:,}</td>" in page and "<td>ardm</td>" in page
    assert "Training curves" not in page and "<img" not in page


def test_cli_writes_the_page_and_gives_one_line_errors(run, tmp_path, capsys):
    assert cli.main(["report", str(run)]) == 0
    assert (run / "report.html").is_file() and f"wrote {run / 'report.html'}" in capsys.readouterr().out
    assert cli.main(["report", str(run), "--out", str(tmp_path / "x.html"), "--max-samples", "0"]) == 0
    assert "<img" not in (tmp_path / "x.html").read_text()  # and the earlier report.html is not embedded
    assert cli.main(["report", str(tmp_path / "missing")]) == 2
    assert "missing: no such folder" in _error(capsys)
    assert cli.main(["report", str(tmp_path / "x.html")]) == 2
    assert "not a folder" in _error(capsys)
    (tmp_path / "empty").mkdir()
    assert cli.main(["report", str(tmp_path / "empty")]) == 2
    assert "not a difflab run or model folder" in _error(capsys)
    assert not (tmp_path / "empty" / "report.html").exists()
    assert cli.main(["report", str(run), "--max-samples", "-1"]) == 2
    assert "must be an integer >= 0" in _error(capsys)


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _dom_after_load(browser: str, page: Path, profile: Path) -> tuple[str, str]:
    """The DOM that headless Chromium shows once ``page`` has loaded (and its scripts ran), and its <body> tag."""
    argv = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]  # fmt: skip
    for _ in range(3):  # on a busy machine the dump can come before the page's check has run: load again
        dom = subprocess.run(argv, capture_output=True, text=True, timeout=120).stdout
        if "data-images-loaded" in dom:
            break
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:500]
    return dom, body.group(0)


def test_the_page_loads_in_headless_chromium(run, wavegrad_run, tmp_path):
    """Chromium opens the file; after load, the page's script has marked every image decoded and the audio loaded."""
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing (make debian-data installs it)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    shutil.copy(wavegrad_run / "samples" / "vocoded.wav", folder / "vocoded.wav")
    frames = [Image.new("L", (16, 16), v) for v in (0, 128, 255)]
    frames[0].save(folder / "clips.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    t0 = time.perf_counter()
    dom, body = _dom_after_load(browser, write_report(folder, tmp_path / "page.html"), tmp_path / "profile")
    print(f"chromium: {time.perf_counter() - t0:.1f} s")
    assert 'data-images-loaded="true"' in body and 'data-images-decoded="3/3"' in body, body
    assert 'data-media-loaded="1/1"' in body, body  # the WAV's metadata decoded
    for heading in ("Summary", "Training curves", "Metrics vs step", "Samples over training", "Config", "Files"):
        assert f"<h2>{heading}</h2>" in dom
    assert dom.count("<svg") >= 4

    (folder / "samples" / "step_0000004.png").write_bytes(b"not a PNG")  # the check sees a broken image
    _, body = _dom_after_load(browser, write_report(folder, tmp_path / "page.html"), tmp_path / "profile")
    assert 'data-images-decoded="2/3"' in body and "data-images-loaded" not in body, body
