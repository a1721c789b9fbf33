"""Benchmark for the issue "Core diffusion engine": import time, sampler overhead, convergence order.

Run from the repository root (``make bench`` does)::

    .venv/bin/python benchmarks/core.py

It measures

1. ``import_seconds``: wall time of ``python -c "import difflab"`` in a fresh process (median of 7),
   beside a bare ``python -c pass`` and ``import difflab.diffusion`` (which pulls torch).
2. ``sampler_step_us``: time per step of difflab's samplers against the same step through
   diffusers' schedulers, both driven by the same trivial network (``eps = 0.1 z``), on a
   64x3x32x32 float32 batch: the sampler's own overhead, since the network costs one
   elementwise op (measured separately as ``net_call_us``). Whole loops of ``--steps`` steps are
   timed and divided by the step count; difflab and diffusers runs alternate so machine noise
   hits both alike; the median of ``--repeats`` runs is reported.
3. ``order_slopes``: the convergence order of each sampler, from the exact output mean and
   covariance (no Monte Carlo) on a correlated 2-D Gaussian with its exact denoiser, on
   uniform-in-log-SNR cosine grids.

It writes ``docs/results/core.json`` and regenerates ``docs/RESULTS.md`` (``benchmarks/report.py``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout even without an editable install
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import command_line, machine_info, write_result  # noqa: E402
from difflab.analytic import Gaussian, known_coordinates_experiment, loglog_slope, output_moments  # noqa: E402
from difflab.diffusion import (  # noqa: E402
    CosineSchedule,
    LinearBetaSchedule,
    ddim,
    ddpm,
    dpmpp_2m,
    heun,
    make_denoiser,
)
from difflab.diffusion._util import check_finite  # noqa: E402

SHAPE = (64, 3, 32, 32)
# reconstruction guidance vs replacement: x_b given x_a on correlated 2-D Gaussian data
KNOWN_SETUP = {"known_value": 1.5, "correlation": 0.95, "weight": 2.0, "steps": 100, "n": 4000, "seed": 0}
N_TRAIN = 1000
GAUSS = Gaussian([0.5, -0.3], [[1.0, 0.9], [0.9, 1.0]])  # strongly correlated 2-D Gaussian
ORDER_STEPS = [32, 64, 128, 256]
EXPECTED_ORDER = {"ddpm": 1.0, "ddim": 1.0, "dpmpp_2m": 2.0, "heun": 2.0}


# -- machine and command -------------------------------------------------------------------------
# -- 1. import time ------------------------------------------------------------------------------
def time_python(code: str, runs: int = 7) -> float:
    """Median wall time (s) of ``python -c code`` in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_import(runs: int = 7) -> dict:
    probe = "import sys, difflab; print(int('torch' in sys.modules))"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, env=env)
    return {
        "difflab": time_python("import difflab", runs),
        "python_bare": time_python("pass", runs),
        "difflab_diffusion": time_python("import difflab.diffusion", 3),  # reference only: it is torch's time
        "difflab_imports_torch": out.stdout.strip() == "1",
    }


# -- 2. sampler overhead -------------------------------------------------------------------------
def trivial_net(z: torch.Tensor, lam: object = None, cond: object = None) -> torch.Tensor:
    """The 'network': an eps-prediction of 0.1 z (one elementwise op)."""
    return 0.1 * z


def lam_of_k(schedule: LinearBetaSchedule, k: float) -> float:
    """difflab log-SNR of diffusers' 0-based timestep ``k``: ``t = (k + 1) / 1000``."""
    return float(schedule.lam(torch.tensor((k + 1) / N_TRAIN, dtype=torch.float64)))


def build_runners(steps: int) -> dict[str, dict[str, Callable[[torch.Tensor], torch.Tensor]]]:
    """For each sampler, callables ``f(z)`` that run a whole sampling loop in each library.

    Both libraries sample the same grid: diffusers' timesteps for ``steps`` inference steps,
    mapped to difflab's log-SNR. Scheduler set-up (``set_timesteps``) is outside the timed loop
    for diffusers (a runner's ``prepare``), like building ``lams`` is for difflab.
    """
    schedule = LinearBetaSchedule()
    den = make_denoiser(trivial_net, "eps")
    runners: dict[str, dict] = {}

    def ours(sampler: Callable, lams: torch.Tensor, seeded: bool = False) -> dict:
        """difflab's loop, as shipped and without the per-step finiteness check (priced separately)."""

        def run(z: torch.Tensor, check: bool = True) -> torch.Tensor:
            kw = {"generator": torch.Generator().manual_seed(0)} if seeded else {}
            return sampler(den, z, lams, check_finite=check, **kw)

        return {"difflab": run, "difflab_unchecked": lambda z: run(z, check=False)}

    try:
        import diffusers
    except ImportError:
        diffusers = None

    def grid_from_ks(ks) -> torch.Tensor:
        return torch.tensor([lam_of_k(schedule, float(k)) for k in ks] + [math.inf], dtype=torch.float64)

    def grid_from_sigmas(sigmas) -> torch.Tensor:  # diffusers' sigma = sqrt((1 - a) / a) = exp(-lam / 2)
        s = torch.as_tensor(sigmas, dtype=torch.float64)
        return torch.cat([-2.0 * s[:-1].log(), torch.tensor([math.inf], dtype=torch.float64)])

    cfg = dict(num_train_timesteps=N_TRAIN, beta_schedule="linear", prediction_type="epsilon")

    # DDPM and DDIM: diffusers' default "leading" timesteps, e.g. 980, 960, ..., 0 for 50 steps.
    ks = list(range(0, N_TRAIN, N_TRAIN // steps))[::-1][:steps]
    lams_discrete = grid_from_ks(ks)
    runners["ddpm"] = ours(ddpm, lams_discrete, seeded=True)
    runners["ddim"] = ours(ddim, lams_discrete)
    if diffusers is not None:
        s_ddpm = diffusers.DDPMScheduler(clip_sample=False, **cfg)
        s_ddpm.set_timesteps(steps)
        assert [int(k) for k in s_ddpm.timesteps] == ks

        def run_ddpm(z):
            g = torch.Generator().manual_seed(0)
            for k in s_ddpm.timesteps:
                z = s_ddpm.step(trivial_net(z), k, z, generator=g).prev_sample
            return z

        s_ddim = diffusers.DDIMScheduler(clip_sample=False, set_alpha_to_one=True, **cfg)
        s_ddim.set_timesteps(steps)

        def run_ddim(z):
            for k in s_ddim.timesteps:
                z = s_ddim.step(trivial_net(z), k, z, eta=0.0).prev_sample
            return z

        runners["ddpm"]["diffusers"] = run_ddpm
        runners["ddim"]["diffusers"] = run_ddim

    # DPM-Solver++(2M): diffusers' "linspace" timesteps and final sigma 0 (see the cross-check test).
    if diffusers is not None:
        s_dpm = diffusers.DPMSolverMultistepScheduler(
            algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero", **cfg
        )
        s_dpm.set_timesteps(steps)
        lams_dpm = grid_from_sigmas(s_dpm.sigmas)

        def run_dpm(z):
            for k in s_dpm.timesteps:
                z = s_dpm.step(trivial_net(z), k, z).prev_sample
            return z

        run_dpm.prepare = lambda: s_dpm.set_timesteps(steps)  # resets the multistep history, untimed

        runners["dpmpp_2m"] = {**ours(dpmpp_2m, lams_dpm), "diffusers": run_dpm}

        # Heun: diffusers' set_timesteps(n) makes 2n - 1 model calls, two per interval and one
        # (Euler) for the last interval to sigma = 0, exactly like difflab's heun on n intervals.
        s_heun = diffusers.HeunDiscreteScheduler(**cfg)
        s_heun.set_timesteps(steps)
        sig = s_heun.sigmas  # [s0, s1, s1, s2, s2, ..., 0]
        lams_heun = grid_from_sigmas(torch.cat([sig[:1], sig[1:-1:2], sig[-1:]]))

        def run_heun(z):
            z = z * s_heun.init_noise_sigma
            for t in s_heun.timesteps:
                out = trivial_net(s_heun.scale_model_input(z, t))
                z = s_heun.step(out, t, z).prev_sample
            return z

        run_heun.prepare = lambda: s_heun.set_timesteps(steps)  # resets the step index, untimed

        runners["heun"] = {**ours(heun, lams_heun), "diffusers": run_heun}
    else:
        runners["dpmpp_2m"] = ours(dpmpp_2m, lams_discrete)
        runners["heun"] = ours(heun, lams_discrete)
    return runners


def _time_once(fn: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> float:
    """Wall time of one loop; a runner's ``prepare`` (scheduler reset) runs first, untimed."""
    if hasattr(fn, "prepare"):
        fn.prepare()
    t0 = time.perf_counter()
    fn(z)
    return time.perf_counter() - t0


def bench_samplers(steps: int, repeats: int) -> tuple[dict, dict]:
    """Median microseconds per step for every (sampler, implementation), interleaved."""
    runners = build_runners(steps)
    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    times: dict[str, dict[str, list[float]]] = {n: {impl: [] for impl in r} for n, r in runners.items()}
    with torch.no_grad():
        for r in runners.values():  # warm-up
            for fn in r.values():
                _time_once(fn, z)
        for rep in range(repeats):
            for name, r in runners.items():
                impls = list(r) if rep % 2 == 0 else list(r)[::-1]  # alternate the order
                for impl in impls:
                    times[name][impl].append(_time_once(r[impl], z))

        # the network alone and the finiteness check alone, per call
        def per_call(fn, n=200):
            vals = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                vals.append((time.perf_counter() - t0) / n)
            return statistics.median(vals) * 1e6

        x = torch.randn(SHAPE)
        den = make_denoiser(trivial_net, "eps")
        extras = {
            "net_call_us": per_call(lambda: trivial_net(x)),
            # what _Loop.x_hat runs per denoiser call (check_finite in diffusion/_util.py: one sum,
            # since a sum is non-finite if any element is) ...
            "finite_check_us": per_call(lambda: check_finite(x, "bench")),
            # ... and the element-wise check it replaced
            "finite_check_elementwise_us": per_call(lambda: bool(torch.isfinite(x).all())),
            "make_denoiser_call_us": per_call(lambda: den(x, torch.full((SHAPE[0],), 1.0))),
        }
    result: dict[str, dict[str, float | None]] = {}
    for name, per_impl in times.items():
        row: dict[str, float | None] = {"difflab": None, "diffusers": None}
        for impl, ts in per_impl.items():
            row[impl] = statistics.median(ts) / steps * 1e6
        row["ratio"] = row["difflab"] / row["diffusers"] if row["diffusers"] else None
        result[name] = row
    return result, extras


# -- 3. convergence order ------------------------------------------------------------------------
def bench_orders(steps_list: list[int]) -> tuple[dict, dict, dict]:
    """Log-log slope of the exact output-moment error against the step count, per sampler."""
    sched = CosineSchedule()
    samplers = {"ddpm": ddpm, "ddim": ddim, "dpmpp_2m": dpmpp_2m, "heun": heun}
    slopes, slopes_finest, errors = {}, {}, {}
    for name, fn in samplers.items():
        errs = []
        for n in steps_list:
            mean, cov = output_moments(fn, GAUSS.denoise, GAUSS.dim, sched.lams(n, "lam"))
            errs.append(float((mean - GAUSS.mean).norm() + (cov - GAUSS.cov).norm()))
        slopes[name] = loglog_slope(steps_list, errs)
        slopes_finest[name] = loglog_slope(steps_list[-2:], errs[-2:])
        errors[name] = {str(n): e for n, e in zip(steps_list, errs, strict=True)}
    return slopes, slopes_finest, errors


# -- main ------------------------------------------------------------------------------------------
def print_tables(res: dict) -> None:
    imp = res["import_seconds"]
    print(
        f"\nimport difflab            {imp['difflab'] * 1e3:8.1f} ms  (torch imported: {imp['difflab_imports_torch']})"
    )
    print(f"python -c pass            {imp['python_bare'] * 1e3:8.1f} ms")
    print(f"import difflab.diffusion  {imp['difflab_diffusion'] * 1e3:8.1f} ms  (pulls torch)")
    print(f"\nsampler overhead, us per step, batch {'x'.join(map(str, SHAPE))} float32, {res['steps']} steps")
    print(f"{'sampler':10s} {'difflab':>10s} {'diffusers':>10s} {'ratio':>7s} {'no check':>10s}")
    for name, row in res["sampler_step_us"].items():
        d = f"{row['diffusers']:10.1f}" if row["diffusers"] else f"{'-':>10s}"
        r = f"{row['ratio']:7.2f}" if row["ratio"] else f"{'-':>7s}"
        print(f"{name:10s} {row['difflab']:10.1f} {d} {r} {row['difflab_unchecked']:10.1f}")
    ex = res["sampler_extras_us"]
    print(
        f"per call: network {ex['net_call_us']:.1f} us, finiteness check {ex['finite_check_us']:.1f} us "
        f"(element-wise: {ex['finite_check_elementwise_us']:.1f} us), "
        f"make_denoiser call {ex['make_denoiser_call_us']:.1f} us"
    )
    print(f"\nconvergence order (exact moments, cosine grid uniform in lam, steps {ORDER_STEPS})")
    for name, slope in res["order_slopes"].items():
        errs = " ".join(f"{e:.2e}" for e in res["order_errors"][name].values())
        fine = res["order_slopes_finest"][name]
        expected = EXPECTED_ORDER[name]
        print(f"{name:10s} slope {slope:5.2f} (last pair {fine:4.2f}, expected {expected:.0f})  errors {errs}")
    kc = res["known_coordinates"]
    print(
        f"\nknown coordinates (ddpm, exact denoiser): true E[x_b | x_a] {kc['truth']:.3f}; "
        f"replacement {kc['replacement']:.3f} (error {abs(kc['replacement'] - kc['truth']):.3f}); "
        f"reconstruction guidance {kc['reconstruction']:.3f} (error {abs(kc['reconstruction'] - kc['truth']):.3f})"
    )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=50, help="sampling steps per timed loop")
    p.add_argument("--repeats", type=int, default=7, help="timed loops per sampler and library (median)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--no-write", action="store_true", help="print only; do not write docs/results or RESULTS.md")
    args = p.parse_args(argv)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    res: dict = {
        "command": command_line("benchmarks/core.py"),
        "machine": machine_info(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "steps": args.steps,
        "repeats": args.repeats,
        "batch_shape": list(SHAPE),
    }
    res["import_seconds"] = bench_import()
    res["sampler_step_us"], res["sampler_extras_us"] = bench_samplers(args.steps, args.repeats)
    res["order_slopes"], res["order_slopes_finest"], res["order_errors"] = bench_orders(ORDER_STEPS)
    res["order_expected"] = EXPECTED_ORDER
    res["order_setup"] = {
        "data": "2-D Gaussian, mean [0.5, -0.3], cov [[1.0, 0.9], [0.9, 1.0]], exact denoiser",
        "grid": "CosineSchedule().lams(n, 'lam'): uniform in lam from -20 to 20, then +inf",
        "error": "||mean - mu|| + ||cov - Sigma||_F of the exact output moments",
        "steps": ORDER_STEPS,
    }
    res["known_coordinates"] = known_coordinates_experiment(**KNOWN_SETUP)
    res["known_coordinates_setup"] = KNOWN_SETUP
    res["seconds"] = round(time.perf_counter() - t_start, 1)
    print_tables(res)
    if not args.no_write:
        out = write_result("core", res)
        print(f"\nwrote {out.relative_to(ROOT)} and docs/RESULTS.md ({res['seconds']} s)")
    return res


if __name__ == "__main__":
    main()
