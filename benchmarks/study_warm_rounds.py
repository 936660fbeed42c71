"""How an active-learning round should fine-tune the model it starts from (warm start).

Each case is one warm round of a campaign run before: its round-k model, and the labelled set of
round k + 1 (the campaign's own picks). The round is trained again from that model under each
variant of the warm-round settings, on a copy (the campaign is only read), and measured by its
validation MAE (the val part: what early stopping sees) and test MAE (the test part, posterior-mean
prediction). Variants:

- ``A_old``: the old rounds: peak learning rate optim.lr (0.002), at most 6 epochs, patience 2, and
  early stopping among the round's new epochs only (a round could end worse than it began);
- ``F_keep_pat6``: the model a round starts from is its epoch 0 (``al.round_keep_start``), all 6
  epochs (patience 6);
- ``G_keep_lr1e-3_pat6``: the same at half the learning rate (``al.round_lr`` 0.001), the
  benchmark's setting since;
- ``H_keep_lr5e-4_10ep``: a quarter of it, 10 epochs.

The cases in reports/active_learning/warm_rounds.md came from seed 0 of the benchmark run with the
old rounds (rounds 1-3 of random, greedy_mean and balora_lcb). To make such campaigns and run this:

    mofbalora al run --config workflows/al_qmof.yaml --out runs/al_qmof_oldwarm --seed 0 \\
        --rounds 3 --strategy random --strategy greedy_mean --strategy balora_lcb \\
        --set al.round_keep_start=false --set al.round_lr=null --set al.round_patience=2
    python benchmarks/study_warm_rounds.py --runs runs/al_qmof_oldwarm
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from _common import campaign_at_round

VARIANTS = {
    "A_old": dict(round_keep_start=False, round_lr=None, round_epochs=6, round_patience=2),
    "F_keep_pat6": dict(round_keep_start=True, round_lr=None, round_epochs=6, round_patience=6),
    "G_keep_lr1e-3_pat6": dict(
        round_keep_start=True, round_lr=1e-3, round_epochs=6, round_patience=6
    ),
    "H_keep_lr5e-4_10ep": dict(
        round_keep_start=True, round_lr=5e-4, round_epochs=10, round_patience=10
    ),
}


def _case(src: Path, k: int, work: Path) -> Path:
    """A copy of campaign ``src`` rewound to the start of round k + 1's training (round k's model;
    the labels of rounds 0..k + 1)."""
    st = campaign_at_round(src, k, work)
    picked = [i for h in st["history"][1 : k + 2] for i in h["picked"]]
    keep = set(st["initial"]) | set(picked)
    st.update(
        labelled={i: g for i, g in st["labelled"].items() if i in keep},
        acquired=picked,
        history=st["history"][: k + 1],
        round=k + 1,
        phase="train",
    )
    (work / "campaign.json").write_text(json.dumps(st))
    return work


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs/al_qmof_oldwarm", help="campaigns run with A_old")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strategy", action="append", default=None)
    ap.add_argument("--round", type=int, action="append", default=None, help="k: round k -> k + 1")
    ap.add_argument("--out", default="warm_rounds.jsonl", help="one JSON line per case and variant")
    args = ap.parse_args()

    from mofbalora.al.campaign import Campaign
    from mofbalora.train import validation_mae

    torch.set_num_threads(1)
    strategies = args.strategy or ["random", "greedy_mean", "balora_lcb"]
    rounds = args.round or [0, 1, 2]
    inputs: dict = {}  # backbone inputs, read from the cache once for every case
    rows = []
    with tempfile.TemporaryDirectory() as tmp, open(args.out, "a") as out:
        for strategy in strategies:
            src = Path(args.runs) / strategy / f"seed_{args.seed}"
            start_vals = [
                h["val_mae_ev"] for h in json.loads((src / "campaign.json").read_text())["history"]
            ]
            for k in rounds:
                for name, settings in VARIANTS.items():
                    c = Campaign(_case(src, k, Path(tmp) / "case"), inputs=inputs)
                    c.cfg = replace(c.cfg, al=replace(c.cfg.al, eval_test=False, **settings))
                    t0 = time.perf_counter()
                    row = c.train()
                    seconds = time.perf_counter() - t0
                    c._load_round_model(k + 1)
                    test = validation_mae(
                        c.model(),
                        c.inputs_of(c.state.test_ids),
                        c._dataset_labels(c.state.test_ids),
                    )
                    rec = {
                        "strategy": strategy,
                        "round": k + 1,
                        "variant": name,
                        "n_labelled": len(c.labelled),
                        "start_val": start_vals[k],
                        "val": row["val_mae_ev"],
                        "test": test,
                        "best_epoch": row["best_epoch"],
                        "seconds": seconds,
                    }
                    print(json.dumps(rec), flush=True)
                    out.write(json.dumps(rec) + "\n")
                    rows.append(rec)
    print("| warm round (labels) | start val | " + " | ".join(VARIANTS) + " |")
    print("|---|---|" + "---|" * len(VARIANTS))
    cases: dict = {}
    for r in rows:
        cases.setdefault((r["strategy"], r["round"], r["n_labelled"], r["start_val"]), {})[
            r["variant"]
        ] = r
    for (strategy, rnd, n, start), by in cases.items():
        cells = [f"{by[v]['val']:.3f} / {by[v]['test']:.3f}" if v in by else "–" for v in VARIANTS]
        print(f"| {strategy} round {rnd} ({n}) | {start:.3f} | " + " | ".join(cells) + " |")
    means = []
    for v in VARIANTS:
        got = [
            (r["val"], r["test"], r["val"] > r["start_val"] + 1e-9)
            for r in rows
            if r["variant"] == v
        ]
        a = np.array(got, dtype=float)
        means.append(f"{a[:, 0].mean():.4f} / {a[:, 1].mean():.4f} ({int(a[:, 2].sum())} worse)")
    print("| **mean** (rounds ending worse than their start) | | " + " | ".join(means) + " |")


if __name__ == "__main__":
    main()
