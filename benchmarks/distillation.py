"""Progressive distillation benchmark (issue 4): FD vs sampling steps for a teacher's samplers and
its distilled students, a parameterization ablation, and wall-clock per sample.

Parts (each writes a part file; ``merge`` combines part files into docs/results/distillation.json):

    # teacher samplers (ddpm, ddim, dpmpp2m, diffusers' DPMSolverMultistepScheduler) and students
    python benchmarks/distillation.py run --teacher runs/digits --out runs/digits-distilled \\
        --from-steps 256 --updates 1000 --part docs/results/parts/distillation-digits.json
    # eps / x / v / both teachers, each distilled to 4 and 1 steps (Salimans & Ho 2022, Table 1)
    python benchmarks/distillation.py ablation --dataset digits --out runs/ablation --part ...
    python benchmarks/distillation.py merge docs/results/parts/distillation-*.json

``run`` distils first (resumable: finished halvings are skipped), then samples ``--n`` images per
row and scores them with ``difflab.eval.evaluate`` (FD against the training split, with the floor
of real test images). A class-conditional teacher is sampled (and distilled) at guidance ``--guidance``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, command_line, machine_info, write_result  # noqa: E402

METHODS = ("ddpm", "ddim", "dpmpp2m", "diffusers-dpmpp2m")


@functools.cache
def _info() -> dict:
    info = machine_info()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# -- samplers driving the teacher ------------------------------------------------------------
def diffusers_dpmpp(stage, n: int, steps: int, guidance: float, seed: int, device: torch.device) -> torch.Tensor:
    """diffusers' ``DPMSolverMultistepScheduler`` (DPM-Solver++ 2M, its recommended settings) driving
    the difflab network: an independent baseline. The continuous cosine schedule is given to it as
    1000 ``trained_betas`` (``alpha_bar_k`` at ``t = (k + 1) / 1000``); the network is called at the
    log-SNR of diffusers' own sigma, ``lam = -2 log sigma``; CFG is applied to the network output."""
    import diffusers

    from difflab.diffusion import cfg as cfg_guidance
    from difflab.diffusion import get_schedule
    from difflab.nets import keep_cond, null_cond

    cfg = stage.config
    sched_lam = get_schedule(cfg.diffusion.schedule, **cfg.diffusion.schedule_options)
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    abar = torch.sigmoid(sched_lam.lam(t))
    betas = 1 - abar / torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    p = cfg.diffusion.parameterization
    if p not in ("eps", "v"):
        raise ValueError(f"the diffusers baseline needs an eps or v teacher, not {p!r}")
    sched = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000, trained_betas=betas.clamp(max=0.999).numpy(),
        prediction_type="epsilon" if p == "eps" else "v_prediction", algorithm_type="dpmsolver++", solver_order=2,
        lower_order_final=True, final_sigmas_type="zero",
    )  # fmt: skip
    sched.set_timesteps(steps, device=device)
    lams = -2.0 * sched.sigmas.double().log()
    # the scheduler keeps its position and multistep history: reset it for every batch
    net = stage.net
    num_classes = int(net.config.num_classes or 0)
    # CFG is affine in the output at fixed z, so it applies to the raw (eps or v) output as well
    model = cfg_guidance(net, guidance, null_cond) if num_classes and guidance != 1.0 else net
    gen = torch.Generator(device=device).manual_seed(seed)
    labels = torch.arange(n) % num_classes if num_classes else None
    out = []
    bs = 500
    for s in range(0, n, bs):
        b = min(bs, n - s)
        z = torch.randn((b, *stage.image_shape), generator=gen, device=device) * sched.init_noise_sigma
        cond = keep_cond({"class": labels[s : s + b].to(device)}) if num_classes else None
        sched.set_timesteps(steps, device=device)
        for i, k in enumerate(sched.timesteps):
            lam = torch.full((b,), float(lams[i]), device=device)
            with torch.no_grad():
                o = model(z, lam, cond)
            z = sched.step(o, k, z).prev_sample
        out.append(z.float().cpu())
    return torch.cat(out), labels


def draw(stage, method: str, steps: int, n: int, guidance: float, seed: int, device, spacing: str = "t"):
    from difflab.train import crop_padding, generate

    if method == "diffusers-dpmpp2m":
        x, labels = diffusers_dpmpp(stage, n, steps, guidance, seed, device)
    else:
        sampler = {"dpmpp2m": "dpmpp_2m"}.get(method, method)
        x, labels = generate(
            stage.net, stage.config, stage.image_shape, n, sampler=sampler, steps=steps, spacing=spacing,
            guidance=guidance, seed=seed, device=device,
        )  # fmt: skip
    return crop_padding(x, stage.config), labels


def score(stage, x, labels) -> dict:
    from difflab.eval import evaluate

    return evaluate(x, stage.config.data.name, labels)


# -- parts -------------------------------------------------------------------------------------
def scored_row(stage, method: str, steps: int, spacing: str, w: float, args, device) -> dict:
    """Sample ``args.n`` images (timed) and score them: one row of the FD-vs-steps table."""
    _sync(device)
    t1 = time.perf_counter()
    x, labels = draw(stage, method, steps, args.n, w, args.seed, device, spacing)
    _sync(device)
    secs = time.perf_counter() - t1
    r = score(stage, x, labels)
    row = {"dataset": stage.config.data.name, "method": method, "steps": steps, "fd": r["fd"], "spacing": spacing}
    row.update(precision=r["precision"], recall=r["recall"], seconds=round(secs, 3), fd_floor=r["fd_floor"])
    if r.get("class_accuracy") is not None:
        row["class_accuracy"] = r["class_accuracy"]
    return row


def _checkpoint_rows(args, rows: list[dict]) -> None:
    """Write the rows so far to the part file (a run cut short by a time limit keeps them)."""
    out = Path(args.write)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = {"command": command_line("benchmarks/distillation.py"), "machine": _info(), "partial": True}
    out.write_text(json.dumps({**partial, "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=1) + "\n")


def part_run(args) -> dict:
    from difflab.methods.distill import DistillConfig, distill, stage_dir
    from difflab.train import load_stage, resolve_device

    device = resolve_device(args.device)
    teacher = load_stage(args.teacher, device=device)
    dataset = teacher.config.data.name
    conditional = bool(teacher.net.config.num_classes)
    w = args.guidance if conditional else 1.0
    dcfg = DistillConfig(
        from_steps=args.from_steps, to_steps=1, updates=args.updates, batch_size=args.batch_size, lr=args.lr,
        guidance=w if conditional else None, device=args.device, precision=args.precision,
        ckpt_every=max(args.updates // 2, 1), progress=not args.no_progress, log_every=100,
    )  # fmt: skip
    t0 = time.perf_counter()
    if not args.teacher_only and not args.skip_distill:
        distill(args.teacher, args.out, dcfg, resume=True)
    distill_s = time.perf_counter() - t0
    draw(teacher, "ddim", 2, 16, w, args.seed, device)  # warm-up (CUDA context, kernels) before any timing
    rows: list[dict] = []
    step_list = [2**k for k in range(int(math.log2(args.from_steps)) + 1)]
    teacher_steps = [n for n in step_list if args.max_steps is None or n <= args.max_steps]
    floor = None
    for steps in [] if args.teacher_only else reversed(step_list[:-1]):
        if args.skip_distill and not (stage_dir(args.out, steps) / "checkpoint" / "format.json").is_file():
            continue  # --skip-distill scores the stages that exist
        st = load_stage(stage_dir(args.out, steps), device=device)
        row = scored_row(st, "ddim", steps, "t", st.config.sample.guidance, args, device)
        row["method"] = "distilled"
        if args.variant:  # another recipe for the same data set: its own table, not the main one
            row.update(part="variant", variant=args.variant)
        rows.append(row)
        floor = row["fd_floor"]
        print(json.dumps(row), flush=True)
        _checkpoint_rows(args, rows)
    for method in [] if args.students_only else args.methods:
        for steps in teacher_steps:
            spacings = ("t", "lam") if method == "dpmpp2m" else ("t",)
            for spacing in spacings:
                row = scored_row(teacher, method, steps, spacing, w, args, device)
                rows.append(row)
                floor = row["fd_floor"]
                print(json.dumps(row), flush=True)
                _checkpoint_rows(args, rows)
    meta = {"dataset": dataset, "fd_floor": floor, "guidance": w, "teacher": str(args.teacher), "n_samples": args.n}
    if not args.teacher_only:
        meta.update(from_steps=args.from_steps, updates_per_halving=args.updates, distill_seconds=round(distill_s, 1))
    return {**meta, "rows": rows}


def summarize(rows: list[dict], parts: list[dict]) -> dict:
    """Per data set: floor, the teacher's best FD (over every sampler and step count), wall clock."""
    out = {}
    for ds in sorted({r["dataset"] for r in rows if r.get("part") is None}):
        meta: dict = {}
        for p in parts:
            side = p.get("rows") and all(r.get("part") for r in p["rows"])  # a variant recipe's own settings
            if p.get("dataset") == ds and not side:
                meta.update({k: v for k, v in p.items() if k not in ("rows", "command", "machine", "date")})
        mine = [r for r in rows if r["dataset"] == ds and r.get("part") is None]
        floors = [r["fd_floor"] for r in mine if r.get("fd_floor") is not None]
        if meta.get("fd_floor") is None and floors:
            meta["fd_floor"] = sum(floors) / len(floors)
        mine = [r for r in mine if r.get("fd") is not None]
        teacher = [r for r in mine if r["method"] != "distilled"]
        student4 = next((r for r in mine if r["method"] == "distilled" and r["steps"] == 4), None)
        if teacher:
            best = min(teacher, key=lambda r: r["fd"])
            meta["teacher_best_fd"] = best["fd"]
            meta["teacher_best"] = {k: best[k] for k in ("method", "steps", "spacing", "fd")}
            if student4:
                meta["student4_fd"] = student4["fd"]
                meta["student4_over_teacher_best"] = student4["fd"] / best["fd"]
                base4 = [r["fd"] for r in teacher if r["steps"] == 4 and r["method"] != "ddpm"]
                if base4:
                    meta["best_solver4_over_student4"] = min(base4) / student4["fd"]
        out[ds] = meta
    return out


ABLATION_WEIGHTING = {"eps": "snr", "x": "truncated-snr", "v": "snr+1", "both": "truncated-snr"}


def part_ablation(args) -> dict:
    """Salimans & Ho 2022 Table 1 at small scale: one teacher per parameterization (trained with its
    usual weighting: eps-MSE for eps, v-MSE for v, truncated SNR for x and both), each distilled
    with the truncated-SNR loss down to 1 step; FD at 4 and 1 steps (and the teacher's 256-step DDIM)."""
    from difflab.methods.distill import DistillConfig, distill, stage_dir
    from difflab.train import load_run_config, load_stage, resolve_device, train

    device = resolve_device(args.device)
    rows = []
    for p in args.parameterizations:
        run = Path(args.out) / f"teacher-{p}"
        cfg = load_run_config(
            args.config, [f"diffusion.parameterization={p}", f"diffusion.weighting={ABLATION_WEIGHTING[p]}",
                          f"train.steps={args.teacher_steps}", f"train.device={args.device}", "train.sample_every=0"]
        )  # fmt: skip
        if not (run / "checkpoint" / "format.json").exists():
            train(cfg, run)
        else:
            from difflab.train.checkpoint import load_checkpoint

            if load_checkpoint(run / "checkpoint", with_state=False).step < args.teacher_steps:
                train(cfg, run, resume=True)
        dcfg = DistillConfig(
            from_steps=args.from_steps, to_steps=1, updates=args.updates, device=args.device,
            ckpt_every=max(args.updates // 2, 1), progress=not args.no_progress, log_every=100,
        )  # fmt: skip
        out = Path(args.out) / f"distilled-{p}"
        distill(run, out, dcfg, resume=True)
        teacher = load_stage(run, device=device)
        x, labels = draw(teacher, "ddim", args.from_steps, args.n, 1.0, args.seed, device)
        r = score(teacher, x, labels)
        rows.append({"dataset": teacher.config.data.name, "method": "ddim", "parameterization": p,
                     "steps": args.from_steps, "fd": r["fd"], "part": "ablation"})  # fmt: skip
        for steps in (4, 1):
            st = load_stage(stage_dir(out, steps), device=device)
            x, labels = draw(st, "ddim", steps, args.n, 1.0, args.seed, device)
            fd = score(st, x, labels)["fd"]
            if not math.isfinite(fd):
                fd = None
            rows.append({"dataset": st.config.data.name, "method": "distilled", "parameterization": p,
                         "steps": steps, "fd": fd, "part": "ablation"})  # fmt: skip
        for row in rows[-3:]:
            print(json.dumps(row), flush=True)
        _checkpoint_rows(args, rows)
    return {"ablation_floor": r["fd_floor"], "rows": rows, "teacher_steps": args.teacher_steps,
            "updates_per_halving": args.updates}  # fmt: skip


def part_wcond(args) -> dict:
    """Guided distillation with w as an input (Meng et al. 2023): one student for every w in
    [lo, hi], scored at several w beside the teacher (CFG, DDIM ``--from-steps`` steps) at the same w."""
    from difflab.methods.distill import DistillConfig, distill, stage_dir
    from difflab.train import load_stage, resolve_device

    device = resolve_device(args.device)
    teacher = load_stage(args.teacher, device=device)
    lo, hi = args.guidance_range
    dcfg = DistillConfig(
        from_steps=args.from_steps, to_steps=args.to_steps, updates=args.updates, guidance_range=(lo, hi),
        device=args.device, ckpt_every=max(args.updates // 2, 1), progress=not args.no_progress, log_every=100,
    )  # fmt: skip
    distill(args.teacher, args.out, dcfg, resume=True)
    st = load_stage(stage_dir(args.out, args.to_steps), device=device)
    rows = []
    for w in args.eval_w:
        for who, stage, steps in (("teacher-ddim", teacher, args.from_steps), ("distilled-w-input", st, args.to_steps)):
            x, labels = draw(stage, "ddim", steps, args.n, w, args.seed, device)
            r = score(stage, x, labels)
            rows.append({"dataset": stage.config.data.name, "method": who, "steps": steps, "guidance": w,
                         "fd": r["fd"], "class_accuracy": r.get("class_accuracy"), "part": "w-input"})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
            _checkpoint_rows(args, rows)
    return {"guidance_range": [lo, hi], "updates_per_halving": args.updates, "rows": rows}


def part_timing(args) -> dict:
    """Wall clock per sample on this machine, side by side: the 4-step student against the teacher's
    best setting (``--method``, ``--steps``), interleaved, median of ``--repeats``."""
    from difflab.methods.distill import stage_dir
    from difflab.train import load_stage, resolve_device

    device = resolve_device(args.device)
    teacher = load_stage(args.teacher, device=device)
    student = load_stage(stage_dir(args.out, 4), device=device)
    w = args.guidance if teacher.net.config.num_classes else 1.0
    times: dict[str, list[float]] = {"student": [], "teacher": []}
    draw(student, "ddim", 4, 8, 1.0, args.seed, device)  # warm-up
    for _ in range(args.repeats):
        for who, stage, method, steps, gw in (
            ("student", student, "ddim", 4, student.config.sample.guidance),
            ("teacher", teacher, args.method, args.steps, w),
        ):
            _sync(device)
            t0 = time.perf_counter()
            draw(stage, method, steps, args.n, gw, args.seed, device, args.spacing)
            _sync(device)
            times[who].append((time.perf_counter() - t0) / args.n * 1000)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    row = {"dataset": teacher.config.data.name, "part": "timing", "n": args.n, "repeats": args.repeats,
           "teacher_setting": f"{args.method} {args.steps} steps ({args.spacing})", "guidance": w,
           "student4_ms_per_sample": round(med["student"], 3), "teacher_ms_per_sample": round(med["teacher"], 3),
           "speedup": round(med["teacher"] / med["student"], 1)}  # fmt: skip
    print(json.dumps(row), flush=True)
    return {"rows": [row]}


def part_seeds(args) -> dict:
    """FD mean and spread over several sampling seeds, teacher settings and a student side by side on
    one machine: at n = 1,000 a single FD of 8x8 digits moves by tens of percent with the seed."""
    from statistics import mean, stdev

    from difflab.methods.distill import stage_dir
    from difflab.train import load_stage, resolve_device

    device = resolve_device(args.device)
    teacher = load_stage(args.teacher, device=device)
    student = load_stage(stage_dir(args.out, args.student_steps), device=device)
    w = args.guidance if teacher.net.config.num_classes else 1.0
    settings = [(teacher, m, int(n), w) for m, n in (s.split(":") for s in args.settings)]
    settings.append((student, "distilled", args.student_steps, student.config.sample.guidance))
    rows = []
    for stage, method, steps, gw in settings:
        fds = []
        for seed in range(args.seeds):
            x, labels = draw(stage, "ddim" if method == "distilled" else method, steps, args.n, gw, seed, device)
            fds.append(score(stage, x, labels)["fd"])
        row = {"dataset": stage.config.data.name, "method": method, "steps": steps, "part": "seeds",
               "fd": mean(fds), "fd_mean": mean(fds), "fd_sd": stdev(fds), "fds": fds, "n": args.n}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    best = min((r for r in rows if r["method"] != "distilled"), key=lambda r: r["fd_mean"])
    ratio = rows[-1]["fd_mean"] / best["fd_mean"]
    return {"rows": rows, "seeds_ratio": {"dataset": rows[0]["dataset"], "student_over_teacher_best": ratio}}


def merge(paths: list[Path], main_dataset: str) -> dict:
    """Combine part files into the one result file (top-level numbers from ``main_dataset``)."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    res: dict = {"command": "; ".join(p["command"] for p in parts), "machine": parts[0]["machine"]}
    res["date"] = max(p["date"] for p in parts)
    res["merged_by"] = command_line("benchmarks/distillation.py")
    res["parts"] = [{k: v for k, v in p.items() if k != "rows"} for p in parts]
    rows = [dict(row) for p in parts for row in p["rows"]]
    for row in rows:  # the method names: the w-input part's teacher is DDIM, its student "distilled"
        if row.get("part") == "seeds" and "fd" not in row:
            row["fd"] = row["fd_mean"]
        if row.get("part") == "w-input":
            row["method"] = {"teacher-ddim": "ddim", "distilled-w-input": "distilled"}.get(row["method"], row["method"])
    res["rows"] = [r for r in rows if r.get("part") != "timing"]
    res["datasets"] = summarize(res["rows"], parts)
    for r in rows:
        if r.get("part") == "timing":
            res["datasets"].setdefault(r["dataset"], {})["timing"] = {k: v for k, v in r.items() if k != "part"}
    main = res["datasets"].get(main_dataset) or next(iter(res["datasets"].values()), {})
    for key in ("dataset", "fd_floor", "teacher_best_fd"):
        res[key] = main.get(key)
    return res


# -- RESULTS.md section (registered in report.py) ------------------------------------------------
def _f(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"


def _where(part: dict) -> str:
    """The machine, torch and seconds of a merged part, leaving out what that part did not record."""
    m = part.get("machine", {})
    cpu = [str(m["cpu"])] if m.get("cpu") else []
    cpu += [f"{m['cores']} cores"] if m.get("cores") else []
    cpu += [f"{m['torch_threads']} torch threads"] if m.get("torch_threads") else []
    facts = [m.get("gpu") or ", ".join(cpu) or "machine not recorded"]
    facts += [f"torch {m['torch']}"] if m.get("torch") else []
    facts += [f"{part['seconds']} s"] if part.get("seconds") is not None else []
    return "; ".join(facts)


def render(data: dict) -> str:
    """The "Progressive distillation" section of docs/RESULTS.md."""
    out = ["## Progressive distillation", ""]
    out += [f"Date: {data.get('date')}  ", f"Merged by: `{data.get('merged_by', '?')}`  ", "Commands and machines:", ""]
    for p in data.get("parts", []):
        out.append(f"- `{p.get('command')}` ({_where(p)})")
    out.append("")
    rows = data.get("rows", [])
    for ds, p in data.get("datasets", {}).items():
        mine = [r for r in rows if r.get("dataset") == ds and r.get("part") is None and r.get("fd") is not None]
        cols = [("ddpm", "t"), ("ddim", "t"), ("dpmpp2m", "t"), ("dpmpp2m", "lam"), ("diffusers-dpmpp2m", "t")]
        cols.append(("distilled", "t"))
        steps = sorted({r["steps"] for r in mine})
        fd = {(r["method"], r.get("spacing", "t"), r["steps"]): r["fd"] for r in mine}
        best = p.get("teacher_best", {})
        out += [
            f"### {ds}: FD vs sampling steps",
            "",
            f"Teacher `{p.get('teacher')}`, guidance w = {p.get('guidance')}; students distilled from "
            f"{p.get('from_steps')} DDIM steps, {p.get('updates_per_halving')} updates per halving"
            + (f" ({p['distill_seconds']} s in all)" if p.get("distill_seconds") else "")
            + f". {p.get('note', '')} FD of {p.get('n_samples')} samples against the training "
            f"split; floor (real test images) {_f(p.get('fd_floor'))}. Teacher's best: {_f(p.get('teacher_best_fd'))} "
            f"({best.get('method')}, {best.get('steps')} steps, spacing {best.get('spacing')}).",
            "",
            "| steps | DDPM | DDIM | DPM++ 2M (t) | DPM++ 2M (lam) | diffusers DPM++ 2M | distilled |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for n in steps:
            out.append(f"| {n} | " + " | ".join(_f(fd.get((m, s, n))) for m, s in cols) + " |")
        if p.get("student4_over_teacher_best") is not None:
            out += [
                "",
                f"- 4-step student / teacher's best FD: **{p['student4_over_teacher_best']:.2f}** (target <= 1.5).",
            ]
        if p.get("best_solver4_over_student4") is not None:
            out.append(
                f"- best of DDIM / DPM-Solver++ (either library, either grid) at 4 steps / 4-step student: "
                f"**{p['best_solver4_over_student4']:.2f}** (target >= 2)."
            )
        for t in [p["timing"]] if p.get("timing") else []:
            out.append(
                f"- wall clock per sample, side by side on one machine ({t['n']} samples, median of {t['repeats']}): "
                f"4-step student {t['student4_ms_per_sample']} ms, teacher's best setting ({t['teacher_setting']}, "
                f"w = {t['guidance']}) {t['teacher_ms_per_sample']} ms: **{t['speedup']}x** faster."
            )
        variants = [r for r in rows if r.get("part") == "variant" and r.get("dataset") == ds]
        if variants:
            out += ["", "Other distillation recipes on the same teacher (FD of the students):", ""]
            out += ["| recipe | steps | FD |", "|---|---:|---:|"]
            for r in sorted(variants, key=lambda r: (r["variant"], -r["steps"])):
                out.append(f"| {r['variant']} | {r['steps']} | {_f(r['fd'])} |")
        seeds = [r for r in rows if r.get("part") == "seeds" and r.get("dataset") == ds]
        if seeds:
            out += ["", f"FD over {len(seeds[0]['fds'])} sampling seeds ({seeds[0]['n']} samples each), side by side "
                    "on one machine:", "", "| sampler | steps | FD mean | sd |", "|---|---:|---:|---:|"]  # fmt: skip
            for r in seeds:
                out.append(f"| {r['method']} | {r['steps']} | {_f(r['fd_mean'])} | {_f(r['fd_sd'])} |")
        img = f"images/distillation-{ds}.png"
        if (ROOT / "docs" / img).is_file():
            out += ["", f"![FD vs steps, {ds}]({img})"]
        out.append("")
    wrows = [r for r in rows if r.get("part") == "w-input"]
    if wrows:
        ws = sorted({r["guidance"] for r in wrows})
        get_w = {(r["method"], r["guidance"]): r for r in wrows}
        t_steps = next(r["steps"] for r in wrows if r["method"] == "ddim")
        s_steps = next(r["steps"] for r in wrows if r["method"] == "distilled")
        out += [
            f"### Guided distillation with w as an input ({wrows[0]['dataset']}; Meng et al. 2023)",
            "",
            f"One {s_steps}-step student for every w in its range, against the CFG teacher (DDIM, {t_steps} steps) "
            "at the same w: FD / class accuracy of the feature net.",
            "",
            f"| w | teacher, {t_steps} steps | student, {s_steps} steps |",
            "|---|---:|---:|",
        ]
        for w in ws:
            cells = []
            for m in ("ddim", "distilled"):
                r = get_w.get((m, w), {})
                acc = r.get("class_accuracy")
                cells.append(f"{_f(r.get('fd'))} / {acc:.1%}" if acc is not None else _f(r.get("fd")))
            out.append(f"| {w:g} | " + " | ".join(cells) + " |")
        out.append("")
    abl = [r for r in rows if r.get("part") == "ablation"]
    if abl:
        ps = [p for p in ("eps", "x", "v", "both") if any(r["parameterization"] == p for r in abl)]
        get = {(r["parameterization"], r["method"], r["steps"]): r["fd"] for r in abl}
        teacher_steps = max(r["steps"] for r in abl if r["method"] == "ddim")
        out += [
            f"### Parameterization ablation ({abl[0]['dataset']}; Salimans & Ho 2022, Table 1)",
            "",
            "One teacher per parameterization (eps with the eps-MSE weighting, v with v-MSE, x and both with "
            "truncated SNR), each distilled with the truncated-SNR loss; FD (- where sampling diverged). "
            "The eps teacher's own samples are already broken: with eps prediction "
            "`x_hat = (z - sigma eps_hat) / alpha` multiplies the network's error by 1 / alpha, about 2e4 at "
            "the first step of the cosine schedule (lam_min = -20), and nothing clips `x_hat`. That low-SNR "
            "instability is why the paper distils with x, v or both.",
            "",
            f"| parameterization | teacher, DDIM {teacher_steps} steps | distilled, 4 steps | distilled, 1 step |",
            "|---|---:|---:|---:|",
        ]
        for q in ps:
            vals = [get.get((q, "ddim", teacher_steps)), get.get((q, "distilled", 4)), get.get((q, "distilled", 1))]
            out.append(f"| {q} | " + " | ".join(_f(v) for v in vals) + " |")
        out.append("")
    return "\n".join(out)


def plot(data: dict) -> list[Path]:
    """docs/images/distillation-DATASET.png: FD vs steps per method, with the floor."""
    from difflab.eval import plot_metric_vs_steps

    paths = []
    for ds, p in data.get("datasets", {}).items():
        if p.get("fd_floor") is None:
            continue
        rows = [
            {**r, "label": r["method"] + (" (lam)" if r.get("spacing") == "lam" else ""), "fd_floor": p["fd_floor"]}
            for r in data["rows"]
            if r.get("dataset") == ds and r.get("part") is None and r.get("fd") is not None
        ]
        path = ROOT / "docs" / "images" / f"distillation-{ds}.png"
        paths.append(plot_metric_vs_steps(rows, path, title=f"{ds}: FD vs sampling steps", logy=True))
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="part", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True, help="folder of the distilled stages (resumable)")
    common.add_argument("--from-steps", type=int, default=256)
    common.add_argument("--updates", type=int, default=1000, help="updates per halving")
    common.add_argument("--n", type=int, default=1000, help="samples per FD")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--device", default="auto")
    common.add_argument("--no-progress", action="store_true")
    common.add_argument("--write", metavar="JSON", required=True, help="part file to write")
    r = sub.add_parser("run", parents=[common])
    r.add_argument("--teacher", required=True)
    r.add_argument("--guidance", type=float, default=1.0)
    r.add_argument("--batch-size", type=int, default=None)
    r.add_argument("--lr", type=float, default=1e-4)
    r.add_argument("--precision", default="fp32")
    r.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    r.add_argument("--teacher-only", action="store_true", help="only the teacher's rows (no distillation)")
    r.add_argument("--students-only", action="store_true", help="only distil and score the students")
    r.add_argument("--variant", help="label the students as another recipe (a separate table in RESULTS.md)")
    r.add_argument("--max-steps", type=int, default=None, help="teacher rows up to this step count only")
    r.add_argument("--skip-distill", action="store_true", help="score the student stages in --out as they are")
    a = sub.add_parser("ablation", parents=[common])
    a.add_argument("--config", default=str(ROOT / "configs" / "digits.yaml"))
    a.add_argument("--teacher-steps", type=int, default=2000)
    a.add_argument("--parameterizations", nargs="+", default=["eps", "x", "v", "both"])
    wc = sub.add_parser("wcond", parents=[common])
    wc.add_argument("--teacher", required=True)
    wc.add_argument("--to-steps", type=int, default=4)
    wc.add_argument("--guidance-range", type=float, nargs=2, default=[1.0, 3.0])
    wc.add_argument("--eval-w", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    tm = sub.add_parser("timing", parents=[common])
    tm.add_argument("--teacher", required=True)
    tm.add_argument("--method", default="ddpm", choices=METHODS)
    tm.add_argument("--steps", type=int, default=256, help="the teacher's setting (its best FD)")
    tm.add_argument("--spacing", default="t")
    tm.add_argument("--guidance", type=float, default=1.0)
    tm.add_argument("--repeats", type=int, default=3)
    sd = sub.add_parser("seeds", parents=[common])
    sd.add_argument("--teacher", required=True)
    sd.add_argument("--settings", nargs="+", default=["ddpm:128", "ddim:64"], help="teacher METHOD:STEPS")
    sd.add_argument("--student-steps", type=int, default=4)
    sd.add_argument("--seeds", type=int, default=5)
    sd.add_argument("--guidance", type=float, default=1.0)
    m = sub.add_parser("merge")
    m.add_argument("parts", nargs="+")
    m.add_argument("--main-dataset", default="fashion-mnist")
    args = ap.parse_args(argv)
    if args.part == "merge":
        res = merge([Path(p) for p in args.parts], args.main_dataset)
        plot(res)
        print(f"wrote {write_result('distillation', res).relative_to(ROOT)}")
        return 0
    t0 = time.perf_counter()
    res = {"run": part_run, "ablation": part_ablation, "wcond": part_wcond, "timing": part_timing, "seeds": part_seeds}[
        args.part
    ](args)
    res = {"command": command_line("benchmarks/distillation.py"), "machine": _info(),
           "date": time.strftime("%Y-%m-%d"), "seconds": round(time.perf_counter() - t0, 1), **res}  # fmt: skip
    out = Path(args.write)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
