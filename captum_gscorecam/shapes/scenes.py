"""Synthetic scenes of coloured shapes with exact ground truth (boxes, masks, captions).

Every scene is a pure function of its seed: objects are drawn with numpy geometry on the pixel
centre grid, so each object's mask is exact and its box is the tight box of that mask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np
import torch
from torch.utils.data import Dataset

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring")
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
PROMPT_TEMPLATE = "a {color} {shape}"
DEFAULT_SIZE = 224
MAX_OBJECTS = 6
MIN_SIZE = 64

_RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (30, 170, 50),
    "blue": (35, 75, 225),
    "yellow": (240, 215, 30),
    "purple": (145, 50, 195),
    "orange": (250, 135, 20),
}
# Object half-sizes as fractions of the image side; shrunk when a crowded scene has no room.
_RADIUS_RANGE = (0.07, 0.14)
_MARGIN = 0.02
# Smallest half-size in pixels: every shape then covers at least one pixel centre.
_MIN_RADIUS = 3.0
_PLACEMENT_TRIES = 60


@dataclass(frozen=True, eq=False)
class Scene:
    """One rendered scene and its ground truth.

    Attributes:
        image: (H, W, 3) uint8 RGB image.
        objects: (color, shape) of each object, in drawing order.
        captions: ``PROMPT_TEMPLATE`` filled in for each object.
        boxes: int64 (n, 4) tight boxes of the masks as x0, y0, x1, y1 (x1, y1 exclusive).
        masks: bool (n, H, W) pixels covered by each object.
    """

    image: np.ndarray
    objects: list[tuple[str, str]]
    captions: list[str]
    boxes: np.ndarray
    masks: np.ndarray


def prompt(color: str, shape: str) -> str:
    """The prompt naming one object."""
    return PROMPT_TEMPLATE.format(color=color, shape=shape)


def all_prompts() -> list[str]:
    """Prompts for every (colour, shape) pair, colour-major."""
    return [prompt(color, shape) for color, shape in product(COLORS, SHAPES)]


def _inside_polygon(u: np.ndarray, v: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd rule: inside when a ray towards +u crosses the boundary an odd number of times."""
    inside = np.zeros(u.shape, dtype=bool)
    for (u0, v0), (u1, v1) in zip(vertices, np.roll(vertices, -1, axis=0), strict=True):
        straddles = (v0 > v) != (v1 > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            crossing_u = u0 + (v - v0) * (u1 - u0) / (v1 - v0)
        inside ^= straddles & (u < crossing_u)
    return inside


def _star_vertices(points: int = 5, inner: float = 0.42) -> np.ndarray:
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


_TRIANGLE = np.array([[0.0, -1.0], [1.0, 0.8], [-1.0, 0.8]])
_STAR = _star_vertices()


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership of points (u, v), in units of the object's half-size around its centre."""
    if shape == "circle":
        return u**2 + v**2 <= 1.0
    if shape == "square":
        return (np.abs(u) <= 0.85) & (np.abs(v) <= 0.85)
    if shape == "triangle":
        return _inside_polygon(u, v, _TRIANGLE)
    if shape == "star":
        return _inside_polygon(u, v, _STAR)
    if shape == "cross":
        arm, reach = np.abs(u) <= 0.3, np.abs(v) <= 0.95
        return (arm & reach) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95))
    if shape == "ring":
        radius2 = u**2 + v**2
        return (radius2 <= 1.0) & (radius2 >= 0.55**2)
    raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A dim, low-saturation gradient with pixel noise: texture never mistaken for an object."""
    base = rng.uniform(95, 150) + rng.uniform(-12, 12, size=3)
    ramp = np.linspace(-1.0, 1.0, size)
    angle = rng.uniform(0, 2 * np.pi)
    gradient = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
    image = base + rng.uniform(10, 25) * gradient[..., None]
    return image + rng.normal(0, 7, size=(size, size, 3))


def _place(
    rng: np.random.Generator, size: int, taken: list[tuple[float, float, float]]
) -> tuple[float, float, float]:
    """A centre and half-size whose square, grown by the margin, clears every taken square."""
    radius_lo, radius_hi = (fraction * size for fraction in _RADIUS_RANGE)
    margin = _MARGIN * size
    for attempt in range(_PLACEMENT_TRIES * 4):
        shrink = 0.8 ** (attempt // _PLACEMENT_TRIES)
        radius = max(rng.uniform(radius_lo, radius_hi) * shrink, _MIN_RADIUS)
        cx, cy = rng.uniform(radius + 1, size - radius - 1, size=2)
        if all(
            max(abs(cx - ox), abs(cy - oy)) >= radius + other + margin for ox, oy, other in taken
        ):
            return cx, cy, radius
    raise RuntimeError("no room left for another object")


def _draw(size: int, cx: float, cy: float, radius: float, shape: str) -> np.ndarray:
    """The object's exact mask, testing pixel centres only inside its bounding square."""
    mask = np.zeros((size, size), dtype=bool)
    x0, x1 = int(np.floor(cx - radius)), int(np.ceil(cx + radius)) + 1
    y0, y1 = int(np.floor(cy - radius)), int(np.ceil(cy + radius)) + 1
    xs = (np.arange(x0, x1) + 0.5 - cx) / radius
    ys = (np.arange(y0, y1) + 0.5 - cy) / radius
    u, v = np.meshgrid(xs, ys)
    mask[y0:y1, x0:x1] = shape_mask(shape, u, v)
    return mask


def tight_box(mask: np.ndarray) -> np.ndarray:
    """x0, y0, x1, y1 (exclusive) of the true pixels of a non-empty (H, W) mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.int64)


def render_scene(seed: int, n_objects: int | None = None, size: int | None = None) -> Scene:
    """Render the scene of one seed.

    Args:
        seed: Seed of ``numpy.random.default_rng``; equal seeds and arguments give equal scenes.
        n_objects: Number of objects, 1 to 6; None draws it uniformly from that range.
        size: Side of the square image in pixels (at least 64); None means ``DEFAULT_SIZE``.
    """
    size = DEFAULT_SIZE if size is None else size
    if size < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE}, got {size}")
    rng = np.random.default_rng(seed)
    if n_objects is None:
        n_objects = int(rng.integers(1, MAX_OBJECTS + 1))
    if not 1 <= n_objects <= MAX_OBJECTS:
        raise ValueError(f"n_objects must be in 1..{MAX_OBJECTS}, got {n_objects}")
    pairs = list(product(COLORS, SHAPES))
    objects = [pairs[i] for i in rng.choice(len(pairs), size=n_objects, replace=False)]
    image = _background(rng, size)
    taken: list[tuple[float, float, float]] = []
    masks = []
    for color, shape in objects:
        taken.append(_place(rng, size, taken))
        mask = _draw(size, *taken[-1], shape)
        shade = np.array(_RGB[color]) * rng.uniform(0.9, 1.05)
        image[mask] = shade + rng.normal(0, 6, size=(int(mask.sum()), 3))
        masks.append(mask)
    return Scene(
        image=np.clip(np.rint(image), 0, 255).astype(np.uint8),
        objects=objects,
        captions=[prompt(color, shape) for color, shape in objects],
        boxes=np.stack([tight_box(mask) for mask in masks]),
        masks=np.stack(masks),
    )


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 to a (3, H, W) float tensor in [0, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1).float().div(255)


class ShapesDataset(Dataset):
    """Scenes paired with a caption naming their objects in random order, for training.

    The caption joins object prompts with " and ", e.g. "a red circle and a blue square". A
    16-token context holds three such prompts, so a scene with more objects is described by a
    random three of them, as a real caption also leaves things out.

    Args:
        seeds: One scene seed per index.
        n_objects: Objects per scene: an int, a sequence to draw from (per index, from its seed),
            or None for ``render_scene``'s default.
        size: Image side in pixels; None means ``DEFAULT_SIZE``.
        transform: Maps the (H, W, 3) uint8 image to a tensor; None means ``to_tensor``.
        caption_objects: Most objects a caption names.
        partial_captions: Name a random number of objects, from one to the most allowed, so that
            single-object prompts also describe crowded scenes.
    """

    def __init__(
        self,
        seeds: Sequence[int] | range,
        n_objects: int | Sequence[int] | None = None,
        size: int | None = None,
        transform: Callable[[np.ndarray], torch.Tensor] | None = None,
        caption_objects: int = 3,
        partial_captions: bool = False,
    ) -> None:
        self.seeds = seeds
        self.n_objects = n_objects
        self.size = size
        self.transform = to_tensor if transform is None else transform
        self.caption_objects = caption_objects
        self.partial_captions = partial_captions

    def __len__(self) -> int:
        return len(self.seeds)

    def sample(self, index: int) -> tuple[Scene, list[tuple[str, str]]]:
        """The scene of an index and the objects its caption names, in caption order."""
        seed = int(self.seeds[index])
        # A second stream of the same seed, so captions never disturb the scene's own draws.
        rng = np.random.default_rng([seed, 1])
        n_objects = self.n_objects
        if n_objects is not None and not isinstance(n_objects, int):
            n_objects = int(rng.choice(list(n_objects)))
        scene = render_scene(seed, n_objects, self.size)
        named = min(self.caption_objects, len(scene.objects))
        if self.partial_captions:
            named = int(rng.integers(1, named + 1))
        order = rng.permutation(len(scene.objects))[:named]
        return scene, [scene.objects[i] for i in order]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        scene, named = self.sample(index)
        return self.transform(scene.image), caption(named)


def caption(objects: Sequence[tuple[str, str]]) -> str:
    """The prompts of (colour, shape) objects joined by " and "."""
    return " and ".join(prompt(color, shape) for color, shape in objects)
