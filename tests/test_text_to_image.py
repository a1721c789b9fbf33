"""Caption-conditioned stages on the shared path: captions become token ids for the network's text
encoder in training, prompts in sampling (with guidance), text cascades, and ``difflab generate``."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import difflab
from difflab.cli import main
from difflab.data import get_dataset
from difflab.methods.cascade import Cascade
from difflab.nets import TextConditioned
from difflab.train import RunConfig, Trainer, generate, train


def config(conditions=("caption",), size=8, lowres_factor=0, encoder="scratch", **sample) -> RunConfig:
    return RunConfig.from_dict(
        {
            "name": "t2i",
            "model": {"channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "heads": 2, "norm_groups": 4},
            "data": {
                "name": "scenes", "options": {"size": size, "n": 64}, "batch_size": 4,
                "conditions": list(conditions), "lowres_factor": lowres_factor,
            },
            "text": {"encoder": encoder, "dim": 16, "layers": 1, "heads": 2, "max_tokens": 32},
            "train": {
                "steps": 3, "lr": 3e-3, "log_every": 1, "sample_every": 0, "ckpt_every": 0, "progress": False,
                "threads": 1, "ema_decay": 0.0, "cond_drop": 0.2,
            },
            "sample": {"steps": 2, "n": 4, **sample},
        }
    )  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("t2i")
    base = config(guidance=3.0)
    sr = config(conditions=("caption", "lowres"), size=16, lowres_factor=2)
    sr.diffusion.lowres_aug = 0.3
    train(base, root / "base")
    train(sr, root / "sr")
    return {"base": root / "base", "sr": root / "sr"}


def test_the_captions_of_each_batch_reach_the_text_encoder_as_token_ids(tmp_path):
    cfg = config()
    trainer = Trainer(cfg, tmp_path / "run")
    assert isinstance(trainer.net, TextConditioned)
    seen = []
    forward = trainer.net.forward

    def spy(z, lam, cond=None):
        seen.append({k: v.clone() for k, v in cond.items()})
        return forward(z, lam, cond)

    trainer.net.forward = spy
    before = {k: v.clone() for k, v in trainer.net.encoder.state_dict().items()}
    trainer.fit()
    data = get_dataset("scenes", "train", size=8, n=64)
    for step, cond in enumerate(seen):
        captions = [data[int(i)][1]["caption"] for i in trainer.order.indices(step)]
        ids, mask = trainer.net.encoder.tokenizer(captions)
        assert cond["text"].dtype == torch.int64 and torch.equal(cond["text"], ids)
        assert torch.equal(cond["text_mask"], mask) and set(cond) == {"text", "text_mask"}
    after = trainer.net.encoder.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # trained jointly (scratch encoder)
    assert any(k.startswith("text_encoder.") for k in trainer.net.state_dict())


def test_prompts_condition_samples_and_guidance_uses_them(runs):
    stage = difflab.load(runs["base"])
    prompts = ["a red bag at the top left", "a blue sneaker at the bottom right"]
    a = stage.sample(2, prompts=prompts, guidance=1.0, seed=3)
    b = stage.sample(2, prompts=prompts[::-1], guidance=1.0, seed=3)
    free = stage.sample(2, guidance=1.0, seed=3)
    assert a.shape == (2, 3, 8, 8) and not torch.allclose(a, b) and not torch.allclose(a, free)
    guided = stage.sample(2, prompts=prompts, guidance=4.0, seed=3)
    assert not torch.allclose(a, guided)
    assert torch.equal(guided, stage.sample(2, prompts=prompts, guidance=4.0, seed=3))
    with pytest.raises(ValueError, match="3 prompts for 2 samples"):
        stage.sample(2, prompts=prompts + ["a coat"])


def test_prompts_to_a_model_without_text_are_refused(tmp_path):
    cfg = RunConfig.from_dict(
        {"model": {"channels": 8, "channel_mult": [1], "num_blocks": 1, "norm_groups": 4},
         "data": {"name": "digits", "batch_size": 4}, "train": {"steps": 1, "progress": False, "ckpt_every": 0,
         "sample_every": 0, "threads": 1}}
    )  # fmt: skip
    train(cfg, tmp_path / "d")
    stage = difflab.load(tmp_path / "d")
    with pytest.raises(ValueError, match="not caption-conditioned"):
        generate(stage.net, stage.config, stage.image_shape, 1, prompts=["a bag"])


def test_a_text_cascade_samples_every_stage_with_the_prompts(runs):
    cascade = Cascade.load([runs["base"], runs["sr"]])
    prompts = ["a green coat at the top right"] * 3
    outs = cascade.sample(3, prompts=prompts, guidance=[3.0, 1.0], threshold=["dynamic", "none"], aug=0.2)
    assert [tuple(o.shape) for o in outs] == [(3, 3, 8, 8), (3, 3, 16, 16)]
    assert float(outs[0].abs().max()) <= 1.0 + 1e-5  # dynamic thresholding in the base stage
    t2i = Cascade.from_runs([runs["base"], runs["sr"]])
    images = t2i(["a red bag at the top left", "a white coat"], n=2, steps=2, seed=5)
    assert images.shape == (4, 3, 16, 16)
    alone = t2i(["a white coat"], n=2, steps=2, seed=5)  # n images per prompt
    assert alone.shape == (2, 3, 16, 16)


def test_generate_writes_one_grid_row_per_prompt(runs, tmp_path, capsys):
    out = tmp_path / "g.png"
    argv = ["generate", "a red bag at the top left", "a white digit seven", "--cascade", str(runs["base"]),
            str(runs["sr"]), "--n", "3", "--steps", "2", "--guidance", "5", "--threshold", "dynamic",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    w, h = Image.open(out).size
    assert h < w  # 2 rows of 3 images
    assert "2 prompt(s) x 3 samples" in capsys.readouterr().out
    assert main([*argv[:1], "   ", *argv[3:]]) == 2
    assert "empty prompt" in capsys.readouterr().err
    assert main([*argv, "--guidance", "-1"]) == 2
    assert main(["generate", "a bag", "--cascade", str(runs["sr"]), "--steps", "2"]) == 2
    assert "super-resolution stage" in capsys.readouterr().err


def test_eval_scores_a_text_cascade_by_alignment_on_a_split(runs, capsys):
    argv = ["eval", str(runs["base"]), str(runs["sr"]), "--n", "3", "--steps", "2", "--json", "--split", "unseen"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "unseen" and 0.0 <= result["alignment"] <= 1.0
    assert result["scene_fd"] > 0 and {"item", "colour", "position"} <= set(result)
    assert main([*argv, "--prompt", "a bag"]) == 2
    assert "drop --prompt" in capsys.readouterr().err


def test_a_caption_stage_distills_into_a_caption_student(runs, tmp_path):
    from difflab.methods.distill import DistillConfig, distill

    dcfg = DistillConfig(from_steps=4, to_steps=2, updates=2, log_every=0, ckpt_every=0, progress=False,
                         sample_n=2, threads=1, guidance=3.0)  # fmt: skip
    result = distill(runs["base"], tmp_path / "student", dcfg, log=lambda s: None)
    student = difflab.load(result.stages[-1])
    assert isinstance(student.net, TextConditioned) and student.conditions == ("caption",)
    x = student.sample(2, prompts=["a red bag at the top left", "a blue coat"], steps=2)
    assert x.shape == (2, 3, 8, 8) and bool(torch.isfinite(x).all())
