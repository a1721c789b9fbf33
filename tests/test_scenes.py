"""Captioned scenes (reproducible; labels match pixels and captions; held-out, paraphrase splits); caption folders."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import difflab.data as dd
from difflab.data import scenes
from difflab.data.scenes import COLOURS, HELD_OUT, ITEMS, POSITIONS, CaptionedScenes

# The only words paraphrase captions may share with training captions: articles, "and", and the
# prepositions "in" / "of" that any English location phrase needs. None names an item, colour or place.
ALLOWED_SHARED = {"a", "an", "the", "and", "in", "of"}
N = 400  # scenes per split in these tests


@pytest.fixture(scope="module")
def drawn() -> dict[str, list[tuple[torch.Tensor, str, torch.Tensor]]]:
    """The first N scenes of every split (uint8 levels, caption, labels)."""
    return {split: [CaptionedScenes(split, n=N).scene(i) for i in range(N)] for split in CaptionedScenes.splits}


def _slots(labels: torch.Tensor) -> list[tuple[int, int, int]]:
    return [tuple(row) for row in labels.tolist() if row[0] >= 0]


def _nouns(lex, item: int, colour: int) -> list[str]:
    out = []
    for c, i in itertools.product(lex.colours[colour], lex.items[item]):
        phrase = f"{c} {i}"
        if ITEMS[item] == "trousers":
            out.append(lex.pair + phrase)
        else:
            out.append(("an " if phrase[0] in "aeiou" else "a ") + phrase)
    return out


def _possible_captions(lex, labels: torch.Tensor) -> dict[str, str]:
    """Every caption the lexicon allows for ``labels`` -> its template (relations checked against the layout)."""
    slots = _slots(labels)
    out = {}
    if len(slots) == 1:
        item, colour, pos = slots[0]
        for t, a, p in itertools.product(lex.one, _nouns(lex, item, colour), lex.positions[pos]):
            out[t.format(a=a, p=p)] = t
        return out
    for first, second in (slots, slots[::-1]):
        (ra, ca), (rb, cb) = divmod(first[2], 2), divmod(second[2], 2)
        templates = list(lex.two)
        templates += list(lex.row) if ra == rb and (ca, cb) == (0, 1) else []  # {a} is left of {b}
        templates += list(lex.column) if ca == cb and (ra, rb) == (0, 1) else []  # {a} is above {b}
        templates += list(lex.diagonal) if ra != rb and ca != cb else []
        for t in templates:
            for a, b, pa, pb in itertools.product(
                _nouns(lex, *first[:2]), _nouns(lex, *second[:2]), lex.positions[first[2]], lex.positions[second[2]]
            ):
                out[t.format(a=a, b=b, pa=pa, pb=pb, row=lex.rows[ra], col=lex.cols[ca])] = t
    return out


def test_constants() -> None:
    assert len(ITEMS) == 20 and len(set(ITEMS)) == 20 and len(COLOURS) >= 6 and len(POSITIONS) == 4
    # exactly one held-out colour per item kind, including "red sneaker" and "green bag"
    assert sorted(i for i, _ in HELD_OUT) == list(range(len(ITEMS)))
    colour = {name: k for k, (name, _) in enumerate(COLOURS)}
    assert (ITEMS.index("sneaker"), colour["red"]) in HELD_OUT and (ITEMS.index("bag"), colour["green"]) in HELD_OUT
    # colours stay apart in hue: pairwise cosine similarity of their RGB below 0.96
    rgb = np.array([c for _, c in COLOURS])
    unit = rgb / np.linalg.norm(rgb, axis=1, keepdims=True)
    cos = unit @ unit.T
    assert (cos[~np.eye(len(COLOURS), dtype=bool)] < 0.96).all()


def test_reproducible_random_access_and_seeds() -> None:
    a, b = CaptionedScenes("test", n=30), CaptionedScenes("test", n=30)
    for i in reversed(range(30)):  # another order, another instance: the same scenes
        xa, ca = a[i]
        xb, cb = b[i]
        assert torch.equal(xa, xb) and ca["caption"] == cb["caption"] and torch.equal(ca["labels"], cb["labels"])
    other = CaptionedScenes("test", n=30, seed=1)
    same = sum(torch.equal(a[i][0], other[i][0]) for i in range(30))
    assert same == 0
    assert a[-1][1]["caption"] == a[29][1]["caption"]
    with pytest.raises(IndexError):
        a[30]


def test_items_shapes_levels_and_options() -> None:
    ds = CaptionedScenes("test", n=8)
    x, cond = ds[0]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and -1.0 <= float(x.min()) <= float(x.max()) <= 1.0
    assert set(cond) == set(ds.cond_keys) == {"caption", "labels"}
    assert cond["labels"].dtype == torch.int64 and cond["labels"].shape == (2, 3)
    k, cond_k = CaptionedScenes("test", n=8, discrete=True)[0]
    assert k.dtype == torch.uint8 and torch.equal(dd.from_levels(k, 256), x) and cond_k["caption"] == cond["caption"]
    small, _ = CaptionedScenes("test", n=8, size=16)[0]
    assert small.shape == (3, 16, 16)
    # area averaging: the 16x16 image is the 4x4 block mean of the 64x64 one (up to level rounding)
    block = dd.from_levels(k, 256).reshape(3, 16, 4, 16, 4).mean((2, 4))
    assert (small - block).abs().max() <= 1 / 255 + 1e-6
    info = ds.info
    assert (info.name, info.channels, info.size, info.levels, info.num_classes) == ("scenes", 3, 64, 256, None)
    assert info.num_items == {"test": 8} and CaptionedScenes("train").info.num_items == {"train": 50_000}
    for bad in ({"size": 24}, {"size": 128}, {"n": 0}):
        with pytest.raises(ValueError, match="size must divide 64|n must be"):
            CaptionedScenes("test", **bad)


def _nearest_colour(mean_rgb: np.ndarray) -> int:
    rgb = np.array([c for _, c in COLOURS])
    cos = rgb @ mean_rgb / (np.linalg.norm(rgb, axis=1) * np.linalg.norm(mean_rgb))
    return int(np.argmax(cos))


def test_labels_match_pixels(drawn) -> None:
    """Labelled quadrants hold a real source image of the labelled item, tinted by the labelled colour."""
    for split in ("train", "test", "unseen"):
        for k, _, labels in drawn[split][:60]:
            img = k.numpy().astype(np.float64)
            used = {pos: (item, colour) for item, colour, pos in _slots(labels)}
            for pos in range(4):
                quad = img[:, 32 * (pos // 2) : 32 * (pos // 2) + 32, 32 * (pos % 2) : 32 * (pos % 2) + 32]
                if pos not in used:
                    assert quad.max() == 0, (split, labels.tolist(), pos)
                    continue
                item, colour = used[pos]
                assert quad.max() > 100
                assert _nearest_colour(quad.reshape(3, -1).mean(1)) == colour, (split, labels.tolist())
                if split == "train":
                    continue
                # the channel where the colour is 1.0 holds the grey source image exactly, at a jitter of 0..4
                grey = quad[int(np.argmax(COLOURS[colour][1]))]
                pool = scenes.source_images(item, split).astype(np.float64)
                found = any(
                    (np.abs(pool - grey[dy : dy + 28, dx : dx + 28]).max(axis=(1, 2)) <= 1).any()
                    and grey.sum() == grey[dy : dy + 28, dx : dx + 28].sum()
                    for dy in range(5)
                    for dx in range(5)
                )
                assert found, (split, labels.tolist(), pos)


def test_hue_survives_downsampling() -> None:
    ds = CaptionedScenes("test", n=40, size=16)
    for i in range(40):
        k, _, labels = ds.scene(i)
        for _, colour, pos in _slots(labels):
            quad = k.numpy()[:, 8 * (pos // 2) : 8 * (pos // 2) + 8, 8 * (pos % 2) : 8 * (pos % 2) + 8]
            assert _nearest_colour(quad.reshape(3, -1).astype(np.float64).mean(1)) == colour


def test_held_out_rules_and_layout(drawn) -> None:
    for split, items in drawn.items():
        counts = []
        for _, _, labels in items:
            slots = _slots(labels)
            counts.append(len(slots))
            pairs = [(i, c) for i, c, _ in slots]
            held = [p in HELD_OUT for p in pairs]
            if split == "unseen":
                assert any(held), labels.tolist()
            else:
                assert not any(held), (split, labels.tolist())
            if len(slots) == 2:
                assert slots[0][2] != slots[1][2] and pairs[0] != pairs[1]
            else:
                assert labels[1].tolist() == [-1, -1, -1]
        assert 0.4 < np.mean(np.array(counts) == 2) < 0.6, split
    # the unseen split puts its held-out pair in either slot, and the train split covers every seen pair
    first_held = [
        next(s for s, row in enumerate(_slots(lab)) if tuple(row[:2]) in HELD_OUT) for *_, lab in drawn["unseen"]
    ]
    assert set(first_held) == {0, 1}
    big = CaptionedScenes("train", n=3000)
    seen = {tuple(row[:2]) for i in range(3000) for row in _slots(big.scene(i)[2])}
    assert seen == set(itertools.product(range(len(ITEMS)), range(len(COLOURS)))) - HELD_OUT


def test_captions_match_labels_and_vary(drawn) -> None:
    # the row and column words used in "both at the top" phrasings agree with the position names
    train, para = scenes.TRAIN_LEXICON, scenes.PARAPHRASE_LEXICON
    for r in range(2):
        assert POSITIONS[2 * r].startswith(train.rows[r]) and POSITIONS[r].endswith(train.cols[r])
        assert para.positions[2 * r][0].startswith(para.rows[r][:5]) and para.positions[r][0].endswith(para.cols[r][:4])
    for split in CaptionedScenes.splits:
        lex = scenes.PARAPHRASE_LEXICON if split == "paraphrase" else scenes.TRAIN_LEXICON
        used: dict[int, set[str]] = {1: set(), 2: set()}
        for _, caption, labels in drawn[split]:
            options = _possible_captions(lex, labels)
            assert caption in options, (split, caption, labels.tolist())
            used[len(_slots(labels))].add(options[caption])
        assert len(used[1]) >= 4 and len(used[2]) >= 4, (split, used)
        if split == "train":  # relative phrasing shows up for both rows and columns
            assert used[2] & set(lex.row) and used[2] & set(lex.column), used[2]
    # canonical captions from labels
    sneaker, red = ITEMS.index("sneaker"), 0
    assert dd.describe_labels(torch.tensor([[sneaker, red, 0], [-1, -1, -1]])) == "a red sneaker at the top left"
    two = [[ITEMS.index("bag"), 2, 3], [ITEMS.index("trousers"), 6, 1]]
    assert dd.describe_labels(two) == "a blue bag at the bottom right and a pair of orange trousers at the top right"
    with pytest.raises(ValueError, match="both items"):
        dd.describe_labels([[0, 0, 1], [1, 1, 1]])


def test_paraphrase_vocabulary_is_disjoint(drawn) -> None:
    train_vocab, para_vocab = dd.caption_vocabulary("train"), dd.caption_vocabulary("paraphrase")
    assert dd.caption_vocabulary("test") == dd.caption_vocabulary("unseen") == train_vocab
    assert para_vocab & train_vocab <= ALLOWED_SHARED, para_vocab & train_vocab
    # the vocabularies really cover what the splits generate
    for split, items in drawn.items():
        words = {w for _, caption, _ in items for w in scenes.caption_words(caption)}
        assert words <= dd.caption_vocabulary(split), (split, words - dd.caption_vocabulary(split))
    para_words = {w for _, caption, _ in drawn["paraphrase"] for w in scenes.caption_words(caption)}
    assert not (para_words & train_vocab) - ALLOWED_SHARED
    assert {"crimson", "trainer", "northwest"} <= para_vocab and "red" in train_vocab
    # every colour, item and position has a synonym whose words training never uses
    for table, names in ((scenes.COLOUR_SYNONYMS, [c for c, _ in COLOURS]), (scenes.ITEM_SYNONYMS, ITEMS),
                         (scenes.POSITION_SYNONYMS, POSITIONS)):  # fmt: skip
        for name in names:
            assert table[name] and all(not set(scenes.caption_words(s)) & train_vocab for s in table[name]), name


def test_collate_strings() -> None:
    ds = CaptionedScenes("test", n=4)
    x, cond = dd.collate([ds[i] for i in range(4)])
    assert x.shape == (4, 3, 64, 64)
    assert cond["caption"] == [ds[i][1]["caption"] for i in range(4)] and isinstance(cond["caption"], list)
    assert cond["labels"].shape == (4, 2, 3) and cond["labels"].dtype == torch.int64
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=dd.collate)
    assert next(iter(loader))[1]["caption"] == cond["caption"][:2]
    _, plain = dd.collate([(torch.zeros(1), {"class": 3}), (torch.zeros(1), {"class": 4})])
    assert plain["class"].dtype == torch.int64 and plain["class"].tolist() == [3, 4]
    with pytest.raises(ValueError, match="mixes strings"):
        dd.collate([(torch.zeros(1), {"caption": "a"}), (torch.zeros(1), {"caption": 1})])


def test_registry() -> None:
    ds = dd.get_dataset("scenes", "unseen", n=5, size=32)
    assert isinstance(ds, CaptionedScenes) and len(ds) == 5 and ds[0][0].shape == (3, 32, 32)
    with pytest.raises(ValueError, match="unknown split 'val'; valid splits: train, test, unseen, paraphrase"):
        dd.get_dataset("scenes", "val")
    with pytest.raises(ValueError, match="valid splits: train, test$"):
        dd.get_dataset("digits", "unseen")
    assert {"scenes", "caption-folder"} <= set(dd.list_datasets())
    assert dd.describe("scenes").num_items == {"train": 50_000, "test": 1_000, "unseen": 1_000, "paraphrase": 1_000}
    with pytest.raises(ValueError, match="needs root="):
        dd.get_dataset("caption-folder")


# ---- caption folders ---------------------------------------------------------------------------------------


def _save(path, size=(24, 16), colour=(255, 0, 0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _wide(path) -> None:
    """30x10: red sides, a green 10x10 centre (what the centre crop keeps)."""
    arr = np.zeros((10, 30, 3), np.uint8)
    arr[:, :, 0] = 255
    arr[:, 10:20] = (0, 255, 0)
    Image.fromarray(arr).save(path)


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "captioned"
    _save(root / "a.png")
    (root / "a.txt").write_text("a red  square\n")
    (root / "sub").mkdir()
    _wide(root / "sub" / "b.png")
    (root / "sub" / "b.txt").write_text("green\nin the middle")
    _save(root / "no_caption.png")
    _save(root / "empty.png")
    (root / "empty.txt").write_text("  \n")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    (root / "broken.txt").write_text("never loaded")
    (root / "notes.txt").write_text("a caption without an image is ignored")
    return root


def test_caption_folder_txt(folder) -> None:
    with pytest.warns(dd.DataWarning, match=r"skipped 3 image\(s\)"):
        ds = dd.get_dataset("caption-folder", root=folder, size=8)
    assert ds.source == "txt" and [p.name for p in ds.files] == ["a.png", "b.png"]
    assert ds.captions == ["a red square", "green in the middle"]
    reasons = {p.rsplit("/", 1)[-1]: r for p, r in ds.skipped}
    assert set(reasons) == {"no_caption.png", "empty.png", "broken.png"}
    assert "missing caption" in reasons["no_caption.png"] and reasons["empty.png"] == "empty caption"
    x, cond = ds[0]
    assert cond == {"caption": "a red square"} and x.shape == (3, 8, 8) and x.dtype == torch.float32
    assert torch.allclose(x, torch.tensor([1.0, -1.0, -1.0]).view(3, 1, 1))
    green, _ = ds[1]  # centre crop of the 30x10 image: all green
    assert torch.allclose(green, torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1), atol=0.02)
    x, cond = dd.collate([ds[0], ds[1]])
    assert cond["caption"] == ds.captions
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dd.DataWarning)
        grey = dd.CaptionFolder(folder, size=4, channels=1, discrete=True)
    assert grey[0][0].shape == (1, 4, 4) and grey[0][0].dtype == torch.uint8
    assert grey.info.num_items == {"train": 2} and grey.info.channels == 1
    with pytest.raises(ValueError, match="valid splits: train$"):
        dd.get_dataset("caption-folder", "test", root=folder)
    with pytest.raises(ValueError, match="valid splits: train"):
        dd.CaptionFolder(folder, "test")


def test_caption_folder_csv(folder) -> None:
    (folder / "captions.csv").write_text(
        'path,caption\na.png,"a red square, seen from above"\nsub/b.png,green\n'
        "empty.png,\nmissing.png,a ghost\nbroken.png,never loaded\n"
    )
    with pytest.warns(dd.DataWarning, match=r"skipped 4 image\(s\)"):
        ds = dd.CaptionFolder(folder, size=8)
    assert ds.source == "csv" and [p.name for p in ds.files] == ["a.png", "b.png"]
    assert ds.captions == ["a red square, seen from above", "green"]  # the CSV wins over .txt files
    reasons = {p.rsplit("/", 1)[-1]: r for p, r in ds.skipped}
    assert set(reasons) == {"empty.png", "missing.png", "broken.png", "no_caption.png"}
    assert "not found" in reasons["missing.png"] and "not listed" in reasons["no_caption.png"]
    (folder / "captions.csv").write_text("file,text\na.png,red\n")
    with pytest.raises(ValueError, match="needs the header path,caption"):
        dd.CaptionFolder(folder)


def test_caption_folder_empty(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"no captioned images under .*\(0 skipped\): put images there .*\.txt"):
        dd.CaptionFolder(tmp_path)
    _save(tmp_path / "x.png")
    with pytest.warns(dd.DataWarning), pytest.raises(ValueError, match=r"\(1 skipped\).*captions\.csv"):
        dd.CaptionFolder(tmp_path)
    with pytest.raises(FileNotFoundError):
        dd.CaptionFolder(tmp_path / "nope")
