"""Checkpoint folders (docs/design.md, "Checkpoints are folders").

A checkpoint is a folder::

    format.json         {"format": "difflab-checkpoint", "version": 1, "step": ..., ...}
    config.yaml         the full run config
    model.safetensors   network weights
    ema.safetensors     EMA weights (optional)
    state.pt            optimizer, scheduler, scaler and RNG states (tensors and plain
                        Python values only; loaded with ``weights_only=True``)

Loading never unpickles code. Writing is atomic: the folder is assembled under a temporary
name next to the target (``.NAME.tmp-*``) and renamed into place; the previous folder is first
renamed to ``.NAME.old`` and deleted once the new one is in place. A crash therefore leaves the
previous checkpoint: as ``NAME`` or -- killed between the two renames -- as ``.NAME.old``, which
:func:`checkpoint_path` and :func:`recover_checkpoint` (what ``--resume`` does) use and name. A killed
write also leaves its ``.NAME.tmp-*`` folder; :func:`remove_unfinished` deletes those when no writer
is running (the trainer does at start, as it is the only writer of its run).

Consistent reads while a writer replaces the folder: every write has a random ``write_id``, recorded
in ``format.json``, in the metadata of each ``.safetensors`` file and in ``state.pt``. A load reads
format.json, then the other files, then checks that format.json still names the same write (an id
never comes back to a path it left, so every file opened in between was that write's) and that the
files it read carry that id (or none); when the folder was replaced in between it reads it again
(up to ``READ_ATTEMPTS`` times). So a load never mixes files of two checkpoints, and a load during a
write's two renames waits for the new folder instead of failing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

FORMAT = "difflab-checkpoint"
VERSION = 1
WRITE_ID = "write_id"  # key of the write's id in format.json, the safetensors metadata and state.pt
READ_ATTEMPTS = 12  # reads of a folder that a writer keeps replacing (about 2 s in all), before giving up
SWAP_WAIT = 0.25  # seconds a reader waits for NAME to reappear while only .NAME.old exists
T = TypeVar("T")


class CheckpointError(ValueError):
    """A checkpoint folder or file that cannot be used; the message names the file."""


class _OtherWrite(CheckpointError):
    """A file that belongs to another write than the folder's format.json (replaced while being read)."""


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


def save_weights(state: dict[str, Tensor], path: Path, write_id: str | None = None) -> None:
    """A safetensors file; ``write_id`` goes into its metadata (see the module doc)."""
    from safetensors.torch import save_file

    metadata = {WRITE_ID: write_id} if write_id is not None else None
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(path), metadata=metadata)


def load_weights(path: str | Path, write_id: str | None = None) -> dict[str, Tensor]:
    """Tensors of a safetensors file; a missing, truncated or corrupt file is a CheckpointError.

    With ``write_id``, a file that names another checkpoint write is a CheckpointError too (the id
    is read from the same open file as the tensors; a file without one, e.g. rewritten by another
    tool, passes)."""
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: file not found")
    try:
        with safe_open(str(p), framework="pt") as f:  # one open file: its metadata and tensors agree
            found = (f.metadata() or {}).get(WRITE_ID)
            if write_id is not None and found is not None and found != write_id:
                raise _OtherWrite(
                    f"{p}: belongs to another checkpoint write ({found}) than its format.json ({write_id})"
                )
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a mapping)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        if isinstance(e, CheckpointError):
            raise
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
    """Write a checkpoint folder at ``path`` atomically (replacing an existing one); see the module doc.

    Without a folder at ``path``, an ``.NAME.old`` left by a killed write is replaced only once the
    new folder is in place (so some checkpoint exists at every moment)."""
    from ..config import dump_yaml

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(target), dir=target.parent))
    write_id = uuid.uuid4().hex
    try:
        (tmp / "config.yaml").write_text(dump_yaml(config))
        save_weights(model, tmp / "model.safetensors", write_id)
        if ema is not None:
            save_weights(ema, tmp / "ema.safetensors", write_id)
        if state is not None:
            torch.save({**state, WRITE_ID: write_id}, tmp / "state.pt")
        header = {"format": FORMAT, "version": VERSION, **meta, WRITE_ID: write_id}
        (tmp / "format.json").write_text(json.dumps(header, indent=1))
        old = old_path(target)
        if target.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def old_path(target: str | Path) -> Path:
    """Where a write keeps the previous checkpoint folder between its two renames: ``.NAME.old``."""
    t = Path(target)
    return t.with_name(f".{t.name}.old")


def _tmp_prefix(target: Path) -> str:
    return f".{target.name}.tmp-"


def remove_unfinished(target: str | Path) -> list[Path]:
    """Delete the ``.NAME.tmp-*`` folders that killed writes of checkpoint ``target`` left; return them.

    Only call it when no process is writing ``target`` (e.g. a trainer starting on its own run)."""
    t = Path(target)
    if not t.parent.is_dir():
        return []
    found = sorted(p for p in t.parent.glob(_tmp_prefix(t) + "*") if p.is_dir() and not p.is_symlink())
    for p in found:
        shutil.rmtree(p, ignore_errors=True)
    return found


def interrupted_write(target: str | Path) -> Path | None:
    """``.NAME.old`` when ``target`` is missing and that folder holds a checkpoint (a write was killed
    between its two renames, or one is between them right now); else None."""
    t, old = Path(target), old_path(target)
    if not t.exists() and (old / "format.json").is_file():
        return old
    return None


def recover_checkpoint(target: str | Path) -> Path | None:
    """Move the checkpoint of a write killed between its two renames back to ``target``; return where it
    was (``.NAME.old``), or None when there was nothing to recover. Only call it without a live writer."""
    t = Path(target)
    old = interrupted_write(t)
    if old is None:
        return None
    read_meta(old)  # a foreign or newer folder is not moved
    try:
        os.replace(old, t)
    except OSError:  # another process of the job moved it first
        if not (t / "format.json").is_file():
            raise
    return old


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


def _write_id(folder: Path) -> str | None:
    """The write id in ``folder``'s format.json now ("" without one; None when it cannot be read)."""
    try:
        return str(json.loads((folder / "format.json").read_text()).get(WRITE_ID) or "")
    except (OSError, ValueError):
        return None


def _settled(folder: Path) -> Path | None:
    """``folder`` if it holds a checkpoint; while only its ``.NAME.old`` does, ``folder`` once a writer
    between its two renames has finished (waiting up to ``SWAP_WAIT`` s), else ``.NAME.old`` with a
    warning (a write was killed there); None when neither holds one."""
    for _ in range(3):  # the two checks race with a writer's renames: look again when they disagree
        if (folder / "format.json").is_file():
            return folder
        if interrupted_write(folder) is not None:
            break
    else:
        return None
    deadline = time.monotonic() + SWAP_WAIT
    while time.monotonic() < deadline:
        time.sleep(0.005)
        if (folder / "format.json").is_file():
            return folder
    old = interrupted_write(folder)
    if old is None:
        return folder if (folder / "format.json").is_file() else None
    warnings.warn(
        f"{folder} is missing: a checkpoint write was interrupted between its two renames; "
        f"using the previous checkpoint in {old} (resume the run to move it back)",
        RuntimeWarning,
        stacklevel=3,
    )
    return old


def _path_hint(locate: Callable[[], Path]) -> str:
    try:
        return str(locate())
    except (CheckpointError, OSError) as e:
        return str(e)


def _read_consistent(locate: Callable[[], Path], read: Callable[[Path, dict[str, Any]], T]) -> T:
    """``read(folder, meta)`` of the checkpoint folder that ``locate()`` finds, again when the folder was
    replaced while it was read (its format.json's write id changed, or it disappeared).

    A write id never returns to a path it left, so a folder whose format.json names the same write
    before and after the read (and is still the one ``locate()`` finds) was that write throughout:
    every file opened by path in between, and every file found missing, was that write's."""
    for attempt in range(READ_ATTEMPTS):
        folder = locate()
        before = _write_id(folder)  # None: no readable format.json (yet)
        try:
            meta = read_meta(folder)
            if before is None or str(meta.get(WRITE_ID) or "") != before:
                raise _OtherWrite(f"{folder / 'format.json'}: replaced while being read")
            result = read(folder, meta)
            if _write_id(folder) == before and locate() == folder:
                return result
        except (CheckpointError, OSError):
            try:
                moved = locate() != folder
            except (CheckpointError, OSError):
                moved = True
            if not (moved or _write_id(folder) != before):
                raise  # the folder did not change: the error is its own
        time.sleep(min(0.002 * 2**attempt, 0.2))  # back off: a reader must not starve behind a busy writer
    raise CheckpointError(
        f"{_path_hint(locate)}: replaced by a writer {READ_ATTEMPTS} times while being read; try again"
    )


def load_checkpoint(path: str | Path, with_state: bool = True) -> Checkpoint:
    """Read a checkpoint folder; every problem is a one-line CheckpointError naming the file.

    All files come from one write of the folder, even while a writer replaces it (see the module doc);
    a folder missing after a write killed between its renames is read from its ``.NAME.old`` (warning)."""
    p = Path(path)
    return _read_consistent(lambda: _settled(p) or p, lambda folder, meta: _read_folder(folder, meta, with_state))


def _read_folder(p: Path, meta: dict[str, Any], with_state: bool) -> Checkpoint:
    from ..config import load_yaml

    write_id = meta.get(WRITE_ID)
    try:
        config = load_yaml(p / "config.yaml")
    except (FileNotFoundError, ValueError) as e:
        raise CheckpointError(str(e)) from None
    model = load_weights(p / "model.safetensors", write_id)
    ema = load_weights(p / "ema.safetensors", write_id) if (p / "ema.safetensors").exists() else None
    state: dict[str, Any] = {}
    if with_state and (p / "state.pt").exists():
        try:
            state = torch.load(p / "state.pt", map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as e:  # torch raises several types for truncated or foreign files
            raise CheckpointError(
                f"{p / 'state.pt'}: corrupt or truncated training state ({type(e).__name__})"
            ) from None
        found = state.pop(WRITE_ID, None) if isinstance(state, dict) else None
        if write_id is not None and found is not None and found != write_id:
            raise _OtherWrite(f"{p / 'state.pt'}: belongs to another checkpoint write than its format.json")
    return Checkpoint(p, meta, config, model, ema, state)


def load_into(
    module: torch.nn.Module, weights: dict[str, Tensor], source: str | Path, strict: bool = True
) -> dict[str, list[str]]:
    """``load_state_dict`` with a one-line error naming ``source`` when the shapes or keys differ.

    With ``strict=False`` only the tensors whose names and shapes match are loaded, after one
    module-name prefix is added to or removed from the given names when that matches more of them
    (a U-Net that gains a text encoder is wrapped, its tensors then named ``unet.*``); the result
    names the module's tensors left as they were (``"new"``) and the given ones not used
    (``"unused"``: unknown names or other shapes)."""
    own = module.state_dict()
    if not strict:
        weights = _align_names(set(own), weights)
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    wrong = sorted(k for k in set(own) & set(weights) if own[k].shape != weights[k].shape)
    if not strict:
        matching = {k: v for k, v in weights.items() if k in own and k not in wrong}
        if not matching:
            raise CheckpointError(f"{source}: no tensor matches this model by name and shape (is it another kind?)")
        module.load_state_dict(matching, strict=False)
        return {"new": sorted(missing + wrong), "unused": sorted(unexpected + wrong)}
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
    return {"new": [], "unused": []}


def _align_names(own: set[str], weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """``weights`` renamed by the one prefix change (none, ``P.`` added, or ``P.`` removed) under which
    most of its names are among ``own``."""
    heads = {k.split(".", 1)[0] + "." for k in [*own, *weights] if "." in k}
    options = [weights]
    for head in sorted(heads):
        options.append({head + k: v for k, v in weights.items()})
        if all(k.startswith(head) for k in weights):
            options.append({k[len(head) :]: v for k, v in weights.items()})
    return max(options, key=lambda w: len(own & set(w)))  # ties keep the first: the names as they are


CHECKPOINT_DIR = "checkpoint"


def checkpoint_path(path: str | Path) -> Path:
    """The checkpoint folder of a run folder (``RUN/checkpoint``), or ``path`` if it is one.

    Where a checkpoint write was killed between its two renames, only ``.checkpoint.old`` is left:
    that folder is returned, with a RuntimeWarning naming it. ``pretrained:NAME`` is a shipped model
    (:mod:`difflab.pretrained`), its files checked first."""
    from ..pretrained import resolve

    p = Path(resolve(path))
    for folder in (p, p / CHECKPOINT_DIR):
        found = _settled(folder)
        if found is not None:
            return found
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
    if weights not in ("ema", "model"):
        raise ValueError(f"unknown weights {weights!r}; valid: ema, model")

    def read(ckpt_dir: Path, meta: dict[str, Any]) -> tuple[dict[str, Any], Path, dict[str, Tensor]]:
        if method is not None and meta.get("method", "diffusion") != method:
            raise CheckpointError(f"{ckpt_dir}: a {meta.get('method', 'diffusion')!r} checkpoint, not a {method!r} one")
        if not isinstance(meta.get("model_config"), dict):
            raise CheckpointError(
                f"{ckpt_dir / 'format.json'}: missing 'model_config'; not a difflab training checkpoint"
            )
        where = ckpt_dir / f"{weights}.safetensors"
        if weights == "ema" and not where.is_file():
            where = ckpt_dir / "model.safetensors"
        return meta, where, load_weights(where, meta.get(WRITE_ID))

    meta, where, state = _read_consistent(lambda: checkpoint_path(path), read)
    net = build(meta["model_config"])
    load_into(net, {k: v.float() for k, v in state.items()}, where)
    return net.eval(), meta, where.parent
