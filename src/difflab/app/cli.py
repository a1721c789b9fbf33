"""``difflab app``: serve the browser app (an entry of ``difflab.cli.COMMANDS``; Gradio and torch load lazily).

    difflab app                                   # http://127.0.0.1:7860, outputs in outputs/app
    difflab app --model runs/digits --model runs/base runs/sr --video runs/video --port 8000

``--model RUN [RUN ...]`` adds a model (several folders: a cascade, base first, or unCLIP's prior,
decoder and super-resolution stages); ``--video RUN`` adds a video stage. See docs/app.md.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

from ..argtypes import DEVICES, int_at_least

LOOPBACK = "127.0.0.1"


def _port(text: str) -> int:
    v = int_at_least(0)(text)
    if v > 65535:
        raise argparse.ArgumentTypeError(f"a port is at most 65535, got {v}")
    return v


def add_app(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=LOOPBACK, help="address to listen on (default: %(default)s, this machine only)")
    p.add_argument("--port", type=_port, default=7860, help="port (default: %(default)s; 0: any free port)")
    p.add_argument(
        "--out", default="outputs/app", metavar="DIR",
        help="output folder: results and uploads, the only files the app serves (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--model", action="append", nargs="+", default=[], metavar="RUN",
        help="add a model: a run folder (several: a cascade, base first, or unCLIP's prior, decoder and "
        "super-resolution runs); repeat for more",
    )  # fmt: skip
    p.add_argument("--video", action="append", default=[], metavar="RUN", help="add a video stage run; repeat for more")
    p.add_argument("--no-pretrained", action="store_true", help="offer only the --model and --video runs")
    p.add_argument("--device", choices=DEVICES, default="auto", help="device (default: %(default)s)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_app(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ValueError("difflab app needs Gradio: install the app extra, pip install 'difflab[app]'") from None
    from ..train.distributed import resolve_device
    from .models import Catalog, Models
    from .server import build, configure, launch

    out = configure(args.out)
    catalog = Catalog.build(args.model, args.video, pretrained=not args.no_pretrained)
    models = Models(device=str(resolve_device(args.device)))
    demo = build(catalog, models, out)
    if not _is_loopback(args.host):
        print(
            f"difflab: warning: --host {args.host}: anyone who can reach this address can use the app",
            file=sys.stderr,
        )
    _, url, _ = launch(demo, out, args.host, args.port, block=False)
    print(f"difflab app: {url} ({len(catalog.entries)} models; outputs in {out}); Ctrl+C stops it", flush=True)
    try:
        demo.block_thread()
    finally:
        demo.close()
    return 0
