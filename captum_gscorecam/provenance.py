"""What made an output: the model, where its weights came from, the method, k, the template,
the precision and the device as resolved, and this package's version.

One :class:`Provenance` per run gives the same facts in three forms: a line for a figure's
title block and the terminal, a dict for JSON files written beside maps, and columns for score
tables. :meth:`Provenance.warnings` says when the maps cannot mean anything: random weights, or
a shapes model shown a photo that is not a shapes scene. No torch here: the command line's
``--help`` does not pay for it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from captum_gscorecam import __version__

__all__ = ["RANDOM_WEIGHTS", "SHAPES_WEIGHTS", "Provenance"]

RANDOM_WEIGHTS = "RANDOM WEIGHTS"
"""The weights of an open_clip model built without a pretrained tag or checkpoint."""
SHAPES_WEIGHTS = "shapes world: knows only coloured shapes"
"""The weights of the bundled ``shapes-rn`` / ``shapes-vit``, trained on the shapes scenes."""


@dataclass(frozen=True)
class Provenance:
    """What made a map, a figure or a table of scores.

    Every field is as resolved for the run (``auto`` never appears): ``precision`` is the one
    the masked passes used, ``device`` the one the model ran on, ``k`` the channel count
    gScoreCAM kept (None for methods without k), ``layer`` the dotted path of the explained
    layer (None for methods on pixels).
    """

    model: str
    """The model name, e.g. ``RN50``, ``shapes-rn`` or ``hf:openai/clip-vit-base-patch16``."""
    weights: str
    """Where the weights came from (``loading.describe_weights``)."""
    method: str
    """The method's label, e.g. ``gScoreCAM``; several, comma-separated, for a comparison."""
    template: str
    """The text around each prompt, e.g. ``a photo of a {}``."""
    precision: str
    """``fp32``, ``bf16`` or ``fp16``: the precision of the masked passes."""
    device: str
    """The device, e.g. ``cpu`` or ``cuda:0``."""
    k: int | None = None
    """gScoreCAM's channel count, as resolved for the layer."""
    channels: int | None = None
    """The layer's channel count (the k of ScoreCAM)."""
    layer: str | None = None
    """The explained layer's dotted path in the model, e.g. ``visual.layer4``."""
    version: str = field(default=__version__)
    """This package's version."""

    def line(self) -> str:
        """One line, for a figure's title block and the terminal; its parts joined by `` | ``.

        ``gScoreCAM | k=205/2048 | layer visual.layer4 | RN50 (pretrained openai) |
        template 'a photo of a {}' | fp32 on cpu | captum-gscorecam 0.1.0`` (no k or layer part
        for a method without them).
        """
        parts = [self.method]
        if self.k is not None:
            parts.append(f"k={self.k}" + ("" if self.channels is None else f"/{self.channels}"))
        if self.layer is not None:
            parts.append(f"layer {self.layer}")
        parts += [
            f"{self.model} ({self.weights})",
            f"template {self.template!r}",
            f"{self.precision} on {self.device}",
            f"captum-gscorecam {self.version}",
        ]
        return " | ".join(parts)

    def as_dict(self) -> dict[str, str | int | None]:
        """The fields by name, for JSON (``run.json``, ``prompts.json``, an index)."""
        return asdict(self)

    def columns(self) -> dict[str, str]:
        """The fields as text cells (``""`` for None), for the columns of a score table."""
        return {name: "" if value is None else str(value) for name, value in asdict(self).items()}

    def warnings(self, shapes_scene: bool) -> list[str]:
        """One line per reason the maps and scores cannot mean anything; empty when none.

        Args:

            shapes_scene (bool): Whether the explained image is a shapes scene (the demo's, or
                        one rendered by ``shapes.render_scene``); a user's photo is not.

        Returns:
            ``RANDOM_WEIGHTS`` models: a line saying so. The bundled shapes models on an image
            that is not a shapes scene: a line saying they know only coloured shapes.
        """
        found = []
        if self.weights == RANDOM_WEIGHTS:
            found.append(
                f"warning: {self.model} has RANDOM WEIGHTS (no pretrained tag or checkpoint "
                "given): its maps and scores mean nothing"
            )
        if self.weights == SHAPES_WEIGHTS and not shapes_scene:
            found.append(
                f"warning: {self.model} knows only coloured shapes (the bundled shapes world); "
                "on a photo its maps and scores mean nothing: use a real CLIP (RN50, openai)"
            )
        return found
