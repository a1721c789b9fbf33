"""Up-sampling convolutions in one step: the speed-up of :func:`difflab.nets.unet_blocks.upsample_conv`.

Run from the repository root::

    .venv/bin/python benchmarks/upsampling.py [--threads 1 --repeats 15]

Nearest-neighbour up-sampling followed by a 3-tap convolution is computed as one transposed
convolution (same parameters, same function). This prints, for each place that uses it, the
median time of the two-step reference and of the one-step form, run alternately in one process so
that machine noise hits both alike, and their ratio:

- ``unet-train``: a training step (forward, backward, AdamW) of the U-Net of
  ``benchmarks/training.py throughput`` at batch 64 on 1x28x28 (2-D, factor 2);
- ``wavegrad-call``: one network call of the shipped WaveGrad vocoder on 200 mel frames (3.2 s
  of audio at 16 kHz; 1-D, factors 4, 4, 4, 2, 2), whose up-sampling blocks also move their
  leaky ReLU and 1x1 skip before the up-sampling.

The outputs of both forms are compared too (largest absolute difference). It prints only.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import alternate  # noqa: E402
from difflab.methods.wavegrad import net as wavegrad_net  # noqa: E402
from difflab.nets import unet_blocks  # noqa: E402


def _two_step_upsample(self: unet_blocks.Upsample, x: torch.Tensor) -> torch.Tensor:
    return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _two_step_ublock(
    self: wavegrad_net.UBlock, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor
) -> torch.Tensor:
    conv = wavegrad_net.conv_rows  # the block computes in the layout of wavegrad_net.as_rows
    x = F.interpolate(x, scale_factor=(1, self.factor), mode="nearest")
    h = conv(F.leaky_relu(x, 0.2), self.convs[0])
    h = conv(F.leaky_relu(scale * h + shift, 0.2), self.convs[1])
    x = h + conv(x, self.skip)
    h = conv(F.leaky_relu(scale * x + shift, 0.2), self.convs[2])
    return x + conv(F.leaky_relu(scale * h + shift, 0.2), self.convs[3])


def _alternate(
    run: Callable[[], object], check: Callable[[], torch.Tensor], patches: dict[str, tuple[type, str, Callable]],
    repeats: int,
) -> dict[str, object]:  # fmt: skip
    """Median seconds of ``run`` with the reference forms patched in and with the library's own; the
    largest difference between the outputs of ``check`` (no state change) under both."""
    own = {name: getattr(cls, attr) for name, (cls, attr, _) in patches.items()}

    def use(reference: bool) -> None:
        for name, (cls, attr, ref) in patches.items():
            setattr(cls, attr, ref if reference else own[name])

    def form(reference: bool) -> Callable[[], object]:
        def timed() -> object:
            use(reference)
            return run()

        return timed

    try:
        use(True)
        reference_out = check()
        use(False)
        diff = float((reference_out - check()).abs().max())
        median = alternate({"two_step": form(True), "one_step": form(False)}, repeats)
    finally:
        use(False)
    two, one = median["two_step"], median["one_step"]
    return {"two_step_s": round(two, 4), "one_step_s": round(one, 4), "speedup": round(two / one, 3), "max_diff": diff}


def bench_unet(repeats: int) -> dict[str, object]:
    from difflab.diffusion import CosineSchedule, training_loss
    from difflab.nets import UNet, UNetConfig
    from training import DIFFLAB_CONFIG

    torch.manual_seed(0)
    net = UNet(UNetConfig(**DIFFLAB_CONFIG))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x, schedule = torch.rand(64, 1, 28, 28) * 2 - 1, CosineSchedule()

    def step() -> None:
        loss = training_loss(net, x, schedule, "v", "snr+1")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    probe = copy.deepcopy(net)  # its output layer starts at zero: give it weights, so the check sees something
    torch.nn.init.normal_(probe.out.weight, std=0.1)

    def forward() -> torch.Tensor:
        with torch.no_grad():
            return probe(x, torch.linspace(-5, 5, len(x)))

    return _alternate(step, forward, {"upsample": (unet_blocks.Upsample, "forward", _two_step_upsample)}, repeats)


def bench_wavegrad(repeats: int) -> dict[str, object]:
    import difflab

    vocoder = difflab.load("pretrained:wavegrad")
    net = vocoder.net.eval()
    frames = 200
    torch.manual_seed(0)
    mel, z = torch.randn(1, net.n_mels, frames), torch.randn(1, 1, frames * net.hop)

    def call() -> torch.Tensor:
        with torch.no_grad():
            return net(z, torch.zeros(1), mel)

    return _alternate(call, call, {"ublock": (wavegrad_net.UBlock, "forward", _two_step_ublock)}, repeats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=15, help="timed runs of each form (default: %(default)s)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for name, bench in (("unet-train", bench_unet), ("wavegrad-call", bench_wavegrad)):
        r = bench(args.repeats)
        print(
            f"{name}: two-step {r['two_step_s']} s, one-step {r['one_step_s']} s, speed-up {r['speedup']}x "
            f"(largest output difference {r['max_diff']:.2e}; {args.threads} thread(s), median of {args.repeats})",
            flush=True,
        )


if __name__ == "__main__":
    main()
