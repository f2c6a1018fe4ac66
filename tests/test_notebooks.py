"""The notebooks in examples/: stored without outputs, and each runs top to bottom in its quick mode
(MNISTLAB_QUICK=1) in a real Jupyter kernel; a notebook that raises fails CI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


def test_there_are_notebooks_and_they_are_stored_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    assert len(NOTEBOOKS) >= 3
    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        nbformat.validate(book)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} holds outputs"
        assert "QUICK = " in code[0].source, f"{path.name}: its first cell sets QUICK"
        assert book.cells[0].cell_type == "markdown" and book.cells[0].source.startswith("# ")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_each_notebook_runs_top_to_bottom_in_its_quick_mode(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    shutil.copy(path, tmp_path / path.name)
    monkeypatch.setenv("MNISTLAB_QUICK", "1")
    monkeypatch.chdir(tmp_path)  # the runs and reports it writes stay in the test's folder
    book = nbformat.read(tmp_path / path.name, as_version=4)
    # the kernel inherits this process's environment (MNISTLAB_QUICK and the test's thread settings)
    client = nbclient.NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the cell, if one fails
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) or "<img" in str(o.get("data", {}).get("text/html", ""))
               for o in outputs), f"{path.name} shows no picture"
