"""Installable as users install it: build the wheel, install it (not editable) into a fresh venv,
run the demo from outside the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(*args: object, cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONPATH": ""}
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{args}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="venv layout")
def test_wheel_installs_and_runs_the_demo(tmp_path):
    # build from a copy of the sources, so the checkout gets no build/ or egg-info
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "captum_gscorecam",
        source / "captum_gscorecam",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", dist,
        source, cwd=tmp_path)  # fmt: skip
    (wheel,) = dist.glob("captum_gscorecam-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    assert {
        "captum_gscorecam/shapes/checkpoints/shapes-rn.pt",
        "captum_gscorecam/shapes/checkpoints/shapes-vit.pt",
        "captum_gscorecam/py.typed",
    } <= names
    assert b"License-Expression: MIT" in metadata
    assert b"Requires-Dist: torch>=2.1\n" in metadata  # lower bounds only
    if shutil.which("twine") or _has_module("twine"):
        assert "PASSED" in run(sys.executable, "-m", "twine", "check", "--strict", wheel,
                               cwd=tmp_path)  # fmt: skip

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv,
        cwd=tmp_path)  # fmt: skip
    python = venv / "bin" / "python"
    # this pip installs into the venv; --force-reinstall: the development install of the same
    # version must not satisfy it
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
        "--force-reinstall", "--no-index", wheel, cwd=tmp_path)  # fmt: skip
    work = tmp_path / "elsewhere"
    work.mkdir()
    location = run(python, "-c", "import captum_gscorecam; print(captum_gscorecam.__file__)",
                   cwd=work)  # fmt: skip
    assert Path(location.strip()).is_relative_to(venv)
    out = run(venv / "bin" / "gscorecam", "demo", "--scenes", "1", "--out", "demo.png", cwd=work)
    assert (work / "demo.png").stat().st_size > 0, out
    assert "demo" in run(python, "-m", "captum_gscorecam", "--help", cwd=work)


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
