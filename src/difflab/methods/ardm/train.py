"""Training, loading, exporting and evaluating ARDMs: the ``ardm`` method of the one trainer.

Hoogeboom et al. 2022, "Autoregressive Diffusion Models". :class:`ARDMMethod` is a
:class:`difflab.train.Method`: integer-level data (``discrete=True``), the ARDM network
(:class:`.model.ImageARDM` or, for ``data.name: text``, :class:`.text.TextARDM`), the OA-ARDM loss in
bits per dimension, and sample grids drawn with a parallel plan. The recipe's ``model`` section is
:class:`ImageARDMConfig` (images) or :class:`TextARDMConfig` (text).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from ...config import from_dict, load_yaml
from ...train.checkpoint import checkpoint_path, load_checkpoint, load_network, save_checkpoint
from ...train.config import RunConfig
from ...train.method import Method
from .model import ImageARDM
from .objective import bpd, estimate_nll, oa_loss, sample, step_losses
from .parallel import make_plans
from .text import ALPHABET, TextARDM, TextWindows

STEPS_FILE = "ardm_steps.json"


@dataclass
class ImageARDMConfig:
    """``model:`` of an image ARDM: the output ``head`` (softmax over levels or a discretized logistic
    mixture of ``mixtures`` components), Upscale-ARDM ``branching`` (0: OA-ARDM; 2 or 4) and the
    ``unet`` (a :class:`difflab.nets.UNetConfig` dict; its channels are set by the ARDM)."""

    head: Literal["softmax", "logistic"] = "softmax"
    mixtures: int = 10
    branching: Literal[0, 2, 4] = 0
    unet: dict[str, Any] = field(default_factory=dict)


@dataclass
class TextARDMConfig:
    """``model:`` of the character-level ARDM: transformer ``width``, ``depth``, ``heads``, ``dropout``."""

    width: int = 128
    depth: int = 4
    heads: int = 4
    dropout: float = 0.0


def build_model(config: dict[str, Any]) -> Any:
    """The ARDM network of a resolved model config (its ``kind`` is "image" or "text")."""
    if config.get("kind") == "text":
        return TextARDM(config)
    return ImageARDM(config)


def make_data(cfg: RunConfig, split: str) -> Any:
    """The run's data split as integer levels: text windows, or an image dataset with ``discrete=True``."""
    if cfg.data.name == "text":
        return TextWindows(split, **cfg.data.options)
    from ...data import get_dataset

    return get_dataset(cfg.data.name, split, discrete=True, **cfg.data.options)


def data_tensor(dataset: Any, n: int | None = None, start: int = 0) -> Tensor:
    """(N, D) long levels of a dataset (the first ``n`` from ``start``, all when None)."""
    x = (
        dataset.tensors()[0]
        if hasattr(dataset, "tensors")
        else torch.stack([dataset[i][0] for i in range(len(dataset))])
    )
    x = x[start : None if n is None else start + n]
    return x.reshape(len(x), -1).long()


class ARDMMethod(Method):
    """OA-ARDMs and Upscale ARDMs (images) and the text OA-ARDM on the one trainer."""

    name = "ardm"
    sections = ("sample",)  # sample.n and sample.steps (parallel-plan calls) of the grids

    def __init__(self, cfg: RunConfig, skip_grids: bool = False) -> None:
        super().__init__(cfg)
        self.skip_grids = skip_grids
        self.model_config_class = TextARDMConfig if cfg.data.name == "text" else ImageARDMConfig

    def dataset(self, split: str = "train") -> Any:
        return make_data(self.cfg, split)

    def resolve_model_config(self, dataset: Any) -> dict[str, Any]:
        m = super().resolve_model_config(dataset)
        shape = [int(v) for v in dataset[0][0].shape]
        if self.cfg.data.name == "text":
            return {"kind": "text", "seq_len": shape[0], "vocab": len(ALPHABET), **m}
        from ...nets import UNetConfig

        from_dict(UNetConfig, m["unet"], "model.unet")  # unknown keys and values of the wrong type, named
        out = {"kind": "image", "shape": shape, "levels": int(dataset.levels), **m}
        out["unet"] = UNetConfig.from_dict(ImageARDM.unet_config(out)).to_dict()
        return out

    def build(self, model_config: dict[str, Any]) -> torch.nn.Module:
        return build_model(model_config)

    def loss(self, net: Any, x: Tensor, cond: dict[str, Tensor], generator: torch.Generator) -> Tensor:
        x = x.round().long().reshape(len(x), -1)
        stages = getattr(net, "module", net).num_stages  # net may be DDP-wrapped
        return bpd(oa_loss(net, x, num_stages=stages, generator=generator), x.shape[1]).mean()

    def meta(self) -> dict[str, Any]:
        return {"method": self.name, "kind": "text" if self.cfg.data.name == "text" else "image"}

    def sample_grid(self, trainer: Any, monitor: Any = None) -> Path | None:
        if self.skip_grids:
            return None
        net = trainer.ema.module
        n = min(self.cfg.sample.n, 64)
        plans = make_plans("uniform", self.cfg.sample.steps, net.D, None, net.num_stages)
        x = sample(net, n, plans=plans, seed=self.cfg.train.seed, device=trainer.device).cpu()
        net.train()
        path = trainer.run_dir / "samples" / f"step_{trainer.step:07d}.png"
        if isinstance(net, TextARDM):
            from .text import decode

            path = path.with_suffix(".txt")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(decode(row) for row in x[:16]) + "\n")
            return path
        from ...data import from_levels, save_grid
        from ...train.stage import upscale_for_grid

        return save_grid(upscale_for_grid(from_levels(x.view(n, *net.shape), net.levels)), path, nrow=8)

    @classmethod
    def load(cls, path: str | Path, weights: str = "ema", device: Any = "cpu") -> Any:
        return load_ardm(path, weights=weights, device=device)


def train_ardm(cfg: RunConfig, run_dir: str | Path | None = None, *, resume: bool = False, time_limit=None) -> Any:
    """Train an ARDM run (like :func:`difflab.train.train`); ``time_limit`` seconds stops it early."""
    from ...train.trainer import train

    return train(cfg, run_dir, method=ARDMMethod(cfg), resume=resume, time_limit=time_limit)


def load_ardm(path: str | Path, *, weights: str = "ema", device: Any = "cpu") -> Any:
    """An ARDM (float32, eval mode) from a run folder, its checkpoint folder or an exported folder,
    with its per-step losses (``ardm_steps.json``) when they were estimated."""
    model, _, ckpt_dir = load_network(path, build_model, weights, method="ardm")
    steps = ckpt_dir / STEPS_FILE
    if steps.is_file():
        model.step_losses = json.loads(steps.read_text())["losses"]
    model.source = ckpt_dir
    return model.to(device).eval()


def export_ardm(run: str | Path, out: str | Path, *, dtype: str = "bf16") -> Path:
    """Write the EMA weights alone (``dtype`` bf16 or fp32) with the config: a small folder for the codec."""
    ckpt_dir = checkpoint_path(run)
    ckpt = load_checkpoint(ckpt_dir, with_state=False)
    weights = ckpt.ema if ckpt.ema is not None else ckpt.model
    cast = torch.bfloat16 if dtype == "bf16" else torch.float32
    meta = {k: v for k, v in ckpt.meta.items() if k not in ("format", "version")}
    target = save_checkpoint(
        out, model={k: v.to(cast) for k, v in weights.items()}, config=ckpt.config, meta={**meta, "weights": dtype}
    )
    if (ckpt_dir / STEPS_FILE).is_file():
        (target / STEPS_FILE).write_text((ckpt_dir / STEPS_FILE).read_text())
    return target


def evaluate_ardm(
    path: str | Path,
    *,
    split: str = "test",
    orders: int = 4,
    images: int | None = None,
    step_images: int = 1000,
    grid: int = 64,
    budgets: list[int] | None = None,
    parallel_images: int = 1000,
    parallel_orders: int = 4,
    device: Any = "cpu",
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """Test NLL (bits per dimension, mean and standard error over ``orders`` draws per image); per-step
    losses estimated on the last ``step_images`` of ``split`` (saved as ``ardm_steps.json`` next to the
    weights, for DP plans); and, for each budget, the NLL with the DP plan and with uniform segments
    on the first ``parallel_images`` (``parallel_orders`` draws each; the full-step row is always included)."""
    ckpt_dir = checkpoint_path(path)
    from .. import load

    model = load(ckpt_dir, device=device, method="ardm")
    cfg = RunConfig.from_dict(load_yaml(ckpt_dir / "config.yaml"))
    data = data_tensor(make_data(cfg, split))
    x_eval = data if images is None else data[:images]
    t0 = time.perf_counter()
    run = {"batch_size": batch_size, "device": device}
    nll = estimate_nll(model, x_eval, orders=orders, seed=seed, **run)
    result: dict[str, Any] = {
        "run": str(path), "split": split, "images": len(x_eval), "orders": orders, "nll_bpd": nll["bpd"],
        "nll_bpd_se": nll["se"], "stages": model.num_stages, "D": model.D,
        "nll_seconds": round(time.perf_counter() - t0, 1),
    }  # fmt: skip
    if budgets:
        held = data[-min(step_images, len(data)) :]
        losses = step_losses(model, held, grid=grid, seed=seed + 1, **run)
        (ckpt_dir / STEPS_FILE).write_text(json.dumps({"images": len(held), "grid": grid, "losses": losses}))
        model.step_losses = losses
        x_par = data[:parallel_images]
        rows = []
        full = model.D * model.num_stages
        for k in sorted({min(max(k, model.num_stages), full) for k in budgets} | {full}):
            row: dict[str, Any] = {"steps": k}
            for kind in ("dp", "uniform"):
                plans = make_plans(kind, k, model.D, losses, model.num_stages)
                est = estimate_nll(model, x_par, orders=parallel_orders, plans=plans, seed=seed + 2, **run)
                row.update({f"nll_bpd_{kind}": est["bpd"], f"se_{kind}": est["se"]})
            rows.append(row)
        result["parallel"] = rows
        result["parallel_images"] = len(x_par)
    return result
