"""``difflab app``: the per-tab functions, their limits and the model catalogue, without a browser
(tests/test_app_browser.py drives the page in headless Chromium)."""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app_models import tiny_models, write_tone
from difflab import cli
from difflab.app import compress, distilled, sample, video, vocode
from difflab.app import limits as check
from difflab.app.limits import AppError, Limits
from difflab.app.models import Catalog, Entry, Models, describe


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    return tiny_models(tmp_path_factory)


@pytest.fixture(scope="module")
def catalog(runs) -> Catalog:
    names = ("image", "student", "t2i", "ardm", "wavegrad")
    return Catalog.build([[str(runs[n])] for n in names], [str(runs["video"])], pretrained=False)


@pytest.fixture(scope="module")
def models() -> Models:
    return Models()


def entry(catalog: Catalog, runs: dict[str, Path], name: str) -> Entry:
    return catalog.get(str(runs[name]))


def digit_png(path: Path, index: int = 0) -> Path:
    """A real 8x8 test digit (levels 0..16) as an 8-bit greyscale PNG."""
    from difflab.data import get_dataset

    img = get_dataset("digits", "test", discrete=True)[index][0][0].numpy().astype(np.uint8)
    Image.fromarray(img).save(path)
    return path


# -- limits ------------------------------------------------------------------------------------------------
def test_limit_checks_refuse_with_one_line_messages(tmp_path):
    assert check.whole("steps", "12", 1, 256) == 12
    assert check.whole("steps", "", 1, 256, optional=True) is None
    refused = [(257, "steps: 257 is over the limit of 256"), (0, "below the minimum of 1"),
               ("2.5", "not a whole number"), ("ten", "'ten' is not a number"), ("nan", "not a finite")]  # fmt: skip
    for value, message in refused:
        with pytest.raises(AppError, match=message):
            check.whole("steps", value, 1, 256)
    with pytest.raises(AppError, match="give a whole number"):
        check.whole("steps", None, 1, 256)
    assert check.real("guidance", "2.5", 0, 50) == 2.5
    with pytest.raises(AppError, match="guidance: 51 is over the limit of 50"):
        check.real("guidance", 51, 0, 50)
    assert check.choice("sampler", "default", ("ddim",)) is None
    with pytest.raises(AppError, match="'euler' is not one of ddim"):
        check.choice("sampler", "euler", ("ddim",))
    with pytest.raises(AppError, match="301 characters is over the limit of 300"):
        check.text("prompt", "x" * 301, 300)
    with pytest.raises(AppError, match="upload a file first"):
        check.upload("image", None, 10)
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * 2000)
    with pytest.raises(AppError, match=r"big.png is 0.0 MB, over the limit of 0.000953674 MB"):
        check.upload("image", str(big), 1000)
    Image.new("L", (300, 20)).save(tmp_path / "wide.png")
    with pytest.raises(AppError, match="wide.png is 300x20 pixels, over the limit of 256x256"):
        check.image_size("image", tmp_path / "wide.png", Limits())
    assert check.image_size("image", tmp_path / "wide.png", Limits(image_side=300)) == (300, 20)


# -- the catalogue ----------------------------------------------------------------------------------------
def test_the_catalogue_knows_each_run_by_its_method(runs, catalog):
    methods = {name: entry(catalog, runs, name).method for name in ("image", "student", "t2i", "ardm", "wavegrad")}
    assert methods == {"image": "image", "student": "distilled", "t2i": "text-to-image", "ardm": "ardm",
                       "wavegrad": "wavegrad"}  # fmt: skip
    assert entry(catalog, runs, "video").method == "video"
    assert catalog.names("sample") == [str(runs[n]) for n in ("image", "student", "t2i")]
    assert catalog.names("compress") == [str(runs["ardm"])] and catalog.names("video") == [str(runs["video"])]
    student = entry(catalog, runs, "student")
    assert Path(catalog.teacher(student).sources[0]).resolve().parent == runs["image"].resolve()  # from format.json
    with pytest.raises(AppError, match="is an ardm model; this tab takes image, distilled"):
        catalog.get(str(runs["ardm"]), "sample")
    with pytest.raises(AppError, match="choose one of the list"):
        catalog.get("no-such-model")
    with pytest.raises(AppError, match="not a video stage \\(model.dims: 3\\) but an image run"):
        Catalog.build([], [str(runs["image"])], pretrained=False)
    with pytest.raises(FileNotFoundError, match="run folder not found"):
        Catalog.build([[str(runs["image"]) + "-missing"]], pretrained=False)
    info = describe(entry(catalog, runs, "image"))
    assert info == {"sampler": "ddim", "steps": 4, "guidance": 2.0, "threshold": "none", "classes": 10, "prompt": False}
    assert describe(student)["steps"] == 2 and describe(entry(catalog, runs, "t2i"))["prompt"] is True


def test_the_catalogue_lists_the_shipped_pretrained_models():
    from difflab.pretrained import list_models

    shipped = {m.name: m.method for m in list_models() if m.method != "clip"}
    catalog = Catalog.build()
    assert {n: e.method for n, e in catalog.entries.items()} == shipped
    for name, e in catalog.entries.items():
        assert e.sources == (f"pretrained:{name}",)


# -- sample ------------------------------------------------------------------------------------------------
def test_sample_draws_a_grid_of_the_labels_asked_for(runs, catalog, models, tmp_path):
    e = entry(catalog, runs, "image")
    g = sample.sample(models, e, n=4, steps=2, label_or_prompt="3", seed=5, out=tmp_path)
    assert g.path.is_file() and g.path.is_relative_to(tmp_path / "sample") and g.seconds > 0
    assert "4 image(s)" in g.summary and "labels 3 3 3 3" in g.summary and "ddim, 2 steps" in g.summary
    assert "ddim, 4 steps" in sample.sample(models, e, n=1, out=tmp_path).summary  # the model's own settings
    w, h = Image.open(g.path).size
    assert (w, h) == (2 * 128 + 3 * 2, 2 * 128 + 3 * 2)  # 2x2 grid of 8x8 digits enlarged to 128 px, 2 px gaps
    again = sample.sample(models, e, n=4, steps=2, label_or_prompt="3", seed=5, out=tmp_path)
    other = sample.sample(models, e, n=4, steps=2, label_or_prompt="3", seed=6, out=tmp_path)
    assert again.path != g.path and again.path.read_bytes() == g.path.read_bytes()  # seeded
    assert other.path.read_bytes() != g.path.read_bytes()
    mixed = sample.sample(models, e, n=3, steps=1, label_or_prompt="0, 9", sampler="ddpm", threshold="static",
                          guidance=3, out=tmp_path)  # fmt: skip
    assert "labels 0 9 0" in mixed.summary and "ddpm" in mixed.summary


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 17}, "number of images: 17 is over the limit of 16"),
        ({"steps": 257}, "steps: 257 is over the limit of 256"),
        ({"guidance": 1e9}, "guidance: 1e\\+09 is over the limit of 50"),
        ({"sampler": "euler"}, "sampler: 'euler' is not one of ddpm, ddim, dpmpp_2m, heun"),
        ({"threshold": "soft"}, "thresholding: 'soft' is not one of none, static, dynamic"),
        ({"label_or_prompt": "12"}, "label: 12 is not a class of this model \\(0 to 9\\)"),
        ({"label_or_prompt": "cat"}, "label: 'cat' is not a class number"),
        ({"seed": -1}, "seed: -1 is below the minimum of 0"),
    ],
)
def test_sample_refuses_inputs_over_the_limits(runs, catalog, models, tmp_path, kwargs, message):
    with pytest.raises(AppError, match=message):
        sample.sample(models, entry(catalog, runs, "image"), **{"steps": 1, **kwargs}, out=tmp_path)
    assert not (tmp_path / "sample").exists()  # refused before anything was drawn


def test_sample_draws_a_prompt_with_a_text_to_image_model(runs, catalog, models, tmp_path):
    e = entry(catalog, runs, "t2i")
    g = sample.sample(models, e, n=2, steps=2, label_or_prompt="a red bag at the top left", out=tmp_path)
    assert Image.open(g.path).mode == "RGB" and Image.open(g.path).size == (2 * 128 + 3 * 2, 128 + 2 * 2)
    with pytest.raises(AppError, match="prompt: type what to draw"):
        sample.sample(models, e, n=2, steps=2, label_or_prompt="  ", out=tmp_path)


# -- distilled vs teacher -------------------------------------------------------------------------------------
def test_distilled_student_and_teacher_side_by_side(runs, catalog, models, tmp_path):
    c = distilled.compare(catalog, models, entry(catalog, runs, "student"), n=4, label="7", seed=1, out=tmp_path)
    assert c.student.is_file() and c.teacher.is_file() and c.student.parent == c.teacher.parent
    assert Image.open(c.student).size == Image.open(c.teacher).size
    assert c.student_seconds > 0 and c.teacher_seconds > 0
    assert "ddim 2 steps" in c.summary and "ddim 4 steps" in c.summary  # the student's and the teacher's own
    more = distilled.compare(catalog, models, entry(catalog, runs, "student"), n=1, teacher_steps=8, out=tmp_path)
    assert "ddim 8 steps" in more.summary
    with pytest.raises(AppError, match="teacher steps: 300 is over the limit of 256"):
        distilled.compare(catalog, models, entry(catalog, runs, "student"), teacher_steps=300, out=tmp_path)
    with pytest.raises(AppError, match="its teacher is not recorded"):
        distilled.compare(catalog, models, entry(catalog, runs, "image"), out=tmp_path)
    lost = Entry("lost", "distilled", (str(runs["student"]),), str(tmp_path / "gone"))
    with pytest.raises(AppError, match="is not there; start the app with --model TEACHER_RUN"):
        distilled.compare(catalog, models, lost, out=tmp_path)


# -- compress ----------------------------------------------------------------------------------------------
def test_compress_codes_an_image_losslessly_beside_png_and_jpeg_xl(runs, catalog, models, tmp_path):
    png = digit_png(tmp_path / "digit.png", 3)
    r = compress.compress_image(models, entry(catalog, runs, "ardm"), str(png), out=tmp_path / "out")
    assert r.equal and "lossless: yes" in r.summary
    assert (r.width, r.height, r.channels, r.calls) == (8, 8, 1, 64)
    assert r.ardm_bytes == r.ardm_file.stat().st_size and r.bits_per_pixel == pytest.approx(8 * r.ardm_bytes / 64)
    assert r.payload_bits_per_pixel < r.bits_per_pixel
    assert set(r.sizes) >= {"png", "jpegxl"} and r.bpp("png") == pytest.approx(8 * r.sizes["png"] / 64)
    assert np.array_equal(np.asarray(Image.open(r.decoded_exact)), np.asarray(Image.open(png)))  # exact levels
    view = np.asarray(Image.open(r.input_png))
    assert view.shape == (224, 224) and view.max() <= 255  # 8x8 enlarged 28 times for the page
    assert np.array_equal(view, np.asarray(Image.open(r.decoded_png)))
    fewer = compress.compress_image(models, entry(catalog, runs, "ardm"), str(png), calls=8, out=tmp_path / "out")
    assert fewer.equal and fewer.calls == 8 and fewer.seconds["encode"] > 0
    assert (
        compress.compress_image(models, entry(catalog, runs, "ardm"), str(png), calls=10_000, out=tmp_path).calls == 64
    )


def test_compress_refuses_bad_uploads_with_a_message(runs, catalog, models, tmp_path):
    e = entry(catalog, runs, "ardm")
    (tmp_path / "notes.png").write_text("this is not an image\n")
    Image.new("L", (10, 8)).save(tmp_path / "wide.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "colour.png")
    Image.new("L", (8, 8), 200).save(tmp_path / "bright.png")
    Image.new("L", (512, 512)).save(tmp_path / "huge.png")
    (tmp_path / "heavy.png").write_bytes(b"\x89PNG" + b"\0" * (4 * 2**20 + 1))
    for name, message in [
        ("notes.png", "image: notes.png is not an image file this app can read"),
        ("wide.png", "image: wide.png is 10x8 pixels; this model codes 8x8 greyscale images"),
        ("colour.png", "colour.png: a 3-channel image \\(RGB\\); the model codes 1-channel images"),
        ("bright.png", "pixel value 200 is above this model's 16"),
        ("huge.png", "huge.png is 512x512 pixels, over the limit of 256x256"),
        ("heavy.png", "heavy.png is 4.0 MB, over the limit of 4 MB"),
    ]:
        with pytest.raises(AppError, match=message) as err:
            compress.compress_image(models, e, str(tmp_path / name), out=tmp_path / "out")
        assert str(tmp_path) not in str(err.value) and "\n" not in str(err.value)  # the name, not the server's path
    with pytest.raises(AppError, match="network calls: 0 is below the minimum of 1"):
        compress.compress_image(models, e, str(digit_png(tmp_path / "d.png")), calls=0, out=tmp_path / "out")


# -- vocode ------------------------------------------------------------------------------------------------
def _samples(path: Path) -> int:
    with wave.open(str(path)) as w:
        return w.getnframes()


def test_vocode_writes_the_original_wavegrad_and_griffin_lim(runs, catalog, models, tmp_path):
    tone = write_tone(tmp_path / "tone.wav", seconds=0.5, rate=8000)  # resampled to the model's 16 kHz
    v = vocode.vocode(models, entry(catalog, runs, "wavegrad"), audio=str(tone), steps=3, out=tmp_path / "out")
    n = _samples(v.original)
    assert n == 8000 and _samples(v.wavegrad) == n and _samples(v.griffin_lim) == n
    assert v.seconds == pytest.approx(0.5) and v.wavegrad_seconds > 0 and "real-time factor" in v.summary
    assert v.original.parent == v.wavegrad.parent == v.griffin_lim.parent
    assert v.original.is_relative_to(tmp_path / "out" / "vocode")


def test_vocode_speaks_a_sentence_with_espeak_ng(runs, catalog, models, tmp_path):
    v = vocode.vocode(models, entry(catalog, runs, "wavegrad"), sentence="-h one two", steps=2, out=tmp_path)
    assert v.summary.startswith("espeak-ng:") and 0.3 < v.seconds < 5  # "-h" is spoken, not an option
    assert _samples(v.wavegrad) == _samples(v.original) > 0


def test_vocode_refuses_long_corrupt_or_missing_audio(runs, catalog, models, tmp_path):
    e = entry(catalog, runs, "wavegrad")
    long = write_tone(tmp_path / "long.wav", seconds=10.5)
    with pytest.raises(AppError, match="long.wav is 10.5 s long, over the limit of 10 s"):
        vocode.vocode(models, e, audio=str(long), out=tmp_path)
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x10\0\0\0WAVEfmt garbage" * 3)
    with pytest.raises(AppError, match="audio: broken.wav: not readable audio") as err:
        vocode.vocode(models, e, audio=str(tmp_path / "broken.wav"), out=tmp_path)
    assert str(tmp_path) not in str(err.value)
    with pytest.raises(AppError, match="upload an audio file or type a sentence"):
        vocode.vocode(models, e, sentence=" ", out=tmp_path)
    assert not (tmp_path / "vocode").exists()  # nothing written for refused input
    with pytest.raises(AppError, match="steps: 1000 is over the limit of 256"):
        vocode.vocode(models, e, sentence="hello", steps=1000, out=tmp_path)
    silent = tmp_path / "silent.wav"
    with wave.open(str(silent), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(b"\0\0" * 8000)
    with pytest.raises(AppError, match="silent.wav: the audio is silent"):
        vocode.vocode(models, e, audio=str(silent), out=tmp_path)


# -- video -------------------------------------------------------------------------------------------------
def test_video_samples_and_extends_clips(runs, catalog, models, tmp_path):
    from difflab.data import read_video

    e = entry(catalog, runs, "video")
    c = video.make_video(models, e, n=2, steps=1, out=tmp_path)
    assert c.video.suffix == ".mp4" and c.filmstrip.is_file() and "2 clip(s) of 4 frames" in c.summary
    assert read_video(c.video).shape[0] == 4
    longer = video.make_video(models, e, action="extend", frames=8, steps=1, out=tmp_path)
    assert "1 clip(s) of 8 frames" in longer.summary and read_video(longer.video).shape[0] == 8
    odd = video.make_video(models, e, action="extend", frames=7, steps=1, out=tmp_path)  # clips add 2 frames
    assert "of 8 frames (asked for 7: each new clip adds 2 frames, so 8)" in odd.summary
    from difflab.data import save_video

    gif = save_video(torch.rand(1, 5, 16, 16) * 2 - 1, tmp_path / "in.gif")
    grown = video.make_video(models, e, action="extend", frames=9, video=str(gif), steps=1, out=tmp_path)
    assert "of 9 frames" in grown.summary
    with pytest.raises(AppError, match="frames: 100 is over the limit of 64"):
        video.make_video(models, e, action="extend", frames=100, out=tmp_path)
    with pytest.raises(AppError, match="already has 5 frames"):
        video.make_video(models, e, action="extend", frames=5, video=str(gif), out=tmp_path)
    (tmp_path / "fake.mp4").write_bytes(b"not a video at all")
    with pytest.raises(AppError, match="fake.mp4 is not a video file this app can read"):
        video.make_video(models, e, action="extend", frames=8, video=str(tmp_path / "fake.mp4"), out=tmp_path)
    with pytest.raises(AppError, match="number of clips: 5 is over the limit of 4"):
        video.make_video(models, e, n=5, out=tmp_path)


# -- the command and the page's error handling --------------------------------------------------------------
def test_difflab_app_without_gradio_says_one_line(monkeypatch, capsys):
    assert "app" in cli.COMMANDS and cli.COMMANDS["app"].where == "difflab.app.cli:app"
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio raises ImportError
    assert cli.main(["app", "--no-pretrained"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["difflab: error: difflab app needs Gradio: install the app extra, pip install 'difflab[app]'"]
    assert cli.main(["app", "--port", "70000"]) == 2
    assert "a port is at most 65535" in capsys.readouterr().err


def test_building_the_parser_does_not_import_gradio():
    code = "import sys; from difflab import cli; cli.build_parser(); print('gradio' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_the_page_shows_errors_as_escaped_one_line_messages(caplog):
    import gradio as gr  # the app extra, in the dev extra

    from difflab.app.server import _guarded

    def refuse():
        raise AppError("label: '<img src=x onerror=alert(1)>' is\nnot a class")

    with pytest.raises(gr.Error) as err:
        _guarded(refuse)()
    assert err.value.message == "label: &#x27;&lt;img src=x onerror=alert(1)&gt;&#x27; is not a class"

    def crash():
        raise KeyError("secret detail")

    with pytest.raises(gr.Error) as err:
        _guarded(crash)()
    assert err.value.message == "internal error (KeyError); the server&#x27;s log has the details"
    assert "secret detail" in caplog.text  # logged on the server, not shown in the page
