"""``difflab app`` end to end: the real command serves tiny models, headless Chromium (Playwright, the Debian
``chromium``) clicks through every tab, uploads bad files, and asks for files outside the output folder."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from app_models import tiny_models, write_tone

CI = os.environ.get("CI") == "true"
TIMEOUT_MS = 60_000


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """``difflab app`` on a free port of 127.0.0.1 with the tiny models only; its output folder."""
    runs = tiny_models(tmp_path_factory)
    root = tmp_path_factory.mktemp("app")
    out, port = root / "out", _free_port()
    argv = [sys.executable, "-m", "difflab", "app", "--port", str(port), "--out", str(out), "--no-pretrained",
            "--device", "cpu", "--video", str(runs["video"])]  # fmt: skip
    for name in ("image", "student", "ardm", "wavegrad"):
        argv += ["--model", str(runs[name])]
    log = open(root / "app.log", "w")  # noqa: SIM115 (closed at teardown)
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"difflab app exited with {proc.returncode}: {(root / 'app.log').read_text()[-2000:]}")
            try:
                if _get(url)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"difflab app did not answer in 120 s: {(root / 'app.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield {"url": url, "out": out, "root": root, "runs": runs, "log": root / "app.log"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def page(app):
    """One headless Chromium page on the app (Playwright driving the system's chromium: nothing downloaded)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if CI:
            pytest.fail("playwright is missing (the dev extra installs it)")
        pytest.skip("playwright is not installed (pip install playwright)")
    browser_path = _chromium()
    if browser_path is None:
        if CI:
            pytest.fail("chromium is missing (make debian-data installs it)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=browser_path, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        pg = browser.new_page(viewport={"width": 1280, "height": 1600})
        pg.set_default_timeout(TIMEOUT_MS)
        app["requests"] = []
        pg.on("request", lambda r: app["requests"].append(r.url))
        pg.goto(app["url"])
        pg.wait_for_selector("#sample-run")
        yield pg
        browser.close()


def _field(page, elem_id: str):
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def _upload(page, elem_id: str, path: Path) -> None:
    """Upload ``path`` into the file component ``elem_id`` and wait until the page shows it."""
    clear = page.locator(f"#{elem_id} button[aria-label='Clear']")
    if clear.count():  # a file shown from before: remove it, which brings the file input back
        clear.first.click()
    page.set_input_files(f"#{elem_id} input[type=file]", str(path))
    page.locator(f"#{elem_id} a[download='{path.name}']").wait_for()  # uploaded: the page links the stored copy


def _message(page, text: str) -> str:
    """The error message shown in the page that contains ``text`` (waits for it)."""
    found = page.get_by_text(text).first
    found.wait_for()
    return found.inner_text()


def _loaded(page, selector: str) -> None:
    """Wait until the image at ``selector`` has loaded and has pixels."""
    page.wait_for_function(
        "s => { const i = document.querySelector(s); return i && i.complete && i.naturalWidth > 0; }", arg=selector
    )


def test_sample_tab_draws_a_grid(page):
    _field(page, "sample-steps").fill("2")
    _field(page, "sample-words").fill("3")
    page.click("#sample-run")
    _loaded(page, "#sample-image img")
    info = _field(page, "sample-info")
    page.wait_for_function("e => e.value.length > 0", arg=info.element_handle())
    assert re.search(r"^4 image\(s\) of .*image, ddim, 2 steps, seed 0, labels 3 3 3 3: [\d.]+ s$", info.input_value())


def test_distilled_tab_shows_both_with_wall_times(page):
    _tab(page, "Distilled vs teacher")
    page.click("#distilled-run")
    _loaded(page, "#distilled-student img")
    _loaded(page, "#distilled-teacher img")
    page.wait_for_function(
        "e => e.value !== '' && e.value !== '0'", arg=_field(page, "distilled-t-time").element_handle()
    )
    student, teacher = (float(_field(page, f"distilled-{k}-time").input_value()) for k in ("s", "t"))
    assert student > 0 and teacher > 0
    assert "ddim 2 steps" in _field(page, "distilled-info").input_value()


def test_compress_tab_codes_an_upload_losslessly(page, app):
    from difflab.data import get_dataset

    png = app["root"] / "digit.png"
    Image.fromarray(get_dataset("digits", "test", discrete=True)[5][0][0].numpy()).save(png)
    _tab(page, "Compress")
    _upload(page, "compress-file", png)
    page.click("#compress-run")
    _loaded(page, "#compress-decoded img")
    assert _field(page, "compress-equal").input_value() == "yes, the decoded image equals the input pixel for pixel"
    table = page.inner_text("#compress-table")
    for codec in ("ARDM (this model)", "PNG", "JPEG-XL lossless"):
        assert re.search(rf"{re.escape(codec)}\s+\d+\s+\d+\.\d{{3}}", table), table
    assert "64 network calls" in _field(page, "compress-info").input_value()  # 98 asked, all 64 of an 8x8 image
    assert list(app["out"].glob("uploads/*/digit.png")), "the upload is stored under --out"


def test_vocode_tab_plays_original_wavegrad_and_griffin_lim(page, app):
    tone = write_tone(app["root"] / "tone.wav", seconds=0.8)
    _tab(page, "Vocode")
    _upload(page, "vocode-file", tone)
    page.click("#vocode-run")
    info = _field(page, "vocode-info")
    page.wait_for_function("e => e.value.includes('real-time factor')", arg=info.element_handle())
    assert info.input_value().startswith("tone.wav: 0.80 s at 16000 Hz; WaveGrad 6 steps")
    for player in ("original", "wavegrad", "griffin-lim"):
        box = page.locator(f"#vocode-{player}")
        box.get_by_text("0:01").wait_for()  # the player decoded the audio: its length, 0.8 s, rounded
        href = box.locator("a[download]").get_attribute("href")
        assert href.endswith(f"/{player}.wav") and str(app["out"]) in href
        status, body = _get(href)
        assert status == 200 and body[:4] == b"RIFF" and len(body) == 44 + 2 * 12800  # 0.8 s, 16-bit at 16 kHz


def test_video_tab_shows_a_playable_clip(page):
    _tab(page, "Video")
    page.click("#video-run")
    page.wait_for_function(
        "() => { const v = document.querySelector('#video-output video');"
        " return v && v.readyState >= 1 && v.duration > 0; }"
    )
    _loaded(page, "#video-frames img")
    assert "1 clip(s) of 4 frames" in _field(page, "video-info").input_value()


def test_bad_inputs_get_a_message_not_a_traceback(page, app):
    bad = app["root"] / "notes.png"
    bad.write_text("not an image at all\n")
    _tab(page, "Compress")
    _upload(page, "compress-file", bad)
    page.click("#compress-run")
    assert (
        _message(page, "is not an image file")
        == "image: notes.png is not an image file this app can read (PNG, BMP, GIF, TIFF ...)"
    )
    broken = app["root"] / "broken.wav"
    broken.write_bytes(b"RIFF\x10\0\0\0WAVEfmt not really audio")
    _tab(page, "Vocode")
    _upload(page, "vocode-file", broken)
    page.click("#vocode-run")
    assert _message(page, "not readable audio").startswith("audio: broken.wav: not readable audio")
    _tab(page, "Sample")
    _field(page, "sample-steps").fill("1000")
    page.click("#sample-run")
    assert _message(page, "over the limit") == "steps: 1000 is over the limit of 256"
    html = page.content()
    assert "Traceback" not in html and 'File "' not in html
    assert "Traceback" not in app["log"].read_text()  # refused inputs are not server errors either


def test_only_the_output_folder_is_served(app):
    base = app["url"] + "gradio_api/file="
    grid = next(app["out"].glob("sample/*/grid.png"))
    status, body = _get(base + str(grid))
    assert status == 200 and body == grid.read_bytes()
    for outside in ("/etc/passwd", str(Path("pyproject.toml").resolve()), f"{app['out']}/../app.log",
                    str(app["runs"]["image"] / "config.yaml")):  # fmt: skip
        status, body = _get(base + outside)
        assert status == 403 and b"root:" not in body, (outside, status)
    status, body = _get(app["url"] + "file=/etc/passwd")  # the route without its prefix: the page, not the file
    assert b"root:x:" not in body


def test_the_page_loads_nothing_from_other_hosts(page, app):
    urls = [u for u in app["requests"] if not u.startswith(("data:", "blob:"))]
    assert len(urls) > 20 and all(u.startswith(app["url"]) for u in urls), [u for u in urls if app["url"] not in u]


def test_an_upload_over_the_size_limit_is_refused_before_it_is_stored(app):
    body = b"--b\r\nContent-Disposition: form-data; name=files; filename=big.wav\r\n\r\n"
    body += b"\0" * (8 * 2**20 + 1) + b"\r\n--b--\r\n"
    request = urllib.request.Request(
        app["url"] + "gradio_api/upload", data=body, headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    assert status == 413 and not list(app["out"].glob("uploads/*/big.wav"))
