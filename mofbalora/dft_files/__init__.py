"""Files copied beside the DFT inputs (``run_quacc.py``): they run without mofbalora installed, so
nothing here imports it (an import-linter contract in pyproject.toml checks it)."""
