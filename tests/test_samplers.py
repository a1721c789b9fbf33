import math
from itertools import pairwise

import pytest
import torch

from difflab.analytic import Gaussian, GaussianMixture, loglog_slope, output_moments
from difflab.diffusion import (
    SAMPLERS,
    CosineSchedule,
    ddim,
    ddim_step,
    ddpm,
    ddpm_step,
    dpmpp_2m,
    get_sampler,
    heun,
    sample,
)

GAUSS = Gaussian([0.5, -0.3], [[1.0, 0.9], [0.9, 1.0]])  # strongly correlated 2-D Gaussian
SCHED = CosineSchedule()
STEPS = [32, 64, 128, 256]
ORDER = {"ddpm": 1.0, "ddim": 1.0, "dpmpp_2m": 2.0, "heun": 2.0}


def _moment_error(name, steps, **kw):
    mean, cov = output_moments(get_sampler(name), GAUSS.denoise, 2, SCHED.lams(steps, "lam"), **kw)
    return ((mean - GAUSS.mean).norm() + (cov - GAUSS.cov).norm()).item()


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_distribution_converges_with_the_samplers_order(name):
    """Exact output mean and covariance (no Monte Carlo) against the data's, as steps grow."""
    errors = [_moment_error(name, n) for n in STEPS]
    assert all(b < a for a, b in pairwise(errors)), errors
    assert _moment_error(name, 1024) < 0.05  # and it gets close to the data distribution
    slope = loglog_slope(STEPS, errors)
    print(f"{name}: errors {[f'{e:.2e}' for e in errors]} slope {slope:.2f}")
    assert abs(slope - ORDER[name]) < 0.3, (name, slope)


def test_ddim_eta_and_ddpm_gamma_converge_too():
    for kw, name in [({"eta": 1.0}, "ddim"), ({"gamma": 0.1}, "ddpm")]:
        errors = [_moment_error(name, n, **kw) for n in (32, 256)]
        assert errors[1] < errors[0] / 4, (kw, errors)


@pytest.mark.parametrize("name", ["ddim", "dpmpp_2m", "heun"])
def test_deterministic_samplers_follow_the_exact_flow(name):
    z = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = GAUSS.flow(z, SCHED.lam_min)
    err = [(sample(name, GAUSS.denoise, z, SCHED.lams(n, "lam")) - exact).norm(dim=1).mean().item() for n in STEPS]
    assert abs(loglog_slope(STEPS, err) - ORDER[name]) < 0.3, err


def test_mixture_weights_are_recovered():
    comps = [Gaussian([-2.0, 0.0], [[0.2, 0.0], [0.0, 0.2]]), Gaussian([2.0, 1.0], [[0.3, 0.1], [0.1, 0.2]])]
    mix = GaussianMixture([0.3, 0.7], comps)
    n = 6000
    gen = torch.Generator().manual_seed(0)
    for name in SAMPLERS:
        z = torch.randn(n, 2, generator=gen, dtype=torch.float64)
        # each sampler on its better grid: ancestral steps favour uniform t, Heun's first-order
        # predictor needs small log-SNR steps at the noisy end
        x = sample(name, mix.denoise, z, SCHED.lams(200, "t" if name == "ddpm" else "lam"), generator=gen)
        frac = (mix.posterior(x, torch.tensor(30.0)).argmax(1) == 0).double().mean().item()
        assert abs(frac - 0.3) < 0.02, (name, frac)  # Monte Carlo standard error: 0.006
        for k, c in enumerate(comps):  # each mode has the right mean
            sel = mix.posterior(x, torch.tensor(30.0)).argmax(1) == k
            assert (x[sel].mean(0) - c.mean).norm() < 0.06, (name, k)  # standard error: 0.015


def test_ddim_eta1_is_the_ddpm_posterior():
    g = torch.Generator().manual_seed(0)
    z, x_hat, noise = (torch.randn(4, 3, generator=g, dtype=torch.float64) for _ in range(3))
    assert torch.allclose(ddim_step(z, x_hat, -1.0, 0.5, 1.0, noise), ddpm_step(z, x_hat, -1.0, 0.5, 0.0, noise))


def test_ddpm_step_matches_posterior_formula():
    g = torch.Generator().manual_seed(0)
    z, x_hat, noise = (torch.randn(4, 3, generator=g, dtype=torch.float64) for _ in range(3))
    lt, ls = 0.3, 1.7
    a_t, s_t = math.sqrt(1 / (1 + math.exp(-lt))), math.sqrt(1 / (1 + math.exp(lt)))
    a_s, s_s = math.sqrt(1 / (1 + math.exp(-ls))), math.sqrt(1 / (1 + math.exp(ls)))
    a_ts = a_t / a_s
    s2_ts = s_t**2 - a_ts**2 * s_s**2
    mean = a_ts * s_s**2 / s_t**2 * z + a_s * s2_ts / s_t**2 * x_hat
    tilde = s2_ts * s_s**2 / s_t**2
    for gamma in (0.0, 0.1):
        std = math.sqrt(tilde ** (1 - gamma) * s2_ts**gamma)
        assert torch.allclose(ddpm_step(z, x_hat, lt, ls, gamma, noise), mean + std * noise, atol=1e-12)


@pytest.mark.filterwarnings("ignore:heun")
def test_last_step_returns_x_hat_and_dtype_is_kept():
    z = torch.randn(8, 2)
    for name in SAMPLERS:
        out = sample(name, lambda z_, lam, c: torch.full_like(z_, 0.25), z, SCHED.lams(3, "lam"))
        assert out.dtype == torch.float32 and torch.equal(out, torch.full_like(z, 0.25))


def test_callback_progress_cond_and_seed():
    seen, conds = [], []

    def den(z, lam, cond):
        conds.append(cond)
        assert lam.shape == (z.shape[0],)
        return 0.5 * z

    z = torch.randn(5, 2)
    out1 = ddpm(
        den, z, SCHED.lams(6), cond="c", callback=seen.append, progress=True, generator=torch.Generator().manual_seed(3)
    )
    assert [s["step"] for s in seen] == list(range(6)) and set(conds) == {"c"}
    assert all(s["steps"] == 6 and s["z"].shape == z.shape for s in seen)
    out2 = ddpm(den, z, SCHED.lams(6), cond="c", generator=torch.Generator().manual_seed(3))
    assert torch.equal(out1, out2)


def test_bad_input_errors():
    z = torch.randn(4, 2)
    den = GAUSS.denoise
    with pytest.raises(ValueError, match="valid samplers: ddim, ddpm, dpmpp_2m, heun"):
        get_sampler("euler_a")
    with pytest.raises(ValueError, match="steps >= 1"):
        ddim(den, z, torch.tensor([0.0]))
    with pytest.raises(ValueError, match="increase strictly"):
        ddim(den, z, torch.tensor([1.0, 0.0, math.inf]))
    for fn in (ddpm, ddim, dpmpp_2m, heun):  # a reversed grid (it starts at +inf) asks to be flipped
        with pytest.raises(ValueError, match=r"this grid decreases: reverse it \(lams.flip\(0\)\)"):
            fn(den, z, SCHED.lams(4).flip(0))
    with pytest.raises(ValueError, match="finite"):
        ddim(den, z, torch.tensor([-math.inf, 0.0, 1.0]))
    with pytest.raises(ValueError, match="got NaN"):
        ddim(den, z, torch.tensor([0.0, math.nan, 1.0]))
    with pytest.raises(ValueError, match="eta"):
        ddim(den, z, SCHED.lams(2), eta=-1)
    with pytest.raises(ValueError, match="gamma"):
        ddpm(den, z, SCHED.lams(2), gamma=2)

    def bad(z_, lam, cond):
        return z_ / 0 if lam[0] > -5 else z_

    for fn in (ddpm, ddim, dpmpp_2m, heun):
        with pytest.raises(FloatingPointError, match=r"denoiser at step \d+ of 8 \(lam=.*\) returned non-finite"):
            fn(bad, z, SCHED.lams(8, "lam"))
    with pytest.raises(ValueError, match="shape"):
        ddim(lambda z_, lam, c: z_[:, :1], z, SCHED.lams(2))


def test_heun_warns_about_unstable_steps_and_dpmpp_lower_order_final():
    z = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="heun: a grid step shrinks"):
        heun(GAUSS.denoise, z, SCHED.lams(8, "t"))
    exact = GAUSS.flow(z, SCHED.lam_min)
    grid = SCHED.lams(4, "t", denoise_last=False)  # a large finite last step
    err = {
        flag: (dpmpp_2m(GAUSS.denoise, z, grid, lower_order_final=flag) - exact).norm(dim=1).mean().item()
        for flag in (True, False)
    }
    assert err[True] < err[False], err


def test_ddim_is_euler_in_scaled_variables():
    """Karras et al. 2022: DDIM (eta = 0) is Euler's method on dy/ds = (y - x_hat) / s, y = z / alpha."""
    g = torch.Generator().manual_seed(0)
    z, x_hat = (torch.randn(4, 3, generator=g, dtype=torch.float64) for _ in range(2))
    lt, ls = -2.0, 1.5
    a_t, a_s = math.sqrt(1 / (1 + math.exp(-lt))), math.sqrt(1 / (1 + math.exp(-ls)))
    s_t, s_s = math.exp(-lt / 2), math.exp(-ls / 2)
    y = z / a_t
    euler = (y + (s_s - s_t) * (y - x_hat) / s_t) * a_s
    assert torch.allclose(ddim_step(z, x_hat, lt, ls), euler, atol=1e-12)
