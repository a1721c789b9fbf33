"""The trainer: LR schedule, EMA, data order, exact resume, accumulation, non-finite loss, checks."""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from difflab.train import (
    EMA,
    BatchOrder,
    CheckpointError,
    NonFiniteLossError,
    RunConfig,
    TrainConfig,
    Trainer,
    load_checkpoint,
    lr_at,
    resolve_model_config,
    train,
)

TINY = {
    "name": "tiny",
    "model": {"channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "heads": 2, "norm_groups": 4},
    "data": {"name": "digits", "batch_size": 8},
    "train": {
        "steps": 6, "lr": 1e-3, "log_every": 1, "sample_every": 0, "ckpt_every": 0, "progress": False,
        "threads": 1, "ema_decay": 0.9,
    },
    "sample": {"steps": 2, "n": 4},
}  # fmt: skip


def tiny(**sections) -> RunConfig:
    d = copy.deepcopy(TINY)
    for name, values in sections.items():
        if isinstance(values, dict):
            d.setdefault(name, {}).update(values)
        else:
            d[name] = values
    return RunConfig.from_dict(d)


def weights(path) -> tuple[dict, dict]:
    c = load_checkpoint(path / "checkpoint")
    return c.model, c.ema


def assert_same(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if atol == 0.0:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)


# -- pure functions -------------------------------------------------------------------------
def test_lr_schedule():
    c = TrainConfig(steps=110, lr=1.0, warmup=10, decay="cosine", final_lr_ratio=0.1)
    assert lr_at(0, c) == pytest.approx(0.1) and lr_at(4, c) == pytest.approx(0.5) and lr_at(9, c) == 1.0
    assert lr_at(10, c) == pytest.approx(1.0)
    assert lr_at(60, c) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the decay
    assert lr_at(109, c) == pytest.approx(0.1, abs=1e-3) and lr_at(500, c) == pytest.approx(0.1)
    lin = TrainConfig(steps=110, lr=2.0, warmup=10, decay="linear")
    assert lr_at(60, lin) == pytest.approx(1.0) and lr_at(35, lin) == pytest.approx(1.5)
    const = TrainConfig(steps=10, lr=0.3, decay="none")
    assert {lr_at(s, const) for s in range(20)} == {0.3}


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_math(warmup):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    net.register_buffer("count", torch.zeros(()))
    ema = EMA(net, 0.9, warmup=warmup)
    expected = {k: v.clone() for k, v in net.state_dict().items() if k != "count"}
    for t in range(5):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
            net.count += 1
        ema.update(net)
        d = min(0.9, (1 + t) / (10 + t)) if warmup else 0.9
        assert ema.decay_at(t) == pytest.approx(d)
        for name, p in net.named_parameters():
            expected[name] = d * expected[name] + (1 - d) * p.detach()
    for name, value in expected.items():
        torch.testing.assert_close(ema.module.state_dict()[name], value, rtol=0, atol=1e-6)
    assert float(ema.module.count) == 5.0  # buffers are copied, not averaged
    assert not any(p.requires_grad for p in ema.module.parameters())
    zero = EMA(net, 0.0, warmup=False)
    with torch.no_grad():
        net.weight.add_(1.0)
    zero.update(net)
    assert torch.equal(zero.module.weight, net.weight)


def test_batch_order_is_a_pure_function_of_seed_and_step():
    order = BatchOrder(10, 4, seed=3)
    stream = torch.cat([order.indices(s) for s in range(5)])  # 20 positions = two epochs
    assert sorted(stream[:10].tolist()) == list(range(10)) and sorted(stream[10:].tolist()) == list(range(10))
    assert not torch.equal(stream[:10], stream[10:])  # a new permutation each epoch
    assert torch.equal(BatchOrder(10, 4, seed=3).indices(4), order.indices(4))  # no hidden state
    assert not torch.equal(BatchOrder(10, 4, seed=4).indices(0), order.indices(0))
    # two ranks of batch B together see one process's batch 2B; so do two micro-batches
    whole = BatchOrder(10, 6, seed=3)
    ranks = [BatchOrder(10, 3, seed=3, rank=r, world=2) for r in range(2)]
    micro = BatchOrder(10, 3, seed=3, accum=2)
    for s in range(4):
        assert torch.equal(torch.cat([r.indices(s) for r in ranks]), whole.indices(s))
        assert torch.equal(torch.cat([micro.indices(s, 0), micro.indices(s, 1)]), whole.indices(s))


def test_model_config_is_filled_from_data_and_checked():
    cfg = tiny(diffusion={"parameterization": "both"}, data={"conditions": ["class"]}, train={"cond_drop": 0.2})
    m = resolve_model_config(cfg, 1, 10)
    assert (m["in_channels"], m["out_channels"], m["num_classes"], m["cond_drop"]) == (1, 2, 10, {"class": 0.2})
    with pytest.raises(ValueError, match=r"'model.chanels' \(did you mean 'channels'\?\); valid keys of model:"):
        resolve_model_config(tiny(model={"chanels": 8}), 1, 10)
    with pytest.raises(ValueError, match="model.in_channels=3 contradicts"):
        resolve_model_config(tiny(model={"in_channels": 3}), 1, 10)
    with pytest.raises(ValueError, match="has no class labels"):
        resolve_model_config(tiny(data={"conditions": ["class"]}), 1, None)


def test_precision_checks(tmp_path):
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        Trainer(tiny(train={"precision": "fp16", "device": "cpu"}), tmp_path / "a")
    r = train(tiny(train={"precision": "bf16", "steps": 2}), tmp_path / "b")
    assert r.step == 2 and math.isfinite(r.loss)


# -- runs -------------------------------------------------------------------------------------
def test_exact_resume(tmp_path):
    """N steps in one go == N/2, then resume, then N/2: bitwise, with accumulation, warm-up,
    cosine decay, dropout and label dropping (the global RNG) all in play."""
    cfg = tiny(
        model={"dropout": 0.1},
        data={"conditions": ["class"]},
        train={"steps": 6, "grad_accum": 2, "warmup": 2, "decay": "cosine", "cond_drop": 0.3},
    )
    train(cfg, tmp_path / "full")
    first = train(cfg, tmp_path / "half", until=3)
    assert first.status == "paused" and load_checkpoint(tmp_path / "half/checkpoint").step == 3
    with (tmp_path / "half/metrics.jsonl").open("a") as f:  # as if logged after the checkpoint, then killed
        f.write(json.dumps({"step": 99, "loss": 0.0}) + "\n")
    again = train(cfg, tmp_path / "half", resume=True)
    assert again.status == "done" and again.step == 6
    full_model, full_ema = weights(tmp_path / "full")
    half_model, half_ema = weights(tmp_path / "half")
    assert_same(full_model, half_model)
    assert_same(full_ema, half_ema)
    assert not torch.equal(full_model["out.weight"], full_ema["out.weight"])
    steps = [json.loads(line)["step"] for line in (tmp_path / "half/metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    other_seed = tiny(**{**cfg.to_dict(), "train": {**cfg.to_dict()["train"], "seed": 1}})
    train(other_seed, tmp_path / "seed1")
    assert not torch.equal(weights(tmp_path / "seed1")[0]["out.weight"], full_model["out.weight"])


def _deterministic_loss(trainer: Trainer):
    """A noise-free loss (no random t or eps), so only the batching differs between runs."""

    def loss(net, x, cond, generator):
        out = net(x, torch.zeros(x.shape[0]), None)
        return ((out - x) ** 2).mean() + 0.01 * sum(p.square().sum() for p in trainer.net.parameters())

    return loss


def test_gradient_accumulation_matches_a_larger_batch(tmp_path):
    def run(name, batch, accum):
        cfg = tiny(data={"batch_size": batch}, train={"steps": 3, "grad_accum": accum, "grad_clip": 0.0})
        t = Trainer(cfg, tmp_path / name)
        t.method.loss = _deterministic_loss(t)
        t.fit()
        return {k: v.detach().clone() for k, v in t.net.state_dict().items()}

    accum = run("accum", 8, 2)
    big = run("big", 16, 1)
    small = run("small", 8, 1)
    assert_same(accum, big, atol=2e-6)
    assert max(float((accum[k] - small[k]).abs().max()) for k in accum) > 1e-4  # the test can tell them apart


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = tiny(train={"steps": 8})
    trainer = Trainer(cfg, tmp_path / "bad")
    real = trainer.method.loss
    trainer.method.loss = lambda *a: real(*a) * (float("nan") if trainer.step == 3 else 1.0)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss nan at step 4; .*\(step 3\)"):
        trainer.fit()
    train(cfg, tmp_path / "good", until=3)
    bad_model, bad_ema = weights(tmp_path / "bad")
    good_model, good_ema = weights(tmp_path / "good")
    assert load_checkpoint(tmp_path / "bad/checkpoint").step == 3
    assert_same(bad_model, good_model)
    assert_same(bad_ema, good_ema)


def test_resume_checks_the_checkpoint(tmp_path):
    run = tmp_path / "run"
    train(tiny(train={"steps": 2}), run)
    with pytest.raises(ValueError, match="already holds a checkpoint: pass --resume"):
        Trainer(tiny(), run)
    with pytest.raises(CheckpointError, match=r"format.json: the checkpoint does not match the config: model channels"):
        Trainer(tiny(model={"channels": 16}), run, resume=True)
    with pytest.raises(CheckpointError, match="parameterization 'v', the config says 'eps'"):
        Trainer(tiny(diffusion={"parameterization": "eps"}), run, resume=True)
    f = run / "checkpoint" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-50])
    with pytest.raises(CheckpointError, match=f"{f}: corrupt or truncated"):
        Trainer(tiny(), run, resume=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer(tiny(), tmp_path / "empty", resume=True)


def test_run_folder(tmp_path):
    cfg = tiny(
        data={"conditions": ["class"]}, train={"steps": 4, "sample_every": 2, "warmup": 2}, sample={"guidance": 2.0}
    )
    result = train(cfg, tmp_path / "run")
    run = tmp_path / "run"
    assert result.exit_code == 0 and result.status == "done"
    assert (run / "config.yaml").is_file() and (run / "tb").is_dir() and (run / "summary.json").is_file()
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_0000002.png", "step_0000004.png"]
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4]
    assert set(lines[0]) >= {"step", "loss", "lr", "grad_norm", "images_per_s"}
    assert lines[0]["lr"] == pytest.approx(lr_at(0, cfg.train)) and lines[1]["lr"] == pytest.approx(1e-3)
    state = load_checkpoint(run / "checkpoint").state
    assert {"optimizer", "scaler", "rng", "step", "ema_updates"} <= set(state) and state["ema_updates"] == 4
    assert {"torch", "noise"} <= set(state["rng"])
    from PIL import Image

    with Image.open(run / "samples" / "step_0000004.png") as im:  # 4 samples, one column per class (10)
        assert im.size == (4 * 34 + 2, 34 + 2)  # 8x8 digits enlarged to 32x32, 2 px padding


def test_loader_path_gives_the_same_batches_as_the_in_memory_path():
    """Datasets without ``tensors()`` go through a DataLoader with the same index lists."""
    from difflab.data import get_dataset
    from difflab.train.data import Batches

    digits = get_dataset("digits", "train")

    class NoTensors(torch.utils.data.Dataset):
        def __len__(self):
            return len(digits)

        def __getitem__(self, i):
            return digits[i]

    order = BatchOrder(len(digits), 5, seed=1, accum=2)
    fast, slow = Batches(digits, order)(3), Batches(NoTensors(), order)(3)
    for _ in range(4):
        (xa, ya), (xb, yb) = next(fast), next(slow)
        assert torch.equal(xa, xb) and ya.keys() == yb.keys() == {"class"}
        assert torch.equal(ya["class"], yb["class"]) and ya["class"].dtype == yb["class"].dtype == torch.int64
    x, y = digits[int(order.indices(3, 0)[0])]
    assert torch.equal(next(Batches(digits, order)(3))[0][0], x)


def test_init_starts_a_new_run_from_other_weights(tmp_path):
    """train.init: a fresh run (fresh optimizer, step 0) whose starting weights are another run's EMA."""
    first = tmp_path / "first"
    train(tiny(), first)
    src = load_checkpoint(first / "checkpoint").ema
    trainer = Trainer(tiny(train={"init": str(first), "steps": 1}), tmp_path / "second")
    for k, v in trainer.net.state_dict().items():
        assert torch.equal(v, src[k]), k
    assert trainer.step == 0
    fresh = Trainer(tiny(train={"steps": 1}), tmp_path / "third")
    assert any(not torch.equal(v, src[k]) for k, v in fresh.net.state_dict().items())
    with pytest.raises(FileNotFoundError, match="train.init"):
        Trainer(tiny(train={"init": str(tmp_path / "nowhere")}), tmp_path / "fourth")


def test_a_save_killed_between_its_renames_is_resumed_not_deleted(tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(tiny(train={"steps": 2}), run)
    real_replace = os.replace

    def killed_at_the_second_rename(src, dst):
        if Path(src).name.startswith(".checkpoint.tmp-"):
            raise KeyboardInterrupt  # the process dies after checkpoint -> .checkpoint.old
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_at_the_second_rename)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(train={"steps": 4}), run, resume=True)
    monkeypatch.undo()
    shutil.copytree(run / ".checkpoint.old", run / ".checkpoint.tmp-k1ll3d")  # what a SIGKILL mid-write leaves
    assert not (run / "checkpoint").exists() and (run / ".checkpoint.old" / "format.json").is_file()

    with pytest.raises(
        ValueError, match=r"step 2 in .*\.checkpoint\.old \(a save was killed between its two renames\): pass --resume"
    ):
        Trainer(tiny(train={"steps": 4}), run)  # a fresh start neither trains over it nor deletes it
    assert (run / ".checkpoint.old" / "format.json").is_file()
    with pytest.warns(RuntimeWarning, match=r"resuming from the previous checkpoint, step 2, moved back from .*old"):
        trainer = Trainer(tiny(train={"steps": 4}), run, resume=True)
    assert trainer.step == 2 and not (run / ".checkpoint.tmp-k1ll3d").exists()  # the orphan is cleaned up
    assert trainer.fit().step == 4 and load_checkpoint(run / "checkpoint").step == 4
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []


def test_summary_records_skipped_image_files(tmp_path):
    from PIL import Image

    from difflab.data import DataWarning

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        Image.new("L", (8, 8), 40 * i).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    cfg = tiny(data={"name": "image-folder", "options": {"root": str(folder), "size": 8, "channels": 1}},
               train={"steps": 1})  # fmt: skip
    with pytest.warns(DataWarning, match="skipped 1 unreadable"):
        train(cfg, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["skipped_files"] == 1 and summary["skipped"][0]["path"] == str(folder / "broken.png")
    assert summary["skipped"][0]["reason"]


def test_init_not_strict_loads_what_matches_and_names_the_new(tmp_path, capsys):
    """train.init_strict: false: a run that gains a condition starts from another run's matching
    weights; its new tensors keep their fresh initialisation; strict init refuses the same pair."""
    from difflab.train.checkpoint import CheckpointError

    first = tmp_path / "first"
    train(tiny(), first)
    src = load_checkpoint(first / "checkpoint").ema
    gains_class = {"data": {"conditions": ["class"]}}
    with pytest.raises(CheckpointError, match="missing"):
        Trainer(tiny(**gains_class, train={"init": str(first), "steps": 1}), tmp_path / "strict")
    trainer = Trainer(tiny(**gains_class, train={"init": str(first), "init_strict": False, "steps": 1}), tmp_path / "b")
    own = trainer.net.state_dict()
    new = sorted(set(own) - set(src))
    assert new and all("label" in k for k in new)
    for k in set(own) & set(src):
        assert torch.equal(own[k], src[k]), k
    assert f"{len(new)} tensor(s) new" in capsys.readouterr().out
    from safetensors.torch import save_file

    save_file({"unrelated.weight": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="no tensor matches this model"):
        Trainer(tiny(train={"init": str(tmp_path / "other.safetensors"), "init_strict": False}), tmp_path / "c")


def test_model_cond_drop_sets_each_conditions_own_rate(tmp_path):
    """model.cond_drop overrides train.cond_drop per condition; a condition the run lacks is refused."""
    trainer = Trainer(
        tiny(data={"conditions": ["class"]}, model={"cond_drop": {"class": 0.3}}, train={"cond_drop": 0.1}),
        tmp_path / "a",
    )
    assert trainer.model_config["cond_drop"] == {"class": 0.3}
    trainer = Trainer(tiny(data={"conditions": ["class"]}, train={"cond_drop": 0.1}), tmp_path / "b")
    assert trainer.model_config["cond_drop"] == {"class": 0.1}
    with pytest.raises(ValueError, match="does not condition on; its droppable conditions: class"):
        Trainer(tiny(data={"conditions": ["class"]}, model={"cond_drop": {"vector": 0.1}}), tmp_path / "c")
