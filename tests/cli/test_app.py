"""The web app (``gscorecam app``): its functions through gradio_client against a server on
127.0.0.1 (a free port) in this process, and the page served by the ``gscorecam app`` command in
headless Chromium; both with the bundled shapes-rn model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import captum_gscorecam
from captum_gscorecam.app import build_app, parse_prompts
from captum_gscorecam.cli import main
from captum_gscorecam.clip import CLIPSimilarity, encode_text
from captum_gscorecam.methods import explain_maps
from captum_gscorecam.photos import explain_photo
from captum_gscorecam.provenance import Provenance
from captum_gscorecam.shapes import load_shapes_clip, render_scene
from captum_gscorecam.visualization import to_photo
from tests.helpers import NO_CHROMIUM, NO_SELENIUM, ROOT

SCENE_SEED = 10_000_007
# gradio's queue calls pandas options that pandas 3 deprecates; not ours to fix
pytestmark = [
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]
NEEDS_GRADIO = "the app needs the [app] extra: pip install -e '.[app]' (gradio, gradio_client)"


@pytest.fixture(scope="module")
def server(free_port):
    pytest.importorskip("gradio", reason=NEEDS_GRADIO)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    page = build_app("shapes-rn")
    port = free_port()
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        page.close()


@pytest.fixture(scope="module")
def client(server):
    gradio_client = pytest.importorskip("gradio_client", reason=NEEDS_GRADIO)
    return gradio_client.Client(server, verbose=False)


def _app_error() -> type[Exception]:
    from gradio_client.exceptions import AppError

    return AppError


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A held-out scene stretched to a non-square 320 x 240 photo."""
    scene = render_scene(SCENE_SEED, 3)
    path = tmp_path_factory.mktemp("photo") / "scene.png"
    Image.fromarray(scene.image).resize((320, 240), Image.Resampling.BICUBIC).save(path)
    return path


def _explain(client, path, prompts, method="gscorecam", topk="", precision="fp32"):
    """The overlays, scores, status and maps' path of the page's explain."""
    return _explain_all(client, path, prompts, method, topk, precision)[:4]


def _explain_all(
    client, path, prompts, method="gscorecam", topk="", precision="fp32", scale="shared"
):
    """Everything the page's explain returns: also the figure's path."""
    from gradio_client import handle_file

    return client.predict(
        handle_file(str(path)), prompts, method, topk, precision, scale, api_name="/explain"
    )


def test_maps_and_scores_are_the_librarys_on_the_photo(client, photo):
    captions = render_scene(SCENE_SEED, 3).captions
    gallery, scores, status, maps_path = _explain(client, photo, "\n".join(captions), topk="0.1")
    model, preprocess, tokenizer = load_shapes_clip("rn")
    image = Image.open(photo).convert("RGB")
    images = preprocess(image)[None]
    text = encode_text(model, tokenizer, captions)[None]
    expected = to_photo(
        explain_maps(model, images, text, "gscorecam", 0.1)[0], (320, 240), preprocess
    )
    maps = np.load(maps_path)
    assert maps.dtype == np.float32
    assert maps.shape == (3, 240, 320)
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        expected_scores = CLIPSimilarity(model)(images, text)[0].numpy()
    assert [row[0] for row in scores["data"]] == captions
    np.testing.assert_allclose(
        [row[1] for row in scores["data"]], expected_scores, atol=0.0051
    )  # 2 d.p.
    assert len(gallery) == 3
    for item, caption, score in zip(gallery, captions, expected_scores, strict=True):
        assert Image.open(item["image"]).size == (320, 240)  # the overlay is on the photo
        assert item["caption"] == f"{caption}: {score:.2f}"
    assert status.startswith("gScoreCAM on 3 prompts (fp32 masked passes): **")


def test_the_precision_reaches_the_masked_passes(client, photo):
    captions = render_scene(SCENE_SEED, 3).captions
    _, _, status, maps_path = _explain(client, photo, "\n".join(captions), precision="bf16")
    assert status.startswith("gScoreCAM on 3 prompts (bf16 masked passes): **")
    model, preprocess, tokenizer = load_shapes_clip("rn")
    image = Image.open(photo).convert("RGB")
    text = encode_text(model, tokenizer, captions)
    expected = explain_photo(model, preprocess, image, text, "gscorecam", precision="bf16").maps
    exact = explain_photo(model, preprocess, image, text, "gscorecam").maps
    maps = np.load(maps_path)
    np.testing.assert_allclose(maps, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
    assert not np.array_equal(maps, exact)  # the bf16 tower ran, not the exact path
    _, _, status, _ = _explain(client, photo, "a red circle", method="gradcam", precision="bf16")
    assert status.startswith("LayerGradCam on 1 prompt: **")  # no masked passes to speak of


def test_a_bundled_scene_fills_the_photo_and_the_prompts(client):
    path, prompts = client.predict(SCENE_SEED, 4, api_name="/scene")
    scene = render_scene(SCENE_SEED, 4)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), scene.image)
    assert prompts.splitlines() == scene.captions
    gallery, scores, _, _ = _explain(client, path, prompts, method="gradcam")
    assert len(gallery) == len(scores["data"]) == 4


@pytest.mark.parametrize(
    ("prompts", "topk", "message"),
    [
        ("  \n \n", "", "prompts: type at least one prompt, one per line"),
        ("a red circle", "0", "k: expected a channel count"),
        ("a red circle", "1.5", "k: expected a channel count"),
        ("a red circle", "many", "k: expected a channel count (300) or a fraction"),
    ],
)
def test_bad_text_is_a_message_in_the_page(client, photo, prompts, topk, message):
    with pytest.raises(_app_error()) as error:
        _explain(client, photo, prompts, topk=topk)
    assert message in str(error.value)
    assert "Traceback" not in str(error.value)


def test_a_file_that_is_not_an_image_is_a_message_in_the_page(client, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("not a picture")
    from gradio_client import handle_file

    with pytest.raises(_app_error(), match="image: not an image file: notes"):
        _explain(client, fake, "a red circle")
    with pytest.raises(_app_error(), match="image: not an image file: notes"):
        client.predict(handle_file(str(fake)), api_name="/preview")


# What made the result, said in the page; labels and keys; refusals in one line


def test_what_made_the_result_is_in_the_status_and_the_figure(client, photo):
    _, scores, status, maps, figure, record = _explain_all(
        client, photo, "a red circle\na blue square"
    )
    line = (
        "gScoreCAM | k=26/256 | layer visual.layer4 | shapes-rn (shapes world: knows only "
        "coloured shapes) | template '{}' | fp32 on cpu | captum-gscorecam "
        f"{captum_gscorecam.__version__}"
    )
    assert f"\n\n`{line}`\n\n" in status
    # an uploaded photo is not a shapes scene: the shapes model cannot know it
    assert status.endswith("**warning: shapes-rn knows only coloured shapes (the bundled shapes "
                           "world); on a photo its maps and scores mean nothing: use a real CLIP "
                           "(RN50, openai)**")  # fmt: skip
    # beside the maps, what made them: explain --save-maps's <image>.json
    made = json.loads(Path(record).read_text())
    assert made["prompts"] == ["a red circle", "a blue square"]
    assert made["scores"] == pytest.approx([row[1] for row in scores["data"]], abs=0.005)
    assert len(made["scores"]) == np.load(maps).shape[0]
    assert Provenance(**made["provenance"]).line() == line
    assert made["warnings"] == [status.rpartition("\n\n**")[2].removesuffix("**")]
    assert made["scale"] == "shared"
    drawn = Image.open(figure)  # the command line's figure: a panel per prompt, stacked
    assert drawn.format == "PNG"
    assert drawn.size[1] > 1.5 * drawn.size[0]


def test_a_scene_the_page_drew_is_no_photo_the_shapes_model_cannot_know(client, tmp_path):
    path, prompts = client.predict(SCENE_SEED, 2, api_name="/scene")
    _, _, status, _ = _explain(client, path, prompts, method="gradcam")
    assert "warning" not in status
    # the same scene's pixels saved by someone else are a photo like any other
    other = tmp_path / "mine.png"
    Image.fromarray(render_scene(SCENE_SEED, 2).image).convert("L").convert("RGB").save(other)
    _, _, status, _ = _explain(client, other, prompts, method="gradcam")
    assert "**warning: shapes-rn knows only coloured shapes" in status


def test_the_api_takes_the_methods_label_as_the_page_shows_it(client, photo):
    by_key = np.load(_explain(client, photo, "a red circle", method="gradcam")[3])
    _, _, status, maps = _explain(client, photo, "a red circle", method="LayerGradCam")
    assert status.startswith("LayerGradCam on 1 prompt: **")
    np.testing.assert_array_equal(np.load(maps), by_key)
    with pytest.raises(
        _app_error(), match=r"method: expected one of gscorecam, .* got 'Grad-CAM\+\+'"
    ):
        _explain(client, photo, "a red circle", method="Grad-CAM++")
    with pytest.raises(_app_error(), match="method: hilacam cannot explain this model"):
        _explain(client, photo, "a red circle", method="hilacam")  # a ViT method, on an RN


def test_the_colour_scale_reaches_the_overlays(client, photo):
    prompts = "a red circle\na blue square\na green ring"
    shared = _explain_all(client, photo, prompts)[0]
    own = _explain_all(client, photo, prompts, scale="per-prompt")[0]
    change = [
        np.abs(
            np.asarray(Image.open(a["image"]), float) - np.asarray(Image.open(b["image"]))
        ).mean()
        for a, b in zip(shared, own, strict=True)
    ]
    assert max(change) > 5  # some map is drawn on another range than its own
    with pytest.raises(
        _app_error(), match=r"not in the list of choices: \['shared', 'per-prompt'\]"
    ):
        _explain_all(client, photo, "a red circle", scale="global")


def test_a_refused_request_is_one_line_in_the_log(client, photo, capsys):
    capsys.readouterr()
    with pytest.raises(_app_error()):
        _explain(client, photo, "  \n ")
    err = capsys.readouterr().err
    assert "gscorecam app: refused: prompts: type at least one prompt, one per line\n" in err
    assert "Traceback" not in err


def test_prompts_are_one_per_line():
    assert parse_prompts(" a dog, sitting \n\n a cat\n") == ["a dog, sitting", "a cat"]
    with pytest.raises(ValueError, match="prompts"):
        parse_prompts("\n  ")


def test_app_help_names_every_option_and_its_default(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["app", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for option in ("--model", "--pretrained", "--device", "--host", "--port"):
        assert option in out
    assert "(default: 127.0.0.1)" in out
    assert "(default: 7860)" in out


@pytest.mark.parametrize("port", ["0", "65536", "http"])
def test_a_bad_port_is_refused_as_it_is_parsed(capsys, port):
    with pytest.raises(SystemExit) as exited:
        main(["app", "--port", port])
    assert exited.value.code == 2
    assert "argument --port: expected a port from 1 to 65535" in capsys.readouterr().err


def test_without_gradio_the_command_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio raises ImportError
    assert main(["app", "--device", "cpu"]) == 2
    assert capsys.readouterr().err == (
        "gscorecam app: error: the web app needs gradio: pip install 'captum-gscorecam[app]'\n"
    )


def test_a_port_in_use_is_one_line(server, capsys):
    port = server.rstrip("/").rsplit(":", 1)[1]
    assert main(["app", "--port", port, "--device", "cpu", "--model", "shapes-rn"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"gscorecam app: error: argument --port: cannot serve on 127.0.0.1:{port}"
    )
    assert err.count("\n") == 1


@pytest.fixture(scope="module")
def command_server(tmp_path_factory, free_port):
    """``python -m captum_gscorecam app`` on a free port, as a user starts it."""
    pytest.importorskip("gradio", reason=NEEDS_GRADIO)
    port = free_port()
    log = tmp_path_factory.mktemp("app") / "app.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "captum_gscorecam", "app", "--port", str(port), "--device",
             "cpu", "--model", "shapes-rn"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while "serving shapes-rn on http://127.0.0.1:" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.browser
def test_the_page_in_a_real_browser(command_server, photo, tmp_path, chrome):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chrome
    driver.get(command_server)
    wait = WebDriverWait(driver, 60)
    upload = wait.until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "#photo input[type=file]"))
    )
    driver.find_element(By.CSS_SELECTOR, "#prompts textarea").send_keys(
        "a red circle\na blue square"
    )
    # a mistake first: its message stays readable after Gradio's 10 s
    driver.find_element(By.CSS_SELECTOR, "#explain").click()
    message = "photo: upload a photo or pick a shapes scene first"
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), message))
    time.sleep(11)
    still_there = message in driver.find_element(By.TAG_NAME, "body").text
    upload.send_keys(str(photo))
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#preview img")))
    driver.find_element(By.CSS_SELECTOR, "#explain").click()
    overlay = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#overlays img")))
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#scores"), "a blue square"))
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#status"), " s"))
    figure = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#figure img")))
    driver.save_screenshot(str(tmp_path / "app.png"))
    loaded = driver.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth", overlay
    )
    drawn = driver.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth", figure
    )
    captions = [
        (label.text, label.value_of_css_property("opacity"))
        for label in driver.find_elements(By.CSS_SELECTOR, "#overlays .caption-label")
    ]
    scores = driver.find_element(By.CSS_SELECTOR, "#scores").text
    status = driver.find_element(By.CSS_SELECTOR, "#status").text
    assert still_there
    assert drawn > 0
    # every overlay's prompt shown under it, without hovering or clicking
    assert [text.split(":")[0] for text, _ in captions] == ["a red circle", "a blue square"]
    assert {opacity for _, opacity in captions} == {"1"}
    assert "shapes-rn (shapes world: knows only coloured shapes)" in status
    assert "warning: shapes-rn knows only coloured shapes" in status
    assert loaded > 0  # the overlay image was decoded, not a broken link
    assert "a red circle" in scores
    assert any(_is_number(word) for word in scores.split())
    assert status.startswith("gScoreCAM on 2 prompts (")
    assert (tmp_path / "app.png").stat().st_size > 10_000


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# Inputs checked and named, the temporary folder cleaned, large photos drawn downscaled


def test_k_for_a_method_without_k_is_refused_as_the_command_line_does(client, photo):
    with pytest.raises(_app_error(), match="k: ScoreCAM does not use k; it applies to gScoreCAM"):
        _explain(client, photo, "a red circle", method="scorecam", topk="0.5")


def _bare_explainer():
    """The page's callbacks without a model: enough for what is refused before it is used."""
    pytest.importorskip("gradio", reason=NEEDS_GRADIO)
    from captum_gscorecam.app import _Explainer

    return _Explainer(None, None, None, "cpu", "shapes-rn", None)


@pytest.mark.parametrize(
    ("seed", "objects", "message"),
    [
        (float("inf"), 3, "seed: expected a whole number from 0 to 9223372036854775807, got inf"),
        (1e300, 3, "seed: expected a whole number from 0 to 9223372036854775807, got 1e+300"),
        (float("nan"), 3, "seed: expected a whole number from 0 to 9223372036854775807, got nan"),
        (-5, 3, "seed: expected a whole number from 0 to 9223372036854775807, got -5"),
        (None, 3, "seed: expected a whole number from 0 to 9223372036854775807, got None"),
        (2.5, 3, "seed: expected a whole number from 0 to 9223372036854775807, got 2.5"),
        (7, 0, "objects: expected a whole number from 1 to 6, got 0"),
        (7, 6.5, "objects: expected a whole number from 1 to 6, got 6.5"),
    ],
)
def test_scene_seeds_and_counts_are_checked_and_named(seed, objects, message):
    import gradio as gr

    explainer = _bare_explainer()
    with pytest.raises(gr.Error) as error:
        explainer.scene(seed, objects)
    assert str(error.value.message) == message
    assert os.listdir(explainer.folder) == []
    path, prompts = explainer.scene(7.0, 2)  # a whole float, as gr.Number gives it
    assert Path(path).name == "scene-7-2.png"
    assert len(prompts.splitlines()) == 2


def test_a_fifo_upload_is_refused_without_blocking(tmp_path):
    import threading

    import gradio as gr

    explainer = _bare_explainer()
    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)
    outcome = []

    def call() -> None:
        try:
            explainer.explain(
                str(fifo), "a red circle", "gscorecam", "", "fp32", "shared", lambda *a, **k: 0
            )
        except gr.Error as error:
            outcome.append(str(error.message))

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(30)
    if worker.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("the app blocked on a FIFO")
    assert outcome == ["image: photo.png is a FIFO (named pipe), not a photo file"]


def _app_folders(pid: int) -> set[Path]:
    import tempfile

    return set(Path(tempfile.gettempdir()).glob(f"gscorecam-app-{pid}-*"))


def test_close_removes_the_temporary_folder_and_dead_apps_folders_are_swept():
    import tempfile

    pytest.importorskip("gradio", reason=NEEDS_GRADIO)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
    dead = Path(tempfile.mkdtemp(prefix=f"gscorecam-app-{finished.stdout.strip()}-"))
    (dead / "gscorecam-maps.npy").write_bytes(b"maps of a killed app")
    alive = Path(tempfile.mkdtemp(prefix=f"gscorecam-app-{os.getppid()}-"))
    before = _app_folders(os.getpid())
    page = build_app("shapes-rn")
    assert not dead.exists()  # its process is gone
    assert alive.exists()  # its process runs: left alone
    alive.rmdir()
    (new,) = _app_folders(os.getpid()) - before
    assert new.is_dir()
    page.close()
    assert not new.exists()


def test_sigterm_stops_as_ctrl_c_and_the_exit_removes_the_folder(tmp_path):
    """``gscorecam app`` turns SIGTERM into KeyboardInterrupt (Gradio's block_thread then closes
    the server and returns); the interpreter's exit removes the folder."""
    code = (
        "import signal, sys, time\n"
        "from captum_gscorecam.app import _Explainer\n"
        "from captum_gscorecam.cli.app import _interrupt\n"
        "signal.signal(signal.SIGTERM, _interrupt)\n"
        "explainer = _Explainer(None, None, None, 'cpu', 'shapes-rn', None)\n"
        "(explainer.folder / 'gscorecam-maps.npy').write_bytes(b'maps')\n"
        "try:\n"
        "    print(explainer.folder, flush=True)\n"
        "    time.sleep(120)\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(0)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        folder = Path(process.stdout.readline().strip())
        assert folder.is_dir()
        process.terminate()
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
    assert not folder.exists()


def test_a_photo_over_the_display_limit_is_drawn_downscaled(client, photo, monkeypatch):
    monkeypatch.setattr("captum_gscorecam.images.DISPLAY_MAX_PIXELS", 320 * 240 // 4)
    gallery, _, _, download = _explain(client, photo, "a red circle\na blue square")
    assert [Image.open(item["image"]).size for item in gallery] == [(160, 120)] * 2
    assert np.load(download).shape == (2, 240, 320)  # the maps keep the photo's resolution


def test_each_skip_reason_says_how_to_run_the_test():
    """A skipped app or browser test names what to install (and the browser test's marker)."""
    assert "pip install -e '.[app]'" in NEEDS_GRADIO
    assert "pip install -e '.[test]'" in NO_SELENIUM
    assert "apt-get install chromium chromium-driver" in NO_CHROMIUM
    assert "pytest -m browser" in NO_CHROMIUM
