"""Execute the committed notebooks in place, in their full mode, so they open with their results.

    MOFBALORA_QMOF=/path/to/qmof python scripts/execute_notebooks.py [NAME.ipynb ...]

Without names, every notebook in ``notebooks/``. Each runs from ``notebooks/`` (the folder its
relative paths assume) with ``MOFBALORA_NOTEBOOK_QUICK`` unset, and is written back only when every
cell ran: a failure leaves the committed file as it was and names the notebook.
``tests/test_notebooks_committed.py`` then checks what was written (outputs present, no error
cell); CI runs them again on a copy, in their quick mode (``tests/test_notebooks.py``), and never
rewrites these files.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def execute(path: Path, timeout_s: int) -> None:
    """Run ``path`` top to bottom in a fresh kernel and replace it atomically with the result."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    resources = {"metadata": {"path": str(path.parent)}}
    NotebookClient(nb, timeout=timeout_s, kernel_name="python3", resources=resources).execute()
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".ipynb", delete=False) as f:
        nbformat.write(nb, f)
    os.replace(f.name, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook file names in notebooks/ (default: all)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds a cell may run (1800)")
    args = parser.parse_args(argv)
    os.environ.pop("MOFBALORA_NOTEBOOK_QUICK", None)
    names = args.names or sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    unknown = [n for n in names if not (NOTEBOOKS / n).is_file()]
    if unknown:
        choices = ", ".join(sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
        parser.error(f"no notebook {', '.join(unknown)} in {NOTEBOOKS}; choose from {choices}")
    failed = []
    for name in names:
        try:
            execute(NOTEBOOKS / name, args.timeout)
            print(f"executed {name}")
        except Exception as exc:  # one failing notebook leaves the others to run
            print(f"error: {name} failed and was left unchanged: {exc}", file=sys.stderr)
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
