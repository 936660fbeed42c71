"""``mofbalora compare``: several fine-tuned models side by side on one split (tables, T-curves,
figures)."""

from __future__ import annotations

import argparse

from mofbalora.commands import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="compare the uncertainty of several run "
        "folders on one split (markdown, JSON, figures)",
        description=(
            "Predict one split with every model (stochastic ones once with max(--samples) passes; "
            "the T-sample figures use the first T draws), and write comparison.md, "
            "comparison.json, per-model predictions and figures into --out."
        ),
    )
    p.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR", help="run folders (or 'default') to compare"
    )
    p.add_argument(
        "--data",
        default=None,
        help="dataset folder (default: $MOFBALORA_QMOF or ../shared/data/qmof)",
    )
    p.add_argument(
        "--samples",
        default="1,2,4,8,16,32,64",
        help="comma-separated numbers of stochastic passes T (default: 1,2,4,8,16,32,64)",
    )
    p.add_argument("--out", required=True, help="report folder (created)")
    p.add_argument("--split", default="test", choices=["test", "val", "train", "all"])
    p.add_argument("--split-name", default="qmof_v1", help="shipped split name or JSON path")
    p.add_argument(
        "--limit",
        "--test-size",
        dest="limit",
        type=positive_int,
        default=None,
        metavar="N",
        help="small run: the first N structures of the split (default: all)",
    )
    p.add_argument("--seed", type=int, default=0, help="noise seed of the predictions")
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow full unpickling of the third-party backbone checkpoint each model names, which "
        "can run code: only for files you made or whose "
        "source you trust (never read from a model folder)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mofbalora.compare import REPORT_JSON, REPORT_MD, compare_models

    bad = [t for t in str(args.samples).split(",") if not t.strip().isdigit()]
    if bad:
        raise ValueError(
            f"--samples {args.samples}: {bad[0].strip()!r} is not a whole number; give "
            "comma-separated integers, e.g. 1,2,4,8"
        )
    samples = [int(t) for t in str(args.samples).split(",")]
    if any(t < 1 for t in samples):
        raise ValueError(f"--samples {args.samples}: every T must be >= 1 (stochastic passes)")
    if max(samples) < 2:
        raise ValueError(
            f"--samples {args.samples}: the largest T must be >= 2 (a spread needs two draws)"
        )
    for run_dir in args.run_dirs:
        if run_dir != "default" and not Path(run_dir).is_dir():
            raise ValueError(
                f"{run_dir}: no such run folder (give 'default' or a folder finetune wrote)"
            )

    report = compare_models(
        args.run_dirs,
        data=args.data,
        split=args.split,
        split_name=args.split_name,
        samples=args.samples,
        limit=args.limit,
        out_dir=args.out,
        seed=args.seed,
        trust_checkpoint=args.trust_checkpoint,
    )
    out = Path(args.out)
    print(f"compared {len(report['models'])} model(s) on {report['n_structures']} structures")
    print(report["verdict"]["text"])
    print(
        f"report: {out / REPORT_MD}  numbers: "
        f"{out / REPORT_JSON}  figures: {len(report['figures'])}"
    )
    return 0
