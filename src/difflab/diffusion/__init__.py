"""The math of Gaussian diffusion, with no knowledge of images, audio or text.

Schedules (log-SNR), parameterizations, losses, samplers and guidance; see docs/math.md
sections 0-4. A denoiser is any callable ``f(z, lam, cond) -> x_hat``.
"""

from .guidance import (
    cat_cond,
    cfg,
    classifier_guidance,
    dynamic_threshold,
    dynamic_threshold_x,
    reconstruction_guidance,
    replacement,
    static_threshold,
)
from .losses import NORMS, WEIGHTINGS, diffusion_loss, loss_weight, training_loss
from .parameterization import (
    PARAMETERIZATIONS,
    Denoiser,
    eps_from_v,
    eps_from_x,
    make_denoiser,
    merge_both,
    output_channels,
    predict,
    target,
    v_from_x_eps,
    x_from_eps,
    x_from_v,
)
from .samplers import SAMPLERS, ddim, ddim_invert, ddim_step, ddpm, ddpm_step, dpmpp_2m, get_sampler, heun, sample
from .schedules import (
    SCHEDULES,
    BetaSchedule,
    CosineSchedule,
    DiffusersSchedule,
    LinearBetaSchedule,
    Schedule,
    get_schedule,
)

__all__ = [
    "NORMS", "PARAMETERIZATIONS", "SAMPLERS", "SCHEDULES", "WEIGHTINGS", "BetaSchedule", "CosineSchedule",
    "Denoiser", "DiffusersSchedule", "LinearBetaSchedule", "Schedule", "cat_cond", "cfg", "classifier_guidance",
    "ddim", "ddim_invert", "ddim_step",
    "ddpm", "ddpm_step", "diffusion_loss", "dpmpp_2m", "dynamic_threshold", "dynamic_threshold_x", "eps_from_v",
    "eps_from_x", "get_sampler", "get_schedule", "heun", "loss_weight", "make_denoiser", "merge_both",
    "output_channels", "predict", "reconstruction_guidance", "replacement", "sample", "static_threshold", "target",
    "training_loss", "v_from_x_eps", "x_from_eps", "x_from_v"
]  # fmt: skip
