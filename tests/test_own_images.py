"""README "Training on your own images": its commands and Python code, run as written on a tiny folder.

The commands are read from the README itself; only the placeholder root, the run folder (moved under
a temporary folder) and options that make them fast (2 training steps, 2 sampling steps, few samples)
are added, so the README cannot drift from what the code does.
"""

from __future__ import annotations

import re
import shlex
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from difflab import cli
from difflab.data import DataWarning
from difflab.eval import generic

ROOT = Path(__file__).resolve().parents[1]
FAST = {  # appended to each README command: later options win
    "train": ["train.steps=2", "sample.steps=2", "sample.n=4", "train.progress=false"],
    "sample": ["--n", "8"],
    "eval": ["--n", "12"],
}


def section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def commands() -> list[list[str]]:
    (bash,) = blocks(section("Training on your own images"), "bash")
    return [shlex.split(line) for line in bash.splitlines() if line.startswith("difflab ")]


def make_images(root: Path, n: int = 36) -> Path:
    """``n`` 16x16 RGB PNGs: a bright band at the top over a coloured gradient (a usual orientation)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    yy, xx = np.mgrid[0:16, 0:16]
    for i in range(n):
        a = np.zeros((16, 16, 3))
        a[..., 0] = 128 + 100 * np.sin(xx / (2 + i % 3))
        a[..., 1] = yy * 12 + rng.integers(0, 30)
        a[..., 2] = rng.integers(0, 90)
        a[1:4] = 250
        Image.fromarray(a.clip(0, 255).astype(np.uint8)).save(root / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The README's train command, run on a tiny folder from a temporary working folder."""
    mp = pytest.MonkeyPatch()
    work = tmp_path_factory.mktemp("own")
    mp.chdir(work)
    mp.setenv("DIFFLAB_CACHE", str(work / "cache"))
    mp.setattr(generic, "UPDATES_MIN", 12)  # a tiny feature net: the plumbing is tested, not its quality
    generic.clear_generic_cache()
    make_images(work / "path" / "to" / "images")
    train = commands()[0]
    assert train[:3] == ["difflab", "train", "configs/my-images.yaml"]
    argv = [ROOT / "configs/my-images.yaml" if a == "configs/my-images.yaml" else a for a in train[1:]]
    with pytest.warns(DataWarning, match=r"chose channels=3 \(36 of 36 images are in colour\) and size=16"):
        assert cli.main([*map(str, argv), *FAST["train"]]) == 0
    yield work
    generic.clear_generic_cache()
    mp.undo()


def test_readme_lists_train_sample_eval():
    assert [c[:3] for c in commands()] == [
        ["difflab", "train", "configs/my-images.yaml"],
        ["difflab", "sample", "runs/my-images"],
        ["difflab", "eval", "runs/my-images"],
    ]
    assert "data.options.root=path/to/images" in commands()[0]
    assert "root: path/to/images" in (ROOT / "configs/my-images.yaml").read_text()  # the documented placeholder


def test_train_records_what_it_inferred(workdir):
    cfg = (workdir / "runs/my-images/config.yaml").read_text()
    assert "root: path/to/images" in cfg and "channels: 3" in cfg and "size: 16" in cfg
    assert (workdir / "runs/my-images/checkpoint/format.json").is_file()


def test_sample_command(workdir, capsys):
    argv = commands()[1][1:] + FAST["sample"]
    assert cli.main(argv) == 0
    assert (workdir / "runs/my-images/grid.png").is_file()
    assert "wrote runs/my-images/grid.png" in capsys.readouterr().out


def test_eval_command_prints_fd_its_floor_precision_and_recall(workdir, capsys):
    argv = commands()[2][1:] + FAST["eval"]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    for key in ("fd", "fd_floor", "precision", "recall", "n_floor"):
        assert re.search(rf"^\s*{key}: \d", out, flags=re.M), (key, out)
    assert "feature_net: generic" in out and "trained a feature net on this run's data" in err
    assert (workdir / "runs/my-images/eval.json").is_file()
    assert list((workdir / "cache" / "features").iterdir())  # cached for the next time


def test_python_code_of_the_worked_example_runs_as_written(workdir, capsys):
    (code,) = blocks(section("Training on your own images"), "python")
    assert 'difflab.load("runs/my-images")' in code and "stage.sample(16)" in code and "save_grid(" in code
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert tuple(scope["images"].shape) == (16, 3, 16, 16)
    assert (workdir / "runs/my-images/python-grid.png").is_file() and {"fd", "fd_floor"} <= set(scope["scores"])
    assert len(capsys.readouterr().out.split()) == 4  # fd, fd_floor, precision, recall


def test_python_sampling_loop_runs_as_written(workdir):
    (code,) = blocks(section("Using a trained run from Python"), "python")
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert tuple(scope["x"].shape) == (8, 3, 16, 16) and scope["lams"].shape == (26,)


def test_eval_fails_before_sampling_when_the_data_are_gone(workdir, tmp_path, monkeypatch, capsys):
    import difflab.commands

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled before checking the data")

    monkeypatch.setattr(difflab.commands, "_draw", no_sampling)
    generic.clear_generic_cache()
    moved = tmp_path / "config-elsewhere"
    (workdir / "runs/my-images").rename(moved)  # root is relative: from here it names no folder
    try:
        monkeypatch.chdir(tmp_path)
        assert cli.main(["eval", str(moved), "--n", "12"]) == 2
        assert "image folder path/to/images does not exist" in capsys.readouterr().err
    finally:
        moved.rename(workdir / "runs/my-images")


def test_the_notice_quoted_in_the_readme_is_the_one_printed(tmp_path):
    quoted = section("Training on your own images").split("One notice says", 1)[1]
    quoted = " ".join(blocks(quoted, "")[0].split()).removeprefix("DataWarning: ")
    root = tmp_path / "path/to/images"
    root.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((25, 25), 40 * i, np.uint8)).save(root / f"{i}.png")
    from difflab.data import ImageFolder
    from difflab.train.config import load_run_config
    from difflab.train.stage import ImageDiffusion

    multiple = ImageDiffusion(load_run_config(ROOT / "configs/my-images.yaml")).size_multiple()
    assert multiple == 8  # "whose U-Net halves the size three times"
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ImageFolder(root, size_multiple=multiple)
    (msg,) = [str(w.message) for w in rec]
    assert msg.replace(str(root), "path/to/images") == quoted
