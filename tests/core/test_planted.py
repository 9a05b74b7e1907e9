"""Planted ground truth: a CLIP-like model that sees only one object gets its map on that object."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from captum_gscorecam import GScoreCAM, ScoreCAM

PALETTE = torch.cat([torch.eye(3), -torch.eye(3)])  # six colours, pairwise cos <= 0
QUADRANTS = [(0, 0), (0, 1), (1, 0), (1, 1)]


class RegionCLIP(nn.Module):
    """Colour detectors on a 16 x 16 grid; ``encode_image`` pools one quadrant of it only.

    Channels 0-5 fire on exactly one palette colour, channel 6 everywhere (a background
    feature, so that no image embeds exactly along one detector), channels 7-63 are random
    with a negative bias, so that each fires on few colours.
    """

    def __init__(self, quadrant: tuple[int, int], seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(nn.Conv2d(3, 64, 1), nn.ReLU(), nn.AvgPool2d(2))
        with torch.no_grad():
            conv = self.features[0]
            conv.weight.normal_()
            conv.bias.fill_(-2.0)
            conv.weight[:6, :, 0, 0] = 3 * PALETTE
            conv.weight[6] = 0
            conv.bias[6] = 1.0
        self.proj = nn.Linear(64, 32, bias=False)  # an empty quadrant embeds to 0
        self.logit_scale = nn.Parameter(torch.tensor(100.0).log())
        region = torch.zeros(16, 16)
        row, col = quadrant
        region[8 * row : 8 * row + 8, 8 * col : 8 * col + 8] = 1
        self.register_buffer("region", region)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.features(images)
        pooled = (feats * self.region).sum(dim=(2, 3)) / self.region.sum()
        return self.proj(pooled)


def scenes(n: int) -> torch.Tensor:
    """Four squares of distinct palette colours, one per quadrant of a dark, noisy 32 x 32 image."""
    g = torch.Generator().manual_seed(7)
    images = 0.05 * torch.randn(n, 3, 32, 32, generator=g)
    for i in range(n):
        colours = PALETTE[torch.randperm(6, generator=g)[:4]]
        for (row, col), colour in zip(QUADRANTS, colours, strict=True):
            images[i, :, 16 * row + 4 : 16 * row + 12, 16 * col + 4 : 16 * col + 12] = colour[
                :, None, None
            ]
    return images


@pytest.mark.parametrize("method", [GScoreCAM, ScoreCAM])
@pytest.mark.parametrize("quadrant", QUADRANTS)
def test_mass_lands_on_the_object_the_model_sees(method, quadrant):
    model = RegionCLIP(quadrant, seed=sum(quadrant))
    images = scenes(4)
    row, col = quadrant
    seen = images[:, :, 16 * row + 8, 16 * col + 8]  # the colour of the object the model sees
    detector = (seen @ PALETTE.T).argmax(dim=1)
    with torch.no_grad():  # the "text": the embedding direction of that colour's detector
        text = F.normalize(model.proj.weight[:, detector].T, dim=-1)
    kwargs = {"topk": 16} if method is GScoreCAM else {}
    maps = method(model, model.features).attribute(images, target=text, **kwargs)[:, 0]
    inside = (maps * model.region).sum(dim=(1, 2)) / maps.sum(dim=(1, 2))
    # the quadrant is a quarter of the grid; a map blind to the model would put ~25% there
    assert (inside > 0.8).all(), inside
    peak = maps.flatten(1).argmax(dim=1)
    assert model.region.flatten()[peak].all()
