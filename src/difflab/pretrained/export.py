"""Write a pretrained model folder from a trained run (see :mod:`difflab.pretrained`).

One checkpoint becomes ``model.safetensors`` (its EMA weights, or its only weights, in fp16 or kept
as stored), ``format.json`` (the run's metadata without its write id, plus where it came from) and
``config.yaml``; the card (``card.json``, ``README.md``) and ``checksums.json`` go next to it. Paths
a checkpoint names (a CLIP model, a text encoder) are rewritten to ``pretrained:NAME`` by ``rename``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import CARD, write_checksums

DTYPES = ("fp16", "bf16", "fp32", "keep")


def _rename(value: Any, rename: Mapping[str, str]) -> Any:
    """``value`` with every string equal to a key of ``rename`` (or naming the same folder) replaced."""
    if isinstance(value, dict):
        return {k: _rename(v, rename) for k, v in value.items()}
    if isinstance(value, list):
        return [_rename(v, rename) for v in value]
    if isinstance(value, str):
        for old, new in rename.items():
            if value == old or (Path(value).exists() and Path(value).resolve() == Path(old).resolve()):
                return new
    return value


def convert(weights: dict[str, Any], dtype: str) -> tuple[dict[str, Any], float]:
    """Floating tensors in ``dtype`` ("keep": as stored) and the largest relative error of a weight
    tensor that conversion caused (max |w - w'| / max |w|, over tensors)."""
    import torch

    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    target = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}.get(dtype)
    out, worst = {}, 0.0
    for k, v in weights.items():
        if target is None or not v.is_floating_point():
            out[k] = v
            continue
        if v.abs().max().item() >= 65504 and target == torch.float16:
            raise ValueError(f"weight {k} exceeds the fp16 range; export it as bf16 or fp32")
        c = v.to(target)
        scale = v.float().abs().max().item()
        if scale > 0:
            worst = max(worst, (c.float() - v.float()).abs().max().item() / scale)
        out[k] = c
    return out, worst


def export_checkpoint(
    source: str | Path, target: str | Path, *, dtype: str = "fp16", rename: Mapping[str, str] | None = None,
    extra_files: tuple[str, ...] = (),
) -> dict[str, Any]:  # fmt: skip
    """Write the checkpoint of the run ``source`` as a model folder at ``target`` (replaced); returns
    ``{"params", "weights_dtype", "max_rel_weight_error"}``. ``extra_files`` are copied from the run
    folder or its checkpoint folder (the first that has them), e.g. a CLIP run's text_encoder.safetensors."""
    from ..config import dump_yaml, load_yaml
    from ..train.checkpoint import WRITE_ID, checkpoint_path, load_weights, read_meta, save_weights

    rename = dict(rename or {})
    ckpt_dir = checkpoint_path(source)
    meta = read_meta(ckpt_dir)
    kind = "ema" if (ckpt_dir / "ema.safetensors").is_file() else "model"
    weights, err = convert(load_weights(ckpt_dir / f"{kind}.safetensors"), dtype)
    target = Path(target)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    save_weights(weights, target / "model.safetensors")
    meta = {k: v for k, v in _rename(meta, rename).items() if k != WRITE_ID}
    meta["exported_from"] = {"step": meta.get("step"), "weights": kind}
    (target / "format.json").write_text(json.dumps(meta, indent=1) + "\n")
    (target / "config.yaml").write_text(dump_yaml(_rename(load_yaml(ckpt_dir / "config.yaml"), rename)))
    for name in extra_files:
        found = next((d / name for d in (Path(source), ckpt_dir) if (d / name).is_file()), None)
        if found is None:
            raise FileNotFoundError(f"{source}: no {name} to copy")
        _copy_converted(found, target / name, dtype)
    params = sum(v.numel() for v in weights.values())
    stored = sorted({str(v.dtype).replace("torch.", "") for v in weights.values() if v.is_floating_point()})
    return {"params": params, "weights_dtype": "/".join(stored), "max_rel_weight_error": err}


def _copy_converted(source: Path, target: Path, dtype: str) -> None:
    """Copy a file; a .safetensors file has its floating tensors converted, its metadata kept."""
    if source.suffix != ".safetensors" or dtype == "keep":
        shutil.copyfile(source, target)
        return
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(source), framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a mapping)
    save_file(convert(tensors, dtype)[0], str(target), metadata=metadata)


def write_card(folder: str | Path, card: dict[str, Any], readme: str) -> None:
    """Write ``card.json`` and ``README.md``, then ``checksums.json`` over every file of ``folder``."""
    folder = Path(folder)
    (folder / CARD).write_text(json.dumps(card, indent=1) + "\n")
    (folder / "README.md").write_text(readme.rstrip() + "\n")
    write_checksums(folder)
