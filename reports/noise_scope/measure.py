"""Noise-scope ablation of the shipped recipe: exact per-structure weight noise (`structure`), per-row
local reparameterisation (`row`) and the rank-shared approximation (`rank_shared`), 3 seeds each.

    python reports/noise_scope/measure.py --runs runs/noise_scope              # all 9 runs, resumable
    python reports/noise_scope/measure.py --seeds 0 --threads 1 --tag s0 &     # or in parallel processes,
    python reports/noise_scope/measure.py --seeds 1 2 --threads 1 --tag s12    # then:
    python reports/noise_scope/measure.py --table-only

Each run is `workflows/finetune_chgnet.yaml` with `adapter.noise_scope` and `run.seed` set (same
split, 6,000 training structures, early stopping on 600 validation structures). Then, on the
documented test split (1,826 structures), T = 64 draws (seed 0) give: Spearman(std, |err|) using the
first T draws for T = 2 ... 64, MAE of the 32-draw mean, raw and recalibrated miscalibration area
and 95 % coverage (recalibration sqrt((a σ)² + b²) fitted on the 600 validation structures at T =
32). Writes results-<tag>.csv (one row per run), results.csv (all runs) and table.md (mean ± sd over
seeds) beside this file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
T_GRID = (2, 4, 8, 16, 32, 64)


def run_one(scope: str, seed: int, runs: Path, threads: int) -> Path:
    from mofbalora.config import load_config
    from mofbalora.train import finetune

    out = runs / f"{scope}-s{seed}"
    if (out / "metrics.json").is_file():
        return out
    cfg = load_config(
        ROOT / "workflows" / "finetune_chgnet.yaml",
        [
            f"adapter.noise_scope={scope}",
            f"run.seed={seed}",
            "run.eval_test=false",
            f"run.threads={threads}",
        ],
    )
    finetune(cfg, out, resume=True, progress=False)
    return out


def score(out: Path, data: dict) -> dict:
    from mofbalora.model import load_model
    from mofbalora.uq import metrics as M
    from mofbalora.uq.recalibration import apply_std_scale_floor, fit_std_scale_floor

    model = load_model(out)
    row: dict = {}
    preds = {}
    for part, n_samples in (("val", 32), ("test", 64)):
        x, y = data[part]
        p = model.predict_inputs(x, n_samples=n_samples, seed=0)
        preds[part] = (p.samples_ev, y)
    s_te, y_te = preds["test"]
    for t in T_GRID:
        sub = s_te[:, :t]
        row[f"spearman_T{t}"] = M.spearman_std_abs_error(sub.mean(1), sub.std(1, ddof=1), y_te)
    mean32, std32 = s_te[:, :32].mean(1), np.maximum(s_te[:, :32].std(1, ddof=1), 1e-6)
    row["mae_ev"] = M.mae(mean32, std32, y_te)
    import torch

    from mofbalora.train import validation_mae

    row["mae_posterior_mean_pass_ev"] = validation_mae(
        model, data["test"][0], torch.as_tensor(y_te, dtype=torch.float32)
    )
    row["miscal_area_raw"] = M.miscalibration_area(mean32, std32, y_te)
    row["coverage95_raw"] = M.coverage(mean32, std32, y_te, 0.95)
    row["median_std_ev"] = float(np.median(std32))
    s_va, y_va = preds["val"]
    a, b = fit_std_scale_floor(s_va.mean(1), np.maximum(s_va.std(1, ddof=1), 1e-6), y_va)
    cal = apply_std_scale_floor(std32, a, b)
    row.update(
        std_factor=a,
        std_floor_ev=b,
        miscal_area_cal=M.miscalibration_area(mean32, cal, y_te),
        coverage95_cal=M.coverage(mean32, cal, y_te, 0.95),
        nll_cal=M.gaussian_nll(mean32, cal, y_te),
    )
    metrics = json.loads((out / "metrics.json").read_text())
    row.update(best_epoch=metrics["best_epoch"], train_seconds=metrics["train_seconds"])
    return row


def load_data(model_dir: Path) -> dict:
    from mofbalora.config import load_config
    from mofbalora.model import load_model
    from mofbalora.train import load_inputs, split_ids

    cfg = load_config(ROOT / "workflows" / "finetune_chgnet.yaml")
    ds, ids = split_ids(cfg)
    model = load_model(model_dir)
    out = {}
    for part in ("val", "test"):
        _, x, y = load_inputs(model, ds, ids[part], False)
        out[part] = (x, y.numpy().astype(float))
    return out


def table(df: pd.DataFrame) -> str:
    cols = [f"spearman_T{t}" for t in T_GRID] + [
        "mae_ev",
        "miscal_area_raw",
        "coverage95_raw",
        "miscal_area_cal",
        "coverage95_cal",
        "median_std_ev",
    ]
    g = df.groupby("scope")[cols]
    mean, sd = g.mean(), g.std()
    head = "| scope | " + " | ".join(c.replace("spearman_", "ρ ") for c in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 1)]
    for scope in mean.index:
        cells = [f"{mean.loc[scope, c]:.3f} ± {sd.loc[scope, c]:.3f}" for c in cols]
        lines.append(f"| {scope} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs/noise_scope")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--scopes", nargs="+", default=["structure", "row", "rank_shared"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tag", default="all")
    ap.add_argument("--table-only", action="store_true", help="merge results-*.csv into table.md")
    args = ap.parse_args()
    if not args.table_only:
        torch.set_num_threads(args.threads)
        runs = Path(args.runs)
        rows, data = [], None
        for seed in args.seeds:
            for scope in args.scopes:
                out = run_one(scope, seed, runs, args.threads)
                data = data or load_data(out)
                rows.append({"scope": scope, "seed": seed, **score(out, data)})
                print(rows[-1], flush=True)
                pd.DataFrame(rows).to_csv(HERE / f"results-{args.tag}.csv", index=False)
    df = pd.concat([pd.read_csv(p) for p in sorted(HERE.glob("results-*.csv"))], ignore_index=True)
    df = df.drop_duplicates(["scope", "seed"], keep="last").sort_values(["scope", "seed"])
    df.to_csv(HERE / "results.csv", index=False)
    (HERE / "table.md").write_text(table(df) + "\n")
    print(table(df))


if __name__ == "__main__":
    main()
