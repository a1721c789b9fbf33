"""The Gradio page of ``difflab app``: one tab per method, each calling its module's plain function.

:func:`build` makes the :class:`gradio.Blocks`; :func:`launch` serves it. Every request runs through
:func:`_guarded`: an :class:`~.limits.AppError` (or any ``ValueError`` / ``OSError`` a library function
raises for bad input) becomes a one-line, HTML-escaped ``gr.Error`` in the page; anything else is logged
on the server and shown as a one-line internal error, never a traceback. Jobs run one at a time (one
queue for every tab: the machine's cores are shared). Uploads and results live under the output
folder, the only place the server reads files from (:func:`configure`).
"""

from __future__ import annotations

import functools
import html
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import compress as compress_tab
from . import distilled as distilled_tab
from . import sample as sample_tab
from . import video as video_tab
from . import vocode as vocode_tab
from .limits import DEFAULT_LIMITS, AppError, Limits, one_line
from .models import Catalog, Models, describe

log = logging.getLogger("difflab.app")
QUEUE = "difflab-models"  # one queue for every job: one runs at a time
SENTENCE = "Diffusion models turn noise into speech, one small step at a time."
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
MONO_FONTS = ["ui-monospace", "monospace"]
OWN = "the model's own"
IMAGE_HEIGHT = 320  # pixels: small images are shown enlarged
CALLS = 98  # ARDM network calls per image in the page: D / 8 of a 28x28 image (about 10 s each way on 2 cores)


def configure(out: str | Path) -> Path:
    """Point Gradio's upload and cache folders into ``out`` (before Gradio builds anything) and turn its
    analytics off; returns ``out`` resolved."""
    root = Path(out).resolve()
    (root / "uploads").mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(root / "uploads")
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(root / "cache")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    return root


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with its errors turned into one-line messages for the page."""
    import gradio as gr

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (AppError, ValueError, OSError) as e:  # bad input, as the commands report it
            raise gr.Error(html.escape(one_line(e)), print_exception=False) from None
        except Exception as e:
            log.exception("difflab app: %s failed", fn.__name__)
            raise gr.Error(
                html.escape(f"internal error ({type(e).__name__}); the server's log has the details"),
                print_exception=False,
            ) from None

    return run


def _ask(label: str, value: Any) -> str:
    return f"{label} (empty: the model's own, {value})" if value is not None else f"{label} (empty: the model's own)"


def _sample_settings(catalog: Catalog, name: Any) -> tuple[Any, ...]:
    """Page updates for the sampling model ``name``: steps, guidance, label/prompt, description."""
    import gradio as gr

    if not name or name not in catalog.entries:
        return gr.update(), gr.update(), gr.update(), ""
    entry = catalog.entries[name]
    info = describe(entry)
    if info["prompt"]:
        words = gr.update(label="prompt", placeholder="a red bag at the top left")
    elif info["classes"]:
        words = gr.update(
            label=f"label (0 to {info['classes'] - 1}; e.g. 3 or 0,1,2; empty: every class in turn)", placeholder=""
        )
    else:
        words = gr.update(label="label (unconditional model: not used)", placeholder="")
    what = f"**{html.escape(entry.name)}**: {html.escape(entry.method)}"
    if entry.description:
        what += f". {html.escape(entry.description)}"
    if info["sampler"]:
        what += (
            f"<br>Its own settings: {info['sampler']}, {info['steps']} steps, guidance {info['guidance']:g}, "
            f"thresholding {info['threshold']}."
        )
    return (
        gr.update(label=_ask("steps", info["steps"])),
        gr.update(label=_ask("guidance", info["guidance"])),
        words,
        what,
    )


def _no_models(what: str, how: str) -> str:
    return f"**No {what} available.** {how}"


def build(catalog: Catalog, models: Models, out: str | Path, limits: Limits = DEFAULT_LIMITS) -> Any:
    """The page: a tab per method over ``catalog``'s models, writing under ``out``."""
    import gradio as gr

    out = Path(out)
    queue = {"concurrency_id": QUEUE, "concurrency_limit": 1}

    # -- handlers: plain values in, file paths and text out --------------------------------------------
    def run_sample(model, sampler, steps, guidance, threshold, seed, n, words, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 (how Gradio passes progress)
        progress(0, desc="loading the model")
        grid = sample_tab.sample(
            models, catalog.get(model, "sample"), n=n, sampler=sampler, steps=steps, guidance=guidance,
            threshold=threshold, seed=seed, label_or_prompt=words, out=out, limits=limits, progress=True,
        )  # fmt: skip
        return str(grid.path), grid.summary

    def run_distilled(model, label, n, seed, teacher_steps, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 (how Gradio passes progress)
        progress(0, desc="loading the student and its teacher")
        c = distilled_tab.compare(
            catalog, models, catalog.get(model, "distilled"), n=n, label=label, seed=seed,
            teacher_steps=teacher_steps, out=out, limits=limits, progress=True,
        )  # fmt: skip
        return str(c.student), str(c.teacher), round(c.student_seconds, 3), round(c.teacher_seconds, 3), c.summary

    def run_compress(model, image, calls, progress=gr.Progress()):  # noqa: B008 (how Gradio passes progress)
        progress(0, desc="coding and decoding")
        r = compress_tab.compress_image(
            models, catalog.get(model, "compress"), image, calls=calls, out=out, limits=limits
        )
        rows = [("ARDM (this model)", r.ardm_bytes, r.bits_per_pixel)]
        rows += [(name, r.sizes[key], r.bpp(key)) for key, name in (("png", "PNG"), ("jpegxl", "JPEG-XL lossless"))
                 if key in r.sizes]  # fmt: skip
        table = "| codec | bytes | bits per pixel |\n|---|---:|---:|\n" + "\n".join(
            f"| {name} | {size} | {bpp:.3f} |" for name, size, bpp in rows
        )
        table += f"\n\nARDM payload alone: {r.payload_bits} bits, {r.payload_bits_per_pixel:.3f} bits per pixel."
        if "jpegxl" not in r.sizes:
            table += " JPEG-XL: not available (pip install imagecodecs)."
        verdict = (
            "yes, the decoded image equals the input pixel for pixel" if r.equal else "NO, the decoded image differs"
        )
        return (
            str(r.input_png), str(r.decoded_png), table, verdict, r.summary,
            [str(r.ardm_file), str(r.decoded_exact)],
        )  # fmt: skip

    def run_vocode(model, audio, sentence, steps, seed, progress=gr.Progress()):  # noqa: B008 (how Gradio passes progress)
        progress(0, desc="vocoding")
        v = vocode_tab.vocode(
            models, catalog.get(model, "vocode"), audio=audio, sentence=sentence, steps=steps, seed=seed, out=out,
            limits=limits,
        )  # fmt: skip
        return str(v.original), str(v.wavegrad), str(v.griffin_lim), v.summary

    def run_video(model, action, n, frames, upload, label, steps, seed, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 (how Gradio passes progress)
        progress(0, desc="loading the model")
        clip = video_tab.make_video(
            models, catalog.get(model, "video"), action=action, n=n, frames=frames, video=upload, label=label,
            steps=steps, seed=seed, out=out, limits=limits, progress=True,
        )  # fmt: skip
        return str(clip.video), str(clip.filmstrip), clip.summary

    def first(tab: str) -> str | None:
        names = catalog.names(tab)
        return names[0] if names else None

    with gr.Blocks(title="difflab", analytics_enabled=False) as demo:
        gr.Markdown(
            "# difflab\nDiffusion models from the difflab toolkit, one tab per method. Jobs run one at a time on "
            f"this machine; results are written under `{html.escape(str(out))}`. Limits: images up to "
            f"{limits.image_side}x{limits.image_side} pixels and {limits.image_bytes / 2**20:g} MB, audio up to "
            f"{limits.audio_seconds:g} s, up to {limits.steps} steps and {limits.images} images per request."
        )
        with gr.Tab("Sample", id="sample"):
            names = catalog.names("sample")
            if not names:
                gr.Markdown(_no_models("sampling model", "Start the app with --model RUN (a run of difflab train)."))
            with gr.Row():
                s_model = gr.Dropdown(names, value=first("sample"), label="model", elem_id="sample-model")
                s_sampler = gr.Dropdown(["default", *sample_tab.SAMPLERS], value="default", label="sampler")
                s_threshold = gr.Dropdown(["default", *sample_tab.THRESHOLDS], value="default", label="thresholding")
            s_about = gr.Markdown()
            with gr.Row():
                s_steps = gr.Textbox(label="steps", placeholder=OWN, elem_id="sample-steps")
                s_guidance = gr.Textbox(label="guidance", placeholder=OWN, elem_id="sample-guidance")
                s_seed = gr.Number(value=0, precision=0, minimum=0, label="seed")
                s_n = gr.Slider(1, limits.images, value=4, step=1, label="number of images", elem_id="sample-n")
            s_words = gr.Textbox(label="label or prompt", elem_id="sample-words")
            s_go = gr.Button("Sample", variant="primary", elem_id="sample-run")
            s_image = gr.Image(
                label="samples",
                type="filepath",
                interactive=False,
                format="png",
                height=IMAGE_HEIGHT,
                elem_id="sample-image",
            )
            s_info = gr.Textbox(label="result", interactive=False, elem_id="sample-info")
            s_go.click(
                _guarded(run_sample), [s_model, s_sampler, s_steps, s_guidance, s_threshold, s_seed, s_n, s_words],
                [s_image, s_info], **queue,
            )  # fmt: skip
            settings = functools.partial(_sample_settings, catalog)
            s_model.change(settings, s_model, [s_steps, s_guidance, s_words, s_about], queue=False)
            demo.load(settings, s_model, [s_steps, s_guidance, s_words, s_about], queue=False)

        with gr.Tab("Distilled vs teacher", id="distilled"):
            if not catalog.names("distilled"):
                gr.Markdown(
                    _no_models("distilled model", "Start the app with --model RUN, a student of difflab distill.")
                )
            gr.Markdown(
                "The distilled student (a few steps) and its teacher draw the same labels from the same seed; "
                "each wall time counts sampling only."
            )
            with gr.Row():
                d_model = gr.Dropdown(
                    catalog.names("distilled"), value=first("distilled"), label="student", elem_id="distilled-model"
                )
                d_label = gr.Textbox(label="label (empty: every class in turn)")
                d_n = gr.Slider(1, limits.images, value=4, step=1, label="number of images")
                d_seed = gr.Number(value=0, precision=0, minimum=0, label="seed")
                d_steps = gr.Textbox(label="teacher steps (empty: the teacher's own)", placeholder=OWN)
            d_go = gr.Button("Compare", variant="primary", elem_id="distilled-run")
            with gr.Row():
                with gr.Column():
                    d_student = gr.Image(
                        label="student",
                        type="filepath",
                        interactive=False,
                        format="png",
                        height=IMAGE_HEIGHT,
                        elem_id="distilled-student",
                    )
                    d_s_time = gr.Number(label="student wall time (s)", interactive=False, elem_id="distilled-s-time")
                with gr.Column():
                    d_teacher = gr.Image(
                        label="teacher",
                        type="filepath",
                        interactive=False,
                        format="png",
                        height=IMAGE_HEIGHT,
                        elem_id="distilled-teacher",
                    )
                    d_t_time = gr.Number(label="teacher wall time (s)", interactive=False, elem_id="distilled-t-time")
            d_info = gr.Textbox(label="result", interactive=False, elem_id="distilled-info")
            d_go.click(
                _guarded(run_distilled), [d_model, d_label, d_n, d_seed, d_steps],
                [d_student, d_teacher, d_s_time, d_t_time, d_info], **queue,
            )  # fmt: skip

        with gr.Tab("Compress", id="compress"):
            if not catalog.names("compress"):
                gr.Markdown(_no_models("ARDM", "Start the app with --model RUN, a run of difflab ardm-train."))
            gr.Markdown(
                "Lossless compression with an autoregressive diffusion model (rANS): the image is coded, decoded "
                "and compared with the input, beside the PNG and JPEG-XL sizes of the same image. The image must "
                "have the model's size and channels (e.g. 28x28 greyscale for Fashion-MNIST)."
            )
            with gr.Row():
                c_model = gr.Dropdown(
                    catalog.names("compress"), value=first("compress"), label="model", elem_id="compress-model"
                )
                c_calls = gr.Textbox(
                    value=str(CALLS),
                    label="network calls per image (fewer: faster, a few more bits; empty: all)",
                    placeholder="all",
                    elem_id="compress-calls",
                )
            c_file = gr.File(label="image (PNG ...)", type="filepath", elem_id="compress-file")
            c_go = gr.Button("Compress and decompress", variant="primary", elem_id="compress-run")
            with gr.Row():
                c_input = gr.Image(
                    label="input",
                    type="filepath",
                    interactive=False,
                    format="png",
                    height=IMAGE_HEIGHT,
                    elem_id="compress-input",
                )
                c_decoded = gr.Image(
                    label="decoded",
                    type="filepath",
                    interactive=False,
                    format="png",
                    height=IMAGE_HEIGHT,
                    elem_id="compress-decoded",
                )
            c_table = gr.Markdown(elem_id="compress-table")
            c_equal = gr.Textbox(label="lossless?", interactive=False, elem_id="compress-equal")
            c_info = gr.Textbox(label="result", interactive=False, elem_id="compress-info")
            c_files = gr.File(label="the .ardm file and the decoded PNG", interactive=False, file_count="multiple")
            c_go.click(
                _guarded(run_compress), [c_model, c_file, c_calls],
                [c_input, c_decoded, c_table, c_equal, c_info, c_files], **queue,
            )  # fmt: skip

        with gr.Tab("Vocode", id="vocode"):
            if not catalog.names("vocode"):
                gr.Markdown(_no_models("WaveGrad model", "Start the app with --model RUN, a run of wavegrad-train."))
            gr.Markdown(
                f"WaveGrad re-synthesises speech from its mel spectrogram; Griffin-Lim on the same mel is the "
                f"classical baseline. Upload an audio file (up to {limits.audio_seconds:g} s), or leave it empty "
                "and espeak-ng speaks the sentence."
            )
            with gr.Row():
                v_model = gr.Dropdown(
                    catalog.names("vocode"), value=first("vocode"), label="model", elem_id="vocode-model"
                )
                v_steps = gr.Slider(1, 50, value=6, step=1, label="steps")
                v_seed = gr.Number(value=0, precision=0, minimum=0, label="seed")
            v_file = gr.File(label="audio file (WAV, FLAC, MP3 ...)", type="filepath", elem_id="vocode-file")
            v_sentence = gr.Textbox(value=SENTENCE, label="or a sentence to speak", elem_id="vocode-sentence")
            v_go = gr.Button("Vocode", variant="primary", elem_id="vocode-run")
            with gr.Row():
                v_orig = gr.Audio(label="original", type="filepath", interactive=False, elem_id="vocode-original")
                v_wg = gr.Audio(label="WaveGrad", type="filepath", interactive=False, elem_id="vocode-wavegrad")
                v_gl = gr.Audio(label="Griffin-Lim", type="filepath", interactive=False, elem_id="vocode-griffin-lim")
            v_info = gr.Textbox(label="result", interactive=False, elem_id="vocode-info")
            v_go.click(
                _guarded(run_vocode), [v_model, v_file, v_sentence, v_steps, v_seed], [v_orig, v_wg, v_gl, v_info],
                **queue,
            )  # fmt: skip

        with gr.Tab("Video", id="video"):
            if not catalog.names("video"):
                gr.Markdown(
                    _no_models(
                        "video model",
                        "No pretrained video model ships with difflab yet. Start the app with --video RUN, a run of "
                        "difflab train with a video recipe (e.g. configs/video-moving.yaml), to sample and extend "
                        "clips here.",
                    ),
                    elem_id="video-none",
                )
            else:
                gr.Markdown("Sample clips of the model's length, or extend a clip (uploaded, or sampled first).")
                with gr.Row():
                    w_model = gr.Dropdown(
                        catalog.names("video"), value=first("video"), label="model", elem_id="video-model"
                    )
                    w_action = gr.Radio(list(video_tab.ACTIONS), value="sample", label="action")
                    w_n = gr.Slider(1, video_tab.MAX_CLIPS, value=1, step=1, label="clips")
                    w_frames = gr.Number(value=16, precision=0, label=f"extend to frames (up to {limits.frames})")
                with gr.Row():
                    w_label = gr.Textbox(label="label (class-conditional; empty: every class in turn)")
                    w_steps = gr.Textbox(label="steps (empty: the model's own)", placeholder=OWN)
                    w_seed = gr.Number(value=0, precision=0, minimum=0, label="seed")
                w_file = gr.File(label="clip to extend (optional: GIF, MP4 ...)", type="filepath")
                w_go = gr.Button("Make video", variant="primary", elem_id="video-run")
                w_video = gr.Video(label="video", interactive=False, elem_id="video-output")
                w_strip = gr.Image(
                    label="frames",
                    type="filepath",
                    interactive=False,
                    format="png",
                    height=IMAGE_HEIGHT,
                    elem_id="video-frames",
                )
                w_info = gr.Textbox(label="result", interactive=False, elem_id="video-info")
                w_go.click(
                    _guarded(run_video), [w_model, w_action, w_n, w_frames, w_file, w_label, w_steps, w_seed],
                    [w_video, w_strip, w_info], **queue,
                )  # fmt: skip
    demo.queue(default_concurrency_limit=1, max_size=32)
    return demo


def launch(demo: Any, out: Path, host: str, port: int, limits: Limits = DEFAULT_LIMITS, block: bool = True) -> Any:
    """Serve ``demo`` on ``host:port``; files are served only from ``out`` (results, and uploads, which
    :func:`configure` put there). The theme uses the system's fonts: the page loads nothing from elsewhere."""
    import gradio as gr

    return demo.launch(
        server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=not block,
        allowed_paths=[str(out)], max_file_size=limits.upload_bytes, show_error=False, footer_links=[],
        run_history=False, ssr_mode=False, pwa=False, mcp_server=False, enable_monitoring=False, quiet=True,
        theme=gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS),
    )  # fmt: skip
