"""The web page (Gradio) behind ``gscorecam app``, on top of the functions the command line calls.

The page is built by :func:`build_app`; gradio, torch and the model are imported or loaded only
when it is called, never when this module is imported. Bad input is a message in the page (the
library's ValueError as ``gr.Error``). Gradio's analytics are switched off before it is
imported: the app phones no one.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import gradio as gr
    import numpy as np

__all__ = ["build_app", "import_gradio", "parse_prompts"]


def parse_prompts(text: str) -> list[str]:
    """The prompts typed in the page, one per line (commas stay inside a prompt).

    Raises a ValueError naming ``prompts`` when no line has text.
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
    """The page: a photo (uploaded or a shapes scene), prompts, method, k and precision in;
    overlays on the photo, the CLIP score per prompt, the time and the maps (``.npy``) out.

    The model is loaded here, once (``loading.load_model``, as the command line loads it), or
    given as ``loaded``: ``load_model(model, pretrained, device)``'s result; a model that cannot
    be loaded raises its ValueError.
    """
    gr = import_gradio()
    from captum_gscorecam.loading import load_model
    from captum_gscorecam.methods import applicable_methods

    clip, preprocess, tokenizer = loaded or load_model(model, pretrained, device)
    explainer = _Explainer(clip, preprocess, tokenizer, device)
    # Gradio keeps a copy of every returned file (overlays, maps); drop those over an hour old.
    with gr.Blocks(title="gScoreCAM: what is CLIP looking at?", delete_cache=(3600, 3600)) as page:
        gr.Markdown(
            f"## What is CLIP looking at?\nModel `{model}`: upload a photo or pick a shapes "
            "scene, type prompts **one per line**, and explain."
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
            progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008 (gradio's way)
        ) -> tuple:
            return explainer.explain(path, prompts_text, method, topk_text, precision, progress)

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
            [given[name] for name in ("photo", "prompts", "method", "topk", "precision")],
            [shown[name] for name in ("overlays", "scores", "status", "download")],
            api_name="explain",
        )
    return page


def _inputs(gr: Any, methods: list[str]) -> dict[str, Any]:
    """The left column: the photo (or a shapes scene), the prompts, the method's settings."""
    from captum_gscorecam.precision import PRECISIONS
    from captum_gscorecam.registry import SPECS
    from captum_gscorecam.shapes.train import HELD_OUT_SEED

    uses = {option: _labels(option) for option in ("precision", "topk")}

    given = {
        "photo": gr.File(label="Photo", file_types=["image"], height=90, elem_id="photo"),
        "preview": gr.Image(label="Your photo", interactive=False, height=180, elem_id="preview"),
    }
    with gr.Row():
        given["seed"] = gr.Number(HELD_OUT_SEED, label="Shapes scene seed", precision=0)
        given["objects"] = gr.Slider(1, 6, value=3, step=1, label="Objects")
    given["scene"] = gr.Button("Use this shapes scene", size="sm", elem_id="scene")
    given["prompts"] = gr.Textbox(label="Prompts (one per line)", lines=3, elem_id="prompts")
    with gr.Row():
        given["method"] = gr.Dropdown(
            [(SPECS[m].label, m) for m in methods], value=methods[0], label="Method"
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
    given["run"] = gr.Button("Explain", variant="primary", elem_id="explain")
    return given


def _outputs(gr: Any) -> dict[str, Any]:
    """The right column: what ran, the overlays, the scores, the maps to download."""
    return {
        "status": gr.Markdown(elem_id="status"),
        "overlays": gr.Gallery(
            label="Overlays on the photo",
            columns=3,
            height=270,
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
    }


class _Explainer:
    """The page's callbacks around one loaded model; library calls only."""

    def __init__(self, model: Any, preprocess: Any, tokenizer: Any, device: str) -> None:
        self.model, self.preprocess, self.tokenizer = model, preprocess, tokenizer
        self.device = device
        self.folder = Path(tempfile.mkdtemp(prefix="gscorecam-app-"))

    def preview(self, path: str | None) -> np.ndarray | None:
        """The uploaded photo as the model will read it, or the reason it cannot be read."""
        if path is None:
            return None
        import numpy as np

        try:
            return np.asarray(_read(path))
        except ValueError as error:
            raise import_gradio().Error(str(error)) from None

    def scene(self, seed: float, objects: float) -> tuple[str, str]:
        """A held-out shapes scene written as a PNG, and its captions as the prompts."""
        from PIL import Image

        from captum_gscorecam.shapes import render_scene

        try:
            drawn = render_scene(int(seed), int(objects))
        except (ValueError, TypeError) as error:
            raise import_gradio().Error(str(error)) from None
        path = self.folder / f"scene-{int(seed)}-{int(objects)}.png"
        Image.fromarray(drawn.image).save(path)
        return str(path), "\n".join(drawn.captions)

    def explain(
        self,
        path: str | None,
        prompts_text: str,
        method: str,
        topk_text: str,
        precision: str,
        progress: gr.Progress,
    ) -> tuple[list[tuple[np.ndarray, str]], list[list[Any]], str, str]:
        """Overlays, scores, a status line and the ``.npy`` path; bad input raises gr.Error."""
        import numpy as np

        from captum_gscorecam.checks import topk_from_text
        from captum_gscorecam.clip import encode_text
        from captum_gscorecam.explain import explain_photo
        from captum_gscorecam.precision import resolve_precision
        from captum_gscorecam.visualization import overlay

        try:
            if path is None:
                raise ValueError("photo: upload a photo or pick a shapes scene first")
            prompts = parse_prompts(prompts_text or "")
            topk = topk_from_text(topk_text or "", "k")
            dtype = resolve_precision(precision, self.device)
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
        except (ValueError, TypeError) as error:
            raise import_gradio().Error(str(error)) from None
        gallery = [
            (_uint8(overlay(photo, saliency)), f"{prompt}: {score:.2f}")
            for saliency, prompt, score in zip(maps, prompts, scores, strict=True)
        ]
        out = self.folder / "gscorecam-maps.npy"  # one request at a time; Gradio copies it
        np.save(out, maps)
        rows = [[p, round(float(s), 2)] for p, s in zip(prompts, scores, strict=True)]
        return gallery, rows, _status(method, len(prompts), dtype, seconds), str(out)


def _status(method: str, prompts: int, dtype: Any, seconds: float) -> str:
    """What ran and how long it took, e.g. "gScoreCAM on 2 prompts (bf16 masked passes): 1.2 s"."""
    from captum_gscorecam.precision import precision_name
    from captum_gscorecam.registry import SPECS

    plural = "s" if prompts > 1 else ""
    masked = ""
    if SPECS[method].takes("precision"):
        masked = f" ({precision_name(dtype)} masked passes)"
    return f"{SPECS[method].label} on {prompts} prompt{plural}{masked}: **{seconds:.2f} s**"


def _labels(option: str) -> str:
    """The labels of the methods that use ``option``, e.g. "gScoreCAM, ScoreCAM"."""
    from captum_gscorecam.registry import SPECS

    return ", ".join(spec.label for spec in SPECS.values() if spec.takes(option))


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
    """gradio, imported with its analytics off; an ImportError naming the extra without it."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio
    except ImportError:
        raise ImportError("the web app needs gradio: pip install 'captum-gscorecam[app]'") from None
    return gradio
