"""Every explainer of the registry behind one call: :func:`explain_maps`."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from captum_gscorecam.checks import check_topk, resolve_topk
from captum_gscorecam.clip import image_features
from captum_gscorecam.engine import restored
from captum_gscorecam.loading import describe_weights
from captum_gscorecam.precision import resolve_precision
from captum_gscorecam.provenance import Provenance
from captum_gscorecam.registry import SPECS, TOWERS, MethodSpec, method_spec

__all__ = [
    "METHODS",
    "applicable_methods",
    "check_method",
    "comparison_provenance",
    "explain_maps",
    "explained_layer",
    "layer_path",
    "resolved_topk",
    "run_provenance",
]

METHODS = {key: spec.label for key, spec in SPECS.items()}
"""Method key -> label, in the registry's order."""


def check_method(model: nn.Module, method: str) -> None:
    r"""Check that ``method`` is known and can explain ``model``.

    A method the registry limits to some towers (HilaCAM: ViT towers that pool the class
    token) is checked by building it on ``model``; every other method works on any CLIP tower.

    Args:

        model (torch.nn.Module): A CLIP model (open_clip or Hugging Face).
        method (str): A key of the registry (``registry.SPECS``).

    Raises:
        ValueError: ``method`` is unknown, or cannot explain ``model`` (the message says why).
    """
    spec = method_spec(method)
    if spec.towers != TOWERS:
        try:
            _explainer(spec, model, None)
        except (TypeError, ValueError) as error:
            raise ValueError(f"method: {method} cannot explain this model ({error})") from None


def applicable_methods(model: nn.Module) -> list[str]:
    r"""The methods that can explain ``model``.

    Args:

        model (torch.nn.Module): A CLIP model (open_clip or Hugging Face).

    Returns:
        *list[str]*: the registry's keys that pass :func:`check_method`, in its order.
    """
    usable = []
    for method in SPECS:
        try:
            check_method(model, method)
        except ValueError:
            continue
        usable.append(method)
    return usable


def explain_maps(
    model: nn.Module,
    images: Tensor,
    text: Tensor,
    method: str,
    topk: int | float | None,
    show_progress: bool = False,
    layer: nn.Module | None = None,
    perturbations_per_eval: int | None = None,
    precision: str | torch.dtype | None = None,
) -> Tensor:
    r"""Maps ``(N, T, h, w)`` of one method for T prompts per image.

    The method's class (``registry.SPECS[method].explainer``) is built on ``model`` (with
    ``layer`` when it takes one) and given the options it takes; the others are ignored.

    Args:

        model (torch.nn.Module): A CLIP model (open_clip or Hugging Face).
        images (Tensor): Preprocessed images ``(N, 3, H, W)`` on the model's device.
        text (Tensor): Text embeddings ``(N, T, D)``, T prompts per image.
        method (str): A key of the registry (``gscorecam``, ``scorecam``, ``gradcam``,
                    ``hilacam``, ``occlusion``, ``integrated_gradients``, ``saliency``,
                    ``uniform``, ...).
        topk (int, float or None): gScoreCAM's channel count or fraction; None for its
                    per-tower default (``checks.default_topk``).
        show_progress (bool, optional): A progress bar, for the methods that have one.
                    Default: False
        layer (torch.nn.Module, optional): The layer of a method that takes one.
                    Default: None (the method's default: ``default_layer(model)``, or
                    ``gradcam_layer(model)`` for LayerGradCam)
        perturbations_per_eval (int, optional): Masked or occluded images per forward pass
                    (gScoreCAM, ScoreCAM, Occlusion).
                    Default: None (the method's default)
        precision (str or torch.dtype, optional): The precision of gScoreCAM's and ScoreCAM's
                    masked passes (``GScoreCAM.attribute``'s).
                    Default: None (fp32)

    Returns:
        *Tensor* ``(N, T, h, w)``: the CAMs at their layer's resolution, Captum's pixel methods
        at the images' ``(H, W)``, ``uniform`` the constant map ``1`` at image resolution.

    Raises:
        ValueError: ``method`` is unknown or cannot explain ``model``.
    """
    check_method(model, method)
    spec = SPECS[method]
    given = {
        "topk": topk,
        "show_progress": show_progress,
        "perturbations_per_eval": perturbations_per_eval,
        "precision": precision,
    }
    options = {name: value for name, value in given.items() if spec.takes(name)}
    return _explainer(spec, model, layer).attribute(images, target=text, **options)


def explained_layer(
    model: nn.Module, method: str, layer: nn.Module | None = None
) -> nn.Module | None:
    r"""The layer ``method`` explains on ``model``.

    Args:

        model (torch.nn.Module): A CLIP model (open_clip or Hugging Face).
        method (str): A key of the registry.
        layer (torch.nn.Module, optional): The layer asked for.
                    Default: None (the method's ``registry.SPECS[method].default_layer``)

    Returns:
        *torch.nn.Module* or None: ``layer`` or the method's default; None for a method that
        takes no layer.
    """
    spec = method_spec(method)
    if not spec.takes("layer"):
        return None
    return layer if layer is not None else _imported(spec.default_layer)(model)


def layer_path(model: nn.Module, layer: nn.Module) -> str:
    r"""The name of ``layer`` in ``model``, for what an output says it explained.

    Args:

        model (torch.nn.Module): The model holding the layer.
        layer (torch.nn.Module): The layer.

    Returns:
        *str*: its dotted path (``visual.layer4``), or its class name if ``model`` does not
        hold it.
    """
    return next((n for n, m in model.named_modules() if m is layer), type(layer).__name__)


def resolved_topk(
    model: nn.Module,
    images: Tensor,
    method: str,
    topk: int | float | None,
    layer: nn.Module | None = None,
) -> tuple[int, int] | None:
    r"""``(k, C)``: the channels ``method`` keeps for ``topk`` of its layer's C.

    One forward pass of the image tower on ``images[:1]`` reads C (a token layer's width);
    ``checks.resolve_topk`` gives k as gScoreCAM resolves it.

    Args:

        model (torch.nn.Module): A CLIP model (open_clip or Hugging Face).
        images (Tensor): Preprocessed images ``(N, 3, H, W)`` on the model's device.
        method (str): A key of the registry.
        topk (int, float or None): As :func:`explain_maps` takes it.
        layer (torch.nn.Module, optional): The explained layer.
                    Default: None (the method's default)

    Returns:
        ``(k, C)``, or None for a method without ``topk``.
    """
    if not method_spec(method).takes("topk"):
        return None
    topk = check_topk(topk)
    layer = explained_layer(model, method, layer)
    outputs: list[Tensor] = []
    handle = layer.register_forward_hook(lambda _module, _args, output: outputs.append(output))
    try:
        with torch.no_grad(), restored(model):
            image_features(model, images[:1])
    finally:
        handle.remove()
    output = outputs[-1][0] if isinstance(outputs[-1], tuple) else outputs[-1]
    tokens = output.dim() == 3
    channels = int(output.shape[-1] if tokens else output.shape[1])
    return resolve_topk(topk, channels, tokens), channels


def run_provenance(
    model: nn.Module,
    images: Tensor,
    method: str,
    *,
    name: str,
    pretrained: str | None = None,
    topk: int | float | None = None,
    template: str = "{}",
    precision: str | torch.dtype | None = None,
    layer: nn.Module | None = None,
) -> Provenance:
    r"""What :func:`explain_maps` runs for these arguments, as resolved, on a model that
    ``loading.load_model(name, pretrained, ...)`` loaded.

    Args:

        model (torch.nn.Module): The CLIP model.
        images (Tensor): Preprocessed images ``(N, 3, H, W)`` on the model's device; the first
                    is run once through the image tower to read the layer's channels
                    (:func:`resolved_topk`).
        method (str): A key of the registry.
        name (str): The model's name as ``load_model`` took it (``RN50``, ``shapes-rn``, ...).
        pretrained (str, optional): Its pretrained tag or checkpoint file.
                    Default: None
        topk (int, float or None, optional): As :func:`explain_maps` takes it.
                    Default: None
        template (str, optional): The text around each prompt.
                    Default: ``"{}"``
        precision (str or torch.dtype, optional): As :func:`explain_maps` takes it.
                    Default: None (fp32)
        layer (torch.nn.Module, optional): The explained layer.
                    Default: None (the method's default)

    Returns:
        *Provenance*: the method's label, k and the layer's channel count (methods with k),
        the layer's path (methods with a layer), the model and where its weights come from
        (``loading.describe_weights``), the template, the precision of the masked passes
        (``precision.resolve_precision``; ``fp32`` for methods without them) and the device.
    """
    spec = method_spec(method)
    device = next(model.parameters()).device
    k = resolved_topk(model, images, method, topk, layer)
    explained = explained_layer(model, method, layer)
    masked = resolve_precision(precision, device, model) if spec.takes("precision") else None
    return Provenance(
        model=name,
        weights=describe_weights(name, pretrained),
        method=spec.label,
        template=template,
        precision="fp32" if masked is None else masked.name,
        device=str(device),
        k=None if k is None else k[0],
        channels=None if k is None else k[1],
        layer=None if explained is None else layer_path(model, explained),
    )


def comparison_provenance(
    model: nn.Module,
    images: Tensor,
    methods: Sequence[str],
    *,
    name: str,
    pretrained: str | None = None,
    topk: int | float | None = None,
    template: str = "{}",
    precision: str | torch.dtype | None = None,
) -> Provenance:
    """What made the maps of several methods compared on the same images (the demo,
    ``gscorecam evaluate``): :func:`run_provenance` of the first method that takes k (else of
    the first method), its method part the methods' labels, comma-separated.

    Args:

        model (torch.nn.Module): The CLIP model.
        images (Tensor): Preprocessed images ``(N, 3, H, W)`` on the model's device.
        methods (sequence of str): Keys of the registry, at least one.
        name (str): The model's name as ``load_model`` took it.
        pretrained (str, optional): Its pretrained tag or checkpoint file.
                    Default: None
        topk (int, float or None, optional): As :func:`explain_maps` takes it.
                    Default: None
        template (str, optional): The text around each prompt.
                    Default: ``"{}"``
        precision (str or torch.dtype, optional): As :func:`explain_maps` takes it.
                    Default: None (fp32)

    Returns:
        *Provenance*: as :func:`run_provenance` says it, naming every method; its layer part
        adds the layer of each method that explains another one, e.g. ``visual.transformer.
        resblocks.3 (LayerGradCam: visual.transformer.resblocks.2)``.
    """
    if not methods:
        raise ValueError("methods: expected at least one method")
    lead = next((m for m in methods if method_spec(m).takes("topk")), methods[0])
    made = run_provenance(
        model, images, lead, name=name, pretrained=pretrained, topk=topk, template=template,
        precision=precision,
    )  # fmt: skip
    others = {}
    for method in methods:
        explained = explained_layer(model, method)
        path = None if explained is None else layer_path(model, explained)
        if path is not None and path != made.layer:
            others[method_spec(method).label] = path
    layer = made.layer
    if others:
        said = ", ".join(f"{label}: {path}" for label, path in others.items())
        layer = f"{layer} ({said})" if layer else said
    return replace(made, method=", ".join(method_spec(m).label for m in methods), layer=layer)


def _explainer(spec: MethodSpec, model: nn.Module, layer: nn.Module | None) -> Any:
    """The method's class built on ``model``, at ``layer`` (or its default) if it takes one."""
    explainer = _imported(spec.explainer)
    if not spec.takes("layer"):
        return explainer(model)
    return explainer(model, explained_layer(model, spec.key, layer))


def _imported(path: str | None) -> Any:
    """The object at ``"module:name"``."""
    module, _, name = str(path).partition(":")
    return getattr(importlib.import_module(module), name)
