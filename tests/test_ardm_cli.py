"""`difflab ardm-train / ardm-eval / ardm-export / compress / decompress` end to end on tiny digits."""

import json

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
