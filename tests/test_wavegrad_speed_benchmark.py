"""benchmarks/wavegrad_speed.py: its baseline is the library's network written plainly, so the speed-up
it prints compares one function computed two ways."""

from __future__ import annotations

import torch

from difflab.methods.wavegrad.net import WaveGrad

BENCHMARK = "wavegrad_speed"  # benchmarks/wavegrad_speed.py, loaded by the `bench` fixture of conftest.py

TINY_MEL = dict(sample_rate=16000, n_fft=256, hop=64, win=256, n_mels=20, fmin=0.0, fmax=8000.0)
TINY = dict(factors=(2, 4, 8), in_channels=16, up_channels=(16, 16, 8), down_channels=(4, 8, 8), mel=TINY_MEL)


def test_network_equals_its_plain_definition_with_gradients(bench) -> None:
    """The network computes in a channels-last layout of height 1, up-samples after its first conv and
    sums in place; its output and every parameter's gradient equal the plain definition in float64."""
    torch.manual_seed(0)
    net = WaveGrad(TINY).double()
    frames = 5
    mel = torch.randn(2, 20, frames, dtype=torch.float64)
    z = torch.randn(2, 1, frames * 64, dtype=torch.float64)
    lam = torch.tensor([-3.0, 4.0], dtype=torch.float64)
    results = []
    for forward in (net, lambda *a: bench.plain_forward(net, *a)):
        net.zero_grad()
        out = forward(z, lam, mel)
        (out * torch.linspace(-1, 1, out.shape[-1], dtype=torch.float64)).sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in net.parameters()]))
    (got, got_grads), (want, want_grads) = results
    assert got.shape == (2, 1, frames * 64) and got.is_contiguous()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_benchmark_rows_compare_the_two_forms(bench) -> None:
    """A short run of the benchmark (tiny audio, one repeat) times both forms on the shipped vocoder and
    finds their outputs equal up to float rounding."""
    rows = bench.measure(threads=1, repeats=1, seconds=0.2)
    assert [r["what"] for r in rows] == ["call", "train", "vocode"]
    assert all(r["plain"] > 0 and r["library"] > 0 for r in rows)
    assert rows[0]["max_diff"] < 1e-3 and rows[2]["max_diff"] < 1e-3
    assert rows[2]["rtf"] > 0
