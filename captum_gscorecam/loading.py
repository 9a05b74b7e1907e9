"""From names to objects: a model name to ``(model, preprocess, tokenizer)``, a device name to a
device that exists, a dotted path to a layer.

Every failure is a ``ValueError`` whose message starts with the argument it is about
(``model``, ``pretrained``, ``device``, ``layer``) and says what was expected; the command line
turns it into its one-line error. Nothing here imports torch, open_clip or transformers at
module level, so a command's ``--help`` does not pay for them.
"""

from __future__ import annotations

import difflib
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from captum_gscorecam.provenance import RANDOM_WEIGHTS, SHAPES_WEIGHTS

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

__all__ = [
    "check_model",
    "describe_weights",
    "find_layer",
    "hf_preprocess",
    "hub_reachable",
    "load_clip",
    "load_model",
    "resolve_device",
]

# File extensions that make a ``pretrained`` value a checkpoint path rather than a tag.
CHECKPOINT_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz"})
_HF_MODEL_TYPES = ("clip", "siglip")
# PIL's resampling filters by number, as Hugging Face image processors store them.
_RESAMPLING = {0: "NEAREST", 1: "LANCZOS", 2: "BILINEAR", 3: "BICUBIC", 4: "BOX", 5: "HAMMING"}


def load_clip(
    name: str, pretrained: str | None = None, device: str | torch.device = "cpu"
) -> tuple[nn.Module, Callable[..., Tensor], Callable[..., Any]]:
    """``(model, preprocess, tokenizer)`` for a shipped shapes model, open_clip or Hugging Face.

    Args:

        name (str): ``shapes-rn`` / ``shapes-vit`` (bundled, offline), an open_clip model
                    name (e.g. ``RN50``, ``ViT-B-16``), or ``hf:`` and a Hugging Face repo id
                    or local folder of a CLIP or SigLIP model (e.g.
                    ``hf:openai/clip-vit-base-patch16``; needs ``transformers``, the ``hf``
                    extra).
        pretrained (str, optional): For open_clip models, a pretrained tag (``openai``) or a
                    checkpoint path; must be None for the others.
                    Default: None
        device (str or torch.device, optional): The device of the returned model.
                    Default: ``"cpu"``

    Returns:
        The model in eval mode, its image preprocess (PIL image -> ``(3, H, W)`` tensor) and
        its tokenizer.
    """
    if name.startswith("shapes-"):
        from captum_gscorecam.shapes import load_shapes_clip

        return load_shapes_clip(name.removeprefix("shapes-"), device=device)
    if name.startswith("hf:"):
        return _load_hf_clip(name.removeprefix("hf:"), pretrained, device)
    import open_clip

    if name not in open_clip.list_models():
        raise ValueError(
            f"model: unknown model {name!r}; expected shapes-rn, shapes-vit, an open_clip "
            "model name such as RN50 or ViT-B-16, or hf:<Hugging Face repo id or folder>"
        )
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=pretrained, device=device
    )
    return model.eval(), preprocess, open_clip.get_tokenizer(name)


def _load_hf_clip(
    source: str, pretrained: str | None, device: str | torch.device
) -> tuple[nn.Module, Callable[..., Tensor], Callable[..., Any]]:
    """A Hugging Face CLIP or SigLIP model, its image preprocess and its tokenizer."""
    if not source:
        raise ValueError("model: expected hf:<Hugging Face repo id or local folder>, got 'hf:'")
    if pretrained is not None:
        raise ValueError(
            "pretrained: not used with hf: models; the repo id or folder names the weights"
        )
    try:
        from transformers import AutoConfig, AutoModel, AutoProcessor
    except ImportError:
        raise ValueError(
            "model: hf: models need transformers; pip install 'captum-gscorecam[hf]'"
        ) from None
    model_type = AutoConfig.from_pretrained(source).model_type
    if model_type not in _HF_MODEL_TYPES:
        raise ValueError(
            f"model: {source!r} is a {model_type!r} model; hf: supports {list(_HF_MODEL_TYPES)}"
        )
    model = AutoModel.from_pretrained(source).to(device).eval()
    processor = AutoProcessor.from_pretrained(source)
    return model, hf_preprocess(processor.image_processor), processor.tokenizer


def hf_preprocess(image_processor: Any) -> Callable[..., Tensor]:
    """A Hugging Face image processor's steps as a torchvision transform (PIL -> ``(3, H, W)``).

    Resize (shortest edge, or to height x width), centre crop, scale to [0, 1] and normalise,
    as the processor's settings say; a torchvision ``Compose`` like open_clip's preprocess, so
    callers can read its ``Normalize`` mean and std.

    Args:

        image_processor (Any): A ``transformers`` image processor, such as
                    ``CLIPImageProcessor`` or ``SiglipImageProcessor``.

    Returns:
        A ``torchvision.transforms.Compose`` from a PIL image to a float tensor ``(3, H, W)``.
    """
    from torchvision import transforms

    steps: list[Callable[..., Any]] = [_to_rgb]
    resample = image_processor.resample
    mode = (
        resample
        if isinstance(resample, transforms.InterpolationMode)
        else getattr(transforms.InterpolationMode, _RESAMPLING.get(int(resample), "BICUBIC"))
    )
    size = image_processor.size
    if image_processor.do_resize:
        if size.get("shortest_edge"):
            steps.append(transforms.Resize(size["shortest_edge"], interpolation=mode))
        elif size.get("height") and size.get("width"):
            steps.append(transforms.Resize((size["height"], size["width"]), interpolation=mode))
        else:
            raise ValueError(f"model: unsupported image processor size {dict(size)}")
    crop = getattr(image_processor, "crop_size", None)
    if getattr(image_processor, "do_center_crop", False) and crop:
        steps.append(transforms.CenterCrop((crop["height"], crop["width"])))
    steps.append(transforms.ToTensor())
    if image_processor.do_normalize:
        steps.append(
            transforms.Normalize(list(image_processor.image_mean), list(image_processor.image_std))
        )
    return transforms.Compose(steps)


def _to_rgb(image: Any) -> Any:
    return image.convert("RGB")


def resolve_device(device: str) -> str:
    """A device name that exists on this machine.

    Args:

        device (str): ``auto`` (``cuda`` when torch sees a GPU, else ``cpu``), ``cpu``,
                    ``cuda[:N]``, ``xpu[:N]`` or ``mps``.

    Returns:
        The device name, ``auto`` resolved.

    Raises:
        ValueError: The device is not available, or its index is past the last one.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = device.partition(":")
    backend = getattr(torch, kind, None) if kind in ("cuda", "xpu") else None
    if kind == "mps":
        backend = getattr(torch.backends, "mps", None)
    if backend is not None and backend.is_available():
        count = backend.device_count() if hasattr(backend, "device_count") else 1
        if not index or int(index) < count:
            return device
        raise ValueError(
            f"device: {device} does not exist; this machine has {count} "
            f"({kind}:0 to {kind}:{count - 1})"
        )
    if kind == "cpu":
        return device
    raise ValueError(
        f"device: {kind} is not available (torch {torch.__version__} sees no such "
        "device on this machine); use cpu or auto"
    )


def check_model(name: str, pretrained: str | None) -> None:
    """Refuse a model name or a ``pretrained`` value that cannot work, before anything is built.

    Args:

        name (str): A model name as :func:`load_clip` takes it.
        pretrained (str, optional): An open_clip pretrained tag or checkpoint file.

    Raises:
        ValueError: ``model`` is unknown, or ``pretrained`` is given where the model brings
                    its own weights, names no file that exists, or is not one of the model's
                    tags.
    """
    if pretrained is not None and name.startswith(("shapes-", "hf:")):
        what = (
            f"{name} brings its own weights"
            if name.startswith("shapes-")
            else "the hf: repo id or folder names the weights"
        )
        raise ValueError(
            f"pretrained: {what}; a pretrained tag (such as openai) or checkpoint file is for "
            "open_clip models"
        )
    if name in ("shapes-rn", "shapes-vit") or (name.startswith("hf:") and len(name) > 3):
        return
    import open_clip

    if name not in open_clip.list_models():
        close = difflib.get_close_matches(name, open_clip.list_models(), n=3)
        raise ValueError(
            f"model: unknown model {name!r}; expected shapes-rn, shapes-vit, an "
            f"open_clip name ({', '.join(close) or 'see open_clip.list_models()'}) or hf:REPO"
        )
    if pretrained is None or Path(pretrained).is_file():
        return
    path = Path(pretrained)
    if path.suffix in CHECKPOINT_SUFFIXES or len(path.parts) > 1:
        raise ValueError(f"pretrained: no such checkpoint file: {pretrained}")
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained.lower() not in [tag.lower() for tag in tags]:
        raise ValueError(
            f"pretrained: {name} has no pretrained tag {pretrained!r} and no such "
            f"file exists; its tags: {', '.join(tags) or 'none'}"
        )


def describe_weights(model: str, pretrained: str | None) -> str:
    """Where the weights of :func:`load_model` ``(model, pretrained, ...)`` come from.

    Args:

        model (str): A model name as :func:`load_clip` takes it (``shapes-rn``, an
                    open_clip name, ``hf:REPO`` or ``hf:FOLDER``).
        pretrained (str, optional): The open_clip pretrained tag or checkpoint file, or None.

    Returns:
        ``provenance.SHAPES_WEIGHTS`` for the bundled models; ``"pretrained TAG"``,
        ``"checkpoint PATH"`` or ``provenance.RANDOM_WEIGHTS`` for open_clip models (as
        :func:`load_model` decides: a ``pretrained`` naming an existing file is a checkpoint);
        ``"Hugging Face Hub"`` or ``"local folder"`` for ``hf:`` models.
    """
    if model in ("shapes-rn", "shapes-vit"):
        return SHAPES_WEIGHTS
    if model.startswith("hf:"):
        return "local folder" if Path(model.removeprefix("hf:")).is_dir() else "Hugging Face Hub"
    if pretrained is None:
        return RANDOM_WEIGHTS
    if Path(pretrained).is_file():
        return f"checkpoint {pretrained}"
    return f"pretrained {pretrained}"


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face Hub (``HF_ENDPOINT``, or the HTTPS proxy) answers a TCP connect.

    Args:

        timeout (float, optional): Seconds to wait for the connection.
                    Default: 2.0
    """
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlsplit(proxy or os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _hub_offline_requested() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in {"1", "ON", "YES", "TRUE"}


def _needs_hub(name: str, pretrained: str | None) -> bool:
    """Whether loading may download: an hf: repo id, or an open_clip pretrained tag."""
    if name.startswith("hf:"):
        return not Path(name.removeprefix("hf:")).is_dir()
    return pretrained is not None and not Path(pretrained).is_file()


def load_model(
    name: str, pretrained: str | None, device: str
) -> tuple[nn.Module, Callable[..., Tensor], Callable[..., Any]]:
    """:func:`load_clip` after :func:`check_model`, with every loading failure one ValueError.

    Weights that would come from the Hugging Face Hub load from the local cache alone when
    ``HF_HUB_OFFLINE`` is set or the Hub does not answer within 2 s, so an offline machine
    fails at once instead of retrying for a minute. A checkpoint file that does not fit the
    architecture is refused with the keys and shapes that differ.

    Args:

        name (str): A model name as :func:`load_clip` takes it.
        pretrained (str, optional): An open_clip pretrained tag or checkpoint file.
        device (str): The device of the returned model.

    Returns:
        ``(model, preprocess, tokenizer)`` as :func:`load_clip` returns them.

    Raises:
        ValueError: Naming ``model`` or ``pretrained`` (whichever names the weights), with
                    the loader's first line or what the checkpoint and the model disagree on.
    """
    check_model(name, pretrained)
    checkpoint = pretrained is not None and Path(pretrained).is_file()
    offline = _needs_hub(name, pretrained) and (_hub_offline_requested() or not hub_reachable())
    argument = "model" if name.startswith("hf:") else "pretrained"
    try:
        with _quiet_logging(), _hub_offline(offline):
            loaded = load_clip(name, None if checkpoint else pretrained, device)
    except ValueError:  # the loader's own message names its argument
        raise
    except Exception as error:  # loaders raise many kinds; each becomes one line
        if offline:
            raise ValueError(
                f"{argument}: the weights of {name}"
                f"{'' if pretrained is None else f' ({pretrained})'} are not in the local cache "
                "and the Hugging Face Hub cannot be reached (offline); fetch them once online, "
                f"or give a {'local folder' if argument == 'model' else 'checkpoint file'}"
            ) from None
        raise ValueError(
            f"{argument}: could not load {name!r} with pretrained={pretrained!r}: "
            f"{_first_line(error)}"
        ) from None
    if checkpoint:
        _load_checkpoint(loaded[0], name, pretrained)
    return loaded


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error).strip() else type(error).__name__


def _load_checkpoint(model: nn.Module, name: str, path: str) -> None:
    """open_clip's ``load_checkpoint``; a misfit is one line naming the keys and shapes."""
    import open_clip

    try:
        open_clip.load_checkpoint(model, path)
    except Exception as error:  # a misfit shows as RuntimeError, AssertionError, KeyError...
        raise ValueError(
            f"pretrained: {path} does not fit {name}: "
            f"{_state_dict_mismatch(model, path) or _first_line(error)}"
        ) from None


def _state_dict_mismatch(model: nn.Module, path: str, shown: int = 2) -> str:
    """The keys and shapes in which a checkpoint and a model differ, counted, first few named."""
    from open_clip.factory import load_state_dict

    try:
        state = load_state_dict(path)
    except Exception:  # not a state dict at all: the caller reports the loader's error
        return ""
    ours = model.state_dict()
    shapes = [
        f"{key} {tuple(state[key].shape)} vs {tuple(value.shape)}"
        for key, value in ours.items()
        if key in state and getattr(state[key], "shape", value.shape) != value.shape
    ]
    kinds = {
        "shape(s) differ (checkpoint vs model)": shapes,
        "key(s) missing from the checkpoint": [key for key in ours if key not in state],
        "unexpected key(s)": [key for key in state if key not in ours],
    }
    return "; ".join(
        f"{len(items)} {kind}: {', '.join(items[:shown])}{', ...' if len(items) > shown else ''}"
        for kind, items in kinds.items()
        if items
    )


@contextmanager
def _quiet_logging() -> Iterator[None]:
    """Loaders log download failures as errors; the caller reports its own one line."""
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(previous)


@contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """``HF_HUB_OFFLINE=1`` for the block, also where huggingface_hub is already imported."""
    if not offline:
        yield
        return
    saved = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    saved_constant = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved
        if constants is not None:
            constants.HF_HUB_OFFLINE = saved_constant


def find_layer(model: nn.Module, path: str) -> nn.Module:
    """The module at a dotted path of ``model``.

    Args:

        model (torch.nn.Module): The model whose modules are searched.
        path (str): A dotted module path, e.g. ``visual.layer3``.

    Returns:
        The module ``model.get_submodule(path)``.

    Raises:
        ValueError: Naming ``layer`` and listing close names (or the children of the longest
                    prefix that exists) when there is no such module.
    """
    modules = dict(model.named_modules())
    if path in modules:
        return modules[path]
    close = difflib.get_close_matches(path, [name for name in modules if name], n=4, cutoff=0.6)
    if not close:  # the children of the longest prefix that exists
        prefix = path
        while prefix and prefix not in modules:
            prefix = prefix.rpartition(".")[0]
        close = [f"{prefix}.{n}" if prefix else n for n, _ in modules[prefix].named_children()]
    raise ValueError(
        f"layer: the model has no module {path!r}; close names: "
        f"{', '.join(close[:8])}{', ...' if len(close) > 8 else ''}"
    )
