"""``mofbalora evaluate``: accuracy and uncertainty metrics of a saved model on a dataset split."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="metrics (accuracy, ranking, calibration, NLL) of a model on a split")
    p.add_argument("--model", default="default", help="'default' (shipped) or a run folder")
    p.add_argument("--data", default=None, help="dataset folder (default: $MOFBALORA_QMOF or ../shared/data/qmof)")
    p.add_argument("--labels", default=None, help="labels CSV for a plain folder of CIFs")
    p.add_argument("--id-column", default="id")
    p.add_argument("--target-column", default="bandgap")
    p.add_argument("--split", default="test", choices=["test", "val", "train", "all"])
    p.add_argument("--split-name", default="qmof_v1", help="shipped split name or JSON path")
    p.add_argument("--samples", type=int, default=32, help="stochastic passes T")
    p.add_argument("--limit", type=int, default=None, help="first N structures of the split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where the model runs")
    p.add_argument("--out", default=None, help="report JSON (per-structure CSV written beside it)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow full unpickling of the third-party backbone checkpoint the model names, which can run "
                        "code: only for files you made or whose source you trust (never read from the model folder)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mofbalora.evaluate import evaluate

    metrics = evaluate(args.model, data=args.data, split=args.split, split_name=args.split_name,
                       n_samples=args.samples, limit=args.limit, out=args.out, labels=args.labels,
                       id_column=args.id_column, target_column=args.target_column, seed=args.seed, device=args.device,
                       trust_checkpoint=args.trust_checkpoint)
    print(json.dumps(metrics, indent=2, default=float))
    return 0
