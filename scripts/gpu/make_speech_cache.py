"""Write the compact WaveGrad training cache for a GPU machine without PyAV or librosa.

    .venv/bin/python scripts/gpu/make_speech_cache.py [--out data-cache/speech-train.npz]

The train and validation splits of asterisk-core-sounds-en-g722 (never the 20 test utterances) as
8-bit mu-law, plus librosa's mel filter bank, in one compressed .npz (about 20 MB).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from difflab.methods.wavegrad.audio import MEL_PRESETS  # noqa: E402
from difflab.methods.wavegrad.data import export_training_cache, load_asterisk  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "data-cache" / "speech-train.npz"))
    args = p.parse_args()
    corpus = load_asterisk()
    path = export_training_cache(args.out, corpus, MEL_PRESETS["16k"])
    secs = {s: sum(len(a) for a in corpus.split(s)) / corpus.sample_rate for s in ("train", "val", "test")}
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); seconds: {secs}; files: "
        f"{ {s: len(corpus.splits[s]) for s in corpus.splits} }; skipped {len(corpus.skipped)}"
    )


if __name__ == "__main__":
    main()
