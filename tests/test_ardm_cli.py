"""`difflab ardm-train / ardm-eval / ardm-export / compress / decompress` end to end on tiny digits."""

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from difflab.cli import main
from difflab.methods.ardm.codec import VERSION

TINY = [
    "train.steps=4", "model.unet.channels=8", "model.unet.channel_mult=[1]", "model.unet.num_blocks=1",
    "model.unet.attn_levels=[]", "model.unet.norm_groups=4", "data.batch_size=8", "train.log_every=2",
]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ardm") / "run"
    assert main(["ardm-train", "configs/ardm-digits.yaml", *TINY, "--out", str(out), "--no-progress"]) == 0
    assert (out / "checkpoint" / "format.json").is_file()
    return out


def test_compress_decompress_round_trip(run, tmp_path, capsys):
    from difflab.data import get_dataset

    ds = get_dataset("digits", "test", discrete=True)
    paths = []
    for i in range(3):
        p = tmp_path / f"d{i}.png"
        Image.fromarray(ds[i][0][0].numpy()).save(p)
        paths.append(str(p))
    model = tmp_path / "model"
    assert main(["ardm-export", str(run), str(model)]) == 0
    assert main(["compress", str(model), *paths, "-o", str(tmp_path / "x.ardm")]) == 0
    assert "bits per dimension" in capsys.readouterr().out
    assert main(["decompress", str(model), str(tmp_path / "x.ardm"), "-o", str(tmp_path / "dec")]) == 0
    for i, p in enumerate(paths):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "dec" / f"{i:05d}.png")), np.asarray(Image.open(p)))
    # the run folder (float32 EMA weights) is another model than the bf16 export: rejected, one line
    assert main(["decompress", str(run), str(tmp_path / "x.ardm"), "-o", str(tmp_path / "dec2")]) == 2
    err = capsys.readouterr().err
    assert "different model" in err and err.count("\n") == 1


def test_bad_images_give_one_line_errors(run, tmp_path, capsys):
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((9, 8), dtype=np.uint8)).save(big)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(rgb)
    bright = tmp_path / "bright.png"
    Image.fromarray(np.full((8, 8), 200, dtype=np.uint8)).save(bright)
    for path, what in ((big, "8x9"), (rgb, "3-channel"), (bright, "above")):
        assert main(["compress", str(run), str(path), "-o", str(tmp_path / "y.ardm")]) == 2
        err = capsys.readouterr().err
        assert what in err and err.count("\n") == 1
    (tmp_path / "junk.ardm").write_bytes(b"ARDM" + bytes([VERSION]) + bytes(100))
    assert main(["decompress", str(run), str(tmp_path / "junk.ardm"), "-o", str(tmp_path / "d")]) == 2
    assert "corrupt" in capsys.readouterr().err
    (tmp_path / "old.ardm").write_bytes(b"ARDM\x01" + bytes(100))  # format 1 (whole 32-bit words)
    assert main(["decompress", str(run), str(tmp_path / "old.ardm"), "-o", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "version 1" in err and err.count("\n") == 1


def test_eval_reports_bpd_and_parallel_rows(run, tmp_path):
    out = tmp_path / "eval.json"
    argv = ["ardm-eval", str(run), "--images", "20", "--orders", "2", "--budgets", "4", "--parallel-images", "20"]
    assert main([*argv, "--device", "cpu", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert 0 < res["nll_bpd"] < 8 and res["nll_bpd_se"] > 0
    assert [r["steps"] for r in res["parallel"]] == [4, 64]
    assert (run / "checkpoint" / "ardm_steps.json").is_file()


def test_step_losses_script_uses_the_last_test_images(run):
    import importlib.util

    from difflab.methods.ardm.objective import step_losses
    from difflab.methods.ardm.train import STEPS_FILE, data_tensor, load_ardm, make_data
    from difflab.train.config import load_run_config

    spec = importlib.util.spec_from_file_location("ardm_step_losses", "scripts/ardm_step_losses.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main([str(run), "--images", "20", "--grid", "4", "--threads", "1"]) == 0
    saved = json.loads((run / "checkpoint" / STEPS_FILE).read_text())
    data = data_tensor(make_data(load_run_config("configs/ardm-digits.yaml", TINY), "test"))
    model = load_ardm(run / "checkpoint")
    assert saved["images"] == 20 and saved["which"] == f"test {len(data) - 20}..{len(data) - 1}"
    assert saved["losses"] == step_losses(model, data[-20:], grid=4, seed=1)  # the held-out end of the split
    assert saved["losses"] != step_losses(model, data[:20], grid=4, seed=1)
    with pytest.raises(SystemExit):
        script.main([str(run), "--images", str(len(data) + 1)])


def test_the_generic_train_command_runs_the_method_the_recipe_names(run, tmp_path, capsys):
    out = tmp_path / "generic"
    assert main(["train", "configs/ardm-digits.yaml", *TINY, "train.steps=2", "--out", str(out), "--no-progress"]) == 0
    meta = json.loads((out / "checkpoint" / "format.json").read_text())
    assert meta["method"] == "ardm" and meta["model_config"]["kind"] == "image"
    assert main(["sample", str(run), "--n", "2"]) == 2  # an ARDM is not a diffusion stage: one line, named
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds a 'ardm' checkpoint; this needs a 'diffusion' one" in err


def _png(path, width, height, depth, color_type, rows):
    """A PNG written by hand (Pillow cannot write 16-bit RGB): ``rows`` are the raw scanlines."""

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    raw = b"".join(b"\0" + row for row in rows)
    png = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png)
    return path


def test_images_the_codec_cannot_give_back_are_refused(run, tmp_path, capsys):
    g16 = tmp_path / "g16.png"
    Image.fromarray((np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)).save(g16)  # 0..63000: all >= 255
    i32 = tmp_path / "i32.tif"
    Image.fromarray(np.arange(64, dtype=np.int32).reshape(8, 8)).save(i32)  # small values: still refused
    f32 = tmp_path / "f32.tif"
    Image.fromarray(np.zeros((8, 8), dtype=np.float32)).save(f32)
    rgb16 = _png(tmp_path / "rgb16.png", 8, 8, 16, 2, [bytes(48)] * 8)  # Pillow reads it as 8-bit RGB
    grey2 = _png(tmp_path / "g2.png", 8, 8, 2, 0, [bytes(2)] * 8)  # Pillow scales it to 0..255
    for path, what in ((g16, "16-bit image (mode I;16)"), (i32, "32-bit integer image"), (f32, "32-bit floating"),
                       (rgb16, "16-bit image (mode RGB)"), (grey2, "2-bit image")):  # fmt: skip
        assert main(["compress", str(run), str(path), "-o", str(tmp_path / "y.ardm")]) == 2
        err = capsys.readouterr().err
        assert what in err and "1-bit and 8-bit images only" in err and err.count("\n") == 1, err
    assert not (tmp_path / "y.ardm").exists()


def test_one_bit_pngs_come_back_as_one_bit_pngs(run, tmp_path, capsys):
    one = tmp_path / "one.png"
    Image.fromarray(np.eye(8, dtype=bool)).save(one)
    eight = tmp_path / "eight.png"
    Image.fromarray(np.eye(8, dtype=np.uint8)).save(eight)
    assert main(["compress", str(run), str(one), str(one), "-o", str(tmp_path / "b.ardm")]) == 0
    assert main(["decompress", str(run), str(tmp_path / "b.ardm"), "-o", str(tmp_path / "dec")]) == 0
    back = Image.open(tmp_path / "dec" / "00000.png")
    assert back.mode == "1" and np.array_equal(np.asarray(back), np.eye(8, dtype=bool))
    # the same values in an 8-bit PNG come back 8-bit
    assert main(["compress", str(run), str(eight), "-o", str(tmp_path / "e.ardm")]) == 0
    assert main(["decompress", str(run), str(tmp_path / "e.ardm"), "-o", str(tmp_path / "dec8")]) == 0
    back = Image.open(tmp_path / "dec8" / "00000.png")
    assert back.mode == "L" and np.array_equal(np.asarray(back), np.eye(8, dtype=np.uint8))
    capsys.readouterr()
    assert main(["compress", str(run), str(one), str(eight), "-o", str(tmp_path / "m.ardm")]) == 2
    err = capsys.readouterr().err
    assert "one.png is a 1-bit image and" in err and "separate files" in err and err.count("\n") == 1


def test_decompress_refuses_a_folder_with_earlier_output_unless_overwrite(run, tmp_path, capsys):
    img = tmp_path / "a.png"
    Image.fromarray(np.eye(8, dtype=np.uint8)).save(img)
    assert main(["compress", str(run), str(img), "-o", str(tmp_path / "one.ardm")]) == 0
    dec = tmp_path / "dec"
    dec.mkdir()
    for i in range(5):  # the output of an earlier, longer file
        Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(dec / f"{i:05d}.png")
    (dec / "notes.png").write_bytes(b"not ours")
    capsys.readouterr()
    argv = ["decompress", str(run), str(tmp_path / "one.ardm"), "-o", str(dec)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "already holds 5 decoded image(s) (00000.png, 00001.png, 00002.png ... 00004.png)" in err
    assert "--overwrite" in err and "empty folder" in err and err.count("\n") == 1
    assert len(list(dec.glob("0*.png"))) == 5  # nothing touched
    assert main([*argv, "--overwrite"]) == 0
    assert sorted(p.name for p in dec.iterdir()) == ["00000.png", "notes.png"]
    assert np.array_equal(np.asarray(Image.open(dec / "00000.png")), np.eye(8, dtype=np.uint8))


@pytest.mark.parametrize("flag,value", [("--seed", "4294967296"), ("--seed", "-1"), ("--group", "65536")])
def test_header_fields_out_of_range_are_argument_errors(run, tmp_path, capsys, flag, value):
    img = tmp_path / "a.png"
    Image.fromarray(np.eye(8, dtype=np.uint8)).save(img)
    assert main(["compress", str(run), str(img), "-o", str(tmp_path / "x.ardm"), flag, value]) == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and err.count("\n") == 1, err


def test_bad_model_values_name_the_key_the_type_and_the_source(tmp_path, capsys):
    """Values of model.unet used to reach UNetConfig unchecked: a TypeError traceback for channels=abc."""
    cases = [
        (["train", "configs/ardm-digits.yaml", "model.unet.channels=abc"],
         "override 'model.unet.channels=abc': config key model.unet.channels: expected an integer, got 'abc'"),
        (["ardm-train", "configs/ardm-digits.yaml", "model.unet.channel_mult=abc"],
         "override 'model.unet.channel_mult=abc': config key model.unet.channel_mult: expected a list, got 'abc'"),
    ]  # fmt: skip
    quoted = tmp_path / "quoted.yaml"
    quoted.write_text(Path("configs/ardm-digits.yaml").read_text().replace("channels: 32", "channels: '32'", 1))
    assert "channels: '32'" in quoted.read_text()
    cases.append((["train", str(quoted)], f"{quoted}: config key model.unet.channels: expected an integer, got '32'"))
    for argv, needle in cases:
        assert (
            main([*argv, "train.steps=1", "data.batch_size=2", "--out", str(tmp_path / "never"), "--no-progress"]) == 2
        )
        err = capsys.readouterr().err
        assert err == f"difflab: error: {needle}\n", err
        assert not (tmp_path / "never" / "checkpoint").exists()
