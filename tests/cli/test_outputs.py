"""outputs: every file written whole or not at all, never over an input, failures as one line.

The full and read-only file systems are real where the test may mount a small tmpfs (root on
Linux); elsewhere those cases are skipped with the reason, and a full disk is also simulated
by making ``os.write`` / ``os.fsync`` / ``os.replace`` fail with ENOSPC, which runs everywhere.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple
from unittest import mock

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from captum_gscorecam.outputs import (
    OutputError,
    atomic_file,
    check_outputs,
    make_folder,
    write_bytes,
    write_figure,
    write_json,
    write_npy,
    write_npy_slices,
    write_text,
)

PHOTO = b"\x89PNG\r\n\x1a\n the input's bytes"
OLD = b"what an earlier run wrote"


class Mounts(NamedTuple):
    full: Path  # a 64 KiB tmpfs filled up
    read_only: Path  # a tmpfs mounted read-only, holding one file


def _mount(folder: Path, options: str) -> None:
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
        check=True,
        capture_output=True,
        timeout=30,
    )


@pytest.fixture(scope="module")
def mounts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mounts | str]:
    """Real full and read-only file systems, or the reason they cannot be mounted here."""
    if sys.platform != "linux" or os.geteuid() != 0:
        yield "mounting a tmpfs needs root on Linux"
        return
    base = tmp_path_factory.mktemp("mounts")
    full, read_only = base / "full", base / "read-only"
    full.mkdir()
    read_only.mkdir()
    mounted = []
    try:
        for folder in (full, read_only):
            _mount(folder, "size=64k")
            mounted.append(folder)
        (read_only / "kept.npy").write_bytes(OLD)
        subprocess.run(["mount", "-o", "remount,ro", str(read_only)], check=True, timeout=30)
        assert _fill(full / "filler") == errno.ENOSPC
    except (OSError, subprocess.SubprocessError) as error:
        yield f"cannot mount a tmpfs here ({error})"
    else:
        yield Mounts(full, read_only)
    finally:
        for folder in mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False, timeout=30)


def _fill(path: Path) -> int | None:
    """Write zeros to ``path`` until the file system refuses; the errno it gives."""
    with open(path, "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * 4096)
        except OSError as error:
            return error.errno


def shown(path: Path) -> str:
    text = str(path)
    return text if text.isprintable() else repr(text)


def assert_one_line_naming(error: pytest.ExceptionInfo[OutputError], path: Path) -> None:
    message = str(error.value)
    assert "\n" not in message
    assert "\r" not in message
    assert shown(path) in message
    assert isinstance(error.value, OSError)


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every entry of a folder (not recursive): a file's bytes, None for anything else."""
    return {
        p.name: p.read_bytes() if p.is_file() and not p.is_symlink() else None
        for p in folder.iterdir()
    }


WRITERS = {
    "bytes": (lambda path: write_bytes(path, b"new bytes"), lambda path: path.read_bytes()),
    "text": (lambda path: write_text(path, "caf\u00e9 | x\n"), lambda path: path.read_text()),
    "json": (
        lambda path: write_json(path, {"k": [1, 2]}),
        lambda path: json.loads(path.read_text()),
    ),
    "npy": (lambda path: write_npy(path, np.arange(6.0)), lambda path: np.load(path).tolist()),
    "npy slices": (
        lambda path: write_npy_slices(path, (np.full(3, i) for i in range(2)), (2, 3), "f4"),
        lambda path: np.load(path).tolist(),
    ),
}
EXPECTED = {
    "bytes": b"new bytes",
    "text": "caf\u00e9 | x\n",
    "json": {"k": [1, 2]},
    "npy": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
    "npy slices": [[0.0] * 3, [1.0] * 3],
}
# Outputs refused by check_outputs; those not pointing at the input are refused by the writer too.
REFUSED = ("the input", "a link to the input", "a hard link to the input", "a folder")
REFUSED += ("under a file", "read-only", "full", "full (simulated)")
CASES = (*REFUSED, "sync fails", "rename fails", "writable")
FAILING = {"full (simulated)": ("write", "fsync"), "sync fails": ("fsync",)}
FAILING["rename fails"] = ("replace",)
names = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"), min_size=1, max_size=16
).filter(lambda name: name not in (".", ".."))


@settings(max_examples=120, deadline=None)
@given(
    case=st.sampled_from(CASES),
    name=names,
    writer=st.sampled_from(sorted(WRITERS)),
    existed=st.booleans(),
)
def test_outputs_are_whole_or_absent_and_never_an_input(
    mounts, tmp_path_factory, case, name, writer, existed
):
    if case in ("read-only", "full"):
        assume(isinstance(mounts, Mounts))
    work = tmp_path_factory.mktemp("work")
    photo = work / "photo.png"
    photo.write_bytes(PHOTO)
    out = {
        "the input": photo,
        "a link to the input": work / f"link {name}",
        "a hard link to the input": work / f"hard {name}",
        "a folder": work / name,
        "under a file": photo / name,
        "read-only": mounts.read_only / name if isinstance(mounts, Mounts) else None,
        "full": mounts.full / name if isinstance(mounts, Mounts) else None,
    }.get(case, work / name)
    if case == "a link to the input":
        out.symlink_to(photo)
    elif case == "a hard link to the input":
        os.link(photo, out)
    elif case == "a folder":
        out.mkdir()
    elif existed and case in ("full (simulated)", "sync fails", "rename fails", "writable"):
        out.write_bytes(OLD)
    folder = out.parent if case != "under a file" else work
    before = snapshot(folder)
    failing = [
        mock.patch.object(os, call, side_effect=OSError(errno.ENOSPC, "No space left on device"))
        for call in FAILING.get(case, ())
    ]
    write, read = WRITERS[writer]
    for patch in failing:
        patch.start()
    try:
        if case in REFUSED:
            with pytest.raises(OutputError) as refused:
                check_outputs([out], [photo])
            assert_one_line_naming(refused, out)
        else:
            check_outputs([out], [photo])
        if case not in ("the input", "a link to the input", "a hard link to the input"):
            if case == "writable":
                write(out)
            else:
                with pytest.raises(OutputError) as failed:
                    write(out)
                assert_one_line_naming(failed, out)
    finally:
        for patch in failing:
            patch.stop()
    assert photo.read_bytes() == PHOTO
    if case == "writable":
        assert read(out) == EXPECTED[writer]
        assert set(snapshot(folder)) == set(before) | {out.name}
    else:
        assert snapshot(folder) == before  # no partial file, no temporary file left


def test_real_full_and_read_only_file_systems_are_exercised(mounts):
    """The property test above draws these cases only where the mounts exist; say so."""
    if not isinstance(mounts, Mounts):
        pytest.skip(mounts)
    with pytest.raises(OutputError, match="no space left on the device"):
        write_npy(mounts.full / "maps.npy", np.zeros(1000))
    with pytest.raises(OutputError, match="read-only"):
        check_outputs([mounts.read_only / "new" / "maps.npy"])
    assert (mounts.read_only / "kept.npy").read_bytes() == OLD
    assert sorted(os.listdir(mounts.full)) == ["filler"]


def test_an_error_inside_the_block_keeps_the_old_file(tmp_path):
    out = tmp_path / "scores.csv"
    out.write_bytes(OLD)
    with pytest.raises(RuntimeError, match="half way"), atomic_file(out) as file:  # noqa: PT012
        file.write(b"a partial table")
        raise RuntimeError("half way")
    assert out.read_bytes() == OLD
    assert os.listdir(tmp_path) == ["scores.csv"]


def test_slices_must_fill_the_shape_or_nothing_is_written(tmp_path):
    out = tmp_path / "maps.npy"
    with pytest.raises(ValueError, match="expected 3 slices, got 2"):
        write_npy_slices(out, [np.zeros((2, 2))] * 2, (3, 2, 2), np.float32)
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        write_npy_slices(out, [np.zeros((2, 3))], (1, 2, 2), np.float32)
    assert os.listdir(tmp_path) == []
    rng = np.random.default_rng(0)
    maps = rng.random((3, 5, 4)).astype(np.float32)
    write_npy_slices(out, iter(maps), maps.shape, maps.dtype)
    np.testing.assert_array_equal(np.load(out), maps)


def test_permissions_links_and_folders(tmp_path):
    umask = os.umask(0o027)
    try:
        fresh = write_text(tmp_path / "a" / "b" / "fresh.txt", "x")  # folders made
    finally:
        os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o640
    kept = tmp_path / "kept.txt"
    kept.write_text("old")
    kept.chmod(0o604)
    write_text(kept, "new")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o604
    link = tmp_path / "link.txt"
    link.symlink_to(kept)
    write_text(link, "through the link")
    assert link.is_symlink()
    assert kept.read_text() == "through the link"
    with pytest.raises(OutputError, match="it is a file; expected a folder"):
        make_folder(kept)


def test_write_figure_saves_the_suffix_format(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1])
    write_figure(tmp_path / "f.png", fig, dpi=20)
    write_figure(tmp_path / "f.svg", fig)
    plt.close(fig)
    assert (tmp_path / "f.png").read_bytes().startswith(b"\x89PNG")
    assert b"<svg" in (tmp_path / "f.svg").read_bytes()
    with pytest.raises(ValueError, match="xyz"):
        write_figure(tmp_path / "f.xyz", fig)
    assert sorted(os.listdir(tmp_path)) == ["f.png", "f.svg"]


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ("/dev/null", "a character device"),
        ("/proc/gscorecam-figure.png", "cannot hold files"),
        ("/proc/self/gscorecam/maps.npy", "cannot hold files"),
    ],
)
def test_devices_and_pseudo_filesystems_refused(output, reason):
    if not Path(output).parent.parent.is_dir():
        pytest.skip(f"no {Path(output).parent.parent} on this system")
    with pytest.raises(OutputError, match=reason) as refused:
        check_outputs([output])
    assert_one_line_naming(refused, Path(output))


def test_fifo_output_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="FIFO"):
        check_outputs([fifo])


def test_two_outputs_that_are_one_file(tmp_path):
    with pytest.raises(OutputError, match="also the output"):
        check_outputs([tmp_path / "a.png", tmp_path / "." / "a.png"])


def test_json_refuses_nan_before_writing(tmp_path):
    with pytest.raises(ValueError, match="JSON compliant"):
        write_json(tmp_path / "run.json", {"score": float("nan")})
    assert os.listdir(tmp_path) == []


def test_importing_outputs_loads_neither_torch_nor_matplotlib():
    code = (
        "import sys, captum_gscorecam.outputs; "
        "print(sorted(m for m in ('torch', 'matplotlib', 'numpy') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"


# evaluate writes through outputs: refused before any work, resumable after a full disk


@pytest.mark.parametrize(
    "name", ["run.json", "results.jsonl", "results.json", "evaluate.lock", "results.md"]
)
def test_evaluate_refuses_a_folder_where_its_file_goes_before_any_work(
    tmp_path, eval_model, eval_examples, run_evaluate, monkeypatch, name
):
    (tmp_path / name).mkdir()
    monkeypatch.setattr(
        "captum_gscorecam.evaluation.runner.evaluate_image",
        mock.Mock(side_effect=AssertionError("an image was computed")),
    )
    with pytest.raises(OutputError, match="it is a folder; expected a file") as refused:
        run_evaluate(eval_model, eval_examples, tmp_path, ["uniform"])
    assert_one_line_naming(refused, tmp_path / name)
    assert sorted(os.listdir(tmp_path)) == [name]


def test_evaluate_on_a_read_only_folder_is_refused_before_any_work(
    mounts, eval_model, eval_examples, run_evaluate
):
    if not isinstance(mounts, Mounts):
        pytest.skip(mounts)
    with pytest.raises(OutputError, match="read-only") as refused:
        run_evaluate(eval_model, eval_examples, mounts.read_only / "results", ["uniform"])
    assert "results" in str(refused.value)
    assert sorted(os.listdir(mounts.read_only)) == ["kept.npy"]


def test_a_disk_that_fills_mid_run_leaves_a_resumable_folder(
    tmp_path_factory, eval_model, run_evaluate
):
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    from captum_gscorecam.evaluation import shapes_examples
    from tests.helpers import EVAL_SIZE, without_time

    seeds = range(10_000_000, 10_000_008)  # result lines beyond one 4 KiB page
    examples = shapes_examples(seeds, (1, 2), EVAL_SIZE)
    fresh = run_evaluate(eval_model, examples, tmp_path_factory.mktemp("fresh"), ["uniform"])
    small = tmp_path_factory.mktemp("small")
    try:
        _mount(small, "size=12k")  # three pages: the lock, run.json, one page of result lines
    except (OSError, subprocess.SubprocessError) as error:
        pytest.skip(f"cannot mount a tmpfs here ({error})")
    try:
        with pytest.raises(OutputError, match="no space left on the device") as full:
            run_evaluate(eval_model, examples, small / "out", ["uniform"])
        assert "\n" not in str(full.value)
        lines = (small / "out" / "results.jsonl").read_bytes().split(b"\n")
        complete = [json.loads(line) for line in lines[:-1]]
        unfinished = bool(lines[-1])  # the line the disk could not hold (unless it ended a page)
        assert 0 < len(complete) < len(seeds)  # some images done, not all
        assert not (small / "out" / "results.json").exists()  # never partial
        moved = tmp_path_factory.mktemp("moved") / "out"
        subprocess.run(["cp", "-r", str(small / "out"), str(moved)], check=True, timeout=60)
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False, timeout=30)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = run_evaluate(eval_model, examples, moved, ["uniform"])
    dropped = [w for w in caught if "1 damaged result line(s) dropped" in str(w.message)]
    assert len(dropped) == unfinished
    assert without_time(resumed["rows"]) == without_time(fresh["rows"])


# The command line: outputs refused before the model loads (exit 2), failures while writing
# (exit 1), one line each


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


@pytest.mark.parametrize("name", ["results.json", "evaluate.lock", "run.json"])
def test_evaluate_out_with_a_folder_in_a_files_place_is_refused_before_loading(
    tmp_path, capsys, no_model, name
):
    from captum_gscorecam.cli import main

    (tmp_path / name).mkdir()
    assert main(["evaluate", "--out", str(tmp_path), "--methods", "uniform"]) == 2
    err = _one_line(capsys)
    assert err.startswith(f"gscorecam evaluate: error: argument --out: cannot write {tmp_path}")
    assert f"{tmp_path / name}: it is a folder; expected a file" in err


def test_evaluate_out_on_a_read_only_file_system_is_refused_before_loading(
    mounts, capsys, no_model
):
    from captum_gscorecam.cli import main

    if not isinstance(mounts, Mounts):
        pytest.skip(mounts)
    out = mounts.read_only / "results"
    assert main(["evaluate", "--out", str(out)]) == 2
    assert "the file system is read-only" in _one_line(capsys)


def test_a_write_failing_during_the_work_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    from captum_gscorecam.cli import main

    failing = OutputError(tmp_path / "results.jsonl", "no space left on the device", errno.ENOSPC)
    monkeypatch.setattr(
        "captum_gscorecam.evaluation.runner.append_record", mock.Mock(side_effect=failing)
    )
    argv = ["evaluate", "--out", str(tmp_path), "--methods", "uniform", "--limit", "1"]
    assert main([*argv, "--device", "cpu"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert last.endswith(
        f"error: cannot write {tmp_path / 'results.jsonl'}: no space left on the device"
    )


def test_evaluate_takes_cpu_0_again(tmp_path, capsys):
    from captum_gscorecam.cli import main

    argv = ["evaluate", "--out", str(tmp_path), "--methods", "uniform", "--limit", "1"]
    assert main([*argv, "--device", "cpu:0"]) == 0
    assert json.loads((tmp_path / "results.json").read_text())["images"] == 1


def _scene_photo(path: Path, size: tuple[int, int] = (96, 64)) -> Path:
    from captum_gscorecam.shapes import render_scene

    Image.fromarray(render_scene(10_000_003, 2).image).resize(size).save(path)
    return path


def _explain_argv(*paths: Path) -> list[str]:
    return ["explain", *map(str, paths), "--prompt", "a red circle", "--model", "shapes-rn",
            "--device", "cpu"]  # fmt: skip


@pytest.mark.parametrize("where", ["the photo", "a folder holding the photo's figure name"])
def test_explain_never_writes_over_its_photo(tmp_path, capsys, no_model, where):
    from captum_gscorecam.cli import main

    photo = _scene_photo(tmp_path / "good.png")
    before = photo.read_bytes()
    out = photo if where == "the photo" else tmp_path
    assert main([*_explain_argv(photo), "--out", str(out)]) == 2
    err = _one_line(capsys)
    assert f"argument --out: cannot write {photo}: it is the input {photo}" in err
    assert photo.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["good.png"]


def test_explain_outputs_in_a_pseudo_filesystem_are_refused_before_loading(
    tmp_path, capsys, no_model
):
    from captum_gscorecam.cli import main

    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc here")
    photo = _scene_photo(tmp_path / "good.png")
    assert main([*_explain_argv(photo), "--save-maps", "/proc/gscorecam-maps"]) == 2
    err = _one_line(capsys)
    assert "argument --save-maps: cannot write /proc/gscorecam-maps/prompts.json" in err
    assert "/proc cannot hold files" in err


def test_explain_on_a_disk_that_fills_leaves_no_partial_file(tmp_path_factory, capsys):
    from captum_gscorecam.cli import main

    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    photo = _scene_photo(tmp_path_factory.mktemp("photo") / "good.png", (480, 320))
    small = tmp_path_factory.mktemp("small")
    try:
        _mount(small, "size=8k")  # prompts.json fits; the figure or the maps (600 KB) do not
    except (OSError, subprocess.SubprocessError) as error:
        pytest.skip(f"cannot mount a tmpfs here ({error})")
    try:
        argv = [*_explain_argv(photo), "--out", str(small / "figures")]
        assert main([*argv, "--save-maps", str(small / "maps")]) == 1
        last = capsys.readouterr().err.strip().splitlines()[-1]
        failed = [small / "figures" / "good.png", small / "maps" / "good.npy"]  # what does not fit
        assert last in [
            f"gscorecam explain: error: cannot write {path}: no space left on the device"
            for path in failed
        ]
        written = {str(p.relative_to(small)) for p in small.rglob("*") if p.is_file()}
        assert written <= {"maps/prompts.json", "figures/good.png"}  # whole files only
        if "figures/good.png" in written:
            assert Image.open(small / "figures" / "good.png").size[0] > 0
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False, timeout=30)


def test_a_photo_over_the_display_limit_is_drawn_smaller_with_one_warning(
    tmp_path, capsys, monkeypatch
):
    from captum_gscorecam.cli import main

    monkeypatch.setattr("captum_gscorecam.images.DISPLAY_MAX_PIXELS", 96 * 64 // 4)
    photo = _scene_photo(tmp_path / "big.png")
    argv = [*_explain_argv(photo), "--out", str(tmp_path / "out"), "--save-maps"]
    assert main([*argv, str(tmp_path / "maps")]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "warning: image" in line]
    assert warned == [
        f"gscorecam explain: warning: image: {photo} is 96 x 64 pixels (0.0 MP), over the "
        "0.001536 MP drawn at most; drawn at 48 x 32"
    ]
    assert np.load(tmp_path / "maps" / "big.npy").shape == (1, 64, 96)  # full resolution
    assert (tmp_path / "out" / "big.png").stat().st_size > 0


def test_explain_help_states_the_display_limit(capsys):
    from captum_gscorecam.cli import main
    from captum_gscorecam.images import DISPLAY_MAX_PIXELS

    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"Photos over {DISPLAY_MAX_PIXELS / 1e6:g} MP are drawn downscaled" in text
