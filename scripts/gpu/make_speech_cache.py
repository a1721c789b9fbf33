"""Write the compact WaveGrad training cache for a GPU machine without PyAV or librosa.

    .venv/bin/python scripts/gpu/make_speech_cache.py [--out data-cache/speech-train.npz]
    .venv/bin/python scripts/gpu/make_speech_cache.py --voices en es fr it --max-minutes 18 \
        --out data-cache/speech-voices.npz

The train and validation splits of asterisk-core-sounds-en-g722 (never the 20 test utterances) as
8-bit mu-law, plus librosa's mel filter bank, in one compressed .npz (about 17 MB for English). With
``--voices`` the same for several asterisk voices (their languages are recorded in the file);
``--max-minutes`` keeps the first M minutes of each voice's training files (by name), so that four
voices fit the device tool's 64 MiB carry (0.73 MB per minute of audio).
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
    p.add_argument("--voices", nargs="+", default=["en"], help="asterisk voices (default: %(default)s)")
    p.add_argument("--max-minutes", type=float, help="keep the first M minutes of each voice's training files")
    args = p.parse_args()
    corpus = load_asterisk(voices=args.voices)
    if args.max_minutes:
        used: dict[str, float] = {}
        keep = []
        for i in corpus.splits["train"]:
            voice = corpus.names[i].split("/")[0] if len(args.voices) > 1 else args.voices[0]
            if used.get(voice, 0.0) < args.max_minutes * 60:
                keep.append(i)
                used[voice] = used.get(voice, 0.0) + len(corpus.audio[i]) / corpus.sample_rate
        corpus.splits["train"] = keep
    path = export_training_cache(args.out, corpus, MEL_PRESETS["16k"], voices=args.voices)
    secs = {s: sum(len(a) for a in corpus.split(s)) / corpus.sample_rate for s in ("train", "val", "test")}
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); seconds: {secs}; files: "
        f"{ {s: len(corpus.splits[s]) for s in corpus.splits} }; skipped {len(corpus.skipped)}"
    )


if __name__ == "__main__":
    main()
