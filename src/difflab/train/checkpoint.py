"""Checkpoint folders (docs/design.md, "Checkpoints are folders").

A checkpoint is a folder::

    format.json         {"format": "difflab-checkpoint", "version": 1, "step": ..., ...}
    config.yaml         the full run config
    model.safetensors   network weights
    ema.safetensors     EMA weights (optional)
    state.pt            optimizer, scheduler, scaler and RNG states (tensors and plain
                        Python values only; loaded with ``weights_only=True``)

Loading never unpickles code. Writing is atomic: the folder is assembled under a temporary
name next to the target and renamed into place, so a crash leaves the previous checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

FORMAT = "difflab-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint folder or file that cannot be used; the message names the file."""


@dataclass
class Checkpoint:
    path: Path
    meta: dict[str, Any]
    config: dict[str, Any]
    model: dict[str, Tensor]
    ema: dict[str, Tensor] | None = None
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))


def save_weights(state: dict[str, Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(path))


def load_weights(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a safetensors file; a missing, truncated or corrupt file is a CheckpointError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: file not found")
    try:
        return load_file(str(p))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{p}: corrupt or truncated weights file ({str(e).splitlines()[0]})") from None


def save_checkpoint(
    path: str | Path,
    *,
    model: dict[str, Tensor],
    config: dict[str, Any],
    meta: dict[str, Any],
    ema: dict[str, Tensor] | None = None,
    state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder at ``path`` atomically (replacing an existing one)."""
    from ..config import dump_yaml

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        (tmp / "format.json").write_text(json.dumps({"format": FORMAT, "version": VERSION, **meta}, indent=1))
        (tmp / "config.yaml").write_text(dump_yaml(config))
        save_weights(model, tmp / "model.safetensors")
        if ema is not None:
            save_weights(ema, tmp / "ema.safetensors")
        if state is not None:
            torch.save(state, tmp / "state.pt")
        old = target.with_name(f".{target.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def read_meta(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    f = p / "format.json"
    if not f.is_file():
        raise CheckpointError(f"{p}: not a difflab checkpoint folder (no format.json)")
    try:
        meta = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{f}: corrupt checkpoint metadata ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{f}: not a difflab checkpoint (format {meta.get('format')!r})")
    if int(meta.get("version", -1)) > VERSION:
        raise CheckpointError(
            f"{f}: checkpoint format version {meta['version']} is newer than this difflab ({VERSION})"
        )
    return meta


def load_checkpoint(path: str | Path, with_state: bool = True) -> Checkpoint:
    """Read a checkpoint folder; every problem is a one-line CheckpointError naming the file."""
    from ..config import load_yaml

    p = Path(path)
    meta = read_meta(p)
    try:
        config = load_yaml(p / "config.yaml")
    except (FileNotFoundError, ValueError) as e:
        raise CheckpointError(str(e)) from None
    model = load_weights(p / "model.safetensors")
    ema = load_weights(p / "ema.safetensors") if (p / "ema.safetensors").exists() else None
    state: dict[str, Any] = {}
    if with_state and (p / "state.pt").exists():
        try:
            state = torch.load(p / "state.pt", map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for truncated or foreign files
            raise CheckpointError(
                f"{p / 'state.pt'}: corrupt or truncated training state ({type(e).__name__})"
            ) from None
    return Checkpoint(p, meta, config, model, ema, state)


def load_into(module: torch.nn.Module, weights: dict[str, Tensor], source: str | Path) -> None:
    """``load_state_dict`` with a one-line error naming ``source`` when the shapes or keys differ."""
    own = module.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    wrong = sorted(k for k in set(own) & set(weights) if own[k].shape != weights[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} with other shapes (e.g. {k}: {tuple(weights[k].shape)} vs {tuple(own[k].shape)})"
            )
        raise CheckpointError(f"{source}: weights do not match the model config: " + "; ".join(parts))
    module.load_state_dict(weights)


CHECKPOINT_DIR = "checkpoint"


def checkpoint_path(path: str | Path) -> Path:
    """The checkpoint folder of a run folder (``RUN/checkpoint``), or ``path`` if it is one."""
    p = Path(path)
    if (p / "format.json").is_file():
        return p
    if (p / CHECKPOINT_DIR / "format.json").is_file():
        return p / CHECKPOINT_DIR
    if not p.exists():
        raise FileNotFoundError(f"run folder not found: {p}")
    raise CheckpointError(f"{p}: no checkpoint here (expected {p / CHECKPOINT_DIR / 'format.json'})")


def load_network(
    path: str | Path, build: Any, weights: str = "ema", method: str | None = None
) -> tuple[torch.nn.Module, dict[str, Any], Path]:
    """The one way a trained network is restored: ``(net, format.json metadata, checkpoint folder)``.

    ``build(meta["model_config"])`` makes the network; it gets the ``ema`` weights (or the
    ``model`` ones when the folder holds no EMA, as exported folders do) as float32, in eval mode.
    ``method`` checks the method recorded in the checkpoint (missing: "diffusion").
    """
    ckpt_dir = checkpoint_path(path)
    meta = read_meta(ckpt_dir)
    if method is not None and meta.get("method", "diffusion") != method:
        raise CheckpointError(f"{ckpt_dir}: a {meta.get('method', 'diffusion')!r} checkpoint, not a {method!r} one")
    if not isinstance(meta.get("model_config"), dict):
        raise CheckpointError(f"{ckpt_dir / 'format.json'}: missing 'model_config'; not a difflab training checkpoint")
    if weights not in ("ema", "model"):
        raise ValueError(f"unknown weights {weights!r}; valid: ema, model")
    where = ckpt_dir / f"{weights}.safetensors"
    if weights == "ema" and not where.is_file():
        where = ckpt_dir / "model.safetensors"
    net = build(meta["model_config"])
    load_into(net, {k: v.float() for k, v in load_weights(where).items()}, where)
    return net.eval(), meta, ckpt_dir
