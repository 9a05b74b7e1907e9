"""Every explainer by name, with what it is and what it uses, as data.

One :class:`MethodSpec` per method. The command line (its choices, its help, the options it
refuses), the web app (its method menu), :func:`~captum_gscorecam.methods.explain_maps` (which
options reach the explainer), ``gscorecam evaluate --methods``, the evaluation report (labels)
and the Quantus adapter all read :data:`SPECS`; a new method is one entry here plus its class.

The module imports nothing heavy (no torch), so the command line's ``--help`` reads it at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["OPTIONS", "SPECS", "TOWERS", "MethodSpec", "check_methods", "method_spec"]

# The options an explainer may take: ``layer`` when it is built, the others when it attributes.
OPTIONS = frozenset({"layer", "topk", "perturbations_per_eval", "precision", "show_progress"})
# The kinds of image tower a method may support.
TOWERS = frozenset({"cnn", "vit"})


@dataclass(frozen=True)
class MethodSpec:
    """One explainer: its names, the class behind it, and what it uses.

    The class, imported only when the method runs, is built as ``cls(model)``, or
    ``cls(model, layer)`` when the method takes a layer, and called as
    ``explainer.attribute(images, target=text, **options)`` with ``images`` ``(N, 3, H, W)``
    and ``text`` ``(N, T, D)`` (one embedding per prompt); it returns maps ``(N, T, h, w)``.

    Args:

        key (str): The name the command line, ``explain_maps`` and results files use.
        label (str): The name figures and tables show.
        help (str): One line for ``--help``.
        explainer (str): ``"module:Name"`` of the class.
        options (frozenset of str): The options of :data:`OPTIONS` it takes: ``layer`` (the
                    layer it explains), ``topk`` (gScoreCAM's channel count),
                    ``perturbations_per_eval`` (images per forward pass), ``precision`` (of
                    its masked passes), ``show_progress`` (a progress bar).
                    Default: none
        default_layer (str, optional): ``"module:function"`` of the model to its default
                    layer, for a method that takes ``layer``.
                    Default: None
        resolution (str): Where its maps live: ``"layer"`` (the layer's grid), ``"pixel"``
                    (the input's pixels) or ``"constant"`` (one value everywhere).
                    Default: "layer"
        towers (frozenset of str): The kinds of image tower it can explain, of :data:`TOWERS`;
                    a method limited to some is checked on the model by building it.
                    Default: every kind
        prompts_per_pass (bool): Whether the T prompts of an image share its passes (else its
                    cost grows with T).
                    Default: True
        demo (bool): Whether ``gscorecam demo`` shows it.
                    Default: False
    """

    key: str
    label: str
    help: str
    explainer: str
    options: frozenset[str] = frozenset()
    default_layer: str | None = None
    resolution: str = "layer"
    towers: frozenset[str] = TOWERS
    prompts_per_pass: bool = True
    demo: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(self.options - OPTIONS)
        if unknown:
            raise ValueError(f"options: unknown {unknown}; expected some of {sorted(OPTIONS)}")
        if ("layer" in self.options) != (self.default_layer is not None):
            raise ValueError("default_layer: expected one exactly when the method takes a layer")
        if self.resolution not in ("layer", "pixel", "constant"):
            raise ValueError(
                f"resolution: expected layer, pixel or constant, got {self.resolution!r}"
            )
        if not self.towers or not self.towers <= TOWERS:
            raise ValueError(
                f"towers: expected some of {sorted(TOWERS)}, got {sorted(self.towers)}"
            )

    def takes(self, option: str) -> bool:
        """Whether the method uses ``option`` (one of :data:`OPTIONS`)."""
        return option in self.options


_CAM = frozenset({"layer", "perturbations_per_eval", "precision", "show_progress"})

_SPECS = (
    MethodSpec(
        "gscorecam",
        "gScoreCAM",
        "ScoreCAM on the top-k channels of the gradient ranking (this package)",
        "captum_gscorecam:GScoreCAM",
        options=_CAM | {"topk"},
        default_layer="captum_gscorecam:default_layer",
        demo=True,
    ),
    MethodSpec(
        "scorecam",
        "ScoreCAM",
        "every channel as a mask, weighted by the softmax of the masked scores",
        "captum_gscorecam:ScoreCAM",
        options=_CAM,
        default_layer="captum_gscorecam:default_layer",
        demo=True,
    ),
    MethodSpec(
        "gradcam",
        "LayerGradCam",
        "Captum's LayerGradCam (mean gradient per channel)",
        "captum_gscorecam.baselines:CLIPLayerGradCam",
        options=frozenset({"layer"}),
        default_layer="captum_gscorecam:gradcam_layer",
        prompts_per_pass=False,
        demo=True,
    ),
    MethodSpec(
        "hilacam",
        "HilaCAM",
        "Chefer et al.'s attention relevance; ViT towers that pool a class token",
        "captum_gscorecam:HilaCAM",
        towers=frozenset({"vit"}),
        demo=True,
    ),
    MethodSpec(
        "legrad",
        "LeGrad",
        "every block's score gradient on its own attention (Bousselham et al.); ViT towers",
        "captum_gscorecam:LeGrad",
        towers=frozenset({"vit"}),
    ),
    MethodSpec(
        "grad_eclip",
        "Grad-ECLIP",
        "the last attention's values weighted by the score gradient and loosened query-key "
        "cosines (Zhao et al.); ViTs with a class token or attention pooling",
        "captum_gscorecam:GradECLIP",
        towers=frozenset({"vit"}),
    ),
    MethodSpec(
        "rollout",
        "Attention rollout",
        "the blocks' attention multiplied through, the residual as identity (Abnar and "
        "Zuidema); ViT towers; the same map for every prompt",
        "captum_gscorecam:AttentionRollout",
        towers=frozenset({"vit"}),
    ),
    MethodSpec(
        "occlusion",
        "Occlusion",
        "Captum's Occlusion: the score drop when a window takes the mean colour",
        "captum_gscorecam.baselines:CLIPOcclusion",
        options=frozenset({"perturbations_per_eval", "show_progress"}),
        resolution="pixel",
        prompts_per_pass=False,
    ),
    MethodSpec(
        "integrated_gradients",
        "IntegratedGradients",
        "Captum's IntegratedGradients from the mean-colour image (32 steps)",
        "captum_gscorecam.baselines:CLIPIntegratedGradients",
        resolution="pixel",
        prompts_per_pass=False,
    ),
    MethodSpec(
        "saliency",
        "Saliency",
        "Captum's Saliency, |d score / d pixel|",
        "captum_gscorecam.baselines:CLIPSaliency",
        resolution="pixel",
        prompts_per_pass=False,
    ),
    MethodSpec(
        "uniform",
        "Uniform",
        "a constant map: the baseline that knows nothing",
        "captum_gscorecam.baselines:Uniform",
        resolution="constant",
    ),
)

SPECS: dict[str, MethodSpec] = {spec.key: spec for spec in _SPECS}
"""Every method by key, in the order menus, tables and ``--help`` list them."""


def method_spec(key: object, name: str = "method") -> MethodSpec:
    r"""The spec of a method; the one place a method's name is checked.

    Args:

        key (str): A method's key, e.g. ``"gscorecam"``.
        name (str, optional): The argument's name in the error message.
                    Default: "method"

    Returns:
        *MethodSpec*: the method's entry of :data:`SPECS`.

    Raises:
        ValueError: ``key`` names no method.
    """
    if not isinstance(key, str) or key not in SPECS:
        raise ValueError(f"{name}: unknown method {key!r}; expected one of {list(SPECS)}")
    return SPECS[key]


def check_methods(keys: Iterable[str], name: str = "methods") -> list[str]:
    r"""Method keys checked as a list: at least one, each known, each once.

    Args:

        keys (iterable of str): Methods' keys, in the order wanted.
        name (str, optional): The argument's name in the error message.
                    Default: "methods"

    Returns:
        *list[str]*: the keys, in the order given.

    Raises:
        ValueError: No key, an unknown key, or a key given twice.
    """
    keys = list(keys)
    if not keys:
        raise ValueError(f"{name}: expected at least one method of {','.join(SPECS)}")
    unknown = [key for key in keys if key not in SPECS]
    if unknown:
        raise ValueError(f"{name}: unknown method(s) {unknown}; expected some of {','.join(SPECS)}")
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise ValueError(f"{name}: expected each method once, got {', '.join(twice)} twice")
    return keys
