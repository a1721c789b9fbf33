"""Autoregressive diffusion models (Hoogeboom et al. 2022, "Autoregressive Diffusion Models").

- :mod:`.model`: the image ARDM (U-Net with a mask channel; softmax or discretized-logistic-mixture
  head; OA-ARDM or Upscale ARDM stages with branching 2 or 4);
- :mod:`.objective`: the OA-ARDM objective, NLL estimates, per-step losses, sampling;
- :mod:`.parallel`: the exact dynamic program for parallel generation under a budget;
- :mod:`.codec`: a lossless image codec (rANS from ``constriction``), one image coded on its own;
- :mod:`.text`: a character-level OA-ARDM (transformer with an absorbing class);
- :mod:`.train`: training with the difflab trainer, loading, exporting and evaluation;
- :mod:`.cli`: the ``difflab`` subcommands (no torch import until a command runs).

Names below are imported lazily, so ``from difflab.methods.ardm import cli`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "CodecError": "codec", "compress": "codec", "decompress": "codec", "order_nll": "codec", "read_header": "codec",
    "ImageARDM": "model", "radix": "model",
    "estimate_nll": "objective", "oa_loss": "objective", "plan_nll": "objective", "sample": "objective",
    "step_losses": "objective",
    "dp_plan": "parallel", "make_plans": "parallel", "segment_cost": "parallel", "uniform_plan": "parallel",
    "TextARDM": "text",
    "ARDMMethod": "train", "evaluate_ardm": "train", "export_ardm": "train", "load_ardm": "train",
    "train_ardm": "train",
}  # fmt: skip
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
