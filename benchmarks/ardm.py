"""ARDM lossless codec benchmark (issue 5; Hoogeboom et al. 2022): docs/results/ardm.json.

Codes the first ``--images`` Fashion-MNIST test images, each on its own, with difflab's ARDM codec
(``difflab.methods.ardm.codec``: rANS from ``constriction``) and with PNG, WebP lossless, JPEG-XL
lossless and gzip; checks that every image decodes exactly; times encoding and decoding per image;
estimates the model's NLL on the same images; and tabulates NLL against the number of parallel
network calls (DP plan vs uniform segments) for the OA-ARDM and the Upscale ARDMs, either from the
``eval.json`` files that ``scripts/gpu/ardm.sh`` wrote (``--parallel-from``) or computed here.

    .venv/bin/python benchmarks/ardm.py --model outputs/gpu/ardm-fmnist/oa \\
        --parallel-from outputs/gpu/ardm-fmnist/oa/eval.json outputs/gpu/ardm-fmnist/up4/eval.json \\
        outputs/gpu/ardm-fmnist/up2/eval.json --budget 98 --images 1000

``--budget K`` codes with K network calls per image (the DP plan; needs the model's per-step losses):
on a 2-core CPU the full 784 calls per image take hours for 1,000 images, K = D/8 = 98 about 40 minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from difflab.methods.ardm.baselines import baseline_sizes

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, machine_info, write_result  # noqa: E402


def parallel_sources(paths: list[str]) -> dict[str, str]:
    """How each ``--parallel-from`` evaluation was made: images, orders, and its commands where it records them."""
    out = {}
    for path in paths:
        res = json.loads(Path(path).read_text())
        what = [
            f"model NLL on {res.get('images', '?')} test images x {res.get('orders', '?')} orders, parallel rows on "
            f"the first {res.get('parallel_images', res.get('images', '?'))}"
        ]
        what += [f"{k}: `{res[k]}`" for k in ("train", "command") if res.get(k)]
        out[str(path)] = "; ".join(what)
    return out


def parallel_rows(args: argparse.Namespace, model, x: torch.Tensor) -> list[dict]:
    rows = []
    if args.parallel_from:
        for path in args.parallel_from:
            res = json.loads(Path(path).read_text())
            name = res.get("model") or Path(path).parent.name
            label = {1: "OA-ARDM"}.get(res.get("stages"), f"Upscale ARDM ({res.get('stages')} stages)")
            for r in res.get("parallel", []):
                rows.append({"model": f"{name}: {label}", "steps": r["steps"], "nll_bpd_dp": r["nll_bpd_dp"],
                             "nll_bpd_uniform": r["nll_bpd_uniform"], "source": str(path)})  # fmt: skip
        return rows
    from difflab.methods.ardm.objective import estimate_nll, step_losses
    from difflab.methods.ardm.parallel import make_plans

    losses = model.step_losses or step_losses(model, x[-500:], grid=32, device=args.device)
    xp = x[: args.parallel_images]
    for k in sorted({*args.budgets, model.D * model.num_stages}):
        row = {"model": "OA-ARDM" if model.num_stages == 1 else "Upscale ARDM", "steps": k}
        for kind in ("dp", "uniform"):
            plans = make_plans(kind, k, model.D, losses, model.num_stages)
            est = estimate_nll(model, xp, orders=args.orders, plans=plans, seed=2, device=args.device)
            row[f"nll_bpd_{kind}"] = est["bpd"]
        rows.append(row)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="ARDM model folder (e.g. the GPU run's exported oa/)")
    p.add_argument("--images", type=int, default=1000, help="first N Fashion-MNIST test images")
    p.add_argument("--budget", type=int, help="network calls per image for the codec (DP plan); default: all D")
    p.add_argument("--group", type=int, default=100, help="images per network call")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the same for encoding and decoding)")
    p.add_argument("--device", default="cpu", help="where the network runs (cuda: deterministic cuDNN, no TF32)")
    p.add_argument("--orders", type=int, default=4, help="random orders per image for the NLL estimate")
    p.add_argument("--parallel-from", nargs="*", help="eval.json files of scripts/gpu/ardm.sh (parallel table)")
    p.add_argument(
        "--budgets", type=int, nargs="*", default=[8, 16, 32, 49, 98, 196, 392], help="without --parallel-from"
    )
    p.add_argument("--parallel-images", type=int, default=200, help="without --parallel-from")
    p.add_argument("--text-eval", help="ardm-eval JSON of the text model (bits per character) to include")
    p.add_argument("--no-write", action="store_true", help="print, do not write docs/results/ardm.json")
    p.add_argument("--json", help="write the result to this file instead of docs/results/ardm.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from difflab.data import get_dataset
    from difflab.methods.ardm.codec import _HEAD, compress, decompress, payload_bits, read_header
    from difflab.methods.ardm.objective import estimate_nll
    from difflab.methods.ardm.train import load_ardm

    if args.device.startswith("cuda"):
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    model = load_ardm(args.model, device=args.device)
    imgs = torch.from_numpy(np.array(get_dataset("fashion-mnist", "test", discrete=True).images[: args.images]))
    n, d = len(imgs), model.D
    x = imgs.reshape(n, -1).long()
    print(f"model {args.model}: {model.summary()}; {n} images", flush=True)

    t0 = time.perf_counter()
    nll = estimate_nll(model, x, orders=args.orders, batch_size=args.group, seed=0, device=args.device)
    print(f"NLL {nll['bpd']:.4f} +- {nll['se']:.4f} bpd ({time.perf_counter() - t0:.0f} s)", flush=True)

    plan = "dp" if args.budget else "full"
    order_bits: list[float] = []
    t0 = time.perf_counter()
    data = compress(model, imgs, plan=plan, budget=args.budget, group=args.group, nll_bits=order_bits)
    t_enc = time.perf_counter() - t0
    print(f"encoded {len(data):,} bytes in {t_enc:.0f} s", flush=True)
    t0 = time.perf_counter()
    back = decompress(model, data)
    t_dec = time.perf_counter() - t0
    exact = bool(torch.equal(back, imgs))
    print(f"decoded in {t_dec:.0f} s; exact: {exact}", flush=True)
    header = _HEAD.size + 4 + 4  # file header + its checksum + the file checksum, once per file
    payload, ideal = sum(payload_bits(data)), sum(order_bits)
    sizes, times = baseline_sizes(imgs[:, 0].numpy())
    times["difflab"] = {"encode_ms": 1000 * t_enc / n, "decode_ms": 1000 * t_dec / n}
    codec_bpd = {"difflab": 8 * len(data) / (n * d)}
    names = ("png", "webp", "jpegxl", "gzip")
    codec_bpd.update({k: 8 * sum(sizes[k]) / (n * d) if k in sizes else None for k in names})
    res = {
        "command": command_line("benchmarks/ardm.py"),
        "machine": machine_info(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "images": n,
        "nll_bpd": nll["bpd"],
        "nll_bpd_se": nll["se"],
        "codec_bpd": codec_bpd,
        "roundtrip_exact": exact,
        "parallel": parallel_rows(args, model, x),
        "parallel_sources": parallel_sources(args.parallel_from or []),
        "codec_budget": args.budget or d * model.num_stages,
        "codec_plan": plan,
        "codec_order_nll_bpd": ideal / (n * d),
        "codec_payload_bpd": payload / (n * d),
        "codec_overhead_bpd": (8 * len(data) - ideal) / (n * d),
        # the target: coded size within 1% of the order's NLL, plus a fixed header (here the file
        # header and the table of payload lengths, which a file holding one image would not need)
        "codec_payload_overhead_pct": 100 * (payload - ideal) / ideal,
        "codec_file_overhead_pct": 100 * (8 * len(data) - ideal) / ideal,
        "file_header_bytes": header,
        "length_table_bytes": len(data) - header - payload // 8,
        "seed": read_header(data)["seed"],
        "timing_ms_per_image": times,
        "threads": args.threads,
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "model": {
            "path": str(args.model),
            "summary": model.summary(),
            "parameters": sum(p.numel() for p in model.parameters()),
        },  # fmt: skip
    }
    if args.text_eval:
        t = json.loads(Path(args.text_eval).read_text())
        res["text"] = {"bits_per_char": t["nll_bpd"], "se": t["nll_bpd_se"], "windows": t["images"],
                       "seq_len": t["D"], "parallel": t.get("parallel", [])}  # fmt: skip
    print(json.dumps({k: v for k, v in res.items() if k != "machine"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    elif not args.no_write:
        print(f"wrote {write_result('ardm', res)}")
    return 0 if exact else 1


def _f(v: float | None, nd: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def render_ardm(data: dict) -> str:
    """docs/RESULTS.md section of docs/results/ardm.json."""
    from report import provenance, table

    n, cb, t = data["images"], data["codec_bpd"], data.get("timing_ms_per_image", {})
    out = ["## Autoregressive diffusion models: lossless compression", "", provenance(data), ""]
    out += [
        f"First {n:,} Fashion-MNIST test images, each coded on its own (difflab: one `.ardm` file, "
        f"{data.get('file_header_bytes', '?')} bytes of file header, "
        "a table of payload lengths"
        + (f" ({_f(8 * data['length_table_bytes'] / n, 1)} bits per image)" if "length_table_bytes" in data else "")
        + ", and per image its rANS payload). "
        f"Model: {data.get('model', {}).get('summary', '?')}. Coding order fixed by the "
        f"header's seed; {data.get('codec_budget')} network calls per image ({data.get('codec_plan')} plan). "
        f"Every image decoded exactly: {'yes' if data['roundtrip_exact'] else 'NO'}.",
        "",
    ]
    rows = [["difflab ARDM", _f(cb["difflab"]), _f(t.get("difflab", {}).get("encode_ms"), 1),
             _f(t.get("difflab", {}).get("decode_ms"), 1)]]  # fmt: skip
    names = {"png": "PNG", "webp": "WebP lossless", "jpegxl": "JPEG-XL lossless", "gzip": "gzip"}
    for k, label in names.items():
        rows.append([label, _f(cb.get(k)), _f(t.get(k, {}).get("encode_ms"), 2), _f(t.get(k, {}).get("decode_ms"), 2)])
    out += [table(["codec", "bits per dimension", "encode ms / image", "decode ms / image"], rows), ""]
    out += [
        f"Model NLL on these images: {_f(data['nll_bpd'])} +- {_f(data.get('nll_bpd_se'))} bpd (random orders, all "
        f"steps); NLL of the coding order and plan: {_f(data.get('codec_order_nll_bpd'))} bpd; file size minus that "
        f"NLL: {_f(data.get('codec_overhead_bpd'))} bpd"
        + (
            f" ({_f(data['codec_file_overhead_pct'], 2)}%; the payloads alone are "
            f"{_f(data['codec_payload_overhead_pct'], 2)}% above the NLL, the rest is the table of payload "
            "lengths and the file header)."
            if "codec_payload_overhead_pct" in data
            else "."
        ),
        "",
        "### NLL against parallel network calls (DP plan vs uniform segments)",
        "",
        *(
            [f"From the evaluations in {', '.join(f'`{x}`' for x in srcs)} (test split, random orders).", ""]
            if (srcs := sorted({r["source"] for r in data["parallel"] if r.get("source")}))
            else []
        ),
        *[f"- `{src}`: {how}" for src, how in data.get("parallel_sources", {}).items()],
        *([""] if data.get("parallel_sources") else []),
        *([f"Rows added later: {data['parallel_added']}.", ""] if data.get("parallel_added") else []),
        table(
            ["model", "network calls", "NLL bpd, DP plan", "NLL bpd, uniform"],
            [[r["model"], r["steps"], _f(r["nll_bpd_dp"]), _f(r["nll_bpd_uniform"])] for r in data["parallel"]],
        ),
        "",
    ]
    if "text" in data:
        tx = data["text"]
        out += [
            "### Text: character-level OA-ARDM",
            "",
            f"Asterisk prompt transcripts (Debian asterisk-core-sounds-en), {tx['windows']} test windows of "
            f"{tx['seq_len']} characters: {_f(tx['bits_per_char'])} +- {_f(tx['se'])} bits per character.",
            "",
        ]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
