"""The README runs as written, apart from one substitution it states itself.

Every Python block of the README runs, in order, in one namespace, in a temporary folder that
holds scikit-image's non-square photo of a cat as ``photo.jpg``. The "Use" block loads OpenAI's
RN50 weights with ``pretrained="openai"``, a download: the test replaces it with
``pretrained=None`` (open_clip builds the same RN50 with random weights), so the maps it checks
are maps of a random model: their shape, dtype, placement on the photo and files, not what they
show. The default k's share is lowered for the test (the same code path, 7 masked passes per
prompt) to keep the suite fast; the README says what the real default costs.
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
from tests.helpers import ROOT

README = ROOT / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.M | re.S)


def use_snippet() -> str:
    """The first Python block of the README's "Use" section."""
    section = README.read_text().split("\n## Use\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match is not None, "the Use section has no Python block"
    return match.group(1)


@pytest.mark.slow
def test_the_readme_runs_with_random_weights_in_place_of_the_download(tmp_path, monkeypatch):
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
    assert python_blocks()[0] == snippet
    namespace: dict[str, object] = {}
    for number, block in enumerate(python_blocks(), start=1):
        exec(compile(block, f"README.md (python block {number})", "exec"), namespace)

    maps = namespace["maps"]
    assert maps.shape == (2, 300, 451)
    assert maps.dtype == np.float32
    # the centre crop keeps the middle 300 columns: the sides have no value
    cut = np.isnan(maps).all(axis=(0, 1))
    assert cut[:75].all()
    assert cut[376:].all()
    assert not np.isnan(maps[:, :, 76:375]).any()
    for name in ("a_cat.png", "a_sofa.png"):
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


def test_the_readme_says_that_its_example_downloads_and_what_the_test_does():
    section = README.read_text().split("\n## Use\n", 1)[1].split("```python")[0]
    assert "downloads" in section
    assert "tests/integration/test_readme.py" in section
    assert "pretrained=None" in section  # the substitution, said where the block is


def test_the_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci.startswith("pip install torch==")
    assert f"```bash\n{ci}\n```" in README.read_text()


def test_the_readme_is_short_and_its_links_resolve():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (ROOT / target).exists(), target
