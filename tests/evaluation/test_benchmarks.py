"""The benchmark scripts still run against the current API (tiny settings, in process)."""

from __future__ import annotations

import json
import runpy
import sys

import pytest
import torch

from captum_gscorecam.grids import LayerGrid
from tests.helpers import ROOT

IMPORTANCE = LayerGrid.importance
BENCHMARKS = ROOT / "benchmarks"


@pytest.fixture
def run_script(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import report.py beside them
    threads = torch.get_num_threads()

    def run(script: str, *args: str) -> str:
        out = tmp_path / f"{script}.md"
        monkeypatch.setattr(sys, "argv", [script, *args, "--out", str(out)])
        runpy.run_path(str(BENCHMARKS / script), run_name="__main__")
        return out.read_text()

    yield run
    torch.set_num_threads(threads)  # the scripts pin one thread


@pytest.mark.slow
def test_floor_script(run_script):
    text = run_script(
        "floor.py", "--models", "RN50", "--size", "32", "--k", "2", "--ppe", "2", "1",
        "--images", "2", "--repeats", "1",
    )  # fmt: skip
    assert "### RN50 at 32 px: floor of k = 2 forward passes" in text
    for row in ("| ppe 2, contiguous |", "| ppe 1, channels_last input |", "no_grad"):
        assert row in text
    assert "| gScoreCAM, 2 images in 2 calls |" in text


def test_prompts_script(run_script):
    text = run_script("prompts.py", "--scenes", "1", "--prompts", "1", "4")
    rows = [
        line for line in text.splitlines() if line.startswith("| 1 |") or line.startswith("| 4 |")
    ]
    assert len(rows) == 2
    assert rows[0].startswith("| 1 | 1.00 | 1.00 |")  # one prompt is its own unit
    assert rows[1].split("|")[3].strip() == "4.00"  # 4 separate calls: 4 x the passes


def test_early_stop_script(run_script):
    text = run_script("early_stop.py", "--scenes", "1", "--tolerances", "0")
    assert "| None (exact) | 1.00 |" in text
    assert "| 0 | 1.00 |" in text  # tolerance 0 scores every channel


@pytest.mark.slow
def test_topk_script(run_script, tmp_path):
    text = run_script(
        "topk.py", "--scenes", "1", "--objects", "3", "--topk", "0.1,1", "--random",
        "--work", str(tmp_path),
    )  # fmt: skip
    rows = [line.split("|")[1:4] for line in text.splitlines() if line.startswith("| gradient |")]
    rows += [line.split("|")[1:4] for line in text.splitlines() if line.startswith("| random |")]
    expected = [["gradient", "0.1", "26"], ["gradient", "1", "256"], ["random", "0.1", "26"]]
    assert [[cell.strip() for cell in row] for row in rows] == expected
    gradient = json.loads((tmp_path / "k0.1" / "results.json").read_text())
    random = json.loads((tmp_path / "random-k0.1" / "results.json").read_text())
    assert random["config"]["run"]["ranking"] == "random"
    assert [row["energy"] for row in random["rows"]] != [row["energy"] for row in gradient["rows"]]
    assert LayerGrid.importance is IMPORTANCE  # the random ranking is undone


@pytest.mark.slow
def test_fidelity_script(run_script):
    text = run_script("fidelity.py", "--scenes", "1", "--objects", "3", "--precisions", "bf16")
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| ")]
    cells = {(row[0].strip(), row[1].strip()): [c.strip() for c in row[2:]] for row in rows[1:]}
    assert sorted(cells) == [
        ("gscorecam", "bf16"), ("gscorecam", "fp32"), ("scorecam", "bf16"), ("scorecam", "fp32")
    ]  # fmt: skip
    for method in ("gscorecam", "scorecam"):
        assert cells[method, "fp32"][1] == "-"  # no change against itself
        reduced = cells[method, "bf16"]
        assert reduced[4] in ("yes", "**no**")
        assert 0 <= float(reduced[5]) <= float(reduced[6]) <= 1  # mean <= max total variation


def test_speed_script_attention_table(run_script):
    text = run_script(
        "speed.py", "--models", "ViT-S-32", "--size", "64", "--tables", "attention",
        "--prompts", "1", "2", "--repeats", "1",
    )  # fmt: skip
    assert "### ViT-S-32: attention methods (64 px, 1 image, 12 blocks" in text
    # one tower forward each; gradient calls: 1 per prompt, LeGrad 1 per block and prompt
    for row in ("| HilaCAM | 2 | 1 | 2 |", "| LeGrad | 2 | 1 | 24 |", "| Grad-ECLIP | 2 | 1 | 2 |"):
        assert row in text
    assert "| Attention rollout | 2 | 1 | 0 |" in text


def test_conventions_script(run_script):
    text = run_script("conventions.py", "--scenes", "1")
    rows = [line for line in text.splitlines() if line.startswith("| LeGrad") or "ECLIP" in line]
    assert len(rows) == 5
    for row in rows:
        values = [float(v) for v in row.strip("|").split("|")[1:]]
        assert all(0 <= v <= 1 for v in values)
    assert "| LeGrad, every block (default) |" in text
    assert text.count(" 1.000 |\n") >= 2  # each default agrees with itself


@pytest.mark.slow
def test_memory_script(run_script):
    text = run_script("memory.py", "--side", "300", "--prompts", "2")
    assert "| 300 x 300 (0 MP) | 2 | shapes-rn | gscorecam |" in text
    row = next(line for line in text.splitlines() if line.startswith("| 300 x 300"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[-1] == "0"  # the command's exit status
    assert float(cells[4]) > 100  # a peak RSS in MB was read
    assert float(cells[6]) > 0  # the maps were written (2 x 300 x 300 float32)
