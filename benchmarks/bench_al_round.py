"""One active-learning round's cost, shipped recipe (workflows/al_qmof.yaml), on the whole pool.

A simulated campaign (strategy ``balora_lcb``, seed 0) in ``--state``: round 0 trains fresh adapters
on the 500 initial labels (not part of the round cost; ``--round0-epochs`` shortens it for a
measurement), then one round:

- **select**: the pool prediction at T = 32 (the whole train part minus the 500: 14,109 structures,
  from the cached trunk activations held in memory) and the screen's ranking;
- **train**: the warm-started fine-tune on the 600 labels (at most ``al.round_epochs`` epochs, early
  stopping on validation);
- **evaluate**: the test MAE and Spearman of the new model at T = 32 (1,826 structures).

Baseline of the same run: one noise-free pass (T = 1) over the same pool; the table gives each part
as a ratio to it. The inputs are loaded from the cache once (``load``, not part of the round). The
campaign is resumable: run the command again after an interruption and it continues; ``--fresh``
starts over.

    MOFBALORA_QMOF=... python benchmarks/bench_al_round.py [--state DIR] [--round0-epochs N]
    [--fresh]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FULL_TRAIN = 14609  # structures in the train part of qmof_v1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--state", default="/tmp/al/bench_round", help="campaign folder (resumed if present)"
    )
    ap.add_argument(
        "--round0-epochs", type=int, default=None, help="epochs of round 0 (default: the recipe's)"
    )
    ap.add_argument(
        "--train-size",
        type=int,
        default=None,
        help="first N structures of the train part (500 labelled + the pool; default all 14,609): "
        "a smaller pool measures the per-structure cost where the cache holds only part of the "
        "train part, and the table then extrapolates the select step linearly to the whole pool",
    )
    ap.add_argument("--strategy", default="balora_lcb")
    ap.add_argument("--fresh", action="store_true", help="delete --state first")
    args = ap.parse_args()

    from mofbalora.al.campaign import Campaign, simulated_campaign
    from mofbalora.al.config import campaign_config, load_campaign_config
    from mofbalora.al.state import has_campaign

    state = Path(args.state)
    if args.fresh:
        shutil.rmtree(state, ignore_errors=True)
    overrides = [f"optim.epochs={args.round0_epochs}"] if args.round0_epochs else []
    if args.train_size:
        overrides.append(f"data.train_size={args.train_size}")
    cfg = campaign_config(
        load_campaign_config(REPO / "workflows" / "al_qmof.yaml", overrides)
    ).strategy(args.strategy, 0)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    c = (
        Campaign(state)
        if has_campaign(state)
        else simulated_campaign(state, cfg, name=args.strategy)
    )
    c.inputs_of(c.pool + list(c.labelled) + c.state.val_ids + c.state.test_ids)
    load_s = time.perf_counter() - t0
    c.run(1)  # round 0 (if not done), select, label, round 1
    h = c.history[1]["seconds"]
    pool = list(c.history[1]["picked"]) + c.pool  # the pool round 1 selected from
    model = c.model()
    c._load_round_model(0)
    t0 = time.perf_counter()
    model.predict_inputs(c.inputs_of(pool), n_samples=1, seed=0)
    base = time.perf_counter() - t0
    row = c.history[1]
    total = h["select"] + h["train"] + h["evaluate"]
    print(
        f"pool {len(pool)} structures, T = {cfg.al.n_samples}; round 1: {row['n_labelled']} "
        f"labelled, best epoch {row['best_epoch']} of at most {cfg.al.round_epochs}; load average "
        f"{load0:.1f} -> {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs; inputs loaded in {load_s:.0f} s"
    )
    print("| part | seconds | × one T = 1 pass over the pool |")
    print("|---|---|---|")
    for name, s in (
        ("select (pool prediction T = 32 + ranking)", h["select"]),
        ("train (warm)", h["train"]),
        ("evaluate (test, T = 32)", h["evaluate"]),
        ("**round**", total),
        ("baseline: one T = 1 pass over the pool", base),
    ):
        print(f"| {name} | {s:.0f} | {s / base:.1f} |")
    full = FULL_TRAIN - cfg.al.initial_labelled
    if len(pool) < full:
        scale = full / len(pool)
        print(
            f"extrapolated to the whole pool ({full} structures, select and baseline × "
            f"{scale:.2f}, train and evaluate as measured): select {h['select'] * scale:.0f} s, "
            f"round {h['select'] * scale + h['train'] + h['evaluate']:.0f} s"
        )


if __name__ == "__main__":
    main()
