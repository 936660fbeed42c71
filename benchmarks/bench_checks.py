"""Per-structure cost of the MOF chemistry checks, each speed-up off and on, in one run on the same
files.

Routes (mofbalora/checks.py, "speed-ups that leave every verdict as it is"):

1. the C YAML loader for structuregraph-helpers' cut-off tables: a one-off per process, timed as the
   import in fresh interpreters (plain loader, then C loader, twice each);
2. ``neighbours``: one neighbour search per structure for the bond graph and the H count;
3. ``graph``: the graph's neighbour lists and edge list made once, the lone-molecule supercell from
   arrays.

Every structure is checked by plain ``run_checks`` in each setting in turn (interleaved, so that a
busy machine slows all settings alike), without the EQeq charge check and, for the last two rows,
with it; the columns must be the same in every setting (the benchmark stops otherwise). Ratios are
against the libraries' own path (all speed-ups off) of the same run.

    python benchmarks/bench_checks.py [N]   (default 24 CoRE MOF 2019-ASR files, seed 0, + QMOF)
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

_IMPORT = """
import sys, time
from mofbalora.checks import _import_graph_helpers, _pymatgen_compat
import pymatgen.core.graphs, pymatgen.core.local_env, yaml
_pymatgen_compat()
t = time.perf_counter()
_import_graph_helpers(c_loader=sys.argv[1] == "c")
print(time.perf_counter() - t)
"""

#: (label, speedups kwargs, charges)
SETTINGS = (
    ("all off (libraries' own path)", {"enabled": False}, False),
    ("+ neighbours (route 2)", {"enabled": False, "neighbours": True}, False),
    ("+ graph (routes 2 + 3, default)", {"enabled": True}, False),
    ("all off, with EQeq charges", {"enabled": False}, True),
    ("routes 2 + 3, with EQeq charges", {"enabled": True}, True),
)


def _import_seconds(loader: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT, loader], check=True, capture_output=True, text=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def main(n: int = 24) -> None:
    from mofbalora import checks
    from mofbalora.data.candidates import export_coremof
    from mofbalora.data.qmof import default_qmof_path
    from mofbalora.data.structures import StructureError, read_structure

    imports = {loader: [] for loader in ("py", "c")}
    for _ in range(2):
        for loader in imports:
            imports[loader].append(_import_seconds(loader))

    work = Path(tempfile.mkdtemp(prefix="bench-checks-"))
    paths = export_coremof("2019-ASR", work / "cifs", limit=n, seed=0)
    paths += sorted((default_qmof_path() / "original_cif_sample").glob("*.cif"))
    checks.import_checker()
    structures = []
    for p in paths:
        try:
            structures.append((p, read_structure(p)))
        except StructureError:
            continue
    seconds = {label: [] for label, _, _ in SETTINGS}
    warnings.simplefilter("ignore")
    # warm-up (imports, first graph)
    checks.run_checks(structures[0][1], structures[0][0], charges=False)
    for path, structure in structures:
        cols = {}
        for label, kwargs, charges in SETTINGS:
            with checks.speedups(**kwargs):
                t0 = time.perf_counter()
                cols[label] = checks.run_checks(structure, path, charges=charges)
                seconds[label].append(time.perf_counter() - t0)
        no_charges = [
            c for (label, _, charges), c in zip(SETTINGS, cols.values(), strict=True) if not charges
        ]
        with_charges = [
            c for (label, _, charges), c in zip(SETTINGS, cols.values(), strict=True) if charges
        ]
        if any(c != no_charges[0] for c in no_charges) or any(
            c != with_charges[0] for c in with_charges
        ):
            raise SystemExit(f"the check columns differ between settings on {path.name}: {cols}")
        if checks.without_charges(with_charges[0]) != no_charges[0]:
            raise SystemExit(
                f"without_charges() does not give the run without charges on {path.name}"
            )

    atoms = [len(s) for _, s in structures]
    print(
        f"{len(structures)} structures ({n} CoRE MOF 2019-ASR, seed 0, + the QMOF sample; "
        f"median {statistics.median(atoms):.0f} atoms, "
        f"max {max(atoms)}); columns equal in every setting"
    )
    py, c = min(imports["py"]), min(imports["c"])
    print(
        f"route 1, once per process: import of structuregraph_helpers.create {py:.2f} s (PyYAML) "
        f"-> {c:.2f} s (libyaml): {py / c:.1f}x"
    )
    print("| setting | s / structure (mean) | median | speed-up against all off (means) |")
    print("|---|---|---|---|")
    for label, _, charges in SETTINGS:
        base = seconds[SETTINGS[3][0] if charges else SETTINGS[0][0]]
        mean = statistics.fmean(seconds[label])
        print(
            f"| {label} | {mean:.3f} | {statistics.median(seconds[label]):.3f} | "
            f"{statistics.fmean(base) / mean:.2f}x |"
        )
    fast, fast_eqeq = (
        statistics.fmean(seconds[SETTINGS[2][0]]),
        statistics.fmean(seconds[SETTINGS[4][0]]),
    )
    plain_eqeq = statistics.fmean(seconds[SETTINGS[3][0]])
    print(
        f"EQeq share of a check with the speed-ups: {(fast_eqeq - fast) / fast_eqeq:.0%}; checks "
        "without charges (speed-ups on) against all checks as they were (all off): "
        f"{plain_eqeq / fast:.1f}x cheaper"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 24)
