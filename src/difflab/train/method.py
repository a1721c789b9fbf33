"""The extension point of the one trainer: a :class:`Method` says what a kind of model is.

The trainer owns everything shared (the optimizer, EMA, precision, DDP, exact resume, signals,
time limits, logging, checkpoints). A method supplies the rest, through public hooks only::

    class MyMethod(Method):
        name = "my-method"                     # recorded in format.json; difflab.load dispatches on it
        model_config_class = MyNetConfig       # the typed ``model:`` section of the recipe

        def dataset(self, split):              # items (x, cond dict)
        def build(self, model_config):         # a fresh network
        def loss(self, net, x, cond, generator):

    Trainer(cfg, run_dir, method=MyMethod(cfg)).fit()

Optional hooks: :meth:`resolve_model_config` (fill in what the data fix), :meth:`meta` (more
``format.json`` entries), :meth:`attach` (called once the trainer is built or resumed),
:meth:`after_update` (return a reason to stop, e.g. "done" for a fitted schedule),
:meth:`summary` (more ``summary.json`` entries),
:meth:`sample_grid` (what to write every ``train.sample_every`` updates), and the classmethod
:meth:`load` (what ``difflab.load`` returns for a checkpoint of this method).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import from_dict, to_dict
from .config import ClipConfig, DiffusionConfig, RunConfig, SampleConfig, TextConfig


class Method:
    """Base class of methods (see the module doc). ``sections`` are the recipe sections the method
    reads besides ``model``, ``data`` and ``train``; a changed section it does not read is an error."""

    name: str = ""
    model_config_class: type | None = None
    sections: tuple[str, ...] = ("diffusion", "sample")

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        defaults = {
            "diffusion": DiffusionConfig(), "sample": SampleConfig(), "text": TextConfig(), "clip": ClipConfig(),
        }  # fmt: skip
        for section, default in defaults.items():
            if section not in self.sections and getattr(cfg, section) != default:
                raise ValueError(f"invalid run config: method {self.name!r} does not use the {section!r} section")
        if cfg.method not in ("", self.name):
            raise ValueError(f"invalid run config: method is {cfg.method!r}, but this runs {self.name!r}")
        cfg.method = self.name  # an empty method is the one that runs the recipe

    # -- what every method supplies ------------------------------------------------------------
    def dataset(self, split: str = "train") -> Any:
        """The data of ``split``: items ``(x, cond)`` with ``cond`` a dict (possibly empty)."""
        raise NotImplementedError

    def build(self, model_config: dict[str, Any]) -> torch.nn.Module:
        """A fresh network from a resolved model config."""
        raise NotImplementedError

    def loss(self, net: Any, x: Tensor, cond: dict[str, Tensor], generator: torch.Generator) -> Tensor:
        """The scalar training loss of a batch; ``generator`` is the update's seeded noise source."""
        raise NotImplementedError

    # -- optional hooks ---------------------------------------------------------------------------
    def resolve_model_config(self, dataset: Any) -> dict[str, Any]:
        """The network's full config (saved in the checkpoint): by default ``model:`` checked against
        :attr:`model_config_class` (unknown keys name the valid ones) and written out in full."""
        if self.model_config_class is None:
            return dict(self.cfg.model)
        return to_dict(from_dict(self.model_config_class, self.cfg.model, "model"))

    def meta(self) -> dict[str, Any]:
        """Entries for ``format.json``; ``method`` is what :func:`difflab.load` dispatches on."""
        return {"method": self.name}

    def attach(self, trainer: Any) -> None:
        """Called once the trainer is built (and resumed); the default does nothing."""

    def after_update(self, trainer: Any) -> str | None:
        """A reason to stop after this update (it becomes the run's status), or None."""
        return None

    def summary(self) -> dict[str, Any]:
        """Entries added to the run's ``summary.json`` at the end of :meth:`Trainer.fit`."""
        return {}

    def sample_grid(self, trainer: Any, monitor: Any = None) -> Path | None:
        """Write samples of the EMA model at ``trainer.step`` (main process); the default writes none."""
        return None

    @classmethod
    def load(cls, path: str | Path, weights: str = "ema", device: Any = "cpu") -> Any:
        """What :func:`difflab.load` returns for a checkpoint of this method."""
        raise NotImplementedError
