"""Methods built from the shared parts, and the one loader of what they train.

Each method is a :class:`difflab.train.Method` (image diffusion is the trainer's default; then
progressive distillation, ARDMs with their lossless codec, WaveGrad, cascades of stages, CLIP). Its
checkpoints record its name, and :func:`load` dispatches on it::

    stage = difflab.load("runs/digits")                    # a diffusion stage: stage.sample(16)
    ardm = difflab.load("artifacts/ardm-fmnist-ft")        # an ARDM: estimate_nll, codec
    voc = difflab.load("artifacts/wavegrad-priorgrad")     # a Vocoder: voc(mel, steps=6)
    cascade = difflab.load(["runs/base", "runs/sr"])       # a Cascade: cascade.sample(16)
    clip = difflab.load("runs/clip-scenes")                # a CLIP: encode_image, encode_captions
    clip = difflab.load("models/clip-vit-b32")             # a Hugging Face CLIP folder: an HFCLIP
    stage = difflab.load("models/ddpm-digits")             # a diffusers UNet2DModel folder: a stage
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

# method name (in RunConfig.method and format.json) -> "module:class" of its Method
METHODS = {
    "diffusion": "difflab.train.stage:ImageDiffusion",
    "ardm": "difflab.methods.ardm.train:ARDMMethod",
    "wavegrad": "difflab.methods.wavegrad.train:WaveGradMethod",
    "clip": "difflab.methods.clip:CLIPMethod",
    "unclip-prior": "difflab.methods.unclip.prior:PriorMethod",
    "unclip-decoder": "difflab.methods.unclip.decoder:UnCLIPDecoder",
}


def get_method(name: str) -> Any:
    """The :class:`difflab.train.Method` class of ``name``; an unknown name lists the known ones."""
    name = name or "diffusion"
    if name not in METHODS:
        raise ValueError(
            f"unknown method {name!r}; this difflab knows {', '.join(METHODS)} (written by a newer difflab?)"
        )
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def load(
    path: str | Path | list[str | Path], weights: str = "ema", device: Any = "cpu", method: str | None = None
) -> Any:
    """What a checkpoint holds, ready to use: a run, checkpoint or exported folder (dispatching on the
    method recorded in its ``format.json``), a WaveGrad snapshot ``.safetensors``, a diffusers
    UNet2DModel folder (a diffusion stage, :func:`~difflab.nets.diffusers_unet.load_diffusers_unet`;
    ``weights`` does not apply), a Hugging Face CLIP folder (``config.json``, no ``format.json``: a
    frozen :class:`~difflab.nets.hf_clip.HFCLIP`) or a list of diffusion stage folders (a
    :class:`~.cascade.Cascade`, base first); ``pretrained:NAME`` is a shipped model (a pipeline of
    several networks: a Cascade or an :class:`~.unclip.pipeline.UnCLIP`). ``method`` (e.g. "ardm")
    refuses checkpoints of any other method, naming both: what a command that needs one says."""
    from ..nets.diffusers_unet import is_diffusers_folder, load_diffusers_unet
    from ..nets.hf_clip import hf_model_type
    from ..pretrained import expand, pipeline_method, resolve
    from ..train.checkpoint import CheckpointError, checkpoint_path, read_meta

    if isinstance(path, (list, tuple)):
        from .cascade import Cascade

        return Cascade([load(p, weights, device, "diffusion") for p in expand(list(path))])
    path = resolve(path)
    kind = pipeline_method(path)  # a pretrained model of several networks
    if kind is not None:
        if method is not None and method != kind:
            raise CheckpointError(f"{path} holds a {kind!r} pipeline; this needs a {method!r} checkpoint")
        if kind == "unclip":
            from .unclip.pipeline import UnCLIP

            return UnCLIP.load(*expand([path]), weights=weights, device=device)
        return load(expand([path]), weights, device)
    from_diffusers = is_diffusers_folder(path)
    if Path(path).suffix == ".safetensors":
        name = "wavegrad"
    elif from_diffusers:  # checked before CLIP: a bare UNet2DModel folder has a config.json too
        name = "diffusion"
    elif hf_model_type(path) is not None:
        name = "clip"  # a Hugging Face model folder; HFCLIP refuses other model types in one line
    else:
        name = str(read_meta(checkpoint_path(path)).get("method") or "diffusion")
    if method is not None and name != method:
        raise CheckpointError(f"{path} holds a {name!r} checkpoint; this needs a {method!r} one")
    if from_diffusers:
        return load_diffusers_unet(path, device)
    return get_method(name).load(path, weights, device)
