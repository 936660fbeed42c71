"""``mofbalora sweep``: train and evaluate a grid of settings; one table of their metrics."""

from __future__ import annotations

import argparse
from dataclasses import replace

from mofbalora.commands import show_progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep", help="run a grid of fine-tuning settings (resumable) and tabulate them"
    )
    p.add_argument(
        "--config", required=True, help="sweep YAML (e.g. workflows/sweep_ablations.yaml)"
    )
    p.add_argument("--out", required=True, help="sweep folder: one run folder per setting and seed")
    p.add_argument("--only", nargs="*", default=None, help="run only these settings")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (overrides the file)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override applied to every setting, e.g. --set optim.epochs=10",
    )
    p.add_argument(
        "--collect-only", action="store_true", help="only collect finished runs into the table"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars; logs show warnings only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mofbalora.sweep import collect, load_sweep, run_sweep, to_markdown

    spec = load_sweep(args.config)
    if args.seeds:
        spec = replace(spec, seeds=[int(s) for s in args.seeds.split(",")])
    if args.collect_only:
        df = collect(args.out, args.only)
    else:
        df = run_sweep(
            spec,
            args.out,
            only=args.only,
            extra_overrides=args.overrides,
            progress=show_progress(args),
        )
    print(to_markdown(df) if len(df) else "no finished runs")
    return 0
