"""Training cost of the benchmark's BaLoRA model against its 5-member LoRA ensemble (issue 27's
"at ≤ 1/5 of its training cost"): round 0 of the simulated campaigns of ``workflows/al_qmof.yaml``
(the same 500 initial labels, seed 0, early stopping on the 600 validation structures), each
strategy's training seconds and the ratio to the first one. Run it on an idle machine.
``--epochs N`` trains every strategy exactly N epochs (no early stopping): the cost of an epoch at
equal epochs; ``--repeat`` runs the whole comparison again (a busy machine shows as spread);
``--floor`` adds one plain LoRA model (``model.regime=lora``, BaLoRA's strategy otherwise): the same
shapes without BaLoRA's noise, α network and KL, the floor a BaLoRA epoch could reach.

    MOFBALORA_QMOF=... python benchmarks/bench_al_training.py [--strategy balora_lcb
        --strategy ensemble_lcb] [--threads 2] [--state /tmp/al/cost]
        [--epochs 4 --repeat 2 --floor]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategy", action="append", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--state", default="/tmp/al/cost", help="campaign folders (replaced)")
    ap.add_argument("--epochs", type=int, default=None, help="exactly N epochs (default: recipe's)")
    ap.add_argument("--repeat", type=int, default=1, help="times to run the comparison")
    ap.add_argument("--floor", action="store_true", help="add one plain LoRA member (the floor)")
    args = ap.parse_args()

    from mofbalora.al.campaign import simulated_campaign
    from mofbalora.al.config import campaign_config, load_campaign_config

    strategies = args.strategy or ["balora_lcb", "ensemble_lcb"]
    inputs: dict = {}  # read from the trunk cache once, before any clock starts
    rows = []
    changes = [f"run.threads={args.threads}"]
    if args.epochs is not None:
        changes += [f"optim.epochs={args.epochs}", f"optim.patience={args.epochs}"]
    # (row name, strategy, changes on top of the strategy's own)
    runs = [(s, s, {}) for s in strategies]
    if args.floor:
        runs.append(("plain LoRA (floor)", "balora_lcb", {"model.regime": "lora"}))
    for name, strategy, extra in runs * args.repeat:
        doc = load_campaign_config(REPO / "workflows" / "al_qmof.yaml", changes)
        cfg = campaign_config(doc).strategy(strategy, 0).with_changes(extra)
        state = Path(args.state) / strategy
        shutil.rmtree(state, ignore_errors=True)
        c = simulated_campaign(state, cfg, name=strategy, inputs=inputs)
        c.inputs_of(list(c.labelled) + c.state.val_ids)
        row = c.train()
        rows.append((name, row["seconds"]["train"], row["best_epoch"]))
    epochs = "the recipe's epochs" if args.epochs is None else f"{args.epochs} epochs"
    print(f"round 0: {len(c.labelled)} labels, {args.threads} threads, {epochs}")
    print("| strategy | training seconds | best epoch | × the first |")
    print("|---|---|---|---|")
    for strategy, seconds, best in rows:
        print(f"| {strategy} | {seconds:.1f} | {best} | {seconds / rows[0][1]:.2f} |")


if __name__ == "__main__":
    main()
