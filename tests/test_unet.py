"""Tests of difflab.nets: the one U-Net for 1-D, 2-D and 3-D data and its conditioning."""

from __future__ import annotations

import pytest
import torch

from difflab.diffusion import CosineSchedule, cfg, make_denoiser, training_loss
from difflab.nets import UNet, UNetConfig, keep_cond, null_cond


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors run fastest on one thread, and several threads spin badly on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = dict(channels=8, channel_mult=(1, 2), num_blocks=1, heads=2, norm_groups=4)


def tiny(**kw) -> UNet:
    torch.manual_seed(0)
    return UNet(UNetConfig(**{**TINY, **kw}))


def randomize_output(net: UNet) -> UNet:
    """The final conv starts at zero (so the output is 0): give it weights so tests see the network."""
    torch.manual_seed(1)
    with torch.no_grad():
        net.out.weight.normal_(0, 0.3)
        net.out.bias.normal_(0, 0.3)
        for name, p in net.named_parameters():
            if name.endswith("rel_bias"):
                p.normal_(0, 1.0)
    return net


def full_cond(b: int, lowres_shape: tuple[int, ...]) -> dict:
    g = torch.Generator().manual_seed(2)
    return keep_cond(
        {
            "class": torch.arange(b) % 10,
            "vector": torch.randn(b, 6, generator=g),
            "tokens": torch.randn(b, 5, 12, generator=g),
            "token_mask": torch.arange(5)[None, :] < torch.arange(2, 2 + b)[:, None],
            "pooled": torch.randn(b, 7, generator=g),
            "lowres": torch.randn(b, *lowres_shape, generator=g),
            "aug_lam": torch.randn(b, generator=g),
        }
    )


ALL_COND = dict(
    num_classes=10, vector_dim=6, vector_tokens=2, token_dim=12, pooled_dim=7, lowres_channels=1, attn_levels=(0, 1)
)


# -- shapes ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kw", "shape"),
    [
        (dict(dims=1, in_channels=1, out_channels=1), (2, 1, 40)),
        (dict(dims=1, in_channels=1, out_channels=2, channel_mult=(1, 2, 2), attn_levels=(2,)), (2, 1, 36)),
        (dict(dims=2, in_channels=1, out_channels=1, channel_mult=(1, 2, 2), num_blocks=(1, 1, 2)), (2, 1, 28, 28)),
        (dict(dims=2, in_channels=3, out_channels=6, attn_levels=(0, 1), scale_skip=True), (3, 3, 12, 20)),
        (dict(dims=2, in_channels=3, out_channels=3, resample_first=True, num_blocks=(1, 2)), (2, 3, 28, 28)),
        (dict(dims=3, in_channels=3, out_channels=3, attn_levels=(1,)), (2, 3, 5, 8, 8)),
        (dict(dims=3, in_channels=1, out_channels=2, resample_first=True, temporal_levels=(0, 1)), (1, 1, 3, 12, 12)),
    ],
)
def test_output_shapes(kw: dict, shape: tuple[int, ...]) -> None:
    net = tiny(**kw)
    out = net(torch.randn(shape), torch.linspace(-10, 10, shape[0]))
    assert out.shape == (shape[0], kw["out_channels"], *shape[2:])
    assert torch.isfinite(out).all()


def test_conditioned_shapes_1d_and_3d() -> None:
    net = tiny(dims=1, in_channels=1, out_channels=1, **ALL_COND)
    assert net(torch.randn(3, 1, 32), torch.zeros(3), full_cond(3, (1, 8))).shape == (3, 1, 32)
    net = tiny(dims=3, in_channels=1, out_channels=1, **ALL_COND)
    cond = {**full_cond(2, (1, 4, 4, 4)), "frame_is_image": torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0]]).bool()}
    assert net(torch.randn(2, 1, 4, 8, 8), torch.zeros(2), cond).shape == (2, 1, 4, 8, 8)


def test_indivisible_size_names_the_requirement() -> None:
    net = tiny(channel_mult=(1, 2, 2, 2), in_channels=1, out_channels=1)
    with pytest.raises(ValueError, match="divisible by 8"):
        net(torch.randn(1, 1, 28, 28), torch.zeros(1))
    with pytest.raises(ValueError, match=r"expects input \(B, C, H, W\) with C=1"):
        net(torch.randn(1, 3, 32, 32), torch.zeros(1))


def test_infinite_lam_and_scalar_lam() -> None:
    net = randomize_output(tiny(in_channels=1, out_channels=1))
    x = torch.randn(2, 1, 8, 8)
    assert torch.isfinite(net(x, torch.tensor([float("inf"), -float("inf")]))).all()
    assert torch.allclose(net(x, torch.tensor(1.5)), net(x, torch.full((2,), 1.5)))


# -- gradients ----------------------------------------------------------------------------------
def assert_all_grads(net: UNet) -> None:
    missing = [n for n, p in net.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, f"no gradient reaches {missing}"


def test_gradients_reach_every_parameter_2d() -> None:
    net = randomize_output(tiny(in_channels=3, out_channels=3, scale_skip=True, **ALL_COND))
    cond = full_cond(4, (1, 4, 4))
    for k in ("class", "vector", "tokens", "pooled"):  # half the batch uses the null embeddings
        cond[k + "_drop"] = torch.tensor([True, False, True, False])
    out = net(torch.randn(4, 3, 8, 8), torch.randn(4), cond)
    (out * torch.randn_like(out)).sum().backward()
    assert_all_grads(net)


def test_gradients_reach_every_parameter_3d() -> None:
    net = randomize_output(tiny(dims=3, in_channels=1, out_channels=1, attn_levels=(1,), temporal_levels=(0, 1)))
    cond = {"frame_is_image": torch.tensor([[False, False, True]])}
    out = net(torch.randn(1, 1, 3, 4, 4), torch.randn(1), cond)
    (out * torch.randn_like(out)).sum().backward()
    assert_all_grads(net)


# -- video: the per-frame mask of joint image-video training ------------------------------------------
def test_frame_mask_isolates_image_frames() -> None:
    net = randomize_output(tiny(dims=3, in_channels=2, out_channels=2, attn_levels=(0, 1))).eval()
    x = torch.randn(1, 2, 4, 8, 8)
    lam = torch.zeros(1)
    cond = {"frame_is_image": torch.tensor([[False, False, True, True]])}  # 2 video frames + 2 images
    base = net(x, lam, cond)
    for frame in (0, 2):  # perturb a video frame, then an image frame
        x2 = x.clone()
        x2[:, :, frame] += torch.randn_like(x2[:, :, frame])
        diff = (net(x2, lam, cond) - base).abs().amax(dim=(0, 1, 3, 4))
        others = [f for f in range(4) if f != frame]
        changed = [f for f in others if diff[f] > 1e-5]
        assert changed == ([1] if frame == 0 else []), f"perturbing frame {frame} changed frames {changed}"
    # without the mask, every frame sees every other frame
    x2 = x.clone()
    x2[:, :, 0] += 1.0
    assert (net(x2, lam) - net(x, lam)).abs()[:, :, 2].amax() > 1e-5


# -- classifier-free guidance: drop flags and null embeddings --------------------------------------------
def test_drop_flags_select_the_null_embedding() -> None:
    net = randomize_output(tiny(in_channels=1, out_channels=1, num_classes=10)).eval()
    x, lam = torch.randn(2, 1, 8, 8), torch.zeros(2)
    drop = torch.ones(2, dtype=torch.bool)
    out_a = net(x, lam, {"class": torch.tensor([3, 3]), "class_drop": drop})
    out_b = net(x, lam, {"class": torch.tensor([7, 7]), "class_drop": drop})
    torch.testing.assert_close(out_a, out_b)
    assert not torch.allclose(
        net(x, lam, {"class": torch.tensor([3, 3])}), net(x, lam, {"class": torch.tensor([7, 7])})
    )
    torch.testing.assert_close(net(x, lam, None), out_a)  # an absent condition is the null one
    torch.testing.assert_close(net(x, lam, null_cond({"class": torch.tensor([3, 3])})), out_a)


def test_training_mode_drops_with_configured_probability() -> None:
    net = randomize_output(tiny(in_channels=1, out_channels=1, num_classes=10, cond_drop={"class": 1.0}))
    x, lam, y = torch.randn(2, 1, 8, 8), torch.zeros(2), torch.tensor([3, 5])
    train_out = net.train()(x, lam, {"class": y})
    torch.testing.assert_close(train_out, net.eval()(x, lam, null_cond({"class": y})))


def test_cfg_with_null_cond_on_all_conditions() -> None:
    net = randomize_output(tiny(in_channels=1, out_channels=1, **ALL_COND)).eval()
    denoiser = make_denoiser(net, "v")
    cond = full_cond(2, (1, 4, 4))
    z, lam = torch.randn(2, 1, 8, 8), torch.zeros(2)
    guided = cfg(denoiser, 3.0, null_cond)(z, lam, cond)
    x_c, x_u = denoiser(z, lam, cond), denoiser(z, lam, null_cond(cond))
    torch.testing.assert_close(guided, x_u + 3.0 * (x_c - x_u), rtol=1e-4, atol=1e-5)


# -- config and reporting ---------------------------------------------------------------------------------
def test_config_typo_names_valid_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown UNet config key\(s\) \['chanels'\].*channel_mult"):
        UNetConfig.from_dict({"dims": 2, "chanels": 32})
    with pytest.raises(ValueError, match="unknown UNet config key"):
        UNet({"dims": 2, "attention_levels": (1,)})
    with pytest.raises(ValueError, match="num_blocks"):
        UNetConfig(channel_mult=(1, 2), num_blocks=(1, 2, 3))
    with pytest.raises(ValueError, match="dims must be 1, 2 or 3"):
        UNetConfig(dims=4)
    with pytest.raises(ValueError, match="droppable conditions"):
        UNetConfig(num_classes=10, cond_drop={"lowres": 0.1})
    config = UNetConfig(**TINY, num_classes=3, cond_drop={"class": 0.1})
    assert UNetConfig.from_dict(config.to_dict()) == config


def test_cond_errors_are_clear() -> None:
    net = tiny(in_channels=1, out_channels=1, num_classes=10)
    x, lam = torch.randn(2, 1, 8, 8), torch.zeros(2)
    with pytest.raises(ValueError, match="unknown cond key"):
        net(x, lam, {"clas": torch.tensor([1, 2])})
    with pytest.raises(ValueError, match="not configured for it .set token_dim"):
        net(x, lam, {"tokens": torch.randn(2, 3, 4)})
    with pytest.raises(ValueError, match="super-resolution model"):
        tiny(in_channels=1, out_channels=1, lowres_channels=1)(x, lam)


def test_parameter_count_and_summary() -> None:
    net = tiny(in_channels=1, out_channels=1, num_classes=10)
    summary = net.summary()
    print(summary)
    assert net.num_parameters() == sum(p.numel() for p in net.parameters()) > 0
    assert f"{net.num_parameters() / 1e6:.2f}M params" in summary and "class(10)" in summary
    assert "\n" not in summary


# -- precision and training ----------------------------------------------------------------------------------
def test_bf16_autocast_forward() -> None:
    for dims, shape, extra in [(2, (2, 1, 8, 8), ALL_COND), (3, (2, 1, 3, 8, 8), dict(attn_levels=(1,)))]:
        net = randomize_output(tiny(dims=dims, in_channels=1, out_channels=1, **extra))
        cond = full_cond(2, (1, 4, 4)) if dims == 2 else {"frame_is_image": torch.tensor([[0, 0, 1], [0, 0, 0]]).bool()}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(torch.randn(shape), torch.zeros(2), cond)
        assert out.dtype == torch.float32 and out.shape == shape and torch.isfinite(out).all()


def test_tiny_model_overfits_a_fixed_batch() -> None:
    net = tiny(in_channels=1, out_channels=1, channels=16, attn_levels=(1,))
    schedule = CosineSchedule()
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(3)).clamp(-1, 1)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)

    def loss() -> torch.Tensor:  # the same times and noise every step: a fixed objective
        return training_loss(net, x, schedule, "v", generator=torch.Generator().manual_seed(4))

    first = loss().item()
    for _ in range(50):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    last = loss().item()
    assert last < 0.1 * first, (first, last)


@pytest.mark.parametrize(
    "dims, shape, factor",
    [(1, (3, 5, 7), 2), (2, (3, 5, 6, 7), 2), (1, (2, 4, 6), 3), (1, (2, 4, 5), 5), (2, (2, 3, 4, 5), 3)],
)
def test_upsample_conv_equals_nearest_upsampling_then_convolution(
    dims: int, shape: tuple[int, ...], factor: int
) -> None:
    """The one-step up-sampling convolution (a stride-2 transposed convolution) against the
    two-step definition, values and all three gradients, in float64 on odd and even sizes."""
    import torch.nn.functional as F

    from difflab.nets.unet_blocks import upsample_conv

    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, shape[1], *(3,) * dims, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    conv = F.conv1d if dims == 1 else F.conv2d
    ref = conv(F.interpolate(x, scale_factor=float(factor), mode="nearest"), w, b, padding=1)
    out = upsample_conv(x, w, b, factor)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    for got, want in zip(
        torch.autograd.grad((out * g).sum(), (x, w, b)), torch.autograd.grad((ref * g).sum(), (x, w, b)), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
