"""First-response latency of ``difflab app`` per tab, measured in headless Chromium.

Starts ``difflab app`` (the shipped pretrained models, plus any ``--model`` / ``--video`` runs) on a free
port of 127.0.0.1, opens it with Playwright driving the system's Chromium, and for each tab clicks its
button once with the page's default settings and times the click until the output is shown (an image,
the audio players, the video). That first click includes loading the model. Prints one JSON object
{tab: seconds}; null for a tab with no model (e.g. video, until a video model ships: pass --video RUN).

    .venv/bin/python benchmarks/app_latency.py
    .venv/bin/python benchmarks/app_latency.py --video runs/video --model runs/distilled/steps-0004

Tabs: sample (the first sampling model, 4 images at its own settings), sample-text-to-image (the
pretrained text-to-image cascade, one prompt, 4 images), distilled (the first distilled model and its
teacher), compress (a Fashion-MNIST test image with the first ARDM, the page's 98 network calls),
vocode (the default sentence spoken by espeak-ng, 6 WaveGrad steps and Griffin-Lim), video (one clip).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

TIMEOUT_MS = 600_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(argv: list[str], log: Path, timeout: float = 180) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "difflab", "app", "--port", str(port), *argv]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"difflab app exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit(f"difflab app did not answer in {timeout:.0f} s")


def choose(page, elem_id: str, name: str) -> None:
    """Pick ``name`` in the dropdown ``elem_id``."""
    box = page.locator(f"#{elem_id} input")
    box.click()
    box.fill(name)
    page.get_by_role("option", name=name, exact=True).click()
    page.wait_for_function("([s, v]) => document.querySelector(s).value === v", arg=[f"#{elem_id} input", name])


def timed(page, button: str, ready: str, arg: object = None) -> float:
    """Seconds from clicking ``button`` until the JavaScript predicate ``ready`` (of ``arg``) holds."""
    t0 = time.perf_counter()
    page.click(button)
    page.wait_for_function(ready, arg=arg, timeout=TIMEOUT_MS)
    return round(time.perf_counter() - t0, 2)


def new_image(page, button: str, selector: str) -> float:
    """:func:`timed` until the image at ``selector`` is another one than before the click, and has loaded."""
    before = page.evaluate("s => { const i = document.querySelector(s); return i ? i.src : null; }", selector)
    ready = (
        "([s, old]) => { const i = document.querySelector(s);"
        " return i && i.src !== old && i.complete && i.naturalWidth > 0; }"
    )
    return timed(page, button, ready, [selector, before])


INFO = "() => document.querySelector('#vocode-info textarea, #vocode-info input').value.includes('factor')"
VIDEO = "() => { const v = document.querySelector('#video-output video'); return v && v.readyState >= 1; }"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", nargs="+", default=[], metavar="RUN", help="extra runs for the app")
    p.add_argument("--video", action="append", default=[], metavar="RUN", help="video runs for the app")
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium", help="browser binary")
    args = p.parse_args()

    from playwright.sync_api import sync_playwright

    from difflab.app.models import Catalog

    catalog = Catalog.build(args.model, args.video)
    work = Path(tempfile.mkdtemp(prefix="app-latency-"))
    argv = ["--out", str(work / "out")]
    for runs in args.model:
        argv += ["--model", *runs]
    for run in args.video:
        argv += ["--video", run]
    from PIL import Image

    from difflab.data import get_dataset

    image = work / "fashion.png"
    Image.fromarray(get_dataset("fashion-mnist", "test", discrete=True)[0][0][0].numpy()).save(image)
    proc, url = start(argv, work / "app.log")
    result: dict[str, float | None] = {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=args.chromium, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
            )
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.set_default_timeout(TIMEOUT_MS)
            t0 = time.perf_counter()
            page.goto(url)
            page.wait_for_selector("#sample-run")
            result["page"] = round(time.perf_counter() - t0, 2)

            result["sample"] = new_image(page, "#sample-run", "#sample-image img") if catalog.names("sample") else None
            if "text-to-image" in catalog.names("sample"):
                choose(page, "sample-model", "text-to-image")
                page.locator("#sample-words textarea, #sample-words input").first.fill("a red bag at the top left")
                result["sample-text-to-image"] = new_image(page, "#sample-run", "#sample-image img")
            page.get_by_role("tab", name="Distilled vs teacher").click()
            result["distilled"] = (
                new_image(page, "#distilled-run", "#distilled-teacher img") if catalog.names("distilled") else None
            )
            page.get_by_role("tab", name="Compress").click()
            if catalog.names("compress"):
                page.set_input_files("#compress-file input[type=file]", str(image))
                page.locator(f"#compress-file a[download='{image.name}']").wait_for()
                result["compress"] = new_image(page, "#compress-run", "#compress-decoded img")
            else:
                result["compress"] = None
            page.get_by_role("tab", name="Vocode").click()
            result["vocode"] = timed(page, "#vocode-run", INFO) if catalog.names("vocode") else None
            page.get_by_role("tab", name="Video").click()
            result["video"] = timed(page, "#video-run", VIDEO) if catalog.names("video") else None
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
