import math

import pytest
import torch

from difflab.analytic import Gaussian, GaussianMixture, known_coordinates_experiment
from difflab.diffusion import (
    CosineSchedule,
    cat_cond,
    cfg,
    classifier_guidance,
    ddim,
    ddpm,
    dynamic_threshold,
    dynamic_threshold_x,
    reconstruction_guidance,
    replacement,
    static_threshold,
)

COMPS = [Gaussian([-1.5, 0.0], [[0.3, 0.0], [0.0, 0.3]]), Gaussian([1.5, 0.5], [[0.2, 0.05], [0.05, 0.4]])]
MIX = GaussianMixture([0.4, 0.6], COMPS)
NULL = torch.full((64,), -1)  # GaussianMixture's null label: the unconditional mixture


def _z_lam(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g, dtype=torch.float64) * 2, torch.linspace(-4, 4, n, dtype=torch.float64)


def test_cfg_weight_one_is_conditional_and_zero_unconditional():
    z, lam = _z_lam()
    labels = torch.randint(0, 2, (64,), generator=torch.Generator().manual_seed(1))
    cond = MIX.denoise(z, lam, labels)
    assert torch.allclose(cfg(MIX.denoise, 1.0, NULL)(z, lam, labels), cond, atol=1e-12)
    assert torch.allclose(cfg(MIX.denoise, 0.0, NULL)(z, lam, labels), MIX.denoise(z, lam, NULL), atol=1e-12)
    w = 3.0  # uncond + w (cond - uncond); Ho & Salimans' w' = w - 1
    unc = MIX.denoise(z, lam, NULL)
    assert torch.allclose(cfg(MIX.denoise, w, NULL)(z, lam, labels), unc + w * (cond - unc), atol=1e-12)


def test_cfg_uses_one_batched_call_and_callable_uncond():
    calls = []

    def den(z, lam, cond):
        calls.append(z.shape[0])
        return MIX.denoise(z, lam, cond["y"])

    z, lam = _z_lam()
    labels = torch.zeros(64, dtype=torch.long)
    guided = cfg(den, 2.0, lambda c: {"y": torch.full_like(c["y"], -1)})
    out = ddim(guided, z, CosineSchedule().lams(5), cond={"y": labels})
    assert calls == [128] * 5 and out.shape == z.shape


def test_cat_cond_structures():
    a = {"y": torch.zeros(2), "t": (torch.ones(2, 3), None)}
    b = {"y": torch.ones(2), "t": (torch.zeros(2, 3), None)}
    c = cat_cond(a, b)
    assert c["y"].tolist() == [0, 0, 1, 1] and c["t"][0].shape == (4, 3) and c["t"][1] is None
    with pytest.raises(ValueError, match="different keys"):
        cat_cond({"y": torch.zeros(1)}, {"x": torch.zeros(1)})


def test_classifier_guidance_with_exact_classifier_gives_the_conditional_denoiser():
    """grad log p(z | y) = grad log p(z) + grad log p(y | z) (Bayes), so with the exact noisy
    classifier and scale 1 the guided unconditional denoiser is the conditional one (Tweedie)."""
    z, lam = _z_lam(seed=2)
    labels = torch.randint(0, 2, (64,), generator=torch.Generator().manual_seed(3))
    classifier = lambda z_, lam_: MIX.posterior(z_, lam_).log()
    guided = classifier_guidance(lambda z_, l_, c: MIX.denoise(z_, l_, NULL), classifier, 1.0)
    assert torch.allclose(guided(z, lam, labels), MIX.denoise(z, lam, labels), atol=1e-8)
    stronger = classifier_guidance(lambda z_, l_, c: MIX.denoise(z_, l_, NULL), classifier, 3.0, labels=labels)
    assert not torch.allclose(stronger(z, lam, None), MIX.denoise(z, lam, labels), atol=1e-3)


def test_static_threshold():
    den = static_threshold(lambda z, lam, c: 3 * z)
    out = den(torch.tensor([[-1.0, 0.1, 2.0]]), torch.zeros(1))
    assert out.tolist() == [[-1.0, pytest.approx(0.3), 1.0]]


def test_dynamic_threshold():
    g = torch.Generator().manual_seed(0)
    inside = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1
    assert torch.equal(dynamic_threshold_x(inside, 0.995), inside)  # s = 1: unchanged
    big = torch.randn(4, 3, 8, 8, generator=g) * torch.tensor([0.2, 1.0, 3.0, 10.0]).view(4, 1, 1, 1)
    out = dynamic_threshold_x(big, 0.9)
    assert out.abs().max() <= 1.0 + 1e-6
    for i in range(4):  # per sample: clip to the 0.9 quantile of |x| (at least 1) and divide by it
        s = max(1.0, big[i].abs().flatten().quantile(0.9).item())
        assert torch.allclose(out[i], big[i].clamp(-s, s) / s, atol=1e-6)
    assert torch.equal(out[0], big[0])  # a sample already inside [-1, 1] is untouched
    wrapped = dynamic_threshold(lambda z, lam, c: z, 0.9)
    assert torch.equal(wrapped(big, torch.zeros(4)), out)
    with pytest.raises(ValueError, match="quantile"):
        dynamic_threshold(lambda z, lam, c: z, 1.5)


def test_reconstruction_guidance_beats_replacement():
    res = known_coordinates_experiment(known_value=1.5, correlation=0.95, weight=2.0, steps=100, n=4000)
    err = {k: abs(res[k] - res["truth"]) for k in ("replacement", "reconstruction")}
    print(f"true E[x_b | x_a=1.5] = {res['truth']:.3f}; means {res}; errors {err}")
    assert err["reconstruction"] < err["replacement"] / 3
    assert err["reconstruction"] < 0.1


def test_reconstruction_guidance_with_an_operator():
    data = Gaussian([0.0, 0.0, 0.0], [[1.0, 0.9, 0.8], [0.9, 1.0, 0.9], [0.8, 0.9, 1.0]])
    y = torch.full((2000, 1), 1.2, dtype=torch.float64)
    op = lambda x: x.mean(1, keepdim=True)  # observe only the average of the coordinates
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2000, 3, generator=gen, dtype=torch.float64)
    x = ddpm(
        reconstruction_guidance(data.denoise, y, operator=op, weight=2.0), z, CosineSchedule().lams(100), generator=gen
    )
    free = ddpm(data.denoise, z, CosineSchedule().lams(100), generator=torch.Generator().manual_seed(0))
    assert abs(op(x).mean().item() - 1.2) < 0.2 and abs(op(free).mean().item()) < 0.1
    with pytest.raises(ValueError, match="exactly one of mask"):
        reconstruction_guidance(data.denoise, y)
    assert math.isfinite(x.sum().item())


def test_replacement_feeds_fresh_noisy_known_values():
    seen = []

    def den(z, lam, cond):
        seen.append(z.clone())
        return torch.zeros_like(z)

    n = 20000
    known = torch.full((n, 2), 0.7, dtype=torch.float64)
    mask = torch.tensor([True, False]).expand(n, 2)
    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    lam = torch.full((n,), 0.5, dtype=torch.float64)
    out = replacement(den, known, mask, generator=torch.Generator().manual_seed(1))(z, lam)
    assert torch.equal(out[:, 0], known[:, 0]) and torch.equal(out[:, 1], torch.zeros(n, dtype=torch.float64))
    a, s = torch.sigmoid(lam[0]).sqrt(), torch.sigmoid(-lam[0]).sqrt()
    eps = (seen[0][:, 0] - a * 0.7) / s  # the known coordinate is a fresh draw of q(z_t | x_a)
    assert abs(eps.mean().item()) < 0.03 and abs(eps.std().item() - 1) < 0.03
    assert torch.equal(seen[0][:, 1], z[:, 1])  # the unknown coordinate is left alone


def test_cat_cond_fills_missing_drop_flags():
    cond = {"class": torch.tensor([1, 2])}
    null = {"class": torch.tensor([1, 2]), "class_drop": torch.ones(2, dtype=torch.bool)}
    both = cat_cond(cond, null)
    assert both["class_drop"].tolist() == [False, False, True, True]
    with pytest.raises(ValueError, match="different keys"):
        cat_cond(cond, {"label": torch.tensor([0, 0])})
