"""The documentation runs, builds and renders.

- Every ```python block of the site's pages (``docs/**/*.md``; the README's are
  ``tests/integration/test_readme.py``'s) runs: the
  blocks of one page in order, in one namespace, in a temporary folder that holds
  ``photo.jpg`` (scikit-image's photo of a cat, 451 x 300). Nothing is downloaded: where a block
  loads published weights, the test substitutes the same architecture with random weights
  (open_clip's ``create_model_and_transforms(..., pretrained=...)`` runs with
  ``pretrained=None``), and Hugging Face's ``CLIPModel.from_pretrained`` /
  ``CLIPProcessor.from_pretrained`` return a tiny random ``CLIPModel`` and a processor over a
  small real tokenizer. The share of channels gScoreCAM keeps on convolutional layers is lowered
  (the same code path, a handful of masked passes) so that RN50 blocks run in seconds. The
  pages say what the blocks download; the results they print are not checked against the
  published weights' results.
- ``mkdocs build --strict`` passes (broken links, missing API objects and warnings fail it), the
  generated pages hold what they are generated from, and every internal link and image of the
  built site resolves.
- In headless Chromium, the home page, an API page and the localization benchmark show their
  headings and load their images; screenshots are kept in pytest's temporary folder.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import matplotlib

matplotlib.use("Agg")

import numpy as np
import open_clip
import pytest
from PIL import Image
from skimage import data

from captum_gscorecam import checks
from tests.helpers import ROOT

DOCS = ROOT / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", flags=re.M | re.S)


def python_blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text())


PAGES = sorted(DOCS.rglob("*.md"))  # the README's blocks: tests/integration/test_readme.py
PAGES_WITH_CODE = [page for page in PAGES if python_blocks(page)]


def page_id(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


# -- substitutions for downloads ---------------------------------------------------------------

HF_WIDTH = 32
WORDS = ["ca", "cat</w>", "so", "sofa</w>"]
MERGES = ["c a", "ca t</w>", "s o", "so f", "sof a</w>"]


def tiny_hf_clip() -> object:
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(0)
    layers = {"hidden_size": HF_WIDTH, "intermediate_size": 64, "num_attention_heads": 2}
    vision = {**layers, "num_hidden_layers": 2, "patch_size": 8, "image_size": 32}
    text = {
        **layers,
        "num_hidden_layers": 1,
        "vocab_size": 60,
        "max_position_embeddings": 16,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 1,
    }
    config = transformers.CLIPConfig(
        text_config=text, vision_config=vision, projection_dim=HF_WIDTH
    )
    return transformers.CLIPModel(config)


def tiny_hf_processor(folder: Path) -> object:
    import string

    transformers = pytest.importorskip("transformers")
    vocab = ["<|startoftext|>", "<|endoftext|>", *string.ascii_lowercase]
    vocab += [*(c + "</w>" for c in string.ascii_lowercase), *WORDS, "sof"]
    folder.mkdir(exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(folder), model_max_length=16)
    images = transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32)
    return transformers.CLIPProcessor(image_processor=images, tokenizer=tokenizer)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """A folder with photo.jpg and no downloads (see the module's docstring)."""
    create = open_clip.create_model_and_transforms

    def random_weights(name, pretrained=None, **kwargs):
        return create(name, pretrained=None, **kwargs)

    monkeypatch.setattr(open_clip, "create_model_and_transforms", random_weights)
    monkeypatch.setattr(checks, "CONV_TOPK_SHARE", 0.003)  # k = 7 of RN50's 2,048 channels
    try:
        import transformers
    except ImportError:
        pass
    else:
        processor = tiny_hf_processor(tmp_path / "hf")
        monkeypatch.setattr(
            transformers.CLIPModel, "from_pretrained", lambda *a, **k: tiny_hf_clip()
        )
        monkeypatch.setattr(
            transformers.CLIPProcessor, "from_pretrained", lambda *a, **k: processor
        )
    monkeypatch.chdir(tmp_path)
    Image.fromarray(data.chelsea()).save("photo.jpg")  # 451 x 300
    return tmp_path


# -- every python block runs -------------------------------------------------------------------


def check_photos(namespace: dict, folder: Path) -> None:
    """The photo guide's example: maps on the whole photo, Captum's figure, overlays."""
    maps = namespace["maps"]
    assert maps.shape == (2, 300, 451)
    assert maps.dtype == np.float32
    cut = np.isnan(maps).all(axis=(0, 1))  # the centre crop keeps the middle 300 columns
    assert cut[:75].all()
    assert cut[376:].all()
    assert not np.isnan(maps[:, :, 76:375]).any()
    for name in ("captum.png", "a_cat.png", "a_sofa.png"):
        assert (folder / name).is_file(), name
    assert Image.open(folder / "a_cat.png").size == (451, 300)
    assert namespace["attr"].shape == (1, 2, 7, 7)
    assert namespace["up"].shape == (1, 2, 224, 224)


def check_quickstart(namespace: dict, folder: Path) -> None:
    assert namespace["maps"].shape == (1, 3, 7, 7)
    assert len(namespace["scene"].captions) == 3


def check_models(namespace: dict, folder: Path) -> None:
    maps = namespace["maps"]
    assert maps.shape == (1, 2, 4, 4)  # the tiny stand-in's 4 x 4 patch grid
    assert np.isfinite(maps.numpy()).all()


CHECKS = {
    "docs/guide/photos.md": check_photos,
    "docs/quickstart.md": check_quickstart,
    "docs/guide/models.md": check_models,
}


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=page_id)
def test_every_python_block_of_a_page_runs(page, offline):
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for number, block in enumerate(python_blocks(page), start=1):
        exec(compile(block, f"{page_id(page)} (python block {number})", "exec"), namespace)
    check = CHECKS.get(page_id(page))
    if check is not None:
        check(namespace, offline)


def test_the_pages_with_checks_have_code():
    assert {page_id(p) for p in PAGES_WITH_CODE} >= set(CHECKS)


# -- the site builds ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    folder = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(folder)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-4000:]
    assert "WARNING" not in build.stderr, build.stderr[-4000:]
    return folder


def page_text(site: Path, uri: str) -> str:
    html = (site / uri / "index.html").read_text()
    article = html[html.index("<article") : html.index("</article>")]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", article))


def test_the_cli_page_is_the_parsers_help(site):
    from captum_gscorecam.cli import parser

    text = page_text(site, "cli")
    root = parser()
    (commands,) = (a for a in root._actions if a.choices and a.dest == "command")
    for name, sub in commands.choices.items():
        assert f"gscorecam {name}" in text
        for action in sub._actions:
            for option in action.option_strings:
                assert option in text, f"{name} {option}"
    assert "--precision" in text


def test_every_public_module_has_an_api_page(site):
    modules = []
    for path in (ROOT / "captum_gscorecam").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        if not any(p.startswith("_") for p in parts[1:]):
            modules.append(".".join(parts))
    assert len(modules) > 10
    for name in modules:
        page = site / "reference" / name / "index.html"
        assert page.is_file(), name
    from captum_gscorecam import GScoreCAM

    text = page_text(site, f"reference/{GScoreCAM.__module__}")
    assert "GScoreCAM" in text
    assert "topk" in text  # the arguments table from the docstring
    assert "Default" in text


def test_every_results_file_is_on_a_benchmark_page(site):
    pages = " ".join(
        page_text(site, page.parent.relative_to(site).as_posix())
        for page in (site / "benchmarks").rglob("index.html")
    )
    for results in (ROOT / "benchmarks" / "results").rglob("*.md"):
        first = re.sub(r"\s+", " ", results.read_text().strip().splitlines()[0]).lstrip("# ")
        first = re.sub(r"[*`]", "", first)
        assert first[:60] in pages, results


def test_generated_counts_and_constants_are_filled_in(site):
    for uri in ("reliability", "guide/choosing-k", "methods/captum", "benchmarks/topk"):
        text = page_text(site, uri)
        assert "{{" not in text, uri
        assert "}}" not in text, uri
    assert f"{checks.TOKEN_TOPK_SHARE * 100:g}%" in page_text(site, "guide/choosing-k")


def test_formulas_are_mathml_without_a_script(site):
    for uri in ("methods/gscorecam", "methods/hilacam", "evaluation"):
        html = (site / uri / "index.html").read_text()
        article = html[html.index("<article") : html.index("</article>")]
        assert article.count("<math") >= 2, uri
        assert "\\(" not in article, uri  # no TeX left for a script to typeset
        assert "mathjax" not in html.lower(), uri


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and ((tag == "a" and name == "href") or name == "src"):
                self.targets.append(value)


def test_every_internal_link_image_and_anchor_resolves(site):
    html = functools.cache(lambda path: path.read_text(errors="replace"))
    broken = []
    for page in site.rglob("*.html"):
        links = Links()
        links.feed(page.read_text())
        for target in links.targets:
            parts = urlsplit(target)
            if parts.scheme or parts.netloc or not parts.path:
                continue  # external, or an anchor on the same page
            base = site if parts.path.startswith("/") else page.parent  # 404.html: from the root
            resolved = (base / unquote(parts.path).lstrip("/")).resolve()
            if resolved.is_dir():
                resolved = resolved / "index.html"
            if not resolved.is_file():
                broken.append(f"{page.relative_to(site)} -> {target}")
            elif parts.fragment and f'id="{unquote(parts.fragment)}"' not in html(resolved):
                broken.append(f"{page.relative_to(site)} -> {target} (no such anchor)")
    assert not broken, broken[:20]


# -- the site in a browser ---------------------------------------------------------------------


@pytest.mark.browser
def test_the_site_in_a_real_browser(site, tmp_path, chrome):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from captum_gscorecam import GScoreCAM

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    pages = {
        "home": ("", "captum-gscorecam", ["Why use it", "Where next"], "demo.png"),
        "api": (f"reference/{GScoreCAM.__module__}/", GScoreCAM.__module__, ["GScoreCAM"], None),
        "benchmarks": (
            "benchmarks/localization/",
            "Localization",
            ["shapes-rn", "shapes-vit", "Reading the tables"],
            "results.png",
        ),
    }
    seen = {}
    driver = chrome
    try:
        for name, (uri, *_) in pages.items():
            driver.get(f"http://127.0.0.1:{server.server_port}/{uri}")
            WebDriverWait(driver, 30).until(
                lambda d: d.execute_script("return document.readyState") == "complete"
            )
            driver.save_screenshot(str(tmp_path / f"{name}.png"))
            h1 = driver.find_element(By.CSS_SELECTOR, "article h1").text
            shown = [h.text for h in driver.find_elements(By.CSS_SELECTOR, "article h2")]
            loaded = driver.execute_script(
                "return Array.from(document.querySelectorAll('article img'))"
                ".filter(i => i.complete && i.naturalWidth > 0).map(i => i.src)"
            )
            seen[name] = (h1, shown, loaded)
    finally:
        server.shutdown()
    for name, (_, title, headings, image) in pages.items():
        h1, shown, loaded = seen[name]
        assert title in h1, (name, h1)
        for heading in headings:
            assert any(heading in h for h in shown), (name, heading, shown)
        if image is not None:
            assert any(src.endswith(image) for src in loaded), (name, loaded)
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
