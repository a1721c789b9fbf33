"""Character-level OA-ARDM with an absorbing class (difflab.methods.ardm.text)."""

import math

import torch

from difflab.methods.ardm.objective import estimate_nll, oa_loss, sample
from difflab.methods.ardm.text import ALPHABET, TextARDM, TextWindows, decode, encode, load_corpus
from difflab.methods.ardm.train import ARDMMethod
from difflab.train import Trainer
from difflab.train.config import RunConfig


def test_corpus_is_real_english_and_splits_do_not_overlap():
    lines = load_corpus()
    text = " ".join(lines)
    assert len(text) > 15000 and "please" in text and set(text) <= set(ALPHABET)
    train, test = TextWindows("train", seq_len=32), TextWindows("test", seq_len=32)
    assert train.x.shape[1] == 32 and len(test) > 10
    assert decode(encode("hello, world.")) == "hello, world."


def test_absorbing_state_hides_unknown_characters():
    torch.manual_seed(0)
    m = TextARDM({"seq_len": 16, "vocab": len(ALPHABET), "width": 32, "depth": 1, "heads": 2}).eval()
    x = torch.randint(0, len(ALPHABET), (2, 16))
    known = torch.zeros(2, 16, dtype=torch.bool)
    known[:, :4] = True
    y = x.clone()
    y[:, 4:] = (y[:, 4:] + 1) % len(ALPHABET)  # other characters where unknown: same prediction
    torch.testing.assert_close(m.logits(x, known), m.logits(y, known))
    probs = m.digit_probs(x, known, 0, torch.arange(4, 16))
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 12, dtype=torch.float64))
    assert oa_loss(m, x).shape == (2,)
    s = sample(m, 2, seed=1)
    assert s.shape == (2, 16) and int(s.max()) < len(ALPHABET)


def test_text_training_lowers_bits_per_character(tmp_path):
    cfg = RunConfig.from_dict(
        {
            "name": "t", "out_dir": str(tmp_path), "method": "ardm", "model": {"width": 32, "depth": 1, "heads": 2},
            "data": {"name": "text", "options": {"seq_len": 16}, "batch_size": 32},
            "train": {"steps": 30, "lr": 3e-3, "ema_decay": 0.0, "log_every": 10, "sample_every": 0, "progress": False},
            "sample": {"steps": 4, "n": 4},
        }
    )  # fmt: skip
    trainer = Trainer(cfg, tmp_path / "t", method=ARDMMethod(cfg))
    test = TextWindows("test", seq_len=16).x
    before = estimate_nll(trainer.net, test, orders=2)["bpd"]
    trainer.fit()
    after = estimate_nll(trainer.net, test, orders=2)["bpd"]
    assert after < before - 0.5 and after < math.log2(len(ALPHABET))
    assert (tmp_path / "t" / "samples" / "step_0000030.txt").is_file()
