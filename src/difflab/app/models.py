"""The models the app offers: shipped pretrained ones and run folders given on the command line.

A :class:`Catalog` holds one :class:`Entry` per model, by the name its dropdown shows (a pretrained
model's name, or a run folder as given), with its method: ``image`` (an unconditional or
class-conditional stage, or a cascade), ``distilled`` (a few-step student; its teacher is named by
its card or its run's ``format.json``), ``text-to-image`` (a caption-conditioned stage or cascade),
``unclip``, ``ardm``, ``wavegrad`` or ``video``. :class:`Models` loads an entry the way the
``difflab`` commands do (:func:`difflab.load`, :class:`~difflab.methods.unclip.pipeline.UnCLIP`) on
first use and keeps the most recently used few.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .limits import AppError

PREFIX = "pretrained:"
# which methods each tab offers
TABS: dict[str, tuple[str, ...]] = {
    "sample": ("image", "distilled", "text-to-image", "unclip"),
    "distilled": ("distilled",),
    "compress": ("ardm",),
    "vocode": ("wavegrad",),
    "video": ("video",),
}


@dataclass(frozen=True)
class Entry:
    """One model: its ``name`` in the page, its ``method``, what to load (``pretrained:NAME`` or run
    folders: several make a cascade, or unCLIP's prior, decoder and super-resolution stages) and, for a
    distilled student, its ``teacher`` (a name in the catalog, ``pretrained:NAME`` or a folder)."""

    name: str
    method: str
    sources: tuple[str, ...]
    teacher: str | None = None
    description: str = ""


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def _read_meta(path: str | Path) -> dict[str, Any]:
    """The ``format.json`` of a run, checkpoint or exported folder (pretrained names resolved)."""
    from ..train.checkpoint import checkpoint_path, read_meta

    return read_meta(checkpoint_path(path))


def _method_of_run(paths: list[str]) -> tuple[str, str | None]:
    """(method, teacher) of run folders given with ``--model`` (one, or several for a pipeline)."""
    from ..nets.diffusers_unet import is_diffusers_folder
    from ..pretrained import is_pretrained, pipeline_method

    if len(paths) == 1 and is_pretrained(paths[0]):
        kind = pipeline_method(paths[0])
        if kind is not None:
            return kind, None
    if len(paths) == 1 and Path(paths[0]).suffix == ".safetensors":
        return "wavegrad", None  # a WaveGrad snapshot
    if len(paths) == 1 and is_diffusers_folder(paths[0]):
        return "image", None
    metas = [_read_meta(p) for p in paths]
    methods = [str(m.get("method") or "diffusion") for m in metas]
    if methods[0] == "unclip-prior":
        if len(paths) < 2 or methods[1] != "unclip-decoder":
            raise AppError(f"--model {' '.join(paths)}: an unclip-prior run is followed by its unclip-decoder run")
        return "unclip", None
    if len(paths) == 1 and methods[0] in ("ardm", "wavegrad"):
        return methods[0], None
    if any(m != "diffusion" for m in methods):
        bad = next(p for p, m in zip(paths, methods, strict=True) if m != "diffusion")
        raise AppError(f"--model {bad}: the app has no use for a run of method {methods[paths.index(bad)]!r}")
    first = metas[0]
    if len(first.get("sample_shape", first.get("image_shape", []))) == 4:
        return "video", None
    if any("caption" in (m.get("conditions") or []) for m in metas):
        return "text-to-image", None
    if len(paths) == 1 and first.get("distill"):
        return "distilled", str(first["distill"].get("teacher") or "") or None
    return "image", None


@dataclass
class Catalog:
    """The models of every tab, by name."""

    entries: dict[str, Entry] = field(default_factory=dict)

    @classmethod
    def build(cls, runs: Sequence[Sequence[str]] = (), videos: Sequence[str] = (), pretrained: bool = True) -> Catalog:
        """Shipped pretrained models (unless ``pretrained`` is False), then ``runs`` (each a list of folders:
        one model) and ``videos`` (video stage folders). A folder that is missing or is no checkpoint is a
        one-line error."""
        catalog = cls()
        if pretrained:
            from ..pretrained import list_models

            for m in list_models():
                if m.method in ("clip", ""):
                    continue
                teacher = m.card.get("teacher")
                catalog.add(
                    Entry(
                        m.name, m.method, (PREFIX + m.name,), PREFIX + str(teacher) if teacher else None,
                        str(m.card.get("description", "")),
                    )
                )  # fmt: skip
        for run in runs:
            paths = [str(p) for p in run]
            method, teacher = _method_of_run(paths)
            catalog.add(Entry(" ".join(paths), method, tuple(paths), teacher, f"{method} run"))
        for path in videos:
            method, _ = _method_of_run([str(path)])
            if method != "video":
                raise AppError(f"--video {path}: not a video stage (model.dims: 3) but {_a(method)} run")
            catalog.add(Entry(str(path), "video", (str(path),), None, "video run"))
        return catalog

    def add(self, entry: Entry) -> None:
        self.entries[entry.name] = entry

    def names(self, tab: str) -> list[str]:
        """The models the tab ``tab`` (a key of :data:`TABS`) offers, pretrained ones first."""
        return [e.name for e in self.entries.values() if e.method in TABS[tab]]

    def get(self, name: Any, tab: str | None = None) -> Entry:
        """The entry ``name``; refused when unknown or not one ``tab`` offers."""
        entry = self.entries.get(str(name)) if name else None
        if entry is None:
            raise AppError(f"model: choose one of the list (got {name!r})" if name else "model: choose a model")
        if tab is not None and entry.method not in TABS[tab]:
            raise AppError(f"model: {entry.name} is {_a(entry.method)} model; this tab takes {', '.join(TABS[tab])}")
        return entry

    def teacher(self, student: Entry) -> Entry:
        """The teacher of a distilled student, as an entry (a catalog name, a pretrained model or a folder)."""
        t = student.teacher
        if not t:
            raise AppError(f"{student.name}: its teacher is not recorded, so there is nothing to compare with")
        if t in self.entries:
            return self.entries[t]
        name = t[len(PREFIX) :] if t.startswith(PREFIX) else None
        if name is not None and name in self.entries:
            return self.entries[name]
        if name is None and not Path(t).exists():
            raise AppError(
                f"{student.name}: its teacher {t} is not there; start the app with --model TEACHER_RUN to add it"
            )
        return Entry(t, "image", (t,), None, "teacher")


def describe(entry: Entry) -> dict[str, Any]:
    """What the page shows for a sampling model without loading it: its own sampler, steps, guidance and
    threshold (its base stage's ``sample`` section), its classes and whether it takes prompts."""
    from ..config import load_yaml
    from ..pretrained import expand
    from ..train.checkpoint import checkpoint_path
    from ..train.config import RunConfig

    info: dict[str, Any] = {"sampler": None, "steps": None, "guidance": None, "threshold": None, "classes": 0}
    info["prompt"] = entry.method in ("text-to-image", "unclip")
    try:
        parts = expand(list(entry.sources))
        base = parts[1] if entry.method == "unclip" and len(parts) > 1 else parts[0]
        ckpt = checkpoint_path(base)
        s = RunConfig.from_dict(load_yaml(ckpt / "config.yaml")).sample
        meta = json.loads((ckpt / "format.json").read_text())
    except (OSError, ValueError, KeyError, TypeError):  # e.g. a diffusers folder: nothing to show
        return info
    info.update(sampler=s.sampler, steps=s.steps, guidance=s.guidance, threshold=s.threshold)
    info["classes"] = int(meta.get("num_classes") or 0) if "class" in (meta.get("conditions") or ["class"]) else 0
    info["steps"] = int(meta.get("sampling_steps") or s.steps)
    return info


class Models:
    """Loaded models by entry, the ``keep`` most recently used (loading is serialised)."""

    def __init__(self, device: str = "cpu", keep: int = 6) -> None:
        self.device, self.keep = device, keep
        self._loaded: OrderedDict[tuple[str, tuple[str, ...]], Any] = OrderedDict()
        self._lock = threading.Lock()

    def _get(self, kind: str, entry: Entry) -> Any:
        key = (kind, entry.sources)
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            obj = self._load(kind, list(entry.sources))
            self._loaded[key] = obj
            while len(self._loaded) > self.keep:
                self._loaded.popitem(last=False)
            return obj

    def _load(self, kind: str, sources: list[str]) -> Any:
        from ..methods import load
        from ..pretrained import expand

        if kind == "cascade":  # what difflab sample / generate load: a Cascade, base first
            return load(sources, device=self.device)
        if kind == "unclip":
            from ..methods.unclip.pipeline import UnCLIP

            return UnCLIP.load(*expand(sources), device=self.device)
        return load(sources[0], device=self.device, method=kind)

    def cascade(self, entry: Entry) -> Any:
        return self._get("cascade", entry)

    def unclip(self, entry: Entry) -> Any:
        return self._get("unclip", entry)

    def ardm(self, entry: Entry) -> Any:
        return self._get("ardm", entry)

    def vocoder(self, entry: Entry) -> Any:
        return self._get("wavegrad", entry)

    def stage(self, entry: Entry) -> Any:
        """A single diffusion stage (a video stage)."""
        return self._get("diffusion", entry)
