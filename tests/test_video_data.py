"""Video data: moving-items (reproducible, prefix-stable, tracks match pixels), image-video frames, video files."""

from __future__ import annotations

import pickle
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import difflab.data as dd
from difflab.data.scenes import ITEMS
from difflab.data.video import AppendImageFrames, MovingItems, VideoFolder, bounce

pytest.importorskip("imageio")
pytest.importorskip("av")

FRAMES = 8


@pytest.fixture(scope="module")
def movies() -> MovingItems:
    return MovingItems("train", n=40, frames=FRAMES)


def _levels(x: torch.Tensor) -> torch.Tensor:
    return dd.to_levels(x, 256)


def _centroids(frames: torch.Tensor) -> torch.Tensor:
    """Intensity centroids (row, col) of uint8 frames (F, H, W) -> float64 (F, 2)."""
    w = frames.double()
    rows = torch.arange(frames.shape[1], dtype=torch.float64)
    cols = torch.arange(frames.shape[2], dtype=torch.float64)
    mass = w.sum((1, 2))
    return torch.stack([(w.sum(2) * rows).sum(1) / mass, (w.sum(1) * cols).sum(1) / mass], dim=1)


# ---------------------------------------------------------------------------------------------- moving-items


def test_moving_items_shapes_range_and_dtypes(movies) -> None:
    discrete = MovingItems("train", n=40, frames=FRAMES, discrete=True)
    for i in range(6):
        x, cond = movies[i]
        assert x.shape == (1, FRAMES, 32, 32) and x.dtype == torch.float32
        assert float(x.min()) == -1.0 and float(x.max()) <= 1.0  # black canvas, something bright on it
        assert float(x.max()) > 0.0
        assert set(cond) == set(movies.cond_keys) == {"class", "labels", "tracks"}
        assert cond["class"].dtype == torch.int64 and cond["class"].shape == ()
        assert cond["labels"].dtype == torch.int64 and cond["labels"].shape == (2,)
        assert cond["tracks"].dtype == torch.float32 and cond["tracks"].shape == (FRAMES, 2, 2)
        assert int(cond["class"]) == int(cond["labels"][0]) and 0 <= int(cond["class"]) < len(ITEMS)
        second = int(cond["labels"][1])
        assert (second == -1) == bool(cond["tracks"][:, 1].isnan().all())
        assert not cond["tracks"][:, 0].isnan().any()
        k, cond_k = discrete[i]
        assert k.dtype == torch.uint8 and torch.equal(dd.from_levels(k, 256), x)
        assert torch.equal(cond_k["tracks"].nan_to_num(-7), cond["tracks"].nan_to_num(-7))
    assert movies[-1][0].shape == (1, FRAMES, 32, 32)
    with pytest.raises(IndexError):
        movies[40]


def test_moving_items_are_reproducible_and_prefix_stable(movies) -> None:
    again = MovingItems("train", n=40, frames=FRAMES)
    for i in (5, 0, 17):  # any order, a fresh instance
        assert torch.equal(again[i][0], movies[i][0])
    long = MovingItems("train", n=40, frames=128)
    for i in (0, 3, 11):
        x, cond = long[i]
        short, short_cond = movies[i]
        assert torch.equal(x[:, :FRAMES], short)
        assert torch.equal(cond["tracks"][:FRAMES].nan_to_num(-7), short_cond["tracks"].nan_to_num(-7))
        assert torch.equal(cond["labels"], short_cond["labels"])
    other_seed = MovingItems("train", n=40, frames=FRAMES, seed=1)
    test = MovingItems("test", n=40, frames=FRAMES)
    assert not torch.equal(other_seed[0][0], movies[0][0])
    assert not torch.equal(test[0][0], movies[0][0])


def test_stride_subsamples_the_motion() -> None:
    dense = MovingItems("train", n=5, frames=10)
    sparse = MovingItems("train", n=5, frames=4, stride=3)
    for i in range(5):
        (xd, cd), (xs, cs) = dense[i], sparse[i]
        assert torch.equal(xs, xd[:, ::3])
        assert torch.equal(cs["tracks"].nan_to_num(-7), cd["tracks"][::3].nan_to_num(-7))


def test_tracks_follow_the_bright_pixels() -> None:
    ds = MovingItems("train", n=12, frames=16, items="1")
    centre = (ds.item_size - 1) / 2
    for i in range(len(ds)):
        k, labels, tracks = ds.video(i)
        assert labels[1] == -1
        offset = _centroids(k[0]) - tracks[:, 0].double()
        # bilinear shift moves the centroid with the sub-pixel track: a constant offset, near the sprite centre
        assert float((offset - offset.mean(0)).abs().max()) < 0.05
        assert float((offset.mean(0) - centre).abs().max()) < 4.0
        motion = tracks[1:, 0] - tracks[:-1, 0]
        assert float(motion.norm(dim=1).max()) <= 2.5 + 1e-4 and float(motion.abs().sum()) > 0


def test_bounce_reflects_at_the_walls_and_items_stay_inside() -> None:
    got = bounce(np.array([1.0, 5.0]), np.array([-2.0, 3.0]), np.arange(4), 10.0)
    np.testing.assert_allclose(got, [[1, 5], [1, 8], [3, 9], [5, 6]])  # -1 -> 1 and 11 -> 9: mirrored back
    ds = MovingItems("train", n=6, frames=128, items="1")
    limit = ds.size - ds.item_size
    bounced = 0
    for i in range(len(ds)):
        k, _, tracks = ds.video(i)
        t = tracks[:, 0]
        assert float(t.min()) >= 0 and float(t.max()) <= limit
        mass = k[0].double().sum((1, 2))  # nothing is cut off at a wall: the item's total intensity stays
        assert float((mass.max() - mass.min()) / mass.mean()) < 0.01
        velocity = t[1:] - t[:-1]
        bounced += int((velocity[1:] * velocity[:-1] < 0).any())
    assert bounced >= 5  # 128 frames at >= 1 px/frame cross a 18-px range many times


def test_labels_class_labels_and_two_item_videos(movies) -> None:
    labels = movies.class_labels()
    assert labels.dtype == torch.int64 and labels.shape == (40,)
    assert labels.tolist() == [int(movies[i][1]["class"]) for i in range(40)]
    counts = [int((movies.video(i)[1] >= 0).sum()) for i in range(40)]
    assert set(counts) == {1, 2}  # "1-2": both kinds of video occur
    one = MovingItems("train", n=8, frames=FRAMES, items="1")
    two = MovingItems("train", n=8, frames=FRAMES, items="2")
    assert torch.equal(one.class_labels(), two.class_labels())
    for i in range(8):
        k1, l1, t1 = one.video(i)
        k2, l2, t2 = two.video(i)
        assert l1[1] == -1 and l2[1] >= 0 and l1[0] == l2[0]
        assert not t2.isnan().any() and torch.equal(t1[:, 0], t2[:, 0])
        # the first item is the same in both; the second adds by per-pixel maximum
        assert bool((k2 >= k1).all()) and not torch.equal(k1, k2)
        far = torch.ones(FRAMES, 32, 32, dtype=torch.bool)  # pixels away from the second item
        for f in range(FRAMES):
            r, c = (int(v) for v in t2[f, 1].floor())
            far[f, r : r + two.item_size + 1, c : c + two.item_size + 1] = False
        assert torch.equal(k2[0][far], k1[0][far])


def test_moving_items_registry_and_errors() -> None:
    info = dd.describe("moving-items")
    assert (info.channels, info.size, info.levels, info.num_classes) == (1, 32, 256, 20)
    assert info.class_names == ITEMS and info.num_items == {"train": 20_000, "test": 500}
    ds = dd.get_dataset("moving-items", "test", n=3, frames=4, size=24, item_size=12)
    assert ds[0][0].shape == (1, 4, 24, 24) and ds.info.num_items == {"test": 3}
    for bad in ({"items": "3"}, {"size": 17}, {"frames": 0}, {"stride": 0}, {"n": 0}, {"item_size": 29}):
        with pytest.raises(ValueError):
            MovingItems("train", **{"n": 2, **bad})
    with pytest.raises(ValueError, match="valid values: 1, 2, 1-2"):
        MovingItems(items="3")
    with pytest.raises(ValueError, match="valid splits: train, test"):
        dd.get_dataset("moving-items", "unseen")
    with pytest.raises(ValueError, match="valid options"):
        dd.get_dataset("moving-items", n=2, colour=1)


# ---------------------------------------------------------------------------------------------- joint image-video


def _find_frame(frame: torch.Tensor, videos: list[torch.Tensor]) -> list[int]:
    return [j for j, v in enumerate(videos) if any(torch.equal(frame, v[:, f]) for f in range(v.shape[1]))]


def test_append_image_frames_shapes_flags_and_classes() -> None:
    base = MovingItems("train", n=60, frames=6)
    wrapped = AppendImageFrames(base, count=3, seed=2)
    videos = [base[i][0] for i in range(60)]
    classes = base.class_labels()
    assert wrapped.cond_keys == ("class", "labels", "tracks", "frame_is_image")
    assert len(wrapped) == 60 and wrapped.info.name == "moving-items" and wrapped.levels == 256
    checked = 0
    for i in range(12):
        x, cond = wrapped[i]
        assert x.shape == (1, 9, 32, 32) and torch.equal(x[:, :6], videos[i])
        assert cond["frame_is_image"].dtype == torch.bool
        assert cond["frame_is_image"].tolist() == [False] * 6 + [True] * 3
        assert cond["tracks"].shape == (6, 2, 2) and torch.equal(cond["labels"], base[i][1]["labels"])
        same_class = [j for j in range(60) if classes[j] == classes[i] and j != i]
        for f in range(6, 9):
            owners = _find_frame(x[:, f], videos)
            assert owners, "an appended frame must be a frame of some item"
            if same_class:
                assert any(j in same_class for j in owners)
                checked += 1
            else:
                assert i in owners  # alone in its class: its own frames
        assert torch.equal(wrapped[i][0], x)  # deterministic
    assert checked >= 6
    assert not torch.equal(AppendImageFrames(base, count=3, seed=3)[0][0], wrapped[0][0])


class _Whole(torch.utils.data.Dataset):
    """A wrapped dataset without ``frame()``: AppendImageFrames must load whole items and draw the same frames."""

    def __init__(self, base: MovingItems) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        return self.base[i]

    def class_labels(self) -> torch.Tensor:
        return self.base.class_labels()


def test_append_image_frames_single_frame_path_matches_whole_items() -> None:
    base = MovingItems("train", n=30, frames=5)
    assert torch.equal(base.frame(7, 3), base[7][0][:, 3])
    fast, slow = AppendImageFrames(base, count=4, seed=1), AppendImageFrames(_Whole(base), count=4, seed=1)
    for i in (0, 9, 29):
        assert torch.equal(fast[i][0], slow[i][0])
    shrunk = AppendImageFrames(dd.Rescaled(base, shrink=2), count=2, seed=1)  # forwards frame(), not shrunk
    assert shrunk[0][0].shape == (1, 7, 16, 16)
    with pytest.raises(IndexError):
        base.frame(0, 5)


class _Plain(torch.utils.data.Dataset):
    """Tiny unlabelled videos whose frames all differ: frame f of item i is filled with i * 10 + f."""

    def __len__(self) -> int:
        return 5

    def __getitem__(self, i: int):
        return torch.arange(4, dtype=torch.float32).view(1, 4, 1, 1).expand(1, 4, 2, 2) + 10.0 * i, {}


def test_append_image_frames_without_labels_count_zero_and_collate() -> None:
    wrapped = AppendImageFrames(_Plain(), count=2)
    for i in range(5):
        x, cond = wrapped[i]
        assert x.shape == (1, 6, 2, 2) and cond["frame_is_image"].tolist() == [False] * 4 + [True] * 2
        for f in (4, 5):
            assert int(x[0, f, 0, 0].item()) // 10 != i  # a frame of another item
    base = MovingItems("train", n=6, frames=4)
    plain = AppendImageFrames(base, count=0)
    x, cond = plain[1]
    assert torch.equal(x, base[1][0]) and cond["frame_is_image"].tolist() == [False] * 4
    batch_x, batch = dd.collate([AppendImageFrames(base, count=2)[i] for i in range(3)])
    assert batch_x.shape == (3, 1, 6, 32, 32) and batch_x.dtype == torch.float32
    assert batch["frame_is_image"].shape == (3, 6) and batch["frame_is_image"].dtype == torch.bool
    assert batch["class"].shape == (3,) and batch["class"].dtype == torch.int64
    assert batch["labels"].shape == (3, 2) and batch["tracks"].shape == (3, 4, 2, 2)
    loader_x, loader_cond = next(iter(dd.make_loader(AppendImageFrames(base, count=1), batch_size=2, shuffle=False)))
    assert loader_x.shape == (2, 1, 5, 32, 32) and loader_cond["frame_is_image"][:, -1].all()
    with pytest.raises(ValueError, match="count"):
        AppendImageFrames(base, count=-1)
    with pytest.raises(ValueError, match=r"video items \(C, F, H, W\)"):
        AppendImageFrames(dd.get_dataset("digits"), count=1)[0]


# ---------------------------------------------------------------------------------------------- files and folders


@pytest.fixture()
def video_tree(tmp_path):
    """A folder with a grey GIF, an MP4, a PNG frame folder, a too-short GIF, garbage and a truncated GIF."""
    root = tmp_path / "videos"
    root.mkdir()
    src = MovingItems("test", n=3, frames=8)
    grey = src[0][0]
    dd.save_video(grey, root / "a.gif")
    dd.save_video(src[1][0], root / "b.mp4")
    rgb = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8))
    (root / "shots").mkdir()
    for f in range(8):
        Image.fromarray(rgb[f].numpy()).save(root / "shots" / f"frame{f:03d}.png")
    dd.save_video(src[2][0][:, :3], root / "short.gif")
    (root / "garbage.mp4").write_bytes(b"not a video at all " * 50)
    data = (root / "a.gif").read_bytes()
    (root / "cut.gif").write_bytes(data[: len(data) // 2])
    (root / "notes.txt").write_text("hello")
    return root, grey, src[1][0], rgb


def test_video_folder_round_trip_skips_and_counts(video_tree) -> None:
    root, grey, moving, rgb = video_tree
    with pytest.warns(dd.DataWarning) as record:
        ds = dd.get_dataset("video-folder", root=root, frames=4, channels=1, discrete=True)
    messages = " | ".join(str(w.message) for w in record)
    assert "skipped 2 unreadable video(s)" in messages
    assert "a clip needs 4 frames" in messages and "short.gif: 3 kept frames" in messages
    assert sorted(p.rsplit("/", 1)[-1] for p, _ in ds.skipped) == ["cut.gif", "garbage.mp4"]
    assert [p.name for p in ds.files] == ["a.gif", "b.mp4", "shots"] and ds.num_frames == [8, 8, 8]
    assert ds.num_ignored == 1 and len(ds) == 6 and ds.clips[:2] == [(0, 0), (0, 4)]
    assert ds.cond_keys == () and ds.info.num_items == {"train": 6} and ds.info.channels == 1
    # GIF of grey: exact
    expect = _levels(grey)
    assert torch.equal(torch.cat([ds[0][0], ds[1][0]], dim=1), expect) and ds[0][1] == {}
    # MP4: lossy within codec tolerance
    got = torch.cat([ds[2][0], ds[3][0]], dim=1).float()
    err = (got - _levels(moving).float()).abs()
    assert float(err.mean()) < 1.5 and float(err.max()) <= 40
    # frame folder: grey by Pillow's luma
    want = torch.from_numpy(np.asarray([np.asarray(Image.fromarray(f.numpy()).convert("L")) for f in rgb]))
    assert torch.equal(torch.cat([ds[4][0], ds[5][0]], dim=1)[0], want)


def test_video_folder_colour_stride_and_floats(video_tree) -> None:
    root, _, _, rgb = video_tree
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dd.DataWarning)
        ds = VideoFolder(root, frames=4, stride=2)
        small = VideoFolder(root, frames=2, size=16, progress=False)
    assert len(ds) == 3 and ds.num_frames == [4, 4, 4]
    x, cond = ds[2]
    assert x.shape == (3, 4, 32, 32) and x.dtype == torch.float32 and cond == {}
    assert torch.equal(_levels(x), rgb[::2].permute(3, 0, 1, 2))  # PNG frames: exact, every 2nd frame
    assert small[0][0].shape == (3, 2, 16, 16) and len(small) == 13  # 4 + 4 + 4 + 1 (short.gif)
    assert torch.equal(ds.frame(2, 1), x[:, 1])


def test_video_folder_layouts_16_bit_and_crop_notice(tmp_path) -> None:
    root = tmp_path / "v"
    folder = root / "clip"
    folder.mkdir(parents=True)
    deep = np.array([[0, 65535], [32896, 1000]], dtype=np.uint16).repeat(4, 0).repeat(4, 1)  # 8x8
    Image.fromarray(deep).save(folder / "0.png")  # 16-bit grey ("I;16")
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(folder / "1.png")  # transparent: white
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 255] + [0] * 765)
    pal.save(folder / "2.png")  # palette: blue
    Image.new("L", (8, 8), 77).save(folder / "3.png")
    frames = dd.read_video(folder, channels=3)
    assert frames.shape == (4, 8, 8, 3) and frames.dtype == np.uint8
    assert frames[0, 0, :, 0].tolist() == [0] * 4 + [255] * 4
    assert frames[0, 4, 0, 0] == (32896 * 255 + 32767) // 65535 == 128 and frames[0, 4, 4, 0] == 4  # scaled
    assert (frames[1] == 255).all() and (frames[2] == [0, 0, 255]).all() and (frames[3] == 77).all()
    assert dd.read_video(folder, channels=1).shape == (4, 8, 8, 1)
    wide = root / "wide"
    wide.mkdir()
    for f in range(2):
        arr = np.zeros((8, 12), np.uint8)
        arr[:, 2:10] = 100 + f  # the centre 8x8 crop is uniform
        Image.fromarray(arr).save(wide / f"{f}.png")
    with pytest.warns(dd.DataWarning, match=r"12x8, not square: frames are centre-cropped to 8x8"):
        ds = VideoFolder(root, frames=2, size=8, channels=1, discrete=True)
    assert [p.name for p in ds.files] == ["clip", "wide"]
    assert ds[2][0].tolist() == [[[[100] * 8] * 8, [[101] * 8] * 8]]


def test_video_folder_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="needs root="):
        dd.get_dataset("video-folder")
    with pytest.raises(ValueError, match="valid splits: train"):
        dd.get_dataset("video-folder", "test", root=tmp_path)
    with pytest.raises(FileNotFoundError):
        VideoFolder(tmp_path / "missing")
    for bad in ({"channels": 2}, {"frames": 0}, {"stride": 0}, {"size": 0}):
        with pytest.raises(ValueError):
            VideoFolder(tmp_path, **bad)
    (tmp_path / "x.mp4").write_bytes(b"junk")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dd.DataWarning)
        with pytest.raises(ValueError, match=r"no clips of 16 frames .* 1 video\(s\) found, 1 unreadable"):
            VideoFolder(tmp_path)
    with pytest.raises(ValueError, match="valid suffixes: .gif, .mp4, .webm"):
        dd.read_video(tmp_path / "x.txt")


def test_save_video_formats_tiling_and_filmstrip(tmp_path) -> None:
    ramp = torch.linspace(-1, 1, 8 * 8).view(1, 1, 8, 8).expand(2, 1, 4, 8, 8).clone()
    ramp[1] = -ramp[1]
    dd.save_video(ramp, tmp_path / "pair.gif", fps=4)
    back = dd.read_video(tmp_path / "pair.gif", channels=1)
    # a static video: Pillow stores one frame of 4x the time, read_video repeats it back to 4 frames
    assert back.shape == (4, 8, 17, 1)  # two videos side by side, a 1-pixel white gap
    assert (back[:, :, 8] == 255).all()
    assert np.array_equal(back[:, :, :8, 0], _levels(ramp[0, 0]).numpy())
    assert np.array_equal(back[:, :, 9:, 0], _levels(ramp[1, 0]).numpy())
    odd = torch.rand(3, 5, 13, 21) * 2 - 1
    path = dd.save_video(odd, tmp_path / "odd.mp4")
    assert dd.read_video(path).shape == (5, 66, 106, 3)  # x5 to >= 64 px, padded to even sizes
    assert not list(tmp_path.glob(".*"))  # no temporary files left
    with pytest.raises(ValueError, match="valid suffixes: .gif, .mp4"):
        dd.save_video(odd, tmp_path / "odd.avi")
    with pytest.raises(ValueError, match="C in"):
        dd.save_video(torch.zeros(2, 4, 8, 8), tmp_path / "bad.gif")
    videos = torch.rand(3, 1, 5, 8, 8) * 2 - 1
    with Image.open(dd.save_filmstrip(videos, tmp_path / "strip.png")) as im:
        assert im.size == (5 * 32 + 4, 3 * 32 + 2) and im.mode == "L"
        sheet = np.asarray(im)
    assert np.array_equal(sheet[33:65, 66:98], _levels(videos[1, 0, 2]).numpy().repeat(4, 0).repeat(4, 1))
    assert (sheet[32] == 255).all()
    with Image.open(dd.save_filmstrip(videos[0].expand(3, 5, 8, 8), tmp_path / "few.png", max_frames=3)) as im:
        assert im.size == (3 * 32 + 2, 32) and im.mode == "RGB"
        few = np.asarray(im)
    assert np.array_equal(few[:, 66:, 0], _levels(videos[0, 0, 4]).numpy().repeat(4, 0).repeat(4, 1))


def test_missing_video_extra_is_named_and_not_skipped(tmp_path, monkeypatch) -> None:
    dd.save_video(torch.zeros(1, 4, 8, 8), tmp_path / "clip.mp4")
    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    with pytest.raises(ImportError, match=r"pip install 'difflab\[video\]'"):
        dd.save_video(torch.zeros(1, 4, 8, 8), tmp_path / "again.mp4")
    with pytest.raises(ImportError, match=r"difflab\[video\]"):
        VideoFolder(tmp_path, frames=2)  # a missing decoder is an error, not an unreadable file
    dd.save_video(torch.zeros(1, 4, 8, 8), tmp_path / "fine.gif")  # GIFs need only Pillow
    assert dd.read_video(tmp_path / "fine.gif").shape == (4, 8, 8, 3)


def test_wrapped_datasets_pickle_for_workers() -> None:
    wrapped = AppendImageFrames(MovingItems("train", n=6, frames=4), count=1, seed=5)
    copy = pickle.loads(pickle.dumps(wrapped))
    assert torch.equal(copy[3][0], wrapped[3][0]) and copy.cond_keys == wrapped.cond_keys
