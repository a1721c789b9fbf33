"""WaveGrad: log-mel front end, network shapes, noise levels, PriorGrad prior, sampler, schedule search."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from difflab.methods.wavegrad.audio import MEL_PRESETS, MelConfig, log_mel
from difflab.methods.wavegrad.diffusion import (
    betas_to_lams,
    fixed_betas,
    naive_betas,
    noise_levels,
    prior_std,
    sample,
    sample_noise_level,
    search_schedule,
    wavegrad_loss,
)
from difflab.methods.wavegrad.net import WaveGrad, WaveGradConfig
from difflab.methods.wavegrad.vocoder import Vocoder

TINY_MEL = dict(sample_rate=16000, n_fft=256, hop=64, win=256, n_mels=20, fmin=0.0, fmax=8000.0)
TINY = dict(factors=(4, 4, 4), in_channels=16, up_channels=(16, 16, 8), down_channels=(4, 8, 8), mel=TINY_MEL)


def _speechy(n: int, sr: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    x = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.standard_normal(n)
    return x.astype(np.float32)


@pytest.mark.parametrize("preset", ["16k", "22k", "24k"])
def test_log_mel_matches_librosa(preset):
    import librosa

    cfg = MEL_PRESETS[preset]
    y = _speechy(cfg.sample_rate // 2, cfg.sample_rate)
    ref = librosa.feature.melspectrogram(
        y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop, win_length=cfg.win, power=1.0,
        n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax, center=True, pad_mode="reflect",
    )  # fmt: skip
    ref = np.log(np.maximum(ref, cfg.floor))
    ours = log_mel(torch.from_numpy(y), cfg).numpy()
    assert ours.shape == ref.shape == (cfg.n_mels, len(y) // cfg.hop + 1)
    loud = ref > np.log(1e-3)
    assert loud.mean() > 0.3
    np.testing.assert_allclose(ours[loud], ref[loud], atol=2e-3)


def test_window_with_context_reproduces_whole_utterance_mel():
    cfg = MelConfig(**TINY_MEL)
    y = torch.from_numpy(_speechy(4096, 16000))
    whole = log_mel(y, cfg)
    ctx, start, seg = cfg.n_fft // 2, 640, 1024  # frames 10 .. 25
    window = y[start - ctx : start + seg + ctx]
    part = log_mel(window, cfg, center=False)[..., :-1]
    torch.testing.assert_close(part, whole[..., 10:26], atol=1e-4, rtol=1e-4)


def test_factors_must_multiply_to_hop():
    with pytest.raises(ValueError, match="multiply to 32.*hop length is 64"):
        WaveGradConfig(**{**TINY, "factors": (4, 4, 2)})
    assert math.prod(WaveGradConfig(mel=MEL_PRESETS["24k"].to_dict(), factors=(5, 5, 3, 2, 2)).factors) == 300


def test_network_shapes_and_mel_check():
    torch.manual_seed(0)
    net = WaveGrad(TINY)
    z, mel = torch.randn(2, 1, 8 * 64), torch.randn(2, 20, 8)
    assert net(z, torch.zeros(2), mel).shape == (2, 1, 512)
    with pytest.raises(ValueError, match=r"expected \(batch, 20, frames\)"):
        net(z, torch.zeros(2), torch.randn(2, 80, 8))
    base = sum(p.numel() for p in WaveGrad(WaveGradConfig(mel=MEL_PRESETS["16k"].to_dict())).parameters())
    assert 13e6 < base < 18e6  # the paper's ~15M


def test_noise_level_uniform_step_then_uniform_level():
    betas = torch.tensor([0.5, 0.01, 0.3], dtype=torch.float64)
    lv = noise_levels(betas)
    assert lv[0] == 1 and torch.allclose(lv[1:], torch.cumprod(1 - betas, 0).sqrt())
    g = torch.Generator().manual_seed(0)
    x = sample_noise_level(30000, lv, g)
    assert bool(((x >= lv[-1]) & (x <= 1)).all())
    for s in (1, 2, 3):  # each interval [l_s, l_{s-1}] gets 1/3 of the draws, spread uniformly
        inside = x[(x >= lv[s]) & (x <= lv[s - 1])]
        assert abs(inside.numel() / x.numel() - 1 / 3) < 0.02
        assert abs(float(inside.mean()) - float(lv[s] + lv[s - 1]) / 2) < 0.02 * float(lv[s - 1] - lv[s]) + 1e-4


def test_priorgrad_loss_uses_the_prior_covariance():
    lv = noise_levels(torch.linspace(1e-6, 0.01, 1000, dtype=torch.float64))
    x = torch.zeros(4, 1, 4096)
    std = torch.full((4, 1, 4096), 0.1)
    std[..., 2048:] = 1.0

    def zero_net(z, lam, mel):
        return torch.zeros_like(z)

    for s in (None, std):  # eps ~ N(0, std^2), error measured as |eps - eps_hat| / std: E|N(0,1)| either way
        loss = wavegrad_loss(zero_net, x, None, lv, s, torch.Generator().manual_seed(1))
        assert abs(float(loss) - math.sqrt(2 / math.pi)) < 0.02

    def oracle(z, lam, mel):  # x = 0, so eps = z / sigma exactly
        return z / torch.sigmoid(-lam.double()).sqrt().float()[:, None, None]

    assert float(wavegrad_loss(oracle, x, None, lv, std, torch.Generator().manual_seed(2))) < 1e-3


def test_priorgrad_std_from_mel_energy():
    mel = torch.full((1, 20, 4), math.log(1e-5))
    mel[..., 2:] = 0.0  # magnitude 1 in the last two frames
    std = prior_std(mel, 64, energy_ref=2.0, std_min=0.1)
    assert std.shape == (1, 1, 256)
    assert torch.allclose(std[..., :128], torch.tensor(0.1)) and torch.allclose(std[..., 128:], torch.tensor(0.5))


def test_sampler_equals_wavegrad_algorithm_2():
    """Our DDPM over the betas' log-SNR grid == WaveGrad Alg. 2 written with betas, for any eps-net."""
    torch.manual_seed(0)
    net = WaveGrad(TINY).eval()
    mel = torch.randn(1, 20, 4)
    betas = [1e-4, 1e-3, 1e-2, 0.2]
    ours = sample(net, mel, betas, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    b = torch.tensor(betas, dtype=torch.float64)
    ab = torch.cumprod(1 - b, 0)
    y = torch.randn((1, 1, 256), generator=g)
    with torch.no_grad():
        for n in range(len(betas) - 1, -1, -1):
            lam = torch.log(ab[n] / (1 - ab[n])).float().reshape(1)
            eps = net(y, lam, mel)
            y = (y - float(b[n] / (1 - ab[n]).sqrt()) * eps) / float((1 - b[n]).sqrt())
            if n > 0:
                var = (1 - ab[n - 1]) / (1 - ab[n]) * b[n]
                y = y + float(var.sqrt()) * torch.randn(y.shape, generator=g)
    torch.testing.assert_close(ours, y, atol=2e-4, rtol=1e-4)


def test_schedules():
    assert len(fixed_betas(1000)) == 1000 and len(fixed_betas(50)) == 50 and len(fixed_betas(25)) == 25
    assert naive_betas(6) == pytest.approx([1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1])
    lams = betas_to_lams([1e-6, 1e-2])
    assert lams[-1] == math.inf and lams[0] < lams[1]
    with pytest.raises(ValueError, match="no fixed schedule"):
        fixed_betas(7)


def test_schedule_search_finds_known_best():
    target = (3, 7, 1, 9, 2, 5)
    exps = range(-6, 0)

    def separable(betas):
        ms = [round(b / 10.0**e) for b, e in zip(betas, exps, strict=True)]
        return sum((m - t) ** 2 for m, t in zip(ms, target, strict=True))

    betas, score, n = search_schedule(separable, 6)
    assert score == 0 and betas == pytest.approx([m * 10.0**e for m, e in zip(target, exps, strict=True)])
    assert n < 9**6 / 100  # coordinate search, not the full grid

    def coupled(betas):  # best at m = (8, 2): not found by one sweep from (1, 1) on a coupled score
        m1, m2 = round(betas[0] / 1e-2), round(betas[1] / 1e-1)
        return (m1 * m2 - 16) ** 2 + 0.1 * (m1 - 8) ** 2

    betas, score, n = search_schedule(coupled, 2, method="exhaustive")
    assert betas == pytest.approx([8e-2, 2e-1]) and n == 81


def test_vocoder_api_priorgrad_noise_follows_mel_energy():
    torch.manual_seed(0)
    net = WaveGrad({**TINY, "prior": "priorgrad", "prior_energy_ref": 1.0})
    for p in net.out.parameters():
        torch.nn.init.zeros_(p)  # eps_hat = 0: the output is the scaled prior noise
    voc = Vocoder(net, {"step": 0})
    mel = torch.full((20, 16), math.log(1e-5))
    mel[:, 8:] = 0.0
    wav = voc(mel, betas=[0.5], seed=0)
    assert wav.shape == (16 * 64,)
    quiet, loud = wav[: 8 * 64].std(), wav[8 * 64 :].clamp(-1, 1).std()
    assert 0.05 < float(quiet / loud) < 0.2
    with pytest.raises(ValueError, match=r"expected \(20, frames\)"):
        voc(torch.zeros(80, 16))


class _Oracle(torch.nn.Module):
    """Knows the clean waveform: returns the exact eps of z (checks the sampler's conventions end to end)."""

    hop = 64

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        self.x = x

    def forward(self, z, lam, mel):
        a = torch.sigmoid(lam.double()).sqrt()[:, None, None]
        s = torch.sigmoid(-lam.double()).sqrt()[:, None, None]
        return ((z.double() - a * self.x.double()) / s).float()


@pytest.mark.parametrize("prior", [False, True])
def test_sampling_with_an_oracle_returns_the_data(prior):
    x = torch.from_numpy(_speechy(512, 16000))[None, None]
    std = torch.linspace(0.1, 1.0, 512)[None, None] if prior else None
    for betas in (naive_betas(6), fixed_betas(25), [0.5]):
        out = sample(_Oracle(x), torch.zeros(1, 20, 8), betas, std=std, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(out, x, atol=1e-4, rtol=1e-4)


def test_vocoder_pads_the_mel_edges_and_keeps_the_lengths():
    torch.manual_seed(0)
    voc = Vocoder(WaveGrad(TINY), {"step": 0})
    mel = torch.randn(20, 10)
    raw = sample(voc.net, mel[None], [0.5], generator=torch.Generator().manual_seed(0))[0, 0].clamp(-1, 1)
    torch.testing.assert_close(voc(mel, betas=[0.5], pad=0), raw)  # pad=0: the network's own output
    assert voc(mel, betas=[0.5]).shape == voc(mel[None], betas=[0.5])[0].shape == (10 * 64,)  # T frames -> T * hop
    audio = _speechy(1000, 16000)  # not a whole number of hops: ceil(1000 / 64) = 16 frames cover it
    assert voc.mel(audio).shape == (1, 20, 16)
    torch.testing.assert_close(
        voc.mel(audio[:960]), log_mel(torch.from_numpy(audio[:960]), voc.mel_config)[None, :, :15]
    )


ALLISON = Path("/usr/share/asterisk/sounds/en_US_f_Allison/conf-extended.g722")  # a test-split utterance
SHIPPED = Path(__file__).resolve().parents[1] / "artifacts" / "wavegrad-priorgrad"


@pytest.mark.skipif(not (ALLISON.is_file() and SHIPPED.is_dir()), reason="needs asterisk-core-sounds-en-g722")
def test_shipped_vocoder_output_has_no_clicks_at_its_edges():
    """The first and last samples were clicks (|x| about 0.2 where the recording has 1e-4)."""
    from difflab.methods.wavegrad.audio import read_audio

    voc = Vocoder.load(SHIPPED)
    real, _ = read_audio(ALLISON, 16000)
    wav = voc.resynthesize(ALLISON, steps=6)
    assert len(wav) == len(real) == 33120  # 129.4 hops: the input's length, not a whole number of hops
    interior = np.abs(wav[64:-64]).mean()
    for edge in (wav[:64], wav[-64:]):
        assert np.abs(edge).mean() < 0.01 * interior and np.abs(edge[[0, -1]]).max() < 0.01


def test_validation_clips_spread_over_the_utterances():
    """Several voices come voice by voice: the clips must not all be the first voice's."""
    from difflab.methods.wavegrad.audio import MEL_PRESETS
    from difflab.methods.wavegrad.vocoder import validation_clips

    cfg = MEL_PRESETS["16k"]
    audio = [np.full(30000 if i % 5 else 8000, i, np.float32) for i in range(40)]  # every 5th too short
    clips = validation_clips(audio, cfg, 8, 1.5)
    voices = {int(v) // 10 for v in clips[:, 0]}  # four "voices" of 10 utterances each
    assert clips.shape == (8, 1.5 * 16000 // 256 * 256) and voices == {0, 1, 2, 3}
    assert all(int(v) % 5 for v in clips[:, 0])  # none of the too-short ones
    few = validation_clips(audio[:3], cfg, 8, 1.5)
    assert [int(v) for v in few[:, 0]] == [1, 2]  # fewer long-enough utterances than clips: all of them


def test_ublock_at_the_input_rate_equals_upsampling_first() -> None:
    """The UBlock's first conv and skip run before the up-sampling (they commute with it): the block
    equals its two-step definition (up-sample, leaky ReLU, conv; skip on the up-sampled signal)."""
    import torch.nn.functional as F

    from difflab.methods.wavegrad.net import UBlock, as_rows

    torch.manual_seed(0)
    for factor in (2, 3, 5):
        block = UBlock(6, 4, factor, (1, 2, 4, 8)).double()
        x = torch.randn(2, 6, 7, dtype=torch.float64)
        scale, shift = (
            torch.randn(2, 4, 7 * factor, dtype=torch.float64),
            torch.randn(2, 4, 7 * factor, dtype=torch.float64),
        )
        up = F.interpolate(x, scale_factor=factor, mode="nearest")
        h = block.convs[0](F.leaky_relu(up, 0.2))
        h = block.convs[1](F.leaky_relu(scale * h + shift, 0.2))
        y = h + block.skip(up)
        h = block.convs[2](F.leaky_relu(scale * y + shift, 0.2))
        want = y + block.convs[3](F.leaky_relu(scale * h + shift, 0.2))
        got = block(as_rows(x), as_rows(scale), as_rows(shift))
        assert got.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(got[:, :, 0], want, rtol=1e-12, atol=1e-12)
