"""The tutorial notebook runs end to end offline, and is committed without outputs."""

from __future__ import annotations

import os

import pytest

from tests.helpers import ROOT

nbformat = pytest.importorskip("nbformat")

TOUR = ROOT / "tutorials" / "gscorecam_tour.ipynb"


def test_the_committed_notebook_has_no_outputs():
    notebook = nbformat.read(TOUR, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)


@pytest.mark.slow
def test_the_tour_runs_offline_and_draws_its_figures(monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    # the kernel imports this checkout's package, whatever else is installed
    monkeypatch.setenv("PYTHONPATH", str(TOUR.parents[1]), prepend=os.pathsep)
    # .ci/run exports MPLBACKEND=Agg; in the kernel it would replace the inline backend,
    # and the figures would never reach the cell outputs
    monkeypatch.delenv("MPLBACKEND", raising=False)
    notebook = nbformat.read(TOUR, as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": TOUR.parent}}
    ).execute()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    errors = [o for cell in code for o in cell.outputs if o.output_type == "error"]
    figures = [o for cell in code for o in cell.outputs if "image/png" in o.get("data", {})]
    assert not errors
    assert len(figures) >= 5  # scene, one map, four methods, four prompts, k trade-off
