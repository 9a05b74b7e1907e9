"""The web page (Gradio) behind ``gscorecam app``, on top of the functions the command line calls.

The page is built by :func:`build_app`; gradio, torch and the model are imported or loaded only
when it is called, never when this module is imported. Bad input is a message in the page that
stays until closed (the library's ValueError as ``gr.Error``) and one line in the server's log,
without a traceback. Every result says what made it (``provenance.Provenance``) and warns when
the maps cannot mean anything. Gradio's analytics are switched off before it is imported: the
app phones no one.

The app writes its scenes and maps in one temporary folder, ``gscorecam-app-<pid>-*`` in the
system's temporary directory, removed by ``page.close()``, when the page is garbage collected
and when Python exits; folders left by app processes that no longer run (killed) are removed
when the next page is built.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
import warnings
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import gradio as gr
    import numpy as np

__all__ = ["build_app", "import_gradio", "parse_prompts"]

# The app's temporary folders: TEMPORARY_PREFIX + "<pid>-" + a random part.
TEMPORARY_PREFIX = "gscorecam-app-"
# The page's style: every overlay's caption shown (Gradio shows them on hover only).
PAGE_CSS = "#overlays .caption-label {opacity: 1 !important; white-space: normal; max-width: 95%}"
# The shapes scene seeds the page takes (numpy's generators take any int >= 0; this keeps the
# scene's file name short).
MAX_SEED = 2**63 - 1


def parse_prompts(text: str) -> list[str]:
    r"""The prompts typed in the page, one per line (commas stay inside a prompt).

    Args:

        text (str): The text box's content.

    Returns:
        *list[str]*: one prompt per line with text, surrounding spaces removed.

    Raises:
        ValueError: No line has text.
    """
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ValueError("prompts: type at least one prompt, one per line")
    return prompts


def build_app(
    model: str = "shapes-rn",
    pretrained: str | None = None,
    device: str = "cpu",
    *,
    loaded: tuple[Any, Any, Any] | None = None,
) -> gr.Blocks:
    r"""The page: a photo (uploaded or a shapes scene), prompts, method, k and precision in;
    overlays on the photo, the CLIP score per prompt, the time and the maps (``.npy``) out.

    The model is loaded here, once, as the command line loads it (``loading.load_model``);
    ``page.close()`` also removes the page's temporary folder.

    Args:

        model (str, optional): ``shapes-rn``, ``shapes-vit``, an open_clip name or ``hf:REPO``.
                    Default: "shapes-rn"
        pretrained (str, optional): An open_clip tag or a checkpoint file.
                    Default: None
        device (str, optional): Where the model runs.
                    Default: "cpu"
        loaded (tuple, optional): ``load_model(model, pretrained, device)``'s result, when the
                    caller has loaded it already.
                    Default: None

    Returns:
        *gr.Blocks*: the page; ``.launch()`` serves it.

    Raises:
        ImportError: gradio is not installed (the message names the extra).
        ValueError: The model cannot be loaded.
    """
    gr = import_gradio()
    from captum_gscorecam.loading import describe_weights, load_model
    from captum_gscorecam.methods import applicable_methods

    clip, preprocess, tokenizer = loaded or load_model(model, pretrained, device)
    explainer = _Explainer(clip, preprocess, tokenizer, device, model, pretrained)
    # Gradio keeps a copy of every returned file (overlays, maps); drop those over an hour old.
    with gr.Blocks(title="gScoreCAM: what is CLIP looking at?", delete_cache=(3600, 3600)) as page:
        gr.Markdown(
            f"## What is CLIP looking at?\nModel `{model}` ({describe_weights(model, pretrained)})"
            ": upload a photo or pick a shapes scene, type prompts **one per line**, and explain."
        )
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                given = _inputs(gr, applicable_methods(clip))
            with gr.Column(scale=3):
                shown = _outputs(gr)

        def explain(
            path: str | None,
            prompts_text: str,
            method: str,
            topk_text: str,
            precision: str,
            scale: str = "shared",
            progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008 (gradio's way)
        ) -> tuple:
            return explainer.explain(
                path, prompts_text, method, topk_text, precision, scale, progress
            )

        given["photo"].change(
            explainer.preview, given["photo"], given["preview"], api_name="preview"
        )
        given["scene"].click(
            explainer.scene,
            [given["seed"], given["objects"]],
            [given["photo"], given["prompts"]],
            api_name="scene",
        )
        given["run"].click(
            explain,
            [given[name] for name in ("photo", "prompts", "method", "topk", "precision", "scale")],
            [
                shown[name]
                for name in ("overlays", "scores", "status", "download", "figure", "record")
            ],
            api_name="explain",
        )
    close, launch = page.close, page.launch

    def close_and_clean(verbose: bool = True) -> None:
        try:
            close(verbose)
        finally:
            explainer.close()

    def launch_styled(*args: Any, css: str | None = None, **kwargs: Any) -> Any:
        return launch(*args, css=PAGE_CSS if css is None else f"{PAGE_CSS}\n{css}", **kwargs)

    page.close = close_and_clean
    page.launch = launch_styled
    return page


def _inputs(gr: Any, methods: list[str]) -> dict[str, Any]:
    """The left column: the photo (or a shapes scene), the prompts, the method's settings."""
    from captum_gscorecam.precision import PRECISIONS
    from captum_gscorecam.registry import SPECS
    from captum_gscorecam.shapes.train import HELD_OUT_SEED
    from captum_gscorecam.visualization import SCALES

    uses = {option: _labels(option) for option in ("precision", "topk")}

    given = {
        "photo": gr.File(label="Photo", file_types=["image"], elem_id="photo"),
        "preview": gr.Image(label="Your photo", interactive=False, height=180, elem_id="preview"),
    }
    with gr.Row():
        given["seed"] = gr.Number(HELD_OUT_SEED, label="Shapes scene seed", precision=0)
        given["objects"] = gr.Slider(1, 6, value=3, step=1, label="Objects")
    given["scene"] = gr.Button("Use this shapes scene", size="sm", elem_id="scene")
    given["prompts"] = gr.Textbox(label="Prompts (one per line)", lines=3, elem_id="prompts")
    with gr.Row():
        given["method"] = gr.Dropdown(
            [(SPECS[m].label, m) for m in methods],
            value=methods[0],
            label="Method",
            allow_custom_value=True,  # the API takes the label ("gScoreCAM") too
        )
        given["precision"] = gr.Dropdown(
            list(PRECISIONS),
            value="auto",
            label="Precision",
            info=f"of the masked passes ({uses['precision']})",
        )
    given["topk"] = gr.Textbox(
        "",
        label=f"k ({uses['topk']}): channels kept",
        info="a count (300) or a fraction of the channels (0.1); empty: 10% on CNNs, 50% on ViTs",
        elem_id="topk",
    )
    given["scale"] = gr.Radio(
        list(SCALES),
        value="shared",
        label="Colour scale",
        info="shared: one scale for all prompts (a prompt the model rejects looks cold); "
        "per-prompt: each map from its own minimum to maximum",
        elem_id="scale",
    )
    given["run"] = gr.Button("Explain", variant="primary", elem_id="explain")
    return given


def _outputs(gr: Any) -> dict[str, Any]:
    """The right column: what ran, the overlays, the scores, the maps and what made them to
    download, the figure ``gscorecam explain`` writes.
    """
    shown = {
        "status": gr.Markdown(elem_id="status"),
        "overlays": gr.Gallery(
            label="Overlays on the photo (click one to enlarge)",
            columns=2,
            height="auto",
            object_fit="contain",
            elem_id="overlays",
        ),
        "scores": gr.Dataframe(
            headers=["prompt", "CLIP score (logit_scale * cos)"],
            label="CLIP score per prompt",
            interactive=False,
            elem_id="scores",
        ),
        "download": gr.File(label="Maps (.npy, float32 (T, H, W), NaN where cropped)"),
        "record": gr.File(
            label="What made the maps (.json: prompts, scores, provenance, warnings)",
            elem_id="record",
        ),
    }
    caption = "The figure gscorecam explain writes: what made it, the maps, the colour bar"
    gr.Markdown(f"{caption} (its full-screen button enlarges it)")
    shown["figure"] = gr.Image(
        label=caption,
        show_label=False,  # the label's badge would hide the figure's title block
        interactive=False,
        height=560,  # whole, however many prompts (a row each)
        elem_id="figure",
    )
    return shown


class _Explainer:
    """The page's callbacks around one loaded model; library calls only."""

    def __init__(
        self,
        model: Any,
        preprocess: Any,
        tokenizer: Any,
        device: str,
        name: str,
        pretrained: str | None,
    ) -> None:
        self.model, self.preprocess, self.tokenizer = model, preprocess, tokenizer
        self.device = device
        self.name, self.pretrained = name, pretrained  # as loaded: what the results say
        self.scenes: set[str] = set()  # the SHA-256 of the shapes scenes the page drew
        _sweep_temporary_folders()
        self.folder = Path(tempfile.mkdtemp(prefix=f"{TEMPORARY_PREFIX}{os.getpid()}-"))
        # at garbage collection and at exit (also after close, should a request recreate it)
        weakref.finalize(self, shutil.rmtree, str(self.folder), True)

    def close(self) -> None:
        """Remove the temporary folder (the scenes and maps the page wrote)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def preview(self, path: str | None) -> np.ndarray | None:
        """The uploaded photo as the model will read it, or the reason it cannot be read."""
        if path is None:
            return None
        import numpy as np

        from captum_gscorecam.images import for_display

        try:
            photo = _read(path)
        except ValueError as error:
            raise _refused(error) from None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # said when the photo is explained
            return np.asarray(for_display(photo))

    def scene(self, seed: float, objects: float) -> tuple[str, str]:
        """A held-out shapes scene written as a PNG, and its captions as the prompts."""
        from PIL import Image

        from captum_gscorecam.outputs import OutputError, atomic_file
        from captum_gscorecam.shapes import render_scene

        try:
            seed = _whole_number(seed, "seed", 0, MAX_SEED)
            objects = _whole_number(objects, "objects", 1, 6)
            drawn = render_scene(seed, objects)
            path = self.folder / f"scene-{seed}-{objects}.png"
            with atomic_file(path) as file:
                Image.fromarray(drawn.image).save(file, format="PNG")
            self.scenes.add(_digest(path))
        except (ValueError, TypeError, OutputError) as error:
            raise _refused(error) from None
        return str(path), "\n".join(drawn.captions)

    def explain(
        self,
        path: str | None,
        prompts_text: str,
        method: str,
        topk_text: str,
        precision: str,
        scale: str,
        progress: gr.Progress,
    ) -> tuple[list[tuple[np.ndarray, str]], list[list[Any]], str, str, str, str]:
        """Overlays, scores, a status line (with what made them and any warning), the ``.npy``
        path, the figure's path and the path of the maps' record (``gscorecam explain
        --save-maps``'s ``<image>.json``: prompts, scores, scale, provenance, warnings); bad
        input raises gr.Error.
        """
        import numpy as np

        from captum_gscorecam.checks import topk_from_text
        from captum_gscorecam.clip import encode_text
        from captum_gscorecam.methods import run_provenance
        from captum_gscorecam.outputs import (
            OutputError,
            write_figure,
            write_json,
            write_npy_slices,
        )
        from captum_gscorecam.photos import explain_photo
        from captum_gscorecam.precision import resolve_precision
        from captum_gscorecam.registry import method_spec
        from captum_gscorecam.visualization import map_ranges, overlay, photo_figure

        gr = import_gradio()
        try:
            if path is None:
                raise ValueError("photo: upload a photo or pick a shapes scene first")
            prompts = parse_prompts(prompts_text or "")
            method = _method_key(method)
            topk = topk_from_text(topk_text or "", "k")
            if topk is not None and not method_spec(method).takes("topk"):
                raise ValueError(
                    f"k: {method_spec(method).label} does not use k; it applies to "
                    f"{_labels('topk')} (leave it empty)"
                )
            map_ranges([], scale)  # the scale checked before the work
            dtype = resolve_precision(precision, self.device, self.model)
            photo = _read(path)
            progress(0, desc="explaining")
            start = time.perf_counter()
            text = encode_text(self.model, self.tokenizer, prompts)
            maps, scores = explain_photo(
                self.model,
                self.preprocess,
                photo,
                text,
                method,
                topk,
                show_progress=True,
                precision=dtype,
            )
            seconds = time.perf_counter() - start
            device = next(self.model.parameters()).device
            provenance = run_provenance(
                self.model, self.preprocess(photo)[None].to(device), method, name=self.name,
                pretrained=self.pretrained, topk=topk, precision=dtype,
            )  # fmt: skip
        except (ValueError, TypeError) as error:
            raise _refused(error) from None
        said = provenance.warnings(shapes_scene=_digest(path) in self.scenes)
        drawn, shown = self._drawn(photo, Path(path).name)
        for warning in [*said, *shown]:
            gr.Warning(warning)
        drawn_maps = maps.at_size(drawn.size)
        ranges = map_ranges(drawn_maps, scale)
        gallery = [
            (_uint8(overlay(drawn, saliency, vmin=low, vmax=high)), f"{prompt}: {score:.2f}")
            for saliency, prompt, score, (low, high) in zip(
                drawn_maps, prompts, scores, ranges, strict=True
            )
        ]
        figure = photo_figure(
            drawn, drawn_maps, prompts, scores, provenance.method, scale=scale,
            title=provenance.line(), warnings=said,
        )  # fmt: skip
        # one request at a time; Gradio copies what it returns
        out, drawn_figure = self.folder / "gscorecam-maps.npy", self.folder / "figure.png"
        record = self.folder / "gscorecam-maps.json"
        made = {
            "image": Path(path).name,
            "prompts": prompts,
            "texts": prompts,  # the page has no template
            "scores": [float(score) for score in scores],
            "scale": scale,
            "provenance": provenance.as_dict(),
            "warnings": said,
        }
        try:
            write_npy_slices(out, maps, maps.shape, np.float32)  # one map in memory at a time
            write_figure(drawn_figure, figure, dpi=100)
            write_json(record, made)
        except OutputError as error:
            raise _refused(error) from None
        rows = [[p, round(float(s), 2)] for p, s in zip(prompts, scores, strict=True)]
        status = _status(method, len(prompts), dtype, seconds, provenance.line(), said)
        return gallery, rows, status, str(out), str(drawn_figure), str(record)

    def _drawn(self, photo: Any, name: str) -> tuple[Any, list[str]]:
        """The photo as drawn (downscaled above the display limit) and the warnings that says."""
        from captum_gscorecam.images import for_display

        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            drawn = for_display(photo, name)
        return drawn, [str(warning.message) for warning in said]


def _status(
    method: str, prompts: int, dtype: Any, seconds: float, line: str, warned: list[str]
) -> str:
    """What ran and how long it took, e.g. "gScoreCAM on 2 prompts (bf16 masked passes): 1.2 s",
    then what made it (the provenance ``line``) and each warning.
    """
    from captum_gscorecam.precision import precision_name
    from captum_gscorecam.registry import SPECS

    plural = "s" if prompts > 1 else ""
    masked = ""
    if SPECS[method].takes("precision"):
        masked = f" ({precision_name(dtype)} masked passes)"
    said = "".join(f"\n\n**{warning}**" for warning in warned)
    return (
        f"{SPECS[method].label} on {prompts} prompt{plural}{masked}: **{seconds:.2f} s**"
        f"\n\n`{line}`{said}"
    )


def _refused(error: Exception) -> Any:
    """A user's mistake as the page's message, kept until closed, and one line in the server's
    log (no traceback: it is not the app's fault).
    """
    import sys

    message = str(error)
    print(f"gscorecam app: refused: {message}", file=sys.stderr, flush=True)
    return import_gradio().Error(message, duration=None, print_exception=False)


def _method_key(method: object) -> str:
    """The registry key of ``method``, given as its key (``gscorecam``) or as the page shows it,
    its label (``gScoreCAM``).
    """
    from captum_gscorecam.registry import SPECS

    by_label = {spec.label: key for key, spec in SPECS.items()}
    if method in SPECS:
        return str(method)
    if method in by_label:
        return by_label[method]
    raise ValueError(
        f"method: expected one of {', '.join(SPECS)} (or their labels: {', '.join(by_label)}), "
        f"got {method!r}"
    )


def _digest(path: str | Path) -> str:
    """The SHA-256 of a file's bytes: a shapes scene the page drew, wherever Gradio copied it."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _labels(option: str) -> str:
    """The labels of the methods that use ``option``, e.g. "gScoreCAM, ScoreCAM"."""
    from captum_gscorecam.registry import SPECS

    return ", ".join(spec.label for spec in SPECS.values() if spec.takes(option))


def _whole_number(value: object, name: str, low: int, high: int) -> int:
    """A number from the page (an int, or a float with a whole value) in ``[low, high]``."""
    from captum_gscorecam.checks import describe

    whole = value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        whole = int(value)
    if not isinstance(whole, int) or isinstance(whole, bool) or not low <= whole <= high:
        raise ValueError(
            f"{name}: expected a whole number from {low} to {high}, got {describe(value)}"
        )
    return whole


def _sweep_temporary_folders() -> None:
    """Remove the temporary folders of app processes of this user that no longer run."""
    if os.name != "posix":  # os.kill(pid, 0) asks whether a process runs on POSIX only
        return
    for folder in Path(tempfile.gettempdir()).glob(f"{TEMPORARY_PREFIX}*-*"):
        pid = folder.name.removeprefix(TEMPORARY_PREFIX).partition("-")[0]
        try:
            if not pid.isdigit() or folder.stat().st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)  # raises if no such process
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # another user's process, or a folder gone meanwhile: leave it
            continue


def _read(path: str) -> Any:
    """``images.read_image``, the command line's reader; errors name the file, not its path."""
    from captum_gscorecam.images import read_image

    try:
        return read_image(path)
    except ValueError as error:
        raise ValueError(str(error).replace(str(path), Path(path).name)) from None


def _uint8(image: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.rint(image * 255).astype(np.uint8)


def import_gradio() -> Any:
    r"""gradio, imported with its analytics off.

    Returns:
        *module*: ``gradio``.

    Raises:
        ImportError: gradio is not installed; the message names the ``app`` extra.
    """
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio
    except ImportError:
        raise ImportError("the web app needs gradio: pip install 'captum-gscorecam[app]'") from None
    return gradio
