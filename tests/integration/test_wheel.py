"""Installable as users install it: build the wheel, install it (not editable) into a fresh venv,
run the demo from outside the repository; and the README's install steps in a fresh venv."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import ROOT

REPO = ROOT

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="venv layout")

# An interpreter's site directories: its own, its base's where it is a venv that includes them,
# and the user site where it is enabled.
SITE_DIRS = (
    "import json, os, site\n"
    "user = site.getusersitepackages() if site.ENABLE_USER_SITE else ''\n"
    "print(json.dumps(site.getsitepackages() + [user] * os.path.isdir(user)))"
)


def run(*args: object, cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONPATH": ""}
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{args}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def site_dirs(python: Path | str) -> list[str]:
    return json.loads(run(python, "-c", SITE_DIRS, cwd=Path(python).parent))


def fresh_venv(python: Path | str, venv: Path) -> Path:
    """A new venv (its Python returned) that sees the packages ``python`` sees.

    ``venv --system-site-packages`` would inherit the *base* interpreter's packages, so from
    inside a venv it misses the venv's own (torch, matplotlib, ...). Instead a ``.pth`` file adds
    ``python``'s site directories (with their ``.pth`` files) after the new venv's own, so what is
    installed into the new venv comes first. The same from a system Python, a venv or conda.
    """
    run(python, "-m", "venv", "--without-pip", venv, cwd=venv.parent)
    new = venv / "bin" / "python"
    lines = [f"import site; site.addsitedir({d!r})\n" for d in site_dirs(python)]
    (Path(site_dirs(new)[0]) / "zz_outer_site.pth").write_text("".join(lines))
    return new


def source_copy(tmp_path: Path) -> Path:
    """What a build needs, copied, so the checkout gets no build/ or egg-info."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "captum_gscorecam",
        source / "captum_gscorecam",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return source


def test_the_fresh_venv_sees_the_packages_of_the_venv_it_is_made_from(tmp_path):
    # the suite run from a venv: what only that venv has (not its base interpreter) is seen
    run(sys.executable, "-m", "venv", "--without-pip", tmp_path / "user", cwd=tmp_path)
    user = tmp_path / "user" / "bin" / "python"
    (Path(site_dirs(user)[0]) / "probe_module.py").write_text("WHERE = 'user venv'\n")
    (tmp_path / "work").mkdir()
    inner = fresh_venv(user, tmp_path / "work" / "venv")
    probe = "import probe_module, sys; print(probe_module.WHERE, '|', sys.prefix)"
    assert run(inner, "-c", probe, cwd=tmp_path) == f"user venv | {tmp_path / 'work' / 'venv'}\n"
    # and what is installed into the fresh venv comes first
    (Path(site_dirs(inner)[0]) / "probe_module.py").write_text("WHERE = 'fresh venv'\n")
    assert run(inner, "-c", probe, cwd=tmp_path).startswith("fresh venv | ")


@pytest.mark.slow
def test_wheel_installs_and_runs_the_demo(tmp_path):
    source = source_copy(tmp_path)
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
    python = fresh_venv(sys.executable, venv)
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


def test_the_readmes_install_steps_in_a_fresh_venv(tmp_path):
    """The README's test command's ``pip install`` steps, as written, offline (``--no-index``:
    from what this suite's environment has), into a fresh venv; then its tools run there."""
    (command,) = re.findall(r"^pip install torch==.*$", (REPO / "README.md").read_text(), re.M)
    steps = [shlex.split(step)[2:] for step in command.split("&&") if "pip install" in step]
    assert len(steps) == 3, command  # torch, the project, legrad-torch (no deps)
    for name, version in (arg.split("==") for arg in steps[0]):
        if importlib.metadata.version(name).split("+")[0] != version:
            pytest.skip(f"the README pins {name}=={version}; this environment has another")
    source = source_copy(tmp_path)
    python = fresh_venv(sys.executable, tmp_path / "venv")
    for args in steps:
        run(sys.executable, "-m", "pip", "--python", python, "install", "--no-index",
            "--no-build-isolation", *args, cwd=source)  # fmt: skip
    location = run(python, "-c", "import captum_gscorecam; print(captum_gscorecam.__file__)",
                   cwd=tmp_path)  # fmt: skip
    assert Path(location.strip()).is_relative_to(source)  # the editable install, not another
    assert "demo" in run(tmp_path / "venv" / "bin" / "gscorecam", "--help", cwd=tmp_path)
    assert "pytest" in run(python, "-m", "pytest", "--version", cwd=tmp_path)
    assert "ruff" in run(python, "-m", "ruff", "--version", cwd=tmp_path)


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
