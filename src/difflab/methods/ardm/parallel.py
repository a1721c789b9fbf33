"""Parallel generation under a budget of network calls (Hoogeboom et al. 2022, section 4, eq. 7).

With per-step losses ``L_t`` (nats per variable when ``t`` variables are known; non-increasing,
estimated on held-out data and sorted), producing the variables at order positions ``t .. t'-1``
in one call costs ``(t' - t) * L_t``. :func:`dp_plan` finds the ``k`` segments that minimise the
total cost exactly by dynamic programming in O(k D^2) (vectorised over the end point);
:func:`uniform_plan` splits the steps evenly, for comparison. Upscale ARDMs have one plan per
stage: :func:`allocate` splits a total budget between the stages exactly (a knapsack over the
per-stage optimal costs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def segment_cost(losses: Sequence[float], plan: Sequence[int]) -> float:
    """Total cost ``sum_j (t_{j+1} - t_j) * L[t_j]`` of a plan (boundaries 0 = t_0 < ... < t_m = D)."""
    b = list(plan)
    return float(sum((z - a) * losses[a] for a, z in zip(b[:-1], b[1:], strict=True)))


def dp_tables(losses: Sequence[float], kmax: int) -> tuple[np.ndarray, np.ndarray]:
    """``cost[m]``: the least cost with exactly ``m`` calls (m = 1..kmax; cost[0] = inf) and the
    back-pointer table ``back[m, t']`` (start of the last segment that ends at ``t'``)."""
    L = np.asarray(losses, dtype=np.float64)
    d = len(L)
    kmax = min(kmax, d)
    start = np.arange(d)[:, None]
    end = np.arange(d + 1)[None, :]
    step_cost = np.where(start < end, (end - start) * L[:, None], np.inf)  # (D, D+1)
    best = np.full(d + 1, np.inf)
    best[0] = 0.0
    back = np.zeros((kmax + 1, d + 1), dtype=np.int64)
    cost = np.full(kmax + 1, np.inf)
    for m in range(1, kmax + 1):
        total = best[:d, None] + step_cost
        back[m] = total.argmin(0)
        best = total[back[m], np.arange(d + 1)]
        cost[m] = best[d]
    return cost, back


def dp_plan(losses: Sequence[float], k: int) -> list[int]:
    """The optimal plan with ``k`` network calls (``min(k, D)``) for per-step losses ``losses``."""
    d = len(losses)
    k = max(1, min(k, d))
    _, back = dp_tables(losses, k)
    return _backtrack(back, d, k)


def uniform_plan(d: int, k: int) -> list[int]:
    """``k`` segments of (nearly) equal length."""
    k = max(1, min(k, d))
    return [int(v) for v in np.round(np.linspace(0, d, k + 1)).astype(int)]


def allocate(stage_costs: Sequence[np.ndarray], k: int) -> list[int]:
    """Calls per stage (each >= 1, summing to ``k``) minimising the summed per-stage optimal costs.

    ``stage_costs[s][m]`` is stage ``s``'s least cost with ``m`` calls (from :func:`dp_tables`); an exact
    knapsack over stages, vectorised over the calls used so far.
    """
    s_count = len(stage_costs)
    if k < s_count:
        raise ValueError(f"a budget of {k} calls is less than the {s_count} stages (at least one call each)")
    best = np.full(k + 1, np.inf)
    best[0] = 0.0
    choice = []
    for costs in stage_costs:
        costs = np.asarray(costs, dtype=np.float64)
        nxt, pick = np.full(k + 1, np.inf), np.zeros(k + 1, dtype=np.int64)
        for m in range(1, min(len(costs) - 1, k) + 1):
            cand = np.full(k + 1, np.inf)
            cand[m:] = best[: k + 1 - m] + costs[m]
            better = cand < nxt
            nxt[better], pick[better] = cand[better], m
        best = nxt
        choice.append(pick)
    finite = np.flatnonzero(np.isfinite(best))  # the largest budget need not be reachable (at most D calls a stage)
    used = int(finite[np.argmin(best[finite])]) if len(finite) else 0
    per = []
    for pick in reversed(choice):
        m = int(pick[used])
        per.append(m)
        used -= m
    return per[::-1]


_TABLES: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _cached_tables(losses: Sequence[float], kmax: int) -> tuple[np.ndarray, np.ndarray]:
    key = (hash(tuple(float(v) for v in losses)), kmax)
    if key not in _TABLES:
        if len(_TABLES) > 16:
            _TABLES.clear()
        _TABLES[key] = dp_tables(losses, kmax)
    return _TABLES[key]


def _backtrack(back: np.ndarray, d: int, m: int) -> list[int]:
    plan = [d]
    for j in range(m, 0, -1):
        plan.append(int(back[j, plan[-1]]))
    return plan[::-1]


def make_plans(
    kind: str, budget: int | None, d: int, stage_losses: Sequence[Sequence[float]] | None, stages: int
) -> list[list[int] | None]:
    """Plans of every stage for a total ``budget`` of calls: ``kind`` "dp" (needs ``stage_losses``) or
    "uniform"; ``budget`` None or >= S * D gives the full plans."""
    if budget is None or budget >= stages * d:
        return [None] * stages
    if budget < stages:
        raise ValueError(f"budget {budget} is less than the number of stages ({stages})")
    if kind == "uniform":
        per = [budget // stages + (1 if s < budget % stages else 0) for s in range(stages)]
        return [uniform_plan(d, m) for m in per]
    if kind != "dp":
        raise ValueError(f"unknown plan kind {kind!r}; valid: dp, uniform")
    if stage_losses is None or len(stage_losses) != stages:
        raise ValueError("the DP plan needs per-step losses of every stage: run `difflab ardm-eval RUN` first")
    tables = [_cached_tables(L, d) for L in stage_losses]  # all budgets at once: computed once per stage
    per = allocate([c for c, _ in tables], budget)
    return [_backtrack(back, d, m) for (_, back), m in zip(tables, per, strict=True)]
