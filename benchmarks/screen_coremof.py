"""Real-world screen: CoRE MOF 2019 CIFs (flagged-disordered ones included) with the shipped model,
chemistry checks and applicability domain on; writes a markdown summary (rows, errors by reason,
checks by name, out-of-domain share, throughput, the top 50 with their flags). Resumable: rerun the
same command after an interruption and it picks up where it stopped.

    python benchmarks/screen_coremof.py [N] [OUT_DIR] [--sets 2019-ASR,2019-FSR] [--dask local:2]
    [--report PATH] [--no-resume]

N = files per set (``all`` for every file; default 1000). The ranked table stays in OUT_DIR (not
committed); the summary goes to ``--report`` (default OUT_DIR/summary.md; the committed one lives in
reports/coremof/).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import pandas as pd


def main(argv: list[str] | None = None) -> None:
    from mofbalora.data.candidates import export_coremof
    from mofbalora.screen import screen, summarize
    from mofbalora.screen_report import write_screen_summary

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("n", nargs="?", default="1000")
    p.add_argument("out", nargs="?", default="runs/screen_coremof")
    p.add_argument("--sets", default="2019-ASR")
    p.add_argument("--dask", default=None)
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--acquisition", default="std")
    p.add_argument("--report", default=None)
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="start over (e.g. after the shipped model changed); the checks already run are kept",
    )
    args = p.parse_args(argv)
    limit = None if args.n == "all" else int(args.n)
    out_dir = Path(args.out)
    folders, n_files, flagged = [], 0, set()
    for subset in args.sets.split(","):
        folder = out_dir / "cifs" / subset
        if not (folder / "manifest.csv").exists():  # exported once; a resumed run reuses the files
            export_coremof(subset, folder, limit=limit, seed=0)
        manifest = pd.read_csv(folder / "manifest.csv")
        n_files += len(manifest)
        flagged |= set(
            manifest.loc[
                manifest["disordered"].astype(str).str.lower().isin(["true", "1", "yes"]), "name"
            ]
        )
        folders.append(str(folder))
    # one line per sitting, so the report can say how many there were
    sittings_log = out_dir / "sittings.txt"
    with open(sittings_log, "w" if args.no_resume else "a") as fh:
        fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
    t0 = time.perf_counter()
    table = screen(
        folders,
        model="default",
        n_samples=args.samples,
        acquisition=args.acquisition,
        out=out_dir / "ranked.csv",
        progress=True,
        dask=args.dask,
        resume=not args.no_resume,
    )
    seconds = time.perf_counter() - t0
    assert len(table) == n_files, (len(table), n_files)
    print(summarize(table, 10))
    dis = table[table["structure_id"].astype(str).isin(flagged)]
    print(
        f"\n{len(table)} files, {len(table)} rows; {int((table['status'] == 'ok').sum())} "
        f"screened; {len(dis)} flagged disordered in the database, of which "
        f"{int((dis['status'] == 'error').sum())} got an error row "
        f"({dict(Counter(dis.loc[dis['status'] == 'error', 'error']))})"
    )
    command = f"python benchmarks/screen_coremof.py {args.n} {args.out} --sets {args.sets}" + (
        f" --dask {args.dask}" if args.dask else ""
    )
    report = write_screen_summary(
        table,
        args.report or out_dir / "summary.md",
        seconds=seconds,
        title=f"CoRE MOF screen ({args.sets}, {n_files} files)",
        command=command,
        acquisition=args.acquisition,
        computed=table.attrs["computed_files"],
        sittings=sum(1 for _ in open(sittings_log)),
    )
    print(
        f"wall time {seconds:.0f} s = {table.attrs['computed_files'] / seconds:.2f} files/s (T = "
        f"{args.samples}); summary: {report}"
    )


if __name__ == "__main__":
    main()
