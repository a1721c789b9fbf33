"""WaveGrad speed: the library's network against its plain definition, and the vocoder's real-time factor.

Run from the repository root::

    .venv/bin/python benchmarks/wavegrad_speed.py [--threads 2 --repeats 9 --seconds 5.5]

The network (src/difflab/methods/wavegrad/net.py) computes in a channels-last layout of height 1,
runs each UBlock's first conv and skip before the up-sampling, and sums into convolution outputs
in place. :func:`plain_forward` is the same function written as the paper draws it: (B, C, L)
signals, ``F.conv1d``, up-sampling first, no in-place operation. Both forms are run alternately in
one process, so that machine noise hits both alike, and the median times and their ratio printed:

- ``call``: one network call on ``--seconds`` of audio (the shipped vocoder's weights, no grad);
- ``train``: one training step, forward and backward, at ``configs/wavegrad-small.yaml``'s batch
  (16 clips of 24 frames);
- ``vocode``: 6-step vocoding of the same mel by the shipped vocoder, with its real-time factor
  (seconds of compute per second of audio).

The largest output difference between the two forms is printed too. It prints only; the
real-time factors of docs/RESULTS.md come from benchmarks/wavegrad.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import MALLOC, alternate  # noqa: E402  (difflab's command keeps freed memory: so does this benchmark)
from difflab.methods.wavegrad.net import WaveGrad, noise_encoding  # noqa: E402


def plain_forward(net: WaveGrad, z: torch.Tensor, lam: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
    """``net(z, lam, mel)`` written plainly with ``net``'s parameters (the baseline of this benchmark
    and the reference of tests/test_wavegrad_speed_benchmark.py)."""

    def conv(x: torch.Tensor, c: torch.nn.Conv1d) -> torch.Tensor:
        return F.conv1d(x, c.weight, c.bias, c.stride, c.padding, c.dilation)

    def act(x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, 0.2)

    mel = mel["mel"] if isinstance(mel, dict) else mel
    feats = [conv(z, net.wave_in)]
    for block in net.downs:
        x = conv(feats[-1], block.down)
        h = x
        for c in block.convs:
            h = conv(act(h), c)
        feats.append(h + conv(x, block.skip))
    level, x, n = torch.sigmoid(lam.float()).sqrt(), conv(mel.to(z.dtype), net.mel_in), len(net.ups)
    for i, up in enumerate(net.ups):
        film = net.films[n - 1 - i]
        enc = noise_encoding(level, film.c_in).reshape(len(z), -1, 1).to(z.dtype)
        h = act(conv(feats[n - 1 - i] + enc, film.inp))
        scale, shift = conv(h, film.scale), conv(h, film.shift)
        x = F.interpolate(x, scale_factor=up.factor, mode="nearest")
        h = conv(act(scale * conv(act(x), up.convs[0]) + shift), up.convs[1])
        x = h + conv(x, up.skip)
        h = conv(act(scale * conv(act(scale * x + shift), up.convs[2]) + shift), up.convs[3])
        x = x + h
    return conv(act(x), net.out)


def measure(threads: int, repeats: int, seconds: float) -> list[dict[str, object]]:
    import difflab

    torch.set_num_threads(threads)
    vocoder = difflab.load("pretrained:wavegrad")
    net = vocoder.net.eval()
    frames = round(seconds * vocoder.mel_config.sample_rate / net.hop)
    torch.manual_seed(0)
    mel = torch.randn(1, net.n_mels, frames) * 0.5 - 4.0
    z, lam = torch.randn(1, 1, frames * net.hop), torch.zeros(1)
    rows = []

    with torch.no_grad():
        diff = float((net(z, lam, mel) - plain_forward(net, z, lam, mel)).abs().max())
        t = alternate({"plain": lambda: plain_forward(net, z, lam, mel), "library": lambda: net(z, lam, mel)}, repeats)
    rows.append({"what": "call", **t, "max_diff": diff})

    train_net = WaveGrad(net.config.to_dict())
    train_net.load_state_dict(net.state_dict())
    batch = (torch.randn(16, net.n_mels, 24), torch.randn(16, 1, 24 * net.hop), torch.randn(16))

    def step(forward: Callable) -> Callable[[], None]:
        def run() -> None:
            train_net.zero_grad(set_to_none=True)
            forward(batch[1], batch[2], batch[0]).abs().mean().backward()

        return run

    t = alternate({"plain": step(lambda *a: plain_forward(train_net, *a)), "library": step(train_net)}, repeats)
    rows.append({"what": "train", **t})

    library_forward = WaveGrad.forward
    audio = frames * net.hop / vocoder.mel_config.sample_rate

    def vocode(plain: bool) -> Callable[[], object]:
        def run() -> object:
            WaveGrad.forward = plain_forward if plain else library_forward
            try:
                return vocoder(mel[0], steps=6)
            finally:
                WaveGrad.forward = library_forward

        return run

    diff = float((vocode(True)() - vocode(False)()).abs().max())
    t = alternate({"plain": vocode(True), "library": vocode(False)}, max(3, repeats // 3))
    rows.append({"what": "vocode", **t, "max_diff": diff, "rtf_plain": t["plain"] / audio, "rtf": t["library"] / audio})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=9, help="timed runs of each form (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=5.5, help="audio length of the call and vocode rows (%(default)s)")
    args = p.parse_args()
    print(f"{args.threads} torch thread(s), load average {os.getloadavg()[0]:.2f} at start, malloc {MALLOC}")
    for r in measure(args.threads, args.repeats, args.seconds):
        line = f"{r['what']}: plain {r['plain'] * 1e3:.1f} ms, library {r['library'] * 1e3:.1f} ms, "
        line += f"speed-up {r['plain'] / r['library']:.2f}x"
        if "rtf" in r:
            line += f"; RTF {r['rtf_plain']:.3f} -> {r['rtf']:.3f}"
        if "max_diff" in r:
            line += f" (largest output difference {r['max_diff']:.1e})"
        print(line)


if __name__ == "__main__":
    main()
