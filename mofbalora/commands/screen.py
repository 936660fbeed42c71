"""``mofbalora screen``: rank candidate CIFs for DFT follow-up."""

from __future__ import annotations

import argparse
import sys

from mofbalora.commands import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("screen", help="rank candidate CIFs by predicted band gap and uncertainty",
                       description="Every input gets one row; bad files get status=error and a reason.")
    p.add_argument("inputs", nargs="+", help="CIF files, folders or glob patterns")
    p.add_argument("--model", default="default", help="'default' (shipped) or a run folder")
    p.add_argument("--samples", type=int, default=32, help="stochastic passes T")
    p.add_argument("--acquisition", default="std",
                   help="std | epistemic | ucb | lcb | target | ei | thompson | mean | random (default: std; "
                        "epistemic: the spread of the draws alone, without the predicted noise)")
    p.add_argument("--kappa", type=float, default=2.0, help="κ of ucb / lcb")
    p.add_argument("--target", nargs=2, type=float, metavar=("LO", "HI"), default=None,
                   help="band-gap window in eV for 'target' (and ei / mean towards a window)")
    p.add_argument("--goal", choices=["min", "max"], default="min", help="seek small or large gaps (ei, mean, thompson)")
    p.add_argument("--top", type=int, default=10, help="rows shown in the terminal table")
    p.add_argument("--out", default="ranked.csv", help="output table (.csv, .parquet or .json)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-atoms", type=int, default=None, help="structures with more atoms get an error row")
    p.add_argument("--no-resume", action="store_true", help="ignore progress of an interrupted run")
    p.add_argument("--plot", default=None, metavar="PNG", help="write a figure of the screen")
    p.add_argument("--dask", default=None, metavar="CLUSTER",
                   help="screen on a Dask cluster: local:N (N worker processes here), a scheduler address "
                        "(tcp://host:8786) or jobqueue:CONFIG.yaml (SLURM/PBS, see workflows/dask_slurm.yaml)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="without --dask: local processes that run the frozen trunk over the candidates first "
                        "(CHGNet readout models on a CPU; 2 on a 2-core machine)")
    p.add_argument("--chunk-size", type=positive_int, default=16, help="files per task (and per progress checkpoint)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"],
                   help="where the model runs (one process; Dask workers use their CPU)")
    p.add_argument("--checks", default="flag", choices=["off", "flag", "exclude"],
                   help="MOF chemistry checks (mofchecker-next, extra 'checks'): flag = rank all and name failed "
                        "checks (default), exclude = failing structures get an error row, off = do not run them")
    p.add_argument("--domain", default="rank-separately", choices=["rank-separately", "exclude", "ignore"],
                   help="out-of-domain structures (unseen elements, far embedding): ranked after all in-domain "
                        "ones (default), error rows, or ranked like the rest")
    p.add_argument("--repeats-top", type=int, default=None, metavar="N",
                   help="when the screen completes, mark in repeat_of which of the best N rows repeat a better-ranked "
                        "structure (same structure given twice, e.g. a redetermination; default 200, 0 = off)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mofbalora.data.structures import DEFAULT_MAX_ATOMS
    from mofbalora.repeats import DEFAULT_REPEATS_TOP
    from mofbalora.screen import plot_screen, screen, summarize

    table = screen(args.inputs, model=args.model, n_samples=args.samples, acquisition=args.acquisition,
                   kappa=args.kappa, target_ev=tuple(args.target) if args.target else None, goal=args.goal,
                   out=args.out, seed=args.seed, max_atoms=args.max_atoms or DEFAULT_MAX_ATOMS,
                   resume=not args.no_resume, progress=not args.quiet, dask=args.dask, chunk_size=args.chunk_size,
                   device=args.device, checks=args.checks, domain=args.domain,
                   workers=args.workers,
                   repeats_top=DEFAULT_REPEATS_TOP if args.repeats_top is None else args.repeats_top)
    print(summarize(table, args.top))
    print(f"ranked table: {args.out}")
    if args.plot:
        print(f"figure: {plot_screen(table, args.plot, args.top)}")
    if not (table["status"] == "ok").any():
        print("error: no structure could be screened", file=sys.stderr)
        return 1
    return 0
