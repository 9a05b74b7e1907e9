"""The README's "Use" snippet runs as written, so it cannot drift from the library.

It runs on an open_clip RN50 with random weights (``pretrained`` forced to None: nothing is
downloaded) and scikit-image's non-square photo of a cat saved as ``photo.jpg``. The default
k's share is lowered for the test (same code path, 7 masked passes per prompt) to keep the
suite fast; the README states the real cost.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import open_clip
import pytest
from PIL import Image
from skimage import data

from captum_gscorecam import checks

README = Path(__file__).parents[1] / "README.md"


def use_snippet() -> str:
    """The first Python block of the README's "Use" section."""
    section = README.read_text().split("\n## Use\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match is not None, "the Use section has no Python block"
    return match.group(1)


def test_the_use_snippet_runs_as_written(tmp_path, monkeypatch):
    create = open_clip.create_model_and_transforms

    def offline(name, pretrained=None, **kwargs):
        return create(name, pretrained=None, **kwargs)

    monkeypatch.setattr(open_clip, "create_model_and_transforms", offline)
    monkeypatch.setattr(checks, "CONV_TOPK_SHARE", 0.003)  # k = 7 of 2,048
    monkeypatch.chdir(tmp_path)
    cat = data.chelsea()  # 451 x 300
    Image.fromarray(cat).save("photo.jpg")
    snippet = use_snippet()
    assert 'Image.open("photo.jpg")' in snippet
    assert 'pretrained="openai"' in snippet
    namespace: dict[str, object] = {}
    exec(compile(snippet, str(README), "exec"), namespace)

    maps = namespace["maps"]
    assert maps.shape == (2, 300, 451)
    assert maps.dtype == np.float32
    # the centre crop keeps the middle 300 columns: the sides have no value
    cut = np.isnan(maps).all(axis=(0, 1))
    assert cut[:75].all()
    assert cut[376:].all()
    assert not np.isnan(maps[:, :, 76:375]).any()
    for name in ("captum.png", "a_cat.png", "a_sofa.png"):
        assert Path(name).is_file(), name
    assert Image.open("a_cat.png").size == (451, 300)
    assert namespace["attr"].shape == (1, 2, 7, 7)


def test_the_snippet_is_the_documented_cpu_setting():
    snippet = use_snippet()
    assert '"RN50"' in snippet
    assert "show_progress=True" in snippet
    assert "topk" not in snippet  # the default k
    with pytest.raises(IndexError):
        README.read_text().split("\n## Use\n")[2]  # one Use section
