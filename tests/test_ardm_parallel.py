"""Parallel generation plans: the exact DP against brute force (Hoogeboom et al. 2022, section 4)."""

import itertools

import numpy as np
import pytest

from difflab.methods.ardm.parallel import allocate, dp_plan, dp_tables, make_plans, segment_cost, uniform_plan


def brute(losses, k):
    d = len(losses)
    best = None
    for cuts in itertools.combinations(range(1, d), k - 1):
        plan = [0, *cuts, d]
        c = segment_cost(losses, plan)
        best = c if best is None else min(best, c)
    return best


@pytest.mark.parametrize("seed", range(5))
def test_dp_is_exact_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    d = 8
    losses = np.sort(rng.gamma(1.0, size=d))[::-1]
    costs, _ = dp_tables(losses, d)
    for k in range(1, d + 1):
        plan = dp_plan(losses, k)
        assert plan[0] == 0 and plan[-1] == d and len(plan) == k + 1 and all(np.diff(plan) > 0)
        assert segment_cost(losses, plan) == pytest.approx(brute(losses, k))
        assert costs[k] == pytest.approx(brute(losses, k))
        assert segment_cost(losses, plan) <= segment_cost(losses, uniform_plan(d, k)) + 1e-12
    assert segment_cost(losses, dp_plan(losses, d)) == pytest.approx(losses.sum())  # D calls: the full NLL


def test_dp_beats_uniform_on_a_decaying_loss_curve():
    losses = 5.0 * np.exp(-np.arange(100) / 10.0) + 0.5
    for k in (2, 5, 12):
        assert segment_cost(losses, dp_plan(losses, k)) < 0.95 * segment_cost(losses, uniform_plan(100, k))


def test_allocate_across_stages_against_brute_force():
    rng = np.random.default_rng(7)
    stage_losses = [np.sort(rng.gamma(1.0 + s, size=5))[::-1] for s in range(3)]
    tables = [dp_tables(L, 5)[0] for L in stage_losses]
    for k in range(3, 16):
        per = allocate(tables, k)
        want = min(
            sum(t[m] for t, m in zip(tables, ms, strict=True))
            for ms in itertools.product(range(1, 6), repeat=3)
            if sum(ms) == k
        )
        assert sum(per) == k and min(per) >= 1
        assert sum(t[m] for t, m in zip(tables, per, strict=True)) == pytest.approx(want)


def test_make_plans():
    L = [np.linspace(3, 1, 20)] * 2
    assert make_plans("dp", None, 20, L, 2) == [None, None]
    assert make_plans("dp", 40, 20, L, 2) == [None, None]
    plans = make_plans("dp", 10, 20, L, 2)
    assert sum(len(p) - 1 for p in plans) == 10
    assert sum(len(p) - 1 for p in make_plans("uniform", 7, 20, None, 2)) == 7
    with pytest.raises(ValueError, match="per-step losses"):
        make_plans("dp", 10, 20, None, 2)
    with pytest.raises(ValueError, match="less than"):
        make_plans("uniform", 1, 20, None, 2)
