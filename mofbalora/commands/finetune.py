"""``mofbalora finetune``: fine-tune a backbone with adapters on band gaps (resumable run
folder)."""

from __future__ import annotations

import argparse
import json
import os

from mofbalora.commands import non_negative_int, positive_int, show_progress

ADAPTER_FLAGS = {
    "balora": "balora",
    "lora": "lora",
    "mc-dropout": "mc_dropout",
    "lora-ensemble": "lora_ensemble",
    "head-only": "head_only",
    "full": "full",
    "gbm": "gbm",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune with BaLoRA / LoRA / ensembles / head-only / full",
        description="Fine-tune per a YAML config (workflows/*.yaml) plus overrides.",
    )
    p.add_argument(
        "--config", default=None, help="YAML run configuration (default: built-in defaults)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config entry, e.g. --set optim.epochs=5 (repeatable)",
    )
    p.add_argument(
        "--adapter", choices=sorted(ADAPTER_FLAGS), default=None, help="regime (model.regime)"
    )
    p.add_argument("--rank", type=positive_int, default=None)
    p.add_argument(
        "--members", type=positive_int, default=None, help="K for --adapter lora-ensemble"
    )
    p.add_argument("--epochs", type=positive_int, default=None)
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, choices=["cpu", "cuda", "auto"])
    p.add_argument("--threads", type=positive_int, default=None)
    p.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        metavar="N",
        help="small run: at most N structures in each of train, val and test (data.train_size, "
        "data.val_size, data.test_size; the sizes below win)",
    )
    p.add_argument(
        "--train-size",
        type=positive_int,
        default=None,
        metavar="N",
        help="first N train ids (data.train_size)",
    )
    p.add_argument(
        "--val-size",
        type=positive_int,
        default=None,
        metavar="N",
        help="first N val ids (data.val_size)",
    )
    p.add_argument(
        "--test-size",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="first N test ids evaluated at the end (data.test_size; 0 = no test evaluation, "
        "run.eval_test=false); the whole test split (QMOF: 1,826) by default",
    )
    p.add_argument("--data", default=None, help="dataset folder (data.path)")
    p.add_argument("--out", default=None, help="run folder (run.out)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow full unpickling of the backbone's third-party checkpoint "
        "(backbone.checkpoint), which can run code: only for files you made or whose source you "
        "trust; not stored with the run",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def resolve(args: argparse.Namespace):
    """The typed run configuration (:class:`mofbalora.config.RunConfig`) of the parsed flags."""
    from mofbalora.config import load_run_config

    extra: dict = {}
    if args.adapter:
        extra.setdefault("model", {})["regime"] = ADAPTER_FLAGS[args.adapter]
    for flag, (section, key) in {
        "rank": ("adapter", "rank"),
        "members": ("adapter", "n_members"),
        "epochs": ("optim", "epochs"),
        "batch_size": ("optim", "batch_size"),
        "seed": ("run", "seed"),
        "device": ("run", "device"),
        "threads": ("run", "threads"),
        "data": ("data", "path"),
        "out": ("run", "out"),
    }.items():
        value = getattr(args, flag)
        if value is not None:
            extra.setdefault(section, {})[key] = value
    for part in ("train", "val", "test"):
        size = getattr(args, f"{part}_size", None)
        size = args.limit if size is None else size
        if size == 0:  # --test-size 0
            extra.setdefault("run", {})["eval_test"] = False
        elif size is not None:
            extra.setdefault("data", {})[f"{part}_size"] = size
    # checks model.regime (gbm included) and the rest
    cfg = load_run_config(args.config, args.overrides, extra)
    if not cfg.run.out:
        raise ValueError("no run folder: pass --out DIR or set run.out in the config")
    return cfg


def run(args: argparse.Namespace) -> int:
    from mofbalora.train import finetune

    cfg = resolve(args)
    result = finetune(
        cfg,
        cfg.run.out,
        resume=args.resume,
        progress=show_progress(args),
        trust_checkpoint=args.trust_checkpoint,
    )
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 reports
        return 0
    short = {
        k: result[k]
        for k in ("regime", "n_train", "best_epoch", "best_val_mae_ev", "train_seconds")
        if k in result
    }
    if "test" in result:
        short["test_mae_ev"] = result["test"]["mae_ev"]
        short["test_spearman_std_abs_error"] = result["test"]["spearman_std_abs_error"]
    print(json.dumps(short, indent=2, default=float))
    return 0
