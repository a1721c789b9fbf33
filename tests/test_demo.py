"""The demo: files written, samplers converge, weights right, reproducible, guidance works."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from difflab.demo import DemoConfig, SlicedW2, ring_mixture, run_demo, weight_tv

DETERMINISTIC = ("ddim", "dpmpp_2m", "heun")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    printed = []
    metrics = run_demo(DemoConfig(out=out, n=600, steps=(2, 32), seed=0), log=printed.append)
    return out, metrics, "\n".join(printed)


def _run(metrics, sampler, steps):
    (row,) = [r for r in metrics["runs"] if r["sampler"] == sampler and r["steps"] == steps]
    return row


def _without_times(metrics):
    return {**metrics, "runs": [{k: v for k, v in r.items() if k != "time_s"} for r in metrics["runs"]]}


def test_writes_png_and_metrics(demo):
    out, metrics, printed = demo
    png = (out / "demo.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert str(out / "demo.png") in printed and str(out / "metrics.json") in printed
    assert len(metrics["runs"]) == 4 * 2
    for line in ("sampler", "ddpm", "heun", "classifier-free guidance"):
        assert line in printed


def test_heun_counts_two_evaluations_per_step_but_the_last(demo):
    _, metrics, _ = demo
    assert _run(metrics, "heun", 32)["nfe"] == 63
    assert _run(metrics, "ddim", 32)["nfe"] == 32


@pytest.mark.parametrize("sampler", DETERMINISTIC)
def test_deterministic_samplers_get_closer_with_more_steps(demo, sampler):
    _, metrics, _ = demo
    few, many = _run(metrics, sampler, 2), _run(metrics, sampler, 32)
    assert many["sw2"] < 0.5 * few["sw2"]
    assert many["ode_error"] < 0.3 * few["ode_error"]
    assert many["sw2"] < 0.1  # exact samples score ~0.03 at n=600; 2 steps score ~0.3


def test_stochastic_sampler_has_no_ode_error(demo):
    _, metrics, _ = demo
    assert _run(metrics, "ddpm", 32)["ode_error"] is None
    assert _run(metrics, "ddpm", 32)["sw2"] < 0.5 * _run(metrics, "ddpm", 2)["sw2"]


@pytest.mark.parametrize("sampler", ("ddpm", "ddim", "dpmpp_2m"))
def test_mixture_weights_are_right_with_many_steps(demo, sampler):
    _, metrics, _ = demo
    assert metrics["floor"]["weight_tv"] < 0.06  # n=600 exact samples
    assert _run(metrics, sampler, 32)["weight_tv"] < 0.08
    assert _run(metrics, sampler, 2)["weight_tv"] > 0.15  # two steps lose the weights: the check can fail


def test_same_seed_same_numbers_other_seed_other_numbers():
    cfg = dict(out=None, n=100, steps=(2, 6), samplers=("ddpm",), plot=False)  # ddpm: draws noise every step
    log = [].append
    a = _without_times(run_demo(DemoConfig(seed=3, **cfg), log=log))
    b = _without_times(run_demo(DemoConfig(seed=3, **cfg), log=log))
    c = _without_times(run_demo(DemoConfig(seed=4, **cfg), log=log))
    assert a == b
    assert a["runs"] != c["runs"]


def test_guidance_concentrates_on_the_chosen_component(demo):
    _, metrics, _ = demo
    runs = {(r["weight"], r["dynamic_threshold"]): r for r in metrics["guidance"]["runs"]}
    w0, w1, w3, w8 = (runs[(w, None)] for w in (0.0, 1.0, 3.0, 8.0))
    assert w0["in_class"] < 0.2  # unconditional: about the class weight 3/36
    assert w3["in_class"] > 0.99 and w1["in_class"] > 0.95
    assert w3["rms_to_class_mean"] < 0.2 * w0["rms_to_class_mean"]
    assert w3["rms_to_class_mean"] < w1["rms_to_class_mean"]  # w > 1 sharpens beyond the conditional
    # large weights push x_hat far outside the data range; dynamic thresholding keeps it within [-1, 1]
    thr = runs[(8.0, 0.995)]
    assert w8["max_abs_x_hat"] > 4.0
    assert thr["max_abs_x_hat"] <= 1.0 + 1e-9
    assert thr["in_class"] > 0.99


def test_sliced_w2_is_exact_for_a_shift():
    ref = ring_mixture().sample(500, torch.Generator().manual_seed(0))[0]
    sw2 = SlicedW2(ref)
    assert sw2(ref) < 1e-12
    # shifting by d along x moves each projection by d cos(theta): SW2 = d sqrt(mean cos^2) = d / sqrt(2)
    assert sw2(ref + torch.tensor([0.3, 0.0], dtype=torch.float64)) == pytest.approx(0.3 / math.sqrt(2), rel=1e-9)
    assert sw2(ref[::2]) < 0.05  # a subsample is close to its reference


def test_weight_tv():
    mix = ring_mixture()
    assert weight_tv(mix, torch.zeros(100, dtype=torch.long)) == pytest.approx(1 - 1 / 36)
    exact = torch.cat([torch.full((k + 1,), k) for k in range(8)])  # frequencies 1:2:...:8
    assert weight_tv(mix, exact) < 1e-12


@pytest.mark.parametrize(
    "kwargs, needle",
    [({"n": 5}, "n must"), ({"steps": (0,)}, "steps"), ({"steps": ()}, "steps"), ({"samplers": ("x",)}, "sampler")],
)
def test_bad_settings_are_value_errors(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        run_demo(DemoConfig(out=None, **kwargs), log=[].append)


def test_progress_bar_and_missing_matplotlib(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    printed = []
    cfg = DemoConfig(out=tmp_path, n=20, steps=(1,), samplers=("ddim",), progress=True)
    run_demo(cfg, log=printed.append)
    assert (tmp_path / "metrics.json").exists() and not (tmp_path / "demo.png").exists()
    assert any("difflab[plot]" in line for line in printed)
    assert "demo" in capsys.readouterr().err  # the tqdm bar
