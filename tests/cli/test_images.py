"""images: photos are decoded in full when checked, and only regular files are ever opened."""

from __future__ import annotations

import io
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from captum_gscorecam.images import check_image, expand_images, read_image


def _photo_bytes(format: str) -> tuple[bytes, np.ndarray]:
    """A small noisy photo encoded as ``format``, and its pixels as PIL decodes the file."""
    pixels = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=format)
    data = buffer.getvalue()
    return data, np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


PHOTOS = {name: _photo_bytes(name) for name in ("PNG", "JPEG")}


@settings(max_examples=60, deadline=None)
@given(format=st.sampled_from(sorted(PHOTOS)), cut=st.floats(0.3, 0.999))
def test_a_cut_photo_is_refused_when_checked_or_reads_whole(tmp_path_factory, format, cut):
    """Never silently wrong: check_image refuses a cut file, or the file still holds every
    pixel (a PNG cut inside its end marker)."""
    data, pixels = PHOTOS[format]
    path = tmp_path_factory.mktemp("cut") / f"cut.{format.lower()}"
    path.write_bytes(data[: int(len(data) * cut)])
    try:
        check_image(path)
    except ValueError as error:
        refused = str(error)
    else:
        refused = None
        np.testing.assert_array_equal(np.asarray(read_image(path)), pixels)
    if refused is not None:
        assert refused.startswith(f"image: cannot read {path}") or "not an image" in refused
        with pytest.raises(ValueError, match=str(path)):
            read_image(path)


def test_a_truncated_photo_with_a_valid_header_is_refused_by_the_check(tmp_path):
    data, _ = PHOTOS["JPEG"]
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2])
    with Image.open(path) as header_only:  # the header is whole: opening alone passes
        assert header_only.size == (56, 40)
    with pytest.raises(ValueError, match=r"image: cannot read .*half\.jpg.*truncated"):
        check_image(path)


def _returns_within(call: Callable[[], object], seconds: float, unblock: Path) -> BaseException:
    """The exception ``call`` raises, asserting it does not block (a FIFO without a writer)."""
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as error:  # handed to the test
            outcome.append(error)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        os.close(os.open(unblock, os.O_WRONLY | os.O_NONBLOCK))  # releases the blocked reader
        worker.join(seconds)
        pytest.fail(f"{call} blocked on a FIFO")
    assert outcome, f"{call} accepted a FIFO"
    return outcome[0]


@pytest.mark.parametrize("reader", [check_image, read_image, lambda p: expand_images([str(p)])])
def test_a_fifo_is_refused_without_blocking(tmp_path, reader):
    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)
    error = _returns_within(lambda: reader(fifo), 20, fifo)
    assert isinstance(error, ValueError)
    assert str(error) == f"image: {fifo} is a FIFO (named pipe), not a photo file"


def test_sockets_devices_and_folders_are_not_photos(tmp_path):
    sock_path = tmp_path / "s.png"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(sock_path))
        with pytest.raises(ValueError, match="is a socket, not a photo file"):
            check_image(sock_path)
        with pytest.raises(ValueError, match="is a socket, not a photo file"):
            expand_images([str(sock_path)])
    with pytest.raises(ValueError, match="is a folder, not a photo file"):
        check_image(tmp_path)
    if Path("/dev/null").exists():
        with pytest.raises(ValueError, match="/dev/null is a character device, not a photo"):
            read_image("/dev/null")


def test_a_fifo_in_a_folder_is_not_one_of_its_photos(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    os.mkfifo(tmp_path / "b.png")
    assert expand_images([str(tmp_path)]) == [tmp_path / "a.png"]


def test_a_coco_image_damaged_past_its_header_is_skipped_when_read(tmp_path):
    """Decoded in full when the COCO folder is read (before a model loads), not mid-run."""
    import json
    import warnings

    from captum_gscorecam.evaluation import coco_examples
    from captum_gscorecam.shapes import export_coco

    export_coco(tmp_path, (10_000_000, 10_000_001), n_objects=2, size=64)
    data = json.loads((tmp_path / "annotations" / "instances.json").read_text())
    damaged = tmp_path / "images" / data["images"][0]["file_name"]
    whole = damaged.read_bytes()
    damaged.write_bytes(whole[: len(whole) * 2 // 3])
    with Image.open(damaged) as header_only:
        assert header_only.size == (64, 64)  # the header is whole
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        examples = coco_examples(tmp_path, 64)
    assert [str(w.message) for w in caught if "skipped" in str(w.message)] == [
        f"images: skipped 1 not image files ({damaged.name}) in {tmp_path / 'images'}"
    ]
    assert {e.image_id for e in examples} == {str(data["images"][1]["id"])}
