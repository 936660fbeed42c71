"""``mofbalora evaluate``: accuracy and uncertainty metrics of a saved model on a dataset split."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from mofbalora.commands import positive_int

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="metrics (accuracy, ranking, calibration, NLL) of a model on a split"
    )
    p.add_argument("--model", default="default", help="'default' (shipped) or a run folder")
    p.add_argument(
        "--data",
        default=None,
        help="dataset folder (default: $MOFBALORA_QMOF or ../shared/data/qmof)",
    )
    p.add_argument("--labels", default=None, help="labels CSV for a plain folder of CIFs")
    p.add_argument("--id-column", default="id")
    p.add_argument("--target-column", default="bandgap")
    p.add_argument("--split", default="test", choices=["test", "val", "train", "all"])
    p.add_argument("--split-name", default="qmof_v1", help="shipped split name or JSON path")
    p.add_argument(
        "--samples",
        type=positive_int,
        default=32,
        help="stochastic passes T (default 32; >= 2 for a stochastic model's spread, 1 suits a "
        "deterministic one)",
    )
    p.add_argument(
        "--limit",
        "--test-size",
        dest="limit",
        type=positive_int,
        default=None,
        metavar="N",
        help="small run: the first N structures of the split "
        "(default: all; QMOF's test split has 1,826)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where the model runs"
    )
    p.add_argument("--out", default=None, help="report JSON (per-structure CSV written beside it)")
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow full unpickling of the third-party backbone checkpoint the model names, which "
        "can run code: only for files you made or whose "
        "source you trust (never read from the model folder)",
    )
    p.set_defaults(func=run)


def check_args(args: argparse.Namespace) -> None:
    """Every argument that can be checked before the model loads, in the CLI's words
    (ValueError)."""
    from mofbalora.model import resolve_model_dir

    try:
        resolve_model_dir(args.model)
    except FileNotFoundError as exc:
        raise ValueError(f"--model {args.model}: {exc}") from None
    if args.data is not None and not Path(args.data).is_dir():
        raise ValueError(f"--data {args.data}: no such dataset folder")
    if args.labels is not None and not Path(args.labels).is_file():
        raise ValueError(f"--labels {args.labels}: no such file")
    if args.samples == 1:
        log.warning(
            "--samples 1: one pass gives a stochastic model (BaLoRA, MC dropout) no spread of its "
            "draws; its uncertainty metrics need --samples >= 2"
        )
    if args.out is not None and Path(args.out).suffix.lower() != ".json":
        raise ValueError(
            f"--out {args.out}: give a .json file (the per-structure CSV is written beside it)"
        )


def run(args: argparse.Namespace) -> int:
    from mofbalora.evaluate import evaluate

    check_args(args)
    metrics = evaluate(
        args.model,
        data=args.data,
        split=args.split,
        split_name=args.split_name,
        n_samples=args.samples,
        limit=args.limit,
        out=args.out,
        labels=args.labels,
        id_column=args.id_column,
        target_column=args.target_column,
        seed=args.seed,
        device=args.device,
        trust_checkpoint=args.trust_checkpoint,
    )
    print(json.dumps(metrics, indent=2, default=float))
    return 0
