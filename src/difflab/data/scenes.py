"""Captioned scenes for text-to-image training: real clothing photos and handwritten digits, tinted and placed.

Each item is a 64x64 RGB image (``size`` option: 64, or a smaller power of two reached by area
averaging) on a black background holding one or two *items* with a caption in English, e.g.
"a red sneaker at the top left" or "a blue bag to the right of a yellow shirt".

- Items (``ITEMS``, 20 kinds): the 10 Fashion-MNIST classes (real 28x28 photos) and the 10
  scikit-learn digits (real 8x8 handwriting, bilinearly upscaled to 24x24 and centred in 28x28).
- Colours (``COLOURS``, 8): a pixel is the item's grey intensity in [0, 1] times the colour's RGB.
- Positions (``POSITIONS``): the four 32x32 quadrants; an item sits in its quadrant shifted by a
  jitter of 0..4 pixels down and right. Two items always sit in different quadrants and differ in
  (item, colour).

``cond`` holds ``"caption"`` (str) and ``"labels"``: an int64 tensor (2, 3), one row per item of
(item index, colour index, position index), the second row all -1 for a one-item scene.

Item ``i`` of a split is a pure function of ``(seed, split, i)`` (``numpy.random.default_rng([seed,
split id, i])``): random access in any order and in any DataLoader worker gives the same scene.
Each scene has one or two items with probability 1/2 each. Train scenes use the train images of
Fashion-MNIST and digits; every other split uses their test images.

Splits (for compositional generalisation tests):

- ``train`` (50,000 scenes) and ``test`` (1,000): only *seen* (item, colour) pairs, captions from
  the training templates and words;
- ``unseen`` (1,000): every scene holds at least one held-out pair (``HELD_OUT``: one colour per
  item kind, e.g. "red sneaker", "green bag"); the other item is any pair; training templates;
- ``paraphrase`` (1,000): seen pairs, captions from other templates with synonyms (``crimson``,
  ``trainer``, ``northwest`` ...) whose words never occur in a training caption apart from the
  function words in ``SHARED_WORDS``. ``caption_vocabulary(split)`` lists a split's possible words.

The source images are loaded once per process (Fashion-MNIST from the Debian package
``dataset-fashion-mnist`` or ``root=``; digits from scikit-learn); a 64x64 item then takes well
under a millisecond of numpy work.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import DatasetInfo, ImageDataset, from_levels

SUMMARY = "captioned scenes of one or two tinted Fashion-MNIST / digit items in image quadrants"
CANVAS = 64
QUADRANT = 32
SPRITE = 28
MAX_JITTER = 4

ITEMS = (
    "t-shirt", "trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
    "digit zero", "digit one", "digit two", "digit three", "digit four", "digit five", "digit six",
    "digit seven", "digit eight", "digit nine",
)  # fmt: skip
NUM_FASHION = 10  # ITEMS[:10] are the Fashion-MNIST classes in label order, ITEMS[10:] the digits 0-9
PLURAL = frozenset({ITEMS.index("trousers")})  # "a pair of red trousers" (training), "crimson slacks" (paraphrase)

COLOURS: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("red", (1.0, 0.0, 0.0)),
    ("green", (0.0, 1.0, 0.0)),
    ("blue", (0.15, 0.35, 1.0)),  # a little lighter than pure blue, which is hard to see on black
    ("yellow", (1.0, 1.0, 0.0)),
    ("magenta", (1.0, 0.0, 1.0)),
    ("cyan", (0.0, 1.0, 1.0)),
    ("orange", (1.0, 0.5, 0.0)),
    ("white", (1.0, 1.0, 1.0)),
)
POSITIONS = ("top left", "top right", "bottom left", "bottom right")  # index = 2 * row + column

# One held-out colour per item kind: colour (item + 1) mod 8, which holds out "red sneaker" and "green bag".
HELD_OUT: frozenset[tuple[int, int]] = frozenset((i, (i + 1) % len(COLOURS)) for i in range(len(ITEMS)))
HELD_OUT_COLOUR = tuple((i + 1) % len(COLOURS) for i in range(len(ITEMS)))

# Paraphrase synonyms: no word here occurs in any training caption.
COLOUR_SYNONYMS = {
    "red": ("crimson", "scarlet"),
    "green": ("emerald", "lime"),
    "blue": ("cobalt", "sapphire"),
    "yellow": ("golden", "lemon"),
    "magenta": ("fuchsia", "violet"),
    "cyan": ("turquoise", "aqua"),
    "orange": ("tangerine", "amber"),
    "white": ("ivory", "snowy"),
}
_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ITEM_SYNONYMS = {
    "t-shirt": ("tee",),
    "trousers": ("pants", "slacks"),
    "pullover": ("jumper", "sweater"),
    "dress": ("gown", "frock"),
    "coat": ("jacket", "parka"),
    "sandal": ("flip-flop", "open-toed shoe"),
    "shirt": ("blouse", "button-up"),
    "sneaker": ("trainer", "running shoe"),
    "bag": ("purse", "handbag"),
    "ankle boot": ("bootie", "chukka"),
    **{f"digit {w}": (f"numeral {d}", f"handwritten {d}") for d, w in enumerate(_DIGIT_WORDS)},
}
POSITION_SYNONYMS = {
    "top left": ("northwest", "north-west"),
    "top right": ("northeast", "north-east"),
    "bottom left": ("southwest", "south-west"),
    "bottom right": ("southeast", "south-east"),
}
# The only words training and paraphrase captions share: articles, "and", "in", "of".
SHARED_WORDS = frozenset({"a", "an", "the", "and", "in", "of"})

SPLIT_IDS = {"train": 0, "test": 1, "unseen": 2, "paraphrase": 3}
DEFAULT_COUNTS = {"train": 50_000, "test": 1_000, "unseen": 1_000, "paraphrase": 1_000}


@dataclass(frozen=True)
class _Lexicon:
    """The words and templates of one caption style. Templates use {a}/{b} (noun phrases), {p}/{pa}/{pb}
    (positions), {row} (north/south word) and {col} (west/east word); "row" templates have {a} left of
    {b}, "column" templates {a} above {b}."""

    colours: tuple[tuple[str, ...], ...]
    items: tuple[tuple[str, ...], ...]
    pair: str  # how a plural item (trousers) starts: "a pair of " or ""
    positions: tuple[tuple[str, ...], ...]
    rows: tuple[str, str]
    cols: tuple[str, str]
    one: tuple[str, ...]
    two: tuple[str, ...]
    row: tuple[str, ...]
    column: tuple[str, ...]
    diagonal: tuple[str, ...]


TRAIN_LEXICON = _Lexicon(
    colours=tuple((name,) for name, _ in COLOURS),
    items=tuple((name,) for name in ITEMS),
    pair="a pair of ",
    positions=tuple((name,) for name in POSITIONS),
    rows=("top", "bottom"),
    cols=("left", "right"),
    one=(
        "{a} at the {p}",
        "a photo of {a} in the {p} corner",
        "{p}: {a}",
        "there is {a} at the {p}",
        "an image with {a} in the {p}",
    ),
    two=(
        "{a} at the {pa} and {b} at the {pb}",
        "a photo of {a} in the {pa} corner and {b} in the {pb} corner",
        "{pa}: {a}; {pb}: {b}",
        "there is {a} at the {pa} and {b} at the {pb}",
    ),
    row=("{a} to the left of {b}", "{b} to the right of {a}", "{a} to the left of {b}, both at the {row}"),
    column=("{a} above {b}", "{b} below {a}", "{a} above {b}, both on the {col}"),
    diagonal=("{a} at the {pa}, diagonally across from {b}",),
)
PARAPHRASE_LEXICON = _Lexicon(
    colours=tuple(COLOUR_SYNONYMS[name] for name, _ in COLOURS),
    items=tuple(ITEM_SYNONYMS[name] for name in ITEMS),
    pair="",
    positions=tuple(POSITION_SYNONYMS[name] for name in POSITIONS),
    rows=("northern", "southern"),
    cols=("western", "eastern"),
    one=(
        "{a} in the {p}",
        "a picture showing {a} in the {p} quadrant",
        "{p} quadrant: {a}",
        "a drawing of {a}, placed in the {p}",
    ),
    two=(
        "{a} in the {pa} and {b} in the {pb}",
        "a picture showing {a} in the {pa} quadrant and {b} in the {pb} quadrant",
        "{pa} quadrant: {a}; {pb} quadrant: {b}",
    ),
    row=("{a} west of {b}", "{b} east of {a}", "{a} west of {b} in the {row} half"),
    column=("{a} north of {b}", "{b} south of {a}", "{a} north of {b} in the {col} half"),
    diagonal=("{a} in the {pa}, opposite {b}",),
)


def _lexicon(split: str) -> _Lexicon:
    _check_split(split)
    return PARAPHRASE_LEXICON if split == "paraphrase" else TRAIN_LEXICON


def _check_split(split: str) -> None:
    if split not in SPLIT_IDS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLIT_IDS)}")


def caption_words(caption: str) -> list[str]:
    """The words of a caption: lower-cased runs of letters or digits (so "t-shirt" is "t", "shirt")."""
    return re.findall(r"[a-z0-9]+", caption.lower())


def caption_vocabulary(split: str) -> frozenset[str]:
    """Every word (see :func:`caption_words`) that a caption of ``split`` can contain.

    Built from the split's templates and word lists: "train", "test" and "unseen" share the
    training vocabulary; "paraphrase" has its own.
    """
    lex = _lexicon(split)
    pieces = [*lex.one, *lex.two, *lex.row, *lex.column, *lex.diagonal, *lex.rows, *lex.cols, lex.pair, "a", "an"]
    pieces = [re.sub(r"\{\w+\}", " ", p) for p in pieces]
    for names in (*lex.colours, *lex.items, *lex.positions):
        pieces.extend(names)
    return frozenset(w for p in pieces for w in caption_words(p))


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _noun(lex: _Lexicon, item: int, colour: int, rng: np.random.Generator | None) -> str:
    def pick(options: tuple[str, ...]) -> str:
        return options[0] if rng is None or len(options) == 1 else options[int(rng.integers(len(options)))]

    phrase = f"{pick(lex.colours[colour])} {pick(lex.items[item])}"
    return lex.pair + phrase if item in PLURAL else _article(phrase)


def _position(lex: _Lexicon, position: int, rng: np.random.Generator | None) -> str:
    options = lex.positions[position]
    return options[0] if rng is None or len(options) == 1 else options[int(rng.integers(len(options)))]


def _caption(lex: _Lexicon, labels: np.ndarray, rng: np.random.Generator | None) -> str:
    """A caption of ``labels`` (2, 3) in style ``lex``; ``rng=None`` gives the canonical first template."""
    (i0, c0, p0), (i1, c1, p1) = (tuple(int(v) for v in row) for row in labels)
    if i1 < 0:
        template = lex.one[0] if rng is None else lex.one[int(rng.integers(len(lex.one)))]
        return template.format(a=_noun(lex, i0, c0, rng), p=_position(lex, p0, rng))
    slots = [(i0, c0, p0), (i1, c1, p1)]
    (r0, k0), (r1, k1) = divmod(p0, 2), divmod(p1, 2)
    if r0 == r1:
        relation, order = lex.row, (0, 1) if k0 < k1 else (1, 0)  # {a} is the left item
    elif k0 == k1:
        relation, order = lex.column, (0, 1) if r0 < r1 else (1, 0)  # {a} is the upper item
    else:
        relation, order = lex.diagonal, (0, 1)
    if rng is None:
        template, order = lex.two[0], (0, 1)  # canonical: slot order
    else:
        choices = (*lex.two, *relation)
        template = choices[int(rng.integers(len(choices)))]
        if template in lex.two or template in lex.diagonal:
            order = (0, 1) if rng.random() < 0.5 else (1, 0)  # mention order is free
    (ia, ca, pa), (ib, cb, pb) = slots[order[0]], slots[order[1]]
    return template.format(
        a=_noun(lex, ia, ca, rng),
        b=_noun(lex, ib, cb, rng),
        pa=_position(lex, pa, rng),
        pb=_position(lex, pb, rng),
        row=lex.rows[r0],
        col=lex.cols[k0],
    )


def describe_labels(labels: Tensor | np.ndarray | Sequence[Sequence[int]]) -> str:
    """The canonical training-style caption of ``labels`` (2, 3), e.g. "a red sneaker at the top left"."""
    arr = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels, dtype=np.int64)
    if arr.shape != (2, 3):
        raise ValueError(f"labels must have shape (2, 3), got {arr.shape}")
    bounds = (len(ITEMS), len(COLOURS), len(POSITIONS))
    second = arr[1] if arr[1, 0] >= 0 else None
    for row in (arr[0], second):
        if row is not None and not all(0 <= v < b for v, b in zip(row.tolist(), bounds, strict=True)):
            limits = f"item < {bounds[0]}, colour < {bounds[1]}, position < {bounds[2]}"
            raise ValueError(f"labels row {row.tolist()} outside 0 <= ({limits})")
    if second is not None and second[2] == arr[0, 2]:
        raise ValueError(f"labels put both items in position {int(arr[0, 2])}")
    if second is None and (arr[1] != -1).any():
        raise ValueError(f"labels of a one-item scene need a second row of -1, got {arr[1].tolist()}")
    return _caption(TRAIN_LEXICON, arr, None)


@functools.cache
def _sprites(source: str, root: str | None) -> tuple[np.ndarray, ...]:
    """Per item kind, the uint8 (n, 28, 28) grey images of the ``source`` split ("train"/"test"); cached."""
    from .digits import _load_digits, digits_split_indices
    from .fashion_mnist import load_fashion_mnist

    fm_images, fm_labels = load_fashion_mnist(source, root)
    out = [np.ascontiguousarray(fm_images[fm_labels == c, 0]) for c in range(NUM_FASHION)]
    d_images, d_labels = _load_digits()
    idx = digits_split_indices(source)
    small = torch.from_numpy(d_images[idx].astype(np.float32) / 16.0)  # (n, 1, 8, 8), levels 0..16
    big = torch.nn.functional.interpolate(small, size=(24, 24), mode="bilinear", align_corners=False)
    big = torch.nn.functional.pad(big[:, 0], (2, 2, 2, 2))  # centred in 28x28 like Fashion-MNIST
    big = (big * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    out += [np.ascontiguousarray(big[d_labels[idx] == d]) for d in range(10)]
    for arr in out:
        arr.setflags(write=False)
    return tuple(out)


def source_images(item: int, split: str = "train", root: str | os.PathLike[str] | None = None) -> np.ndarray:
    """The grey uint8 (n, 28, 28) images that item kind ``item`` (index into ``ITEMS``) is drawn from.

    ``split`` is a scene split: "train" uses the train images of Fashion-MNIST / digits, the others
    their test images. Digits are already upscaled to 24x24 and centred; the array is read-only.
    """
    _check_split(split)
    if not 0 <= item < len(ITEMS):
        raise ValueError(f"item must be in 0..{len(ITEMS) - 1}, got {item}")
    return _sprites("train" if split == "train" else "test", None if root is None else os.fspath(root))[item]


_RGB = np.array([rgb for _, rgb in COLOURS], dtype=np.float32)


class CaptionedScenes(ImageDataset):
    """Captioned scenes (3, size, size) of tinted real items in quadrants (see module doc).

    Options: ``n`` (number of scenes; default 50,000 train, 1,000 for the other splits), ``size``
    (64 or a power of two below it, by area averaging), ``seed`` (scene ``i`` depends only on
    seed, split and ``i``), ``root`` (Fashion-MNIST folder, as for fashion-mnist), ``discrete``
    (uint8 levels instead of floats). Items are ``(x, {"caption": str, "labels": int64 (2, 3)})``.
    """

    splits = ("train", "test", "unseen", "paraphrase")
    cond_keys = ("caption", "labels")

    def __init__(
        self,
        split: str = "train",
        *,
        n: int | None = None,
        size: int = 64,
        seed: int = 0,
        root: str | os.PathLike[str] | None = None,
        discrete: bool = False,
    ) -> None:
        _check_split(split)
        n = DEFAULT_COUNTS[split] if n is None else n
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not 1 <= size <= CANVAS or CANVAS % size:
            raise ValueError(f"size must divide {CANVAS} (64, 32, 16, 8, ...), got {size}")
        self.split, self.n, self.size, self.seed = split, int(n), int(size), int(seed)
        self.root = None if root is None else os.fspath(root)
        self.discrete, self.levels = bool(discrete), 256
        self._source = "train" if split == "train" else "test"
        self._lexicon = _lexicon(split)
        _sprites(self._source, self.root)  # load now: a missing Fashion-MNIST fails here, not in a worker

    def __len__(self) -> int:
        return self.n

    def _draw_labels(self, rng: np.random.Generator) -> np.ndarray:
        count = 2 if rng.random() < 0.5 else 1
        labels = np.full((2, 3), -1, dtype=np.int64)
        held = int(rng.integers(count)) if self.split == "unseen" else -1  # the slot with a held-out pair
        for slot in range(count):
            while True:
                item = int(rng.integers(len(ITEMS)))
                if slot == held:
                    colour = HELD_OUT_COLOUR[item]
                elif self.split == "unseen":
                    colour = int(rng.integers(len(COLOURS)))
                else:  # a seen pair: any colour but the item's held-out one
                    colour = int(rng.integers(len(COLOURS) - 1))
                    colour += colour >= HELD_OUT_COLOUR[item]
                if slot == 0 or (item, colour) != tuple(labels[0, :2]):
                    break
            labels[slot, :2] = item, colour
        labels[:count, 2] = rng.choice(len(POSITIONS), size=count, replace=False)
        return labels

    def scene(self, index: int) -> tuple[Tensor, str, Tensor]:
        """Scene ``index`` as (uint8 levels (3, size, size), caption, int64 labels (2, 3))."""
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for a dataset of {self.n} items")
        rng = np.random.default_rng([self.seed, SPLIT_IDS[self.split], index])
        labels = self._draw_labels(rng)
        sprites = _sprites(self._source, self.root)
        canvas = np.zeros((CANVAS, CANVAS, 3), dtype=np.float32)
        for item, colour, position in labels:
            if item < 0:
                break
            dy, dx = rng.integers(0, MAX_JITTER + 1, size=2)
            top, left = QUADRANT * (position // 2) + dy, QUADRANT * (position % 2) + dx
            pool = sprites[item]
            grey = pool[int(rng.integers(len(pool)))].astype(np.float32) * (1.0 / 255.0)
            canvas[top : top + SPRITE, left : left + SPRITE] = grey[:, :, None] * _RGB[colour]
        caption = _caption(self._lexicon, labels, rng)
        if self.size < CANVAS:
            f = CANVAS // self.size
            canvas = canvas.reshape(self.size, f, self.size, f, 3).mean(axis=(1, 3))
        k = np.rint(canvas * 255.0).astype(np.uint8).transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(k)), caption, torch.from_numpy(labels)

    def get_levels(self, index: int) -> tuple[Tensor, int]:
        """(uint8 levels (3, size, size), 0): scenes have no class label; see :meth:`scene`."""
        return self.scene(index)[0], 0

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        n = self.n
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} items")
        k, caption, labels = self.scene(index % n)
        x = k if self.discrete else from_levels(k, self.levels)
        return x, {"caption": caption, "labels": labels}

    @property
    def info(self) -> DatasetInfo:
        return DatasetInfo(
            name="scenes",
            summary=f"{SUMMARY} ({self.split} split)",
            channels=3,
            size=self.size,
            levels=256,
            num_classes=None,
            num_items={self.split: self.n},
        )
