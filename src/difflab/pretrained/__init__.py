"""Pretrained models shipped with difflab, loadable by name (no torch import).

Every folder next to this file is one model: a checkpoint folder (``format.json``, ``config.yaml``,
``model.safetensors``) or, for a pipeline of several networks, one sub-folder per part, listed in
order in ``card.json``'s ``parts``. Each also holds ``README.md`` (the model card: data, recipe,
steps, wall time, machine, metrics and the commands that made and measured them), ``card.json``
(the same, for programs) and ``checksums.json`` (SHA-256 of every other file).

Wherever difflab accepts a run folder, ``pretrained:NAME`` names one of these::

    difflab sample pretrained:fashion-mnist-4step --labels 0,1,2
    difflab generate "a red bag at the top left" --pretrained text-to-image
    stage = difflab.load("pretrained:digits")

:func:`resolve` turns such a name into the folder after checking every file against its checksum
(a corrupt or truncated file is refused with a message naming it); an unknown name lists the known
ones. ``$DIFFLAB_PRETRAINED`` (folders separated by ``:``) is searched before the shipped models.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PREFIX = "pretrained:"
SHIPPED = Path(__file__).resolve().parent
CARD = "card.json"
CHECKSUMS = "checksums.json"
METHODS = ("image", "distilled", "ardm", "wavegrad", "text-to-image", "unclip", "video", "clip")
_verified: dict[Path, tuple[tuple[str, int, int], ...]] = {}  # folder -> the (file, size, mtime) it passed with


class PretrainedError(ValueError):
    """An unknown pretrained name or a model folder that fails its checks; the message names the file."""


@dataclass
class ModelInfo:
    """One pretrained model: its folder and what its ``card.json`` says."""

    name: str
    path: Path
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return str(self.card.get("method", ""))

    @property
    def parts(self) -> list[Path]:
        """The folders to load, in order (the model folder itself when it is one checkpoint)."""
        return [self.path / p for p in self.card.get("parts", [])] or [self.path]

    @property
    def bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())

    @property
    def params(self) -> int:
        return int(self.card.get("params", 0))

    @property
    def metric(self) -> dict[str, Any]:
        return dict(self.card.get("metric") or {})


def search_path() -> list[Path]:
    """Where models are looked up: ``$DIFFLAB_PRETRAINED`` (``:``-separated), then the shipped ones."""
    extra = [Path(p) for p in os.environ.get("DIFFLAB_PRETRAINED", "").split(os.pathsep) if p]
    return [*extra, SHIPPED]


def list_models() -> list[ModelInfo]:
    """Every model on the search path (a name found twice: the first), sorted by name."""
    found: dict[str, ModelInfo] = {}
    for root in search_path():
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            if folder.is_dir() and (folder / CARD).is_file() and folder.name not in found:
                found[folder.name] = ModelInfo(folder.name, folder, _read_json(folder / CARD))
    return sorted(found.values(), key=lambda m: m.name)


def is_pretrained(path: Any) -> bool:
    return isinstance(path, str) and path.startswith(PREFIX)


def get(name: str, verify: bool = True) -> ModelInfo:
    """The model ``name`` (with or without the ``pretrained:`` prefix), its files checked unless
    ``verify`` is False; an unknown name lists the known ones."""
    name = name[len(PREFIX) :] if name.startswith(PREFIX) else name
    models = {m.name: m for m in list_models()}
    if name not in models:
        known = ", ".join(models) or "none (no model folders found)"
        raise PretrainedError(f"unknown pretrained model {name!r}; available: {known} (difflab models lists them)")
    info = models[name]
    if verify:
        verify_folder(info.path)
    return info


def resolve(path: Any) -> Any:
    """``pretrained:NAME`` -> its checked folder (a model of several parts: the folder holding them);
    anything else is returned unchanged."""
    return get(path).path if is_pretrained(path) else path


def _card_of(folder: Any) -> dict[str, Any] | None:
    p = Path(folder)
    return _read_json(p / CARD) if (p / CARD).is_file() else None


def pipeline_method(path: Any) -> str | None:
    """The method of a pretrained model of several networks ("text-to-image", "unclip") at ``path``
    (a name or its folder); None for anything else."""
    card = _card_of(resolve(path))
    return str(card.get("method")) if card and card.get("parts") else None


def expand(paths: list[Any]) -> list[Any]:
    """Run folders with every pretrained model of several networks (by name or folder) replaced by
    its part folders in order (a cascade's base then its super-resolution stages; unCLIP's prior then
    its decoder); a pretrained name of one network becomes its folder."""
    out: list[Any] = []
    for p in paths:
        folder = resolve(p)
        card = _card_of(folder)
        out.extend([Path(folder) / part for part in card["parts"]] if card and card.get("parts") else [folder])
    return out


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_files(folder: Path) -> list[Path]:
    """The files a checksum covers: all under ``folder`` except checksums.json itself and hidden files."""
    return sorted(
        f for f in folder.rglob("*")
        if f.is_file() and f.name != CHECKSUMS and not any(part.startswith(".") for part in f.relative_to(folder).parts)
    )  # fmt: skip


def write_checksums(folder: Path) -> Path:
    """Record the SHA-256 and size of every file of ``folder`` in its checksums.json."""
    sums = {
        f.relative_to(folder).as_posix(): {"sha256": sha256(f), "bytes": f.stat().st_size} for f in model_files(folder)
    }
    target = folder / CHECKSUMS
    target.write_text(json.dumps(sums, indent=1, sort_keys=True) + "\n")
    return target


def verify_folder(folder: Path) -> None:
    """Check every file listed in ``folder/checksums.json`` (size, then SHA-256); a missing, truncated or
    altered file is a PretrainedError naming it. A folder that passed is not hashed again in this process
    while its files keep their sizes and modification times."""
    sums = _read_json(folder / CHECKSUMS)
    stamp = []
    for rel in sorted(sums):
        f = folder / rel
        if not f.is_file():
            raise PretrainedError(f"{f}: missing (listed in {folder / CHECKSUMS})")
        st = f.stat()
        stamp.append((rel, st.st_size, st.st_mtime_ns))
    if _verified.get(folder) == tuple(stamp):
        return
    for rel, want in sorted(sums.items()):
        f = folder / rel
        if f.stat().st_size != int(want["bytes"]):
            raise PretrainedError(
                f"{f}: {f.stat().st_size} bytes, expected {want['bytes']} (truncated or replaced; reinstall difflab)"
            )
        if sha256(f) != want["sha256"]:
            raise PretrainedError(f"{f}: checksum mismatch (corrupt or altered; reinstall difflab)")
    _verified[folder] = tuple(stamp)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise PretrainedError(f"{path}: missing") from None
    except (OSError, ValueError) as e:
        raise PretrainedError(f"{path}: unreadable ({e})") from None
    if not isinstance(data, dict):
        raise PretrainedError(f"{path}: expected a JSON object")
    return data


def shipped_name(path: Any) -> str | None:
    """The name of the pretrained model whose folder holds ``path`` (None for anything else)."""
    try:
        p = Path(resolve(path)).resolve()
    except (PretrainedError, OSError):
        return None
    for root in search_path():
        try:
            rel = p.relative_to(root.resolve())
        except (ValueError, OSError):
            continue
        if rel.parts and (root / rel.parts[0] / CARD).is_file():
            return rel.parts[0]
    return None


def output_home(run: Any) -> Path:
    """Where a command writes what it makes from ``run`` by default: the run folder itself, but
    ``outputs/NAME`` for a pretrained model (its folder is part of the installation)."""
    name = shipped_name(run)
    return Path("outputs") / name if name else Path(resolve(run))
