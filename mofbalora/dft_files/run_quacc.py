#!/usr/bin/env python
"""Run quacc's QMOF relaxation recipe on every structure of this DFT hand-off.

Written by mofbalora. For each row of manifest.csv (next to this script) it reads the folder's
structure (POSCAR, or structure.extxyz for ASE hand-offs) and calls
quacc.recipes.vasp.qmof.qmof_relax_job, which runs QMOF's multi-step relaxation and final
static calculation with quacc's QMOFSet preset. quacc chooses its own INCAR, k-points, POTCARs
and magnetic moments from that preset; only the structure is taken from the folder.

Needs: quacc installed, VASP configured for quacc (VASP_PARALLEL_CMD, VASP_CMD, VASP_PP_PATH; see
the quacc docs) and no workflow engine configured (jobs run here, one after another).
Results: one quacc results folder per structure under <folder>/quacc, and quacc_results.csv
(predicted vs DFT band gap) next to this script.

Usage: python run_quacc.py [--ranks 1 2 ...] [--no-relax-cell] [--no-prerelax]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
STRUCTURE_FILES = ("POSCAR", "structure.extxyz")


def load_atoms(folder):
    from ase.io import read

    for name in STRUCTURE_FILES:
        if (folder / name).is_file():
            return read(folder / name)
    raise FileNotFoundError(f"no structure file ({', '.join(STRUCTURE_FILES)}) in {folder}")


@contextmanager
def working_dir(path):
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def results_dir(folder):
    """Send quacc's results for this structure to <folder>/quacc.

    Uses quacc's change_settings where this quacc version has it; otherwise runs from inside
    that folder, which is where quacc puts results when RESULTS_DIR is left at its default.
    """
    target = folder / "quacc"
    target.mkdir(exist_ok=True)
    try:
        from quacc import change_settings
    except ImportError:
        return working_dir(target)
    return change_settings({"RESULTS_DIR": target})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", help="only these ranks (default: all)")
    parser.add_argument("--no-relax-cell", action="store_true", help="relax positions only")
    parser.add_argument("--no-prerelax", action="store_true", help="skip the BFGS pre-relaxation")
    args = parser.parse_args(argv)
    try:
        from quacc.recipes.vasp.qmof import qmof_relax_job
    except ImportError as exc:
        print(
            f"quacc is needed to run this script ({exc}); install it with `pip install quacc`",
            file=sys.stderr,
        )
        return 2

    with open(HERE / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if args.ranks:
        wanted = set(args.ranks)
        rows = [row for row in rows if int(row["rank"]) in wanted]
    out_rows, failures = [], 0
    for row in rows:
        folder = HERE / row["folder"]
        print(
            f"[{row['rank']}] {row['structure_id']}: running qmof_relax_job in {folder}", flush=True
        )
        record = {
            k: row[k]
            for k in ("rank", "structure_id", "formula", "bandgap_mean_ev", "bandgap_std_ev")
        }
        try:
            atoms = load_atoms(folder)
            with results_dir(folder):
                result = qmof_relax_job(
                    atoms, relax_cell=not args.no_relax_cell, run_prerelax=not args.no_prerelax
                )
            if not isinstance(result, dict):
                raise TypeError(
                    "qmof_relax_job returned a deferred result; "
                    "unset quacc's WORKFLOW_ENGINE to run here"
                )
            output = result.get("output") or {}
            record["dft_bandgap_ev"] = output.get("bandgap", "")
            record["dft_energy_ev"] = (result.get("results") or {}).get("energy", "")
            record["dir_name"] = result.get("dir_name", "")
            record["error"] = ""
        except Exception as exc:  # keep going: one failed MOF should not stop the batch
            failures += 1
            record.update(
                dft_bandgap_ev="",
                dft_energy_ev="",
                dir_name="",
                error=f"{type(exc).__name__}: {exc}",
            )
            print(f"  failed: {record['error']}", file=sys.stderr, flush=True)
        out_rows.append(record)

    fields = [
        "rank",
        "structure_id",
        "formula",
        "bandgap_mean_ev",
        "bandgap_std_ev",
        "dft_bandgap_ev",
        "dft_energy_ev",
        "dir_name",
        "error",
    ]
    with open(HERE / "quacc_results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(out_rows)
    print(
        f"done: {len(out_rows) - failures} ok, {failures} failed; see {HERE / 'quacc_results.csv'}"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
