"""Character-level OA-ARDM for text: a bidirectional transformer with an absorbing class.

Hoogeboom et al. 2022, section 3 ("OA-ARDMs for text", text8): unknown tokens are replaced by an
extra *absorbing* class ``V`` (the mask), the transformer sees every position at once (no causal
mask) and predicts a softmax over the ``V`` characters everywhere; the loss is the OA-ARDM
objective of :mod:`.objective` on the masked positions. Bits per character = NLL / (L ln 2).

The corpus is a small real English text that installs offline: the transcripts of the Asterisk
core sound prompts (Debian package ``asterisk-core-sounds-en``, file ``core-sounds-en.txt.gz``;
about 19k characters once normalised). The text is lower-cased, letters, digits, space and basic punctuation are
kept (anything else becomes a space), and it is cut into windows of ``seq_len`` characters: the
first 90% of the prompts for training, the last 10% for the test split.
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .model import Fingerprinted

CORPUS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
ALPHABET = " abcdefghijklmnopqrstuvwxyz0123456789.,'?!-"
ENV_VAR = "DIFFLAB_TEXT_CORPUS"


def load_corpus(path: str | os.PathLike[str] | None = None) -> list[str]:
    """The prompts of the corpus (one string per line, normalised to :data:`ALPHABET`)."""
    p = Path(path or os.environ.get(ENV_VAR) or CORPUS)
    if not p.is_file():
        raise FileNotFoundError(
            f"text corpus not found at {p}: run `apt-get install asterisk-core-sounds-en`, "
            f"or set {ENV_VAR} / pass path= to a (gzipped) text file"
        )
    raw = gzip.decompress(p.read_bytes()).decode("utf-8", "replace") if p.suffix == ".gz" else p.read_text()
    lines = []
    for line in raw.splitlines():
        if not line.strip() or line.startswith(";"):
            continue
        text = line.split(":", 1)[1] if ":" in line else line
        text = re.sub(f"[^{re.escape(ALPHABET)}]", " ", text.lower())
        text = re.sub(" +", " ", text).strip()
        if text:
            lines.append(text)
    return lines


def encode(text: str) -> Tensor:
    return torch.tensor([ALPHABET.index(ch) for ch in text], dtype=torch.long)


def decode(tokens: Tensor) -> str:
    return "".join(ALPHABET[int(t)] for t in tokens)


class TextWindows(torch.utils.data.Dataset):
    """Windows of ``seq_len`` characters (items ``(long tokens (L,), 0)``) of the corpus split."""

    def __init__(self, split: str = "train", *, seq_len: int = 64, path: str | None = None, stride: int = 0) -> None:
        lines = load_corpus(path)
        cut = int(len(lines) * 0.9)
        text = " ".join(lines[:cut] if split == "train" else lines[cut:])
        tokens = encode(text)
        stride = stride or (seq_len // 4 if split == "train" else seq_len)
        starts = range(0, len(tokens) - seq_len + 1, stride)
        self.x = torch.stack([tokens[s : s + seq_len] for s in starts])
        self.levels, self.split = len(ALPHABET), split

    def __len__(self) -> int:
        return len(self.x)

    cond_keys: tuple[str, ...] = ()

    def __getitem__(self, i: int) -> tuple[Tensor, dict]:
        return self.x[i], {}

    def tensors(self) -> tuple[Tensor, dict]:
        return self.x, {}


class TextARDM(Fingerprinted, nn.Module):
    """OA-ARDM over ``seq_len`` characters from ``vocab`` (+1 absorbing) with a transformer encoder.

    ``config`` keys: ``seq_len``, ``vocab``, ``width``, ``depth``, ``heads``, ``dropout``.
    ``forward(x, known, stage)`` -> (B, L) log-probability of every true character given the known ones.
    """

    kind = "text"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)
        c = self.config
        self.D = int(c["seq_len"])
        self.levels = int(c["vocab"])
        self.shape = (self.D,)
        self.num_stages, self.R = 1, [self.levels, 1]
        w = int(c.get("width", 128))
        self.embed = nn.Embedding(self.levels + 1, w)
        nn.init.normal_(self.embed.weight, std=0.3)  # token and position embeddings on one scale, so
        self.pos = nn.Parameter(torch.randn(self.D, w) * 0.3)  # attention can tell the neighbours apart
        self.time = nn.Linear(1, w)
        # a local convolution gives every position its neighbours from the first step (without it the
        # transformer sat on the unigram plateau for hundreds of steps: attention must first learn positions)
        self.local = nn.Conv1d(w, w, 5, padding=2)
        layer = nn.TransformerEncoderLayer(
            w, int(c.get("heads", 4)), 4 * w, float(c.get("dropout", 0.0)), batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, int(c.get("depth", 4)), enable_nested_tensor=False)
        self.norm = nn.LayerNorm(w)
        self.out = nn.Linear(w, self.levels)

    def summary(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return f"text OA-ARDM transformer, {n / 1e6:.2f}M params, {self.D} characters, vocab {self.levels}"

    def logits(self, x: Tensor, known: Tensor) -> Tensor:
        inp = torch.where(known, x, torch.full_like(x, self.levels))
        frac = known.float().mean(1, keepdim=True)
        h = self.embed(inp) + self.pos + self.time(frac)[:, None]
        h = h + self.local(h.transpose(1, 2)).transpose(1, 2)
        return self.out(self.norm(self.blocks(h))).float()

    def forward(self, x: Tensor, known: Tensor, stage: Tensor) -> Tensor:
        logp = F.log_softmax(self.logits(x, known), -1)
        return logp.gather(-1, x[..., None]).squeeze(-1)

    @torch.no_grad()
    def digit_probs(self, x: Tensor, known: Tensor, stage: int, idx: Tensor) -> Tensor:
        dev = self.pos.device
        return torch.softmax(self.logits(x.to(dev), known.to(dev))[:, idx.to(dev)].double(), -1).cpu()
