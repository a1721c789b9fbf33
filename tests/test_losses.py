import pytest
import torch

from difflab.diffusion import (
    PARAMETERIZATIONS,
    WEIGHTINGS,
    CosineSchedule,
    LinearBetaSchedule,
    diffusion_loss,
    loss_weight,
    predict,
    target,
    training_loss,
    v_from_x_eps,
)


def _batch(lam, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(lam.numel(), 2, 4, generator=g, dtype=dtype)
    eps = torch.randn(lam.numel(), 2, 4, generator=g, dtype=dtype)
    a = torch.sigmoid(lam).sqrt().view(-1, 1, 1).to(dtype)
    s = torch.sigmoid(-lam).sqrt().view(-1, 1, 1).to(dtype)
    return x, eps, a * x + s * eps, a, s


def test_weights():
    lam = torch.tensor([-3.0, 0.0, 1.0, 3.0], dtype=torch.float64)
    snr = lam.exp()
    assert torch.allclose(loss_weight("snr", lam), snr)
    assert torch.allclose(loss_weight("truncated-snr", lam), torch.maximum(snr, torch.ones_like(snr)))
    assert torch.allclose(loss_weight("snr+1", lam), snr + 1)
    assert torch.allclose(loss_weight("min-snr", lam, gamma=5.0), torch.minimum(snr, torch.full_like(snr, 5.0)))
    assert torch.allclose(loss_weight("constant", lam), torch.ones_like(snr))


@pytest.mark.parametrize("param", PARAMETERIZATIONS)
@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_loss_is_weighted_x_error(param, weighting):
    lam = torch.linspace(-6, 6, 16, dtype=torch.float64)
    x, eps, z, a, s = _batch(lam)
    out = target(param, x, eps, a, s) + 0.05 * torch.randn(
        target(param, x, eps, a, s).shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    x_hat, _ = predict(param, out, z, a, s)
    expected = loss_weight(weighting, lam) * ((x - x_hat) ** 2).flatten(1).mean(1)
    got = diffusion_loss(out, x, eps, z, lam, param, weighting)
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_named_equivalences():
    lam = torch.linspace(-6, 6, 16, dtype=torch.float64)
    x, eps, z, a, s = _batch(lam)
    eps_hat = eps + 0.1 * torch.randn(eps.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    eps_mse = ((eps - eps_hat) ** 2).flatten(1).mean(1)
    assert torch.allclose(diffusion_loss(eps_hat, x, eps, z, lam, "eps", "snr"), eps_mse)
    x_hat = (z - s * eps_hat) / a
    x_mse = ((x - x_hat) ** 2).flatten(1).mean(1)
    assert torch.allclose(
        diffusion_loss(eps_hat, x, eps, z, lam, "eps", "truncated-snr"), torch.maximum(x_mse, eps_mse)
    )
    v_hat = v_from_x_eps(x_hat, eps_hat, a, s)
    v_mse = ((v_from_x_eps(x, eps, a, s) - v_hat) ** 2).flatten(1).mean(1)
    assert torch.allclose(diffusion_loss(v_hat, x, eps, z, lam, "v", "snr+1"), v_mse)
    eps_l1 = (eps - eps_hat).abs().flatten(1).mean(1)  # WaveGrad's loss
    assert torch.allclose(diffusion_loss(eps_hat, x, eps, z, lam, "eps", "snr", norm="l1"), eps_l1)


def test_float32_high_snr_eps_loss_has_no_cancellation():
    lam = torch.full((8,), 16.0)
    x, eps, z, a, s = _batch(lam, torch.float32)
    eps_hat = eps + 0.01
    got = diffusion_loss(eps_hat, x, eps, z, lam, "eps", "snr")
    assert torch.allclose(got, torch.full_like(got, 1e-4), rtol=1e-3)  # eps-MSE is 0.01^2 exactly


@pytest.mark.parametrize("mode", ["continuous", "discrete"])
def test_training_loss_with_oracle(mode):
    x = torch.randn(256, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    seen = []

    def oracle(shift):
        def net(z, lam, cond):  # predicts v from z and the true x (passed as cond), x off by `shift`
            seen.append(lam)
            a = torch.sigmoid(lam).sqrt().view(-1, 1, 1, 1)
            s = torch.sigmoid(-lam).sqrt().view(-1, 1, 1, 1)
            return (a * z - (cond + shift)) / s

        return net

    sched = LinearBetaSchedule()
    gen = torch.Generator().manual_seed(1)
    perfect = training_loss(oracle(0.0), x, sched, "v", "snr+1", time_sampling=mode, cond=x, generator=gen)
    assert perfect.item() < 1e-12
    off = training_loss(oracle(0.1), x, sched, "v", "constant", time_sampling=mode, cond=x, generator=gen)
    assert off.item() == pytest.approx(0.01, rel=1e-6)
    if mode == "discrete":
        t = sched.t_of_lam(torch.cat(seen))
        assert torch.allclose(t * 1000, (t * 1000).round(), atol=1e-6)


def test_bad_names():
    lam = torch.zeros(2)
    with pytest.raises(ValueError, match="valid weightings: constant, min-snr, snr, snr\\+1, truncated-snr"):
        loss_weight("snr-1", lam)
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="valid norms: l1, l2"):
        diffusion_loss(x, x, x, x, lam, "eps", "snr", norm="huber")
    with pytest.raises(ValueError, match="valid parameterizations"):
        training_loss(lambda z, lam_, c: z, x, CosineSchedule(), "epsilon")
