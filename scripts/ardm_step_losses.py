"""Per-step losses of an ARDM for DP plans (``ardm_steps.json``) without the rest of ``difflab ardm-eval``.

``difflab ardm-eval RUN --budgets ...`` estimates them on the last ``--step-images`` test images, but
also the test NLL and every parallel budget, which takes hours on a 2-core CPU. This writes the same
file from the last N test images alone (images 10,000 - N .. 9,999 of Fashion-MNIST: disjoint from the
first 1,000 that benchmarks/ardm.py codes), with the same grid and seed as ``ardm-eval``.

    .venv/bin/python scripts/ardm_step_losses.py artifacts/ardm-fmnist-ft --images 1000   # ~17 min, 2 threads
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from difflab.config import load_yaml
from difflab.methods.ardm.objective import step_losses
from difflab.methods.ardm.train import STEPS_FILE, data_tensor, load_ardm, make_data
from difflab.train.checkpoint import checkpoint_path
from difflab.train.config import RunConfig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="ARDM run or exported model folder")
    p.add_argument("--images", type=int, default=1000, help="last N test images (default: %(default)s)")
    p.add_argument("--grid", type=int, default=64, help="values of t estimated, then interpolated")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    folder = checkpoint_path(args.model)
    model = load_ardm(folder)
    data = data_tensor(make_data(RunConfig.from_dict(load_yaml(folder / "config.yaml")), "test"))
    if not 0 < args.images <= len(data):
        p.error(f"--images must lie in 1..{len(data)}")
    held, t0 = data[-args.images :], time.perf_counter()
    losses = step_losses(model, held, grid=args.grid, seed=1)  # seed 1 = ardm-eval's (seed + 1)
    first = len(data) - args.images
    out = {"images": args.images, "grid": args.grid, "losses": losses, "which": f"test {first}..{len(data) - 1}"}
    (folder / STEPS_FILE).write_text(json.dumps(out))
    print(f"wrote {folder / STEPS_FILE} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
