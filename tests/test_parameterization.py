import pytest
import torch

from difflab.diffusion import (
    PARAMETERIZATIONS,
    eps_from_v,
    eps_from_x,
    make_denoiser,
    output_channels,
    predict,
    target,
    v_from_x_eps,
    x_from_eps,
    x_from_v,
)


def _setup(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 3, 5, 5, generator=g, dtype=torch.float64)
    eps = torch.randn(64, 3, 5, 5, generator=g, dtype=torch.float64)
    lam = torch.linspace(-10, 10, 64, dtype=torch.float64)
    alpha = torch.sigmoid(lam).sqrt().view(-1, 1, 1, 1)
    sigma = torch.sigmoid(-lam).sqrt().view(-1, 1, 1, 1)
    return x, eps, alpha * x + sigma * eps, alpha, sigma


@pytest.mark.parametrize("name", PARAMETERIZATIONS)
def test_target_predict_roundtrip(name):
    x, eps, z, a, s = _setup()
    x_hat, eps_hat = predict(name, target(name, x, eps, a, s), z, a, s)
    assert torch.allclose(x_hat, x, atol=1e-6) and torch.allclose(eps_hat, eps, atol=1e-6)


def test_pairwise_conversions():
    x, eps, z, a, s = _setup(1)
    v = v_from_x_eps(x, eps, a, s)
    assert torch.allclose(x_from_v(z, v, a, s), x, atol=1e-6)
    assert torch.allclose(eps_from_v(z, v, a, s), eps, atol=1e-6)
    assert torch.allclose(x_from_eps(z, eps, a, s), x, atol=1e-6)
    assert torch.allclose(eps_from_x(z, x, a, s), eps, atol=1e-6)
    # v is the derivative of z along the angle phi = arctan(sigma / alpha)
    phi = torch.atan2(s, a)
    h = 1e-6
    z_plus = torch.cos(phi + h) * x + torch.sin(phi + h) * eps
    z_minus = torch.cos(phi - h) * x + torch.sin(phi - h) * eps
    assert torch.allclose((z_plus - z_minus) / (2 * h), v, atol=1e-6)


def test_both_merges_with_sigma_alpha_weights():
    x, eps, z, a, s = _setup(2)
    x_tilde = x + 0.3  # a wrong x-prediction ...
    eps_tilde = eps  # ... and a perfect eps-prediction
    x_hat, _ = predict("both", torch.cat([x_tilde, eps_tilde], 1), z, a, s)
    assert torch.allclose(x_hat, x + 0.3 * s**2, atol=1e-9)  # x-branch counts with weight sigma^2
    assert output_channels("both", 3) == 6 and output_channels("v", 3) == 3


def test_make_denoiser_and_errors():
    x, eps, z, a, s = _setup(3)
    lam = torch.log(a**2 / s**2).flatten()
    net = lambda z_, lam_, cond: v_from_x_eps(x, eps, a, s)  # a perfect v network
    assert torch.allclose(make_denoiser(net, "v")(z, lam), x, atol=1e-6)
    with pytest.raises(ValueError, match="valid parameterizations: both, eps, v, x"):
        make_denoiser(net, "velocity")
    with pytest.raises(ValueError, match="'both' needs 6 output channels"):
        predict("both", x, z, a, s)
