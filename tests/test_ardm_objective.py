"""OA-ARDM objective, heads and sampling (difflab.methods.ardm; Hoogeboom et al. 2022)."""

import itertools
import math

import pytest
import torch

from difflab.methods.ardm.model import ImageARDM, logistic_log_mass, radix, softmax_log_mass
from difflab.methods.ardm.objective import oa_loss, plan_nll, sample


def tiny(shape=(1, 1, 3), levels=4, branching=0, head="softmax", seed=0):
    torch.manual_seed(seed)
    cfg = {
        "kind": "image", "shape": list(shape), "levels": levels, "branching": branching, "head": head,
        "mixtures": 2, "unet": {"channels": 8, "channel_mult": [1], "num_blocks": 1, "norm_groups": 4},
    }  # fmt: skip
    m = ImageARDM(cfg)
    torch.nn.init.normal_(m.net.out.weight, std=0.5)
    torch.nn.init.normal_(m.net.out.bias, std=0.5)
    return m.eval()


@torch.no_grad()
def exact_nll(model, x):
    """Average over every order of every stage of sum_t -log p(x_sigma(t) | x_sigma(<t)) (brute force)."""
    d = x.shape[1]
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for s in range(model.num_stages):
        stage = torch.full((x.shape[0],), s)
        acc = torch.zeros(x.shape[0], dtype=torch.float64)
        perms = list(itertools.permutations(range(d)))
        for perm in perms:
            known = torch.zeros(x.shape[0], d, dtype=torch.bool)
            for k in perm:
                acc -= model(x, known, stage)[:, k].double()
                known[:, k] = True
        total += acc / len(perms)
    return total


@pytest.mark.parametrize("branching,head", [(0, "softmax"), (0, "logistic"), (2, "softmax")])
def test_objective_is_an_unbiased_nll_estimate(branching, head):
    """E over (t, sigma, stage) of the weighted loss equals the exact order-averaged NLL."""
    model = tiny(branching=branching, head=head)
    x = torch.tensor([[0, 3, 1], [2, 2, 0]])
    d, s_count = 3, model.num_stages
    want = exact_nll(model, x)
    est = torch.zeros(2, dtype=torch.float64)
    n = 0
    with torch.no_grad():
        for s, t, perm in itertools.product(range(s_count), range(1, d + 1), itertools.permutations(range(d))):
            ranks = torch.empty(d, dtype=torch.long)
            ranks[list(perm)] = torch.arange(d)
            est += oa_loss(
                model, x, num_stages=s_count, t=torch.full((2,), t), ranks=ranks.expand(2, d),
                stage=torch.full((2,), s),
            ).double()  # fmt: skip
            n += 1
    torch.testing.assert_close(est / n, want, rtol=1e-5, atol=1e-5)
    assert float(want.min()) > 0


def test_upscale_nll_is_finite_and_stagewise():
    model = tiny(levels=17, branching=2)  # 5 stages of one bit, 32 > 17 padded levels
    assert model.num_stages == 5 and model.R == [32, 16, 8, 4, 2, 1]
    x = torch.tensor([[16, 0, 9]])
    assert math.isfinite(float(exact_nll(model, x)))


def test_digit_probs_agree_with_the_training_path():
    """What the coder and sampler use (float64 digit_probs) matches exp of the training log-probs."""
    for branching, head in [(0, "softmax"), (0, "logistic"), (4, "logistic"), (2, "softmax")]:
        model = tiny(shape=(1, 2, 4), levels=16, branching=branching, head=head)
        x = torch.randint(0, 16, (3, 8))
        known = torch.rand(3, 8) < 0.5
        for s in range(model.num_stages):
            stage = torch.full((3,), s)
            logp = model(x, known, stage)
            idx = torch.arange(8)
            probs = model.digit_probs(x, known, s, idx)
            torch.testing.assert_close(probs.sum(-1), torch.ones(3, 8, dtype=torch.float64))
            digit = (x % model.R[s]) // model.R[s + 1]
            got = probs.gather(-1, digit[..., None]).squeeze(-1)
            torch.testing.assert_close(got.log().float(), logp, rtol=1e-4, atol=1e-4)


def test_logistic_masses_add_up():
    params = torch.randn(5, 9, dtype=torch.float64) * 2
    k = torch.arange(256).expand(5, 256)
    single = logistic_log_mass(params, k, k, 256).exp()
    torch.testing.assert_close(single.sum(-1), torch.ones(5, dtype=torch.float64), rtol=1e-9, atol=1e-9)
    lo, hi = torch.tensor([[10]] * 5), torch.tensor([[99]] * 5)
    torch.testing.assert_close(logistic_log_mass(params, lo, hi, 256).exp()[:, 0], single[:, 10:100].sum(-1))
    logits = torch.randn(4, 17)
    m = softmax_log_mass(logits, torch.tensor([[3]] * 4), torch.tensor([[7]] * 4)).exp()[:, 0]
    torch.testing.assert_close(m, logits.softmax(-1)[:, 3:8].sum(-1))


def test_radix():
    assert radix(256, 0) == [256, 1]
    assert radix(256, 4) == [256, 64, 16, 4, 1]
    assert radix(256, 2)[0] == 256 and len(radix(256, 2)) == 9
    assert radix(17, 4) == [64, 16, 4, 1]


def test_full_plan_estimator_matches_objective_on_average():
    """plan_nll with full plans is the same estimator as the training loss: equal means (many draws)."""
    model = tiny(shape=(1, 2, 2), levels=4)
    x = torch.randint(0, 4, (1, 4)).expand(4000, 4)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    with torch.no_grad():
        a = oa_loss(model, x, generator=g1).mean()
        b = plan_nll(model, x, generator=g2).mean()
        exact = exact_nll(model, x[:1])[0]
    assert abs(float(a) - float(exact)) < 0.05 * float(exact)
    assert abs(float(b) - float(exact)) < 0.05 * float(exact)


def test_sampling_gives_levels_in_range_and_follows_seed():
    model = tiny(shape=(1, 2, 2), levels=17, branching=2)
    a = sample(model, 5, seed=3)
    b = sample(model, 5, seed=3)
    assert a.shape == (5, 4) and int(a.min()) >= 0 and int(a.max()) <= 16
    assert torch.equal(a, b)
