"""The committed notebooks are stored executed: every code cell ran, figures are embedded, no cell
failed (``tests/test_notebooks.py`` executes them again, on a copy, in their quick mode)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["active_learning_qmof.ipynb", "uncertainty_comparison.ipynb"]
#: the largest committed notebook (bytes): figures, not pages of logs
MAX_BYTES = 1_500_000


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_executed_with_figures(name):
    path = NOTEBOOKS / name
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    not_run = [i for i, c in enumerate(code) if c.get("execution_count") is None]
    assert not not_run, f"{name}: code cells {not_run} have not been executed"
    outputs = [o for c in code for o in c.get("outputs", [])]
    errors = [f"{o.get('ename')}: {o.get('evalue')}" for o in outputs if o.output_type == "error"]
    assert not errors, f"{name}: error outputs {errors}"
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{name}: no figure"
    assert path.stat().st_size < MAX_BYTES


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_shows_no_machine_paths(name):
    text = (NOTEBOOKS / name).read_text()
    for prefix in ("/tmp/", "/home/", "/root/", "/Users/", "/work/"):
        assert prefix not in text, f"{name}: an output names {prefix}..."
