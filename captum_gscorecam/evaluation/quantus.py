"""Quantus interop: our explainers as a Quantus ``explain_func``.

Quantus metrics take ``model, x_batch, y_batch`` (numpy) and call
``explain_func(model=model, inputs=x_batch, targets=y_batch, **explain_func_kwargs)``, which must
return one map per input at the input's resolution, ``(N, 1, H, W)``. With ``model`` a
:class:`~captum_gscorecam.clip.ZeroShotClassifier`, ``targets`` are prompt indices::

    import quantus
    from captum_gscorecam.evaluation.quantus import explain_func

    metric = quantus.PointingGame()
    scores = metric(model=clf, x_batch=x, y_batch=y, s_batch=masks,
                    explain_func=explain_func, explain_func_kwargs={"method": "gscorecam"})

The maps are exactly those of the command line and ``evaluate`` (``methods.explain_maps`` for the
prompt ``text_emb[target]`` of each image), upsampled bilinearly like theirs. Quantus randomises
or perturbs its own copy of the model and passes that copy, so nothing is cached here.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
import torch
from torch import Tensor

from captum_gscorecam.checks import check_device_name, check_topk, describe
from captum_gscorecam.clip import ZeroShotClassifier
from captum_gscorecam.loading import resolve_device
from captum_gscorecam.methods import explain_maps
from captum_gscorecam.registry import method_spec
from captum_gscorecam.visualization import upsample

__all__ = ["explain_func"]


def explain_func(
    model: ZeroShotClassifier,
    inputs: np.ndarray | Tensor,
    targets: np.ndarray | Tensor | int | list[int],
    method: str = "gscorecam",
    topk: int | float | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray:
    r"""Maps ``(N, 1, H, W)`` float32 of one method, for Quantus.

    Args:

        model (ZeroShotClassifier): The classifier Quantus evaluates (its copy, for the
                    randomisation tests).
        inputs (np.ndarray or Tensor): Preprocessed images ``(N, 3, H, W)``, floating point
                    and finite (NaN or infinity is refused for every method).
        targets (np.ndarray, Tensor, int or list[int]): The prompt index of each image
                    (``N`` integers) or one for all; floats, bools, strings and None are
                    refused.
        method (str, optional): A key of the registry (``registry.SPECS``): ``gscorecam``,
                    ``scorecam``, ``hilacam`` (ViT towers), Captum's ``gradcam`` (LayerGradCam),
                    ``occlusion``, ``integrated_gradients``, ``saliency``, or ``uniform``.
                    Default: "gscorecam"
        topk (int or float, optional): gScoreCAM's channel count or fraction of channels.
                    Default: None (the library's k, ``checks.default_topk``: 10% of a
                    convolutional layer's channels, 50% of a ViT layer's)
        device (str or torch.device, optional): Where to run (Quantus passes its ``device``):
                    ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, which must exist here.
                    Default: None (the model's device)

    Returns:
        *np.ndarray* ``(N, 1, H, W)`` float32: CAMs upsampled bilinearly from the layer's
        grid; pixel methods summed over colour channels.
    """
    if not isinstance(model, ZeroShotClassifier):
        raise TypeError(
            "model: expected a ZeroShotClassifier (a CLIP model over K prompts), "
            f"got {type(model).__name__}"
        )
    method_spec(method)
    topk = check_topk(topk)
    device = model.text_emb.device if device is None else _device(device)
    images = _images(inputs, device)
    index = _prompt_index(targets, images.shape[0], model.text_emb.shape[0])
    text = model.text_emb.to(device)[index.to(device)][:, None]  # (N, 1, D)
    with torch.enable_grad():
        maps = explain_maps(model.model, images, text, method, topk)
    return upsample(maps, tuple(images.shape[-2:])).astype(np.float32)


def _device(device: object) -> torch.device:
    """A device name the command line takes, or a ``torch.device``, that exists here."""
    name = str(device) if isinstance(device, torch.device) else device
    return torch.device(resolve_device(check_device_name(name)))


def _images(inputs: object, device: torch.device) -> Tensor:
    """``inputs`` as finite float32 images ``(N, 3, H, W)`` on ``device``."""
    expected = "inputs: expected float images (N, 3, H, W), a numpy array or a tensor"
    if isinstance(inputs, Tensor):
        images = inputs.detach()
    elif isinstance(inputs, np.ndarray) and inputs.dtype.kind in "biuf":
        try:
            images = torch.from_numpy(inputs)
        except TypeError:  # a dtype torch lacks (float128, ...)
            raise TypeError(f"{expected}, got {describe(inputs)}") from None
    else:
        raise TypeError(f"{expected}, got {describe(inputs)}")
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"{expected}, got {images.dtype} of shape {tuple(images.shape)}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("inputs: contains NaN or infinite values")
    return images.to(device, torch.float32)


def _prompt_index(targets: object, n: int, k: int) -> Tensor:
    """``targets`` as ``N`` prompt indices in ``[0, K)``."""
    expected = (
        "targets: expected integer prompt indices (an int, a list of ints, an integer array "
        "or tensor)"
    )
    if isinstance(targets, Tensor):
        index = targets.detach().cpu()
    elif isinstance(targets, Integral) and not isinstance(targets, bool):
        index = torch.tensor([int(targets)])
    elif isinstance(targets, (list, tuple, np.ndarray)):
        try:
            array = np.asarray(targets)
        except ValueError:  # ragged nesting
            raise TypeError(f"{expected}, got a ragged {type(targets).__name__}") from None
        if array.dtype.kind not in "iu":
            raise TypeError(f"{expected}, got {describe(array)}")
        index = torch.from_numpy(array.astype(np.int64))
    else:
        raise TypeError(f"{expected}, got {describe(targets)}")
    if index.is_floating_point() or index.dtype == torch.bool or index.is_complex():
        raise TypeError(f"{expected}, got {describe(index)}")
    index = index.reshape(-1).long()
    if index.numel() == 1:
        index = index.expand(n)
    if index.numel() != n:
        raise ValueError(f"targets: expected 1 or {n} prompt indices, got {index.numel()}")
    if bool(((index < 0) | (index >= k)).any()):
        raise ValueError(f"targets: prompt indices must lie in [0, {k - 1}], got {index.tolist()}")
    return index
