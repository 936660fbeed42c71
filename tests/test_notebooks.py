"""The notebooks run top to bottom, with their small settings (``MOFBALORA_NOTEBOOK_QUICK=1``)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"

# notebook -> texts its outputs must show: one from the part that reads the committed results,
# one from the short live run
EXPECTED_OUTPUT = {
    "active_learning_qmof.ipynb": (
        "committed benchmark: reports/active_learning/",
        "live campaign: balora_lcb seed 0, round 2:",
    ),
    "uncertainty_comparison.ipynb": (
        "Does BaLoRA's uncertainty track the error better than the ensemble's?",
        "figures written:",
    ),
}


def _outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            for value in out.get("data", {}).values():
                parts.append(value if isinstance(value, str) else "")
    return "\n".join(parts)


@pytest.mark.parametrize("name", sorted(EXPECTED_OUTPUT))
def test_notebook_runs_top_to_bottom(name, qmof_path, tmp_path, monkeypatch):
    monkeypatch.setenv("MOFBALORA_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("MOFBALORA_NOTEBOOK_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("MOFBALORA_QMOF", str(qmof_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # the kernel imports the mofbalora of this checkout (as the tests do), whichever one is
    # installed
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    )
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    # the kernel inherits this process's environment, including the session's feature cache
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    text = _outputs_text(nb)
    for expected in EXPECTED_OUTPUT[name]:
        assert expected in text


#: left out of `make test-fast` (trains models, starts clusters or runs notebooks); `make test` runs
#: it
pytestmark = pytest.mark.slow
