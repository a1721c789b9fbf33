"""Tests of difflab.nets.hf_clip: a Hugging Face CLIP model from a local folder behind difflab's CLIP interface.

The model is a tiny ``transformers.CLIPModel`` built from a config (a 28x28 ViT with 7x7 patches, 16-d
embeddings) with a byte-level BPE ``CLIPTokenizer`` made from a small vocab.json + merges.txt, both
saved with ``save_pretrained`` into a temporary folder: nothing is downloaded.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil

import pytest
import torch
import torch.nn.functional as F

import difflab
from difflab.data.scenes import caption_vocabulary
from difflab.methods.clip import load_clip, prompt_table, retrieval_recall_at_1, zero_shot_accuracy
from difflab.nets.hf_clip import HFCLIP
from difflab.nets.text import TextEmbedding, TextEncoder

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may download: every model is local
transformers = pytest.importorskip("transformers")

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)  # the folder's normalisation (not CLIP's: it must be read)
CAPTIONS = ["a red sneaker at the top left", "a blue bag", "a pair of white trousers to the right of a green coat"]


def _bpe_files(folder) -> None:
    """A CLIP-style vocab.json + merges.txt: printable ASCII characters (bare and word-final ``</w>``),
    merges that build the scene words, and the two special tokens."""
    chars = [chr(c) for c in range(33, 127)]
    vocab = {t: i for i, t in enumerate(chars + [c + "</w>" for c in chars])}
    merges = []
    words = {p for w in caption_vocabulary("test") for p in re.findall(r"[a-z]+|[^\sa-z]", w)}
    for word in sorted(words):
        symbols = [*word[:-1], word[-1] + "</w>"]
        current = symbols[0]
        for s in symbols[1:]:
            if current + s not in vocab:
                merges.append(f"{current} {s}")
                vocab[current + s] = len(vocab)
            current += s
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_clip")
    bpe, out = root / "bpe", root / "clip"
    bpe.mkdir()
    _bpe_files(bpe)
    tok = transformers.CLIPTokenizer.from_pretrained(bpe)
    specials = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    tiny = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    config = transformers.CLIPConfig(
        text_config=dict(vocab_size=len(tok), max_position_embeddings=77, **tiny, **specials),
        vision_config=dict(image_size=28, patch_size=7, **tiny),
        projection_dim=16,
    )
    torch.manual_seed(0)
    transformers.CLIPModel(config).save_pretrained(out)
    tok.save_pretrained(out)
    processor = {  # what CLIPImageProcessor.save_pretrained writes
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": 28},
        "resample": 3, "do_center_crop": True, "crop_size": {"height": 28, "width": 28}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(MEAN), "image_std": list(STD),
        "do_convert_rgb": True,
    }  # fmt: skip
    (out / "preprocessor_config.json").write_text(json.dumps(processor))
    return out


@pytest.fixture(scope="module")
def clip(folder) -> HFCLIP:
    return load_clip(folder)


@pytest.fixture(scope="module")
def reference(folder):
    """The same model and tokenizer loaded with transformers alone."""
    model = transformers.CLIPModel.from_pretrained(folder, local_files_only=True).eval()
    return model, transformers.CLIPTokenizer.from_pretrained(folder, local_files_only=True)


def _features(out) -> torch.Tensor:
    """get_*_features gives a tensor (transformers 4) or an output whose pooler_output is projected (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _pixels(x: torch.Tensor) -> torch.Tensor:
    """CLIPImageProcessor's normalisation of images in [-1, 1] (rescaled to [0, 1]) at the model's size."""
    return ((x + 1) / 2 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def _one_line(e: pytest.ExceptionInfo) -> str:
    message = str(e.value)
    assert "\n" not in message, message
    return message


# -- loading ---------------------------------------------------------------------------------------------------
def test_loads_through_load_clip_and_difflab_load(clip, folder) -> None:
    other = difflab.load(folder)
    for model in (clip, other):
        assert isinstance(model, HFCLIP)
        c = model.config
        assert (c.image_size, c.channels, c.embed_dim, c.max_tokens, c.source) == (28, 3, 16, 77, str(folder))
        assert c.mean == pytest.approx(MEAN) and c.std == pytest.approx(STD)
        assert model.device == torch.device("cpu")
    assert isinstance(clip.text_tower, TextEncoder) and clip.text_tower.token_dim == 16
    assert "Hugging Face CLIP" in clip.summary()
    # the state dict is the CLIPModel's, once (the text tower shares the text transformer's weights)
    assert list(clip.state_dict()) == [f"model.{k}" for k in clip.model.state_dict()]
    assert float(clip.scale()) == pytest.approx(float(clip.model.logit_scale.exp()))


def test_without_preprocessor_config_uses_clips_normalisation(folder, tmp_path) -> None:
    plain = tmp_path / "plain"
    shutil.copytree(folder, plain, ignore=shutil.ignore_patterns("preprocessor_config.json"))
    c = load_clip(plain).config
    assert c.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert c.std == pytest.approx((0.26862954, 0.26130258, 0.27577711))


def test_refuses_what_is_not_a_usable_clip_folder(folder, tmp_path) -> None:
    bert = tmp_path / "bert"
    cfg = transformers.BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=16)  # fmt: skip
    transformers.BertModel(cfg).save_pretrained(bert)
    for loader in (load_clip, difflab.load):
        with pytest.raises(ValueError) as e:
            loader(bert)
        assert "'bert' model, not a CLIP one" in _one_line(e)

    no_tokenizer = tmp_path / "no_tokenizer"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(folder / name, no_tokenizer / name)
    with pytest.raises(ValueError) as e:
        load_clip(no_tokenizer)
    assert "has no tokenizer (tokenizer.json, or vocab.json and merges.txt)" in _one_line(e)

    no_weights = tmp_path / "no_weights"
    shutil.copytree(folder, no_weights, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(ValueError) as e:
        difflab.load(no_weights)
    assert _one_line(e).startswith(f"cannot load the CLIP model in {no_weights}")


# -- embeddings ------------------------------------------------------------------------------------------------
def test_encode_image_matches_get_image_features(clip, reference) -> None:
    model, _ = reference
    x = torch.rand(3, 3, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        expected = F.normalize(_features(model.get_image_features(pixel_values=_pixels(x))), dim=-1)
        got = clip.encode_image(x)
        big = clip.encode_image(F.interpolate(x, scale_factor=2, mode="nearest"))  # resized to 28 inside
    assert got.dtype == torch.float32 and got.shape == (3, 16)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(3))
    assert big.shape == (3, 16) and torch.allclose(big.norm(dim=-1), torch.ones(3))
    with pytest.raises(ValueError, match=r"CLIP images must be \(B, 3, S, S\)"):
        clip.encode_image(torch.zeros(1, 1, 28, 28))


def test_encode_text_matches_get_text_features(clip, reference) -> None:
    model, tok = reference
    batch = tok(CAPTIONS, padding=True, return_tensors="pt")  # padded to the longest, not to max_tokens
    with torch.no_grad():
        expected = F.normalize(_features(model.get_text_features(**batch)), dim=-1)
        states = model.text_model(**batch)
    got = clip.encode_captions(CAPTIONS)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(3))

    ids, mask = clip.tokenizer(CAPTIONS)
    assert ids.shape == mask.shape == (3, 77) and ids.dtype == torch.long and mask.dtype == torch.bool
    emb = clip.text_tower(ids, mask)
    assert isinstance(emb, TextEmbedding) and emb.tokens.shape == (3, 77, 16) and emb.pooled.shape == (3, 16)
    torch.testing.assert_close(emb.pooled, states.pooler_output, atol=1e-5, rtol=1e-5)
    m = batch["attention_mask"].bool()
    torch.testing.assert_close(emb.tokens[:, : m.shape[1]][m], states.last_hidden_state[m], atol=1e-5, rtol=1e-5)
    assert not emb.tokens[~mask].any()  # zero at padding
    # the default mask keeps the end token although CLIP pads with the same <|endoftext|>
    torch.testing.assert_close(clip.encode_text(ids), got)
    x = torch.rand(2, 3, 28, 28, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        logits = model(**batch, pixel_values=_pixels(x)).logits_per_image  # (2 images, 3 texts)
    torch.testing.assert_close(clip(x, ids, mask), logits, atol=1e-4, rtol=1e-4)


def test_frozen_no_gradients_into_the_model(clip) -> None:
    x = torch.zeros(2, 3, 28, 28, requires_grad=True)
    ids, mask = clip.tokenizer(CAPTIONS[:2])
    clip.train()
    assert not clip.training and not clip.model.training and not clip.text_tower.training
    clip(x, ids, mask).diagonal().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # the input gets gradients (CLIP guidance) ...
    assert all(not p.requires_grad and p.grad is None for p in clip.parameters())  # ... the weights none
    assert clip.num_parameters(trainable_only=True) == 0
    twin = copy.deepcopy(clip)  # an EMA-style copy keeps its tower on its own text transformer
    assert twin.text_tower.model is twin.model.text_model is not clip.model.text_model


# -- the scenes evaluation ---------------------------------------------------------------------------------------
def test_scenes_evaluation_runs_at_a_size_the_scenes_lack(clip) -> None:
    scores = zero_shot_accuracy(clip, "test", n=16)  # image size 28: scenes built at 64 and resized
    assert set(scores) == {"item", "colour", "position", "scenes"} and scores["scenes"] >= 1
    assert all(0.0 <= scores[k] <= 1.0 for k in ("item", "colour", "position"))
    assert 0.0 <= retrieval_recall_at_1(clip, "test", 8) <= 1.0
    table = prompt_table(clip, "test")
    assert table.shape == (20, 8, 4, 16)
    torch.testing.assert_close(table.norm(dim=-1), torch.ones(20, 8, 4))
