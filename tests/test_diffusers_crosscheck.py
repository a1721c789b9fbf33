"""Cross-check difflab's samplers against diffusers' schedulers, an independent implementation.

Mapping between the two (docs/math.md sections 0 and 1):

- Both use DDPM's linear betas (1e-4 .. 0.02, 1000 steps): difflab's ``LinearBetaSchedule()``.
- diffusers' 0-based timestep ``k`` is difflab's ``t = (k + 1) / 1000`` and ``lam = schedule.lam(t)``;
  a previous timestep ``< 0`` (``alpha_prod = 1``, ``set_alpha_to_one=True``) is ``lam = +inf``.
- DDIM's previous timestep is ``k - 1000 // num_inference_steps``; DDPM's (no ``set_timesteps``) is ``k - 1``.
- The dummy network is one fixed nonlinear function of ``z`` and ``lam``; diffusers calls it with
  the ``lam`` of its current timestep, so both libraries see the same raw model output.
- Dynamic thresholding: diffusers' ``thresholding=True, dynamic_thresholding_ratio=0.995`` with
  ``sample_max_value`` huge (difflab's default ``max_value`` is ``inf``) and ``clip_sample=False``.
  difflab thresholds ``x_hat`` and samplers re-derive ``eps_hat`` from the thresholded ``x_hat``
  (as GLIDE and Imagen do), which diffusers' DDIM does only with ``use_clipped_model_output=True``.

Precision: diffusers keeps ``alphas_cumprod`` in float32. Its DDPM step forms
``1 - alpha_prod_t / alpha_prod_t_prev``, which cancels catastrophically in float32 for small
``k`` (up to ~1e-4 absolute difference, measured). The exact-math checks therefore rebuild
diffusers' tables in float64 from the same betas (the formula diffusers uses,
``cumprod(1 - betas)``), and a separate test runs the stock float32 scheduler with a tolerance
that covers its table rounding.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

diffusers = pytest.importorskip("diffusers")

from difflab.diffusion import (  # noqa: E402
    BetaSchedule,
    CosineSchedule,
    LinearBetaSchedule,
    ddim,
    ddim_step,
    ddpm,
    ddpm_step,
    dpmpp_2m,
    dynamic_threshold,
    make_denoiser,
)
from difflab.diffusion.guidance import dynamic_threshold_x  # noqa: E402

N_TRAIN = 1000
SHAPE = (4, 3, 8, 8)
QUANTILE = 0.995
PRED_TYPES = {"eps": "epsilon", "v": "v_prediction"}
SCHEDULE = LinearBetaSchedule()
# Step-level tolerances (max abs diff) per dtype, with diffusers' tables in float64.
STEP_TOL = {torch.float32: 1e-5, torch.float64: 1e-9}


def lam_of_k(k: int) -> float:
    """difflab log-SNR of diffusers' 0-based timestep ``k`` (``+inf`` for ``k < 0``).

    ``t`` is passed as a float64 tensor: a Python float would be rounded to float32 on the way in.
    """
    if k < 0:
        return math.inf
    return float(SCHEDULE.lam(torch.tensor((k + 1) / N_TRAIN, dtype=torch.float64)))


def net(z: Tensor, lam: Tensor, cond: object = None) -> Tensor:
    """A fixed nonlinear dummy network of ``z`` and ``lam``: its x-prediction leaves [-1, 1]."""
    lam_b = lam.to(z.dtype).reshape(-1, *([1] * (z.ndim - 1)))
    return torch.tanh(z * (1 + 0.05 * lam_b)) + 0.3 * torch.sin(2 * z + 0.1 * lam_b)


def model_output(z: Tensor, lam: float) -> Tensor:
    """The raw network output at log-SNR ``lam``, with lam batched exactly as difflab's samplers do."""
    return net(z, torch.full((z.shape[0],), lam, dtype=z.dtype))


def difflab_denoiser(pred: str, thresholding: bool):
    den = make_denoiser(net, pred)
    return dynamic_threshold(den, QUANTILE) if thresholding else den


def start(seed: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """A noisy input; scaled by 1.5 so the x-prediction exceeds [-1, 1] even at the clean end."""
    return 1.5 * torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def scaled_error(ours: Tensor, ref: Tensor) -> float:
    """Max abs difference in units of the sample scale ``max(1, max |ref|)``.

    Whole trajectories are compared this way: without thresholding, the eps-parameterized dummy
    network (not a real denoiser) drives samples to ``|z| ~ 500``, where float32 spacing is 3e-5
    and 50 float32 steps put *each* library ~3e-4 from the float64 result (measured); relative
    to the scale both agree to ~1e-6. Unit-scale samples are compared in absolute terms.
    """
    return (ours - ref).abs().max().item() / max(1.0, ref.abs().max().item())


def float64_tables(sched) -> None:
    """Replace diffusers' float32 ``alphas_cumprod`` (and the final value 1) by float64 ones."""
    betas = torch.linspace(1e-4, 0.02, N_TRAIN, dtype=torch.float64)
    sched.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    one = torch.tensor(1.0, dtype=torch.float64)
    if hasattr(sched, "final_alpha_cumprod"):
        sched.final_alpha_cumprod = one
    if hasattr(sched, "one"):
        sched.one = one


def ddpm_scheduler(pred: str, thresholding: bool, tables64: bool):
    s = diffusers.DDPMScheduler(
        num_train_timesteps=N_TRAIN,
        beta_schedule="linear",
        prediction_type=PRED_TYPES[pred],
        clip_sample=False,
        thresholding=thresholding,
        dynamic_thresholding_ratio=QUANTILE,
        sample_max_value=1e6,
    )
    if tables64:
        float64_tables(s)
    return s


def ddim_scheduler(pred: str, thresholding: bool, tables64: bool, steps: int):
    s = diffusers.DDIMScheduler(
        num_train_timesteps=N_TRAIN,
        beta_schedule="linear",
        prediction_type=PRED_TYPES[pred],
        clip_sample=False,
        set_alpha_to_one=True,
        thresholding=thresholding,
        dynamic_thresholding_ratio=QUANTILE,
        sample_max_value=1e6,
    )
    if tables64:
        float64_tables(s)
    s.set_timesteps(steps)
    return s


# -- the dummy model really exercises thresholding -------------------------------------------
@pytest.mark.parametrize("pred", PRED_TYPES)
@pytest.mark.parametrize("k", [999, 0])
def test_dummy_model_activates_thresholding(pred, k):
    z = start(0)
    x_hat = make_denoiser(net, pred)(z, torch.full((SHAPE[0],), lam_of_k(k)))
    s = x_hat.reshape(SHAPE[0], -1).abs().quantile(QUANTILE, dim=1)
    assert bool((s > 1.05).all()), "the dummy x-prediction must leave [-1, 1] so thresholding is active"
    assert not torch.allclose(dynamic_threshold_x(x_hat, QUANTILE), x_hat)


# -- single steps -------------------------------------------------------------------------------
DDPM_KS = [999, 700, 500, 100, 10, 1, 0]  # k = 0 is the last step: prev timestep -1, lam = +inf


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("thresholding", [False, True], ids=["plain", "thresh"])
@pytest.mark.parametrize("pred", PRED_TYPES)
def test_ddpm_step_matches_diffusers(pred, thresholding, dtype):
    sched = ddpm_scheduler(pred, thresholding, tables64=True)
    den = difflab_denoiser(pred, thresholding)
    for k in DDPM_KS:
        z = start(k, dtype)
        lam_t, lam_s = lam_of_k(k), lam_of_k(k - 1)
        # Two generators seeded alike: diffusers draws torch.randn(shape, generator=...) when k > 0.
        g_ref, g_ours = torch.Generator().manual_seed(100 + k), torch.Generator().manual_seed(100 + k)
        ref = sched.step(model_output(z, lam_t), k, z, generator=g_ref).prev_sample
        x_hat = den(z, torch.full((SHAPE[0],), lam_t, dtype=dtype))
        noise = torch.randn(SHAPE, generator=g_ours, dtype=dtype) if k > 0 else None
        ours = ddpm_step(z, x_hat, lam_t, lam_s, noise=noise)
        err = (ours - ref).abs().max().item()
        assert err < STEP_TOL[dtype], f"k={k}: max abs diff {err:.3g}"
    assert torch.allclose(ours, x_hat), "the last step (lam_s = +inf) returns x_hat"


DDIM_STEPS = 50  # prev timestep k - 20
DDIM_KS = [999, 980, 500, 100, 20, 19, 0]  # 19 and 0 step to k < 0: alpha_prod = 1, lam = +inf


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("thresholding", [False, True], ids=["plain", "thresh"])
@pytest.mark.parametrize("pred", PRED_TYPES)
def test_ddim_step_matches_diffusers(pred, thresholding, eta, dtype):
    sched = ddim_scheduler(pred, thresholding, tables64=True, steps=DDIM_STEPS)
    den = difflab_denoiser(pred, thresholding)
    for k in DDIM_KS:
        z = start(k, dtype)
        lam_t, lam_s = lam_of_k(k), lam_of_k(k - N_TRAIN // DDIM_STEPS)
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(200 + k), dtype=dtype)
        ref = sched.step(
            model_output(z, lam_t), k, z, eta=eta, use_clipped_model_output=thresholding, variance_noise=noise
        ).prev_sample
        x_hat = den(z, torch.full((SHAPE[0],), lam_t, dtype=dtype))
        ours = ddim_step(z, x_hat, lam_t, lam_s, eta=eta, noise=noise)
        err = (ours - ref).abs().max().item()
        assert err < STEP_TOL[dtype], f"k={k}: max abs diff {err:.3g}"
        if math.isinf(lam_s):
            assert torch.allclose(ours, x_hat), "the last step (lam_s = +inf) returns x_hat"


@pytest.mark.parametrize("thresholding", [False, True], ids=["plain", "thresh"])
@pytest.mark.parametrize("pred", PRED_TYPES)
def test_steps_match_stock_float32_diffusers(pred, thresholding):
    """The unmodified diffusers schedulers (float32 tables), every 37th timestep and the ends.

    Measured over every third k: DDPM differs by up to 1.2e-4 at small k, from diffusers' float32
    ``1 - alpha_prod_t / alpha_prod_t_prev``; thresholded DDIM by up to 4e-5 at small k, from
    re-deriving eps as ``(z - sqrt(alpha_prod) x0) / sqrt(1 - alpha_prod)`` with a float32
    ``alpha_prod`` close to 1. With float64 tables every one of these steps agrees to 1.5e-6
    in float32 arithmetic (and to 1e-9 in float64, see above), so the gap is table rounding:
    the tolerances here are 5e-4 (DDPM) and 1e-4 (DDIM).
    """
    den = difflab_denoiser(pred, thresholding)
    s_ddpm = ddpm_scheduler(pred, thresholding, tables64=False)
    s_ddim = ddim_scheduler(pred, thresholding, tables64=False, steps=DDIM_STEPS)
    for k in sorted({*range(0, N_TRAIN, 37), 999, 1}):
        z = start(k)
        lam_t = lam_of_k(k)
        out = model_output(z, lam_t)
        x_hat = den(z, torch.full((SHAPE[0],), lam_t))
        g_ref, g_ours = torch.Generator().manual_seed(k), torch.Generator().manual_seed(k)
        ref = s_ddpm.step(out, k, z, generator=g_ref).prev_sample
        noise = torch.randn(SHAPE, generator=g_ours) if k > 0 else None
        err = (ddpm_step(z, x_hat, lam_t, lam_of_k(k - 1), noise=noise) - ref).abs().max().item()
        assert err < 5e-4, f"DDPM k={k}: max abs diff {err:.3g}"
        noise = torch.randn(SHAPE, generator=g_ours)
        ref = s_ddim.step(out, k, z, eta=1.0, use_clipped_model_output=thresholding, variance_noise=noise)
        ours = ddim_step(z, x_hat, lam_t, lam_of_k(k - N_TRAIN // DDIM_STEPS), eta=1.0, noise=noise)
        err = (ours - ref.prev_sample).abs().max().item()
        assert err < 1e-4, f"DDIM k={k}: max abs diff {err:.3g}"


# -- whole trajectories ----------------------------------------------------------------------
def test_ddpm_loop_matches_diffusers():
    """A 100-step ancestral loop (diffusers' set_timesteps(100), float64 tables and tensors)."""
    sched = ddpm_scheduler("eps", False, tables64=True)
    sched.set_timesteps(100)
    ks = [int(k) for k in sched.timesteps]
    lams = torch.tensor([lam_of_k(k) for k in ks] + [math.inf], dtype=torch.float64)
    z0 = start(7, torch.float64)
    g = torch.Generator().manual_seed(8)
    z = z0
    for k, lam in zip(ks, lams[:-1].tolist(), strict=True):
        z = sched.step(model_output(z, lam), k, z, generator=g).prev_sample
    ours = ddpm(make_denoiser(net, "eps"), z0, lams, generator=torch.Generator().manual_seed(8))
    assert scaled_error(ours, z) < 1e-11


@pytest.mark.parametrize(
    ("pred", "thresholding", "eta"),
    [("eps", False, 0.0), ("v", False, 0.0), ("eps", True, 0.0), ("v", True, 1.0), ("eps", False, 1.0)],
)
def test_ddim_loop_matches_diffusers(pred, thresholding, eta):
    """``ddim`` against diffusers' DDIM loop with set_timesteps(50) (timesteps 980, 960, ..., 0),
    stock float32 scheduler. The equivalent grid is ``lam_of_k`` at those timesteps, then +inf.
    float32 roundoff limits agreement to ~1e-6 of the sample scale (see ``scaled_error``).

    With eta > 0 both draw ``torch.randn(shape, generator=g)`` once per step in the same order
    (diffusers draws once more at the last step, whose noise it multiplies by 0).
    """
    sched = ddim_scheduler(pred, thresholding, tables64=False, steps=50)
    ks = [int(k) for k in sched.timesteps]
    assert ks[0] == 980 and ks[-1] == 0
    lams = torch.tensor([lam_of_k(k) for k in ks] + [math.inf], dtype=torch.float64)
    z0 = start(11)
    g = torch.Generator().manual_seed(12)
    z = z0
    for k, lam in zip(ks, lams[:-1].tolist(), strict=True):
        out = model_output(z, lam)
        z = sched.step(out, k, z, eta=eta, use_clipped_model_output=thresholding, generator=g).prev_sample
    ours = ddim(difflab_denoiser(pred, thresholding), z0, lams, eta=eta, generator=torch.Generator().manual_seed(12))
    err = scaled_error(ours, z)
    assert err < 1e-5, f"max abs diff {err:.3g} (relative to the sample scale)"


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_loop_matches_diffusers_float64(eta):
    """The same 50-step DDIM loop in float64 with diffusers' tables in float64: the exact math."""
    sched = ddim_scheduler("eps", False, tables64=True, steps=50)
    ks = [int(k) for k in sched.timesteps]
    lams = torch.tensor([lam_of_k(k) for k in ks] + [math.inf], dtype=torch.float64)
    z0 = start(13, torch.float64)
    g = torch.Generator().manual_seed(14)
    z = z0
    for k, lam in zip(ks, lams[:-1].tolist(), strict=True):
        z = sched.step(model_output(z, lam), k, z, eta=eta, generator=g).prev_sample
    ours = ddim(make_denoiser(net, "eps"), z0, lams, eta=eta, generator=torch.Generator().manual_seed(14))
    assert scaled_error(ours, z) < 1e-11


@pytest.mark.parametrize("steps", [10, 20])
@pytest.mark.parametrize(("pred", "thresholding"), [("eps", False), ("v", False), ("eps", True)])
def test_dpmpp_2m_loop_matches_diffusers(pred, thresholding, steps):
    """``dpmpp_2m`` against diffusers' ``DPMSolverMultistepScheduler`` (stock, float32; it casts its
    sigmas to float32, so there is no float64 variant). Agreement ~1e-6 of the sample scale.

    Settings that make the two the same algorithm (read from diffusers 0.42's source):

    - ``algorithm_type="dpmsolver++"`` (data prediction), ``solver_order=2``,
      ``solver_type="midpoint"``: its update ``D0 + 0.5 D1`` with ``D1 = (m0 - m1) / r0`` is
      difflab's ``x_hat + (x_hat - x_prev) / (2 r)``, and ``h`` is in ``lambda = log(alpha / sigma)``,
      i.e. difflab's ``lam / 2``.
    - the first step is first order in both (diffusers: ``lower_order_nums < 1``).
    - ``final_sigmas_type="zero"``: the last step goes to sigma = 0 and diffusers then always takes
      a first-order step (``lower_order_final`` is forced), which returns its data prediction,
      as difflab does for a final ``lam = +inf`` whatever its own ``lower_order_final``.
      Otherwise diffusers' ``lower_order_final`` only touches the second-to-last step of order-3
      solvers, so it is irrelevant here (see the next test for a finite final sigma).
    - ``use_karras_sigmas`` etc. off, ``timestep_spacing="linspace"``: the grid is diffusers' own
      ``sigmas`` (``sqrt((1 - alpha_bar) / alpha_bar)`` at its timesteps), so
      ``lam = -2 log(sigma)``, then ``+inf``.
    - thresholding: diffusers thresholds the data prediction in ``convert_model_output`` before
      the multistep history, exactly like wrapping the denoiser with ``dynamic_threshold``.
    """
    sched = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=N_TRAIN,
        beta_schedule="linear",
        prediction_type=PRED_TYPES[pred],
        algorithm_type="dpmsolver++",
        solver_order=2,
        solver_type="midpoint",
        lower_order_final=True,
        final_sigmas_type="zero",
        thresholding=thresholding,
        dynamic_thresholding_ratio=QUANTILE,
        sample_max_value=1e6,
    )
    sched.set_timesteps(steps)
    sigmas = sched.sigmas.to(torch.float64)
    assert len(sched.timesteps) == steps and sigmas[-1] == 0
    lams = torch.cat([-2.0 * sigmas[:-1].log(), torch.tensor([math.inf], dtype=torch.float64)])
    z0 = start(21)
    z = z0
    for i, k in enumerate(sched.timesteps):
        z = sched.step(model_output(z, float(lams[i])), k, z).prev_sample
    ours = dpmpp_2m(difflab_denoiser(pred, thresholding), z0, lams)
    err = scaled_error(ours, z)
    assert err < 1e-5, f"max abs diff {err:.3g} (relative to the sample scale)"


@pytest.mark.parametrize("lower_order_final", [True, False])
@pytest.mark.parametrize("steps", [10, 20])
def test_dpmpp_2m_finite_end_matches_diffusers(steps, lower_order_final):
    """A grid that ends at a finite log-SNR (diffusers' ``final_sigmas_type="sigma_min"``: the
    sigma of timestep 0). Both libraries take a first-order last step exactly when
    ``lower_order_final`` is set and the grid has fewer than 15 steps."""
    sched = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=N_TRAIN,
        beta_schedule="linear",
        prediction_type="v_prediction",
        algorithm_type="dpmsolver++",
        solver_order=2,
        solver_type="midpoint",
        lower_order_final=lower_order_final,
        final_sigmas_type="sigma_min",
    )
    sched.set_timesteps(steps)
    lams = -2.0 * sched.sigmas.to(torch.float64).log()
    assert len(lams) == steps + 1 and bool(torch.isfinite(lams).all())
    z0 = start(31)
    z = z0
    for i, k in enumerate(sched.timesteps):
        z = sched.step(model_output(z, float(lams[i])), k, z).prev_sample
    ours = dpmpp_2m(make_denoiser(net, "v"), z0, lams, lower_order_final=lower_order_final)
    err = scaled_error(ours, z)
    assert err < 1e-5, f"max abs diff {err:.3g} (relative to the sample scale)"
    if steps < 15:  # the setting matters here, so a mismatch in it would show
        other = dpmpp_2m(make_denoiser(net, "v"), z0, lams, lower_order_final=not lower_order_final)
        assert scaled_error(other, z) > 1e-4


# -- docs/diffusion.md, "From diffusers": beta schedules and timestep spacings as difflab grids -------------------

BETA_SCHEDULES = ("linear", "squaredcos_cap_v2")


def spaced(beta_schedule: str, spacing: str, steps: int, **kw):
    s = diffusers.DDIMScheduler(
        num_train_timesteps=N_TRAIN, beta_schedule=beta_schedule, timestep_spacing=spacing, clip_sample=False, **kw
    )
    s.set_timesteps(steps)
    return s


def visited_lams(sched) -> Tensor:
    """The log-SNR of each timestep a diffusers scheduler visits (float64, from its betas), then +inf."""
    ac = torch.cumprod(1.0 - sched.betas.double(), 0)[sched.timesteps.long()]
    return torch.cat([torch.log(ac) - torch.log1p(-ac), torch.tensor([math.inf], dtype=torch.float64)])


@pytest.mark.parametrize("beta_schedule", BETA_SCHEDULES)
def test_beta_schedule_of_diffusers_is_a_beta_schedule(beta_schedule):
    sched = spaced(beta_schedule, "trailing", 10)
    ours = BetaSchedule(sched.betas.double())
    assert torch.allclose(ours.alphas_cumprod, sched.alphas_cumprod.double(), rtol=1e-5, atol=0)  # its float32 table
    if beta_schedule == "linear":
        assert torch.allclose(LinearBetaSchedule().betas, sched.betas.double(), rtol=1e-6, atol=0)
    else:  # the discrete cosine schedule of Nichol & Dhariwal, as docs/diffusion.md states it
        t = torch.arange(N_TRAIN + 1, dtype=torch.float64) / N_TRAIN
        abar = torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
        assert torch.allclose(betas, sched.betas.double(), rtol=1e-6, atol=1e-9)
        assert not torch.allclose(ours.lam(t[1:]), CosineSchedule().lam(t[1:]), atol=0.1)  # not the continuous one


@pytest.mark.parametrize("beta_schedule", BETA_SCHEDULES)
@pytest.mark.parametrize("steps", [1, 4, 10, 25, 50, 200, 1000])
def test_trailing_spacing_is_the_default_grid(beta_schedule, steps):
    """``schedule.lams(n, "t")`` on the 1000-step beta schedule is diffusers' ``trailing`` spacing
    when n divides 1000: the same log-SNRs, ending at +inf (``set_alpha_to_one=True``)."""
    sched = spaced(beta_schedule, "trailing", steps)
    schedule = BetaSchedule(sched.betas.double())
    ours = schedule.lams(steps, "t")
    assert ours.shape == (steps + 1,) and math.isinf(ours[-1])
    assert torch.allclose(ours[:-1], visited_lams(sched)[:-1], rtol=0, atol=1e-9)
    k = schedule.t_of_lam(ours[:-1]) * N_TRAIN - 1  # back to diffusers' timesteps
    assert torch.equal(k.round().long(), sched.timesteps.long()) and float((k - k.round()).abs().max()) < 1e-6
    assert sched.final_alpha_cumprod == 1.0  # +inf: the last step returns x_hat
    if steps < N_TRAIN:  # DDIM's step k -> k - N // n is the next timestep: the same grid
        assert int(sched.timesteps[0]) - N_TRAIN // steps == int(sched.timesteps[1] if steps > 1 else -1)


@pytest.mark.parametrize("steps", [3, 7, 30])
def test_trailing_spacing_of_other_step_counts_is_within_half_a_training_step(steps):
    sched = spaced("squaredcos_cap_v2", "trailing", steps)
    schedule = BetaSchedule(sched.betas.double())
    k = schedule.t_of_lam(schedule.lams(steps, "t")[:-1]) * N_TRAIN - 1
    diff = (k - sched.timesteps.double()).abs()
    assert float(diff.max()) <= 0.5 + 1e-9 and float(diff.max()) > 0.1  # diffusers rounds, difflab does not


@pytest.mark.parametrize("beta_schedule", BETA_SCHEDULES)
@pytest.mark.parametrize(("steps", "offset"), [(3, 0), (10, 1), (50, 0), (50, 1)])
def test_leading_spacing(beta_schedule, steps, offset):
    sched = spaced(beta_schedule, "leading", steps, steps_offset=offset)
    schedule, r = BetaSchedule(sched.betas.double()), N_TRAIN // steps
    grid = schedule.lams(
        steps - 1, "t", t_start=((steps - 1) * r + offset + 1) / N_TRAIN, t_end=(offset + 1) / N_TRAIN,
        denoise_last=False,
    )  # fmt: skip
    ours = torch.cat([grid, torch.tensor([math.inf], dtype=torch.float64)])
    assert torch.allclose(ours, visited_lams(sched), rtol=0, atol=1e-9)


@pytest.mark.parametrize("beta_schedule", BETA_SCHEDULES)
@pytest.mark.parametrize("steps", [4, 10, 28])
def test_linspace_spacing(beta_schedule, steps):
    sched = spaced(beta_schedule, "linspace", steps)
    schedule = BetaSchedule(sched.betas.double())
    grid = schedule.lams(steps - 1, "t", t_start=1.0, t_end=1 / N_TRAIN, denoise_last=False)
    ours = torch.cat([grid, torch.tensor([math.inf], dtype=torch.float64)])
    assert torch.allclose(ours, visited_lams(sched), rtol=0, atol=1e-9)
    assert int(sched.timesteps[0]) - N_TRAIN // steps != int(sched.timesteps[1])  # DDIM steps off its own list


def test_set_alpha_to_one_false_ends_at_lam_max():
    sched = spaced("squaredcos_cap_v2", "leading", 10, set_alpha_to_one=False)
    lam_max = BetaSchedule(sched.betas.double()).lam_max  # alphas_cumprod[0] = sigmoid(lam_max), float32 there
    assert float(sched.final_alpha_cumprod) == pytest.approx(float(torch.sigmoid(torch.tensor(lam_max))), rel=1e-6)


def test_ddim_loop_on_trailing_cosine_betas_matches_diffusers():
    """The whole DDIM loop, float64 tables: diffusers' trailing spacing on squaredcos_cap_v2 betas and
    difflab's ``ddim`` on ``BetaSchedule(betas).lams(10)`` are the same computation."""
    sched = spaced("squaredcos_cap_v2", "trailing", 10, set_alpha_to_one=True)
    sched.alphas_cumprod = torch.cumprod(1.0 - sched.betas.double(), 0)
    sched.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    lams = BetaSchedule(sched.betas.double()).lams(10)
    z0 = start(21, torch.float64)
    z = z0
    for k, lam in zip(sched.timesteps.tolist(), lams[:-1].tolist(), strict=True):
        z = sched.step(model_output(z, lam), k, z).prev_sample
    ours = ddim(make_denoiser(net, "eps"), z0, lams)
    assert scaled_error(ours, z) < 1e-11
