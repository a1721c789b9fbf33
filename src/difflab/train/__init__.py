"""Training: the typed run config, the one trainer for every method, checkpoints, DDP helpers.

A method (image diffusion, distillation, ARDMs, WaveGrad, yours) plugs into the trainer as a
:class:`Method`; image diffusion (:class:`ImageDiffusion`) is the default.

    from difflab.train import load_run_config, train
    result = train(load_run_config("configs/digits.yaml", ["train.steps=500"]))

``difflab train CONFIG [key=value ...] [--resume] [--out RUN]`` is the same from the shell.
"""

from .checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_path,
    load_checkpoint,
    load_into,
    load_network,
    save_checkpoint,
)
from .config import DataConfig, DiffusionConfig, RunConfig, SampleConfig, TrainConfig, load_run_config
from .data import BatchOrder, mix_seed
from .distributed import DistInfo, init_distributed, resolve_device
from .method import Method
from .optim import EMA, lr_at, make_optimizer
from .stage import ImageDiffusion, LoadedStage, augment_lowres, crop_padding, generate, load_stage, resolve_model_config
from .trainer import NonFiniteLossError, Trainer, TrainResult, train

__all__ = [
    "EMA", "ImageDiffusion", "Method", "augment_lowres", "checkpoint_path", "load_network", "BatchOrder",
    "Checkpoint", "CheckpointError", "DataConfig", "DiffusionConfig", "DistInfo", "LoadedStage",
    "NonFiniteLossError", "RunConfig", "SampleConfig", "TrainConfig", "TrainResult", "Trainer", "crop_padding",
    "generate", "init_distributed", "load_checkpoint", "load_into", "load_run_config", "load_stage", "lr_at",
    "make_optimizer", "mix_seed", "resolve_device", "resolve_model_config", "save_checkpoint", "train"
]  # fmt: skip
