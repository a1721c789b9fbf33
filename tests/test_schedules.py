import math

import pytest
import torch

from difflab.diffusion import BetaSchedule, CosineSchedule, LinearBetaSchedule, get_schedule

SCHEDULES = [
    CosineSchedule(),
    CosineSchedule(lam_min=-15.0, lam_max=12.0),
    CosineSchedule(resolution=32, base_resolution=64),
    LinearBetaSchedule(),
    BetaSchedule(torch.linspace(1e-6, 0.01, 1000)),  # WaveGrad's training betas
]


@pytest.mark.parametrize("sched", SCHEDULES, ids=lambda s: f"{s.name}")
def test_t_lam_roundtrip_fp64(sched):
    t = torch.linspace(0.001, 1.0, 2001, dtype=torch.float64)
    lam = sched.lam(t)
    assert bool((lam[1:] < lam[:-1]).all()), "lam must decrease in t"
    assert torch.allclose(sched.t_of_lam(lam), t, atol=1e-6, rtol=0)
    lam_grid = torch.linspace(sched.lam_min, sched.lam_max, 501, dtype=torch.float64)
    assert torch.allclose(sched.lam(sched.t_of_lam(lam_grid)), lam_grid, atol=1e-6, rtol=0)


@pytest.mark.parametrize("sched", SCHEDULES, ids=lambda s: f"{s.name}")
def test_alpha_sigma_variance_preserving(sched):
    t = torch.rand(100, dtype=torch.float64)
    a, s = sched.alpha_sigma(t)
    assert torch.allclose(a**2 + s**2, torch.ones_like(a), atol=1e-12)
    assert torch.allclose(torch.log(a**2 / s**2), sched.lam(t), atol=1e-8)


def test_cosine_matches_closed_form_and_endpoints():
    s = CosineSchedule(lam_min=-20, lam_max=20)
    assert s.lam(0.0).item() == pytest.approx(20.0, abs=1e-9)
    assert s.lam(1.0).item() == pytest.approx(-20.0, abs=1e-9)
    # Nichol & Dhariwal's alpha^2 = cos^2(pi t / 2) is the lam_min, lam_max -> -inf, +inf limit.
    wide = CosineSchedule(lam_min=-60, lam_max=60)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    assert torch.allclose(wide.alpha(t) ** 2, torch.cos(math.pi * t / 2) ** 2, atol=1e-9)


def test_resolution_shift():
    base, shifted = CosineSchedule(), CosineSchedule(resolution=256, base_resolution=64)
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    assert torch.allclose(shifted.lam(t) - base.lam(t), torch.full_like(t, 2 * math.log(64 / 256)))


def test_linear_beta_matches_ddpm_alphas_cumprod():
    s = LinearBetaSchedule()
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    ab = torch.cumprod(1 - betas, 0)
    k = torch.tensor([0, 1, 499, 998, 999])
    lam = s.lam((k + 1).double() / 1000)
    assert torch.allclose(lam, torch.log(ab[k] / (1 - ab[k])), atol=1e-9)
    assert s.lam(0.0).item() == math.inf
    assert s.t_of_lam(math.inf).item() == 0.0


def test_grids():
    s = CosineSchedule()
    g = s.lams(4)
    assert g.shape == (5,) and g[-1] == math.inf and g[0] == pytest.approx(-20)
    g = s.lams(4, "lam", denoise_last=False)
    assert torch.allclose(g, torch.linspace(-20, 20, 5, dtype=torch.float64))
    g = LinearBetaSchedule().lams(10, "lam")
    assert math.isfinite(g[-2]) and g[-1] == math.inf and bool((g[1:] > g[:-1]).all())


def test_sample_t_modes():
    s = LinearBetaSchedule()
    gen = torch.Generator().manual_seed(0)
    t = s.sample_t(10000, "discrete", 1000, generator=gen)
    assert torch.allclose(t * 1000, (t * 1000).round()) and t.min() >= 1e-3 and t.max() <= 1.0
    t = s.sample_t(10000, "continuous", generator=gen)
    assert 0 < t.min() and t.max() <= 1 and abs(t.mean().item() - 0.5) < 0.02


def test_bad_input():
    with pytest.raises(ValueError, match="valid schedules: betas, cosine, diffusers, linear"):
        get_schedule("cosin")
    with pytest.raises(ValueError, match="t must lie in"):
        CosineSchedule().lam(1.5)
    with pytest.raises(ValueError, match="t must lie in"):
        CosineSchedule().lam(torch.tensor([0.5, -0.1]))
    with pytest.raises(ValueError, match="steps"):
        CosineSchedule().lams(0)
    with pytest.raises(ValueError, match="valid spacings"):
        CosineSchedule().lams(4, "log")
    with pytest.raises(ValueError, match="lam must lie in"):
        CosineSchedule().t_of_lam(25.0)
    with pytest.raises(ValueError, match="betas"):
        BetaSchedule([0.1, 1.5])
    with pytest.raises(ValueError, match="valid time sampling modes"):
        CosineSchedule().sample_t(4, "uniform")
