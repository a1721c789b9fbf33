"""DistributedDataParallel on CPU (gloo): two processes, launched with torchrun's environment
variables, train the same stage and end with identical weights."""

from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp

from difflab.train import RunConfig, Trainer, load_checkpoint

CONFIG = {
    "name": "ddp",
    "model": {"channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "heads": 2, "norm_groups": 4, "dropout": 0.1},
    "data": {"name": "digits", "batch_size": 8, "conditional": True},
    "train": {
        "steps": 4, "grad_accum": 2, "log_every": 1, "sample_every": 0, "ckpt_every": 0, "progress": False,
        "threads": 1, "device": "cpu",
    },
    "sample": {"steps": 2, "n": 4},
}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, run_dir: str, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    trainer = Trainer(RunConfig.from_dict(CONFIG), run_dir)
    init = {k: v.clone() for k, v in trainer.net.state_dict().items()}
    assert trainer.dist.world_size == world and trainer.model is not trainer.net  # wrapped in DDP
    trainer.fit()
    torch.save(
        {"init": init, "final": trainer.net.state_dict(), "ema": trainer.ema.state_dict()}, f"{out_dir}/{rank}.pt"
    )
    trainer.close()


def test_two_processes_hold_identical_weights(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "run"), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "1.pt", weights_only=True)
    for part in ("init", "final", "ema"):
        for k in r0[part]:
            assert torch.equal(r0[part][k], r1[part][k]), (part, k)
    assert not torch.equal(r0["init"]["out.weight"], r0["final"]["out.weight"])  # it did train
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint")  # written by rank 0 only
    assert ckpt.step == 4 and ckpt.meta["world_size"] == 2
    for k in ckpt.model:
        assert torch.equal(ckpt.model[k], r0["final"][k])
