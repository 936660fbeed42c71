"""Training cost of the benchmark's BaLoRA model against its 5-member LoRA ensemble (issue 27's
"at ≤ 1/5 of its training cost"): round 0 of the simulated campaigns of ``workflows/al_qmof.yaml``
(the same 500 initial labels, seed 0, early stopping on the 600 validation structures), each
strategy's training seconds and the ratio to the first one. Run it on an idle machine.

    MOFBALORA_QMOF=... python benchmarks/bench_al_training.py [--strategy balora_lcb
        --strategy ensemble_lcb] [--threads 2] [--state /tmp/al/cost]
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
    args = ap.parse_args()

    from mofbalora.al.campaign import simulated_campaign
    from mofbalora.al.config import campaign_config, load_campaign_config

    strategies = args.strategy or ["balora_lcb", "ensemble_lcb"]
    inputs: dict = {}  # read from the trunk cache once, before any clock starts
    rows = []
    for strategy in strategies:
        doc = load_campaign_config(
            REPO / "workflows" / "al_qmof.yaml", [f"run.threads={args.threads}"]
        )
        cfg = campaign_config(doc).strategy(strategy, 0)
        state = Path(args.state) / strategy
        shutil.rmtree(state, ignore_errors=True)
        c = simulated_campaign(state, cfg, name=strategy, inputs=inputs)
        c.inputs_of(list(c.labelled) + c.state.val_ids)
        row = c.train()
        rows.append((strategy, row["seconds"]["train"], row["best_epoch"]))
    print(f"round 0: {len(c.labelled)} labels, {args.threads} threads")
    print("| strategy | training seconds | best epoch | × the first |")
    print("|---|---|---|---|")
    for strategy, seconds, best in rows:
        print(f"| {strategy} | {seconds:.1f} | {best} | {seconds / rows[0][1]:.2f} |")


if __name__ == "__main__":
    main()
