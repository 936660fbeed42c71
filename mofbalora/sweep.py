"""Sweeps: train and evaluate a grid of settings (one run folder each, resumable) and collect one table.

A sweep file names a base run configuration, a list of seeds and named settings (dotted overrides)::

    base: finetune_chgnet.yaml
    seeds: [0, 1, 2]
    settings:
      default: {}
      lora: {model.regime: lora}

Each (setting, seed) trains into ``OUT/<setting>/seed<k>``; finished runs (with ``metrics.json``) are
skipped and interrupted ones resumed, so rerunning a sweep continues it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from mofbalora.config import load_config
from mofbalora.io import write_table
from mofbalora.train import finetune

log = logging.getLogger(__name__)

TABLE_METRICS = ["mae_ev", "rmse_ev", "spearman_std_abs_error", "nll", "miscalibration_area"]


def load_sweep(path: str | Path) -> dict:
    path = Path(path)
    spec = yaml.safe_load(path.read_text()) or {}
    for key in ("base", "settings"):
        if key not in spec:
            raise ValueError(f"{path}: a sweep needs {key!r}")
    base = Path(spec["base"])
    spec["base"] = base if base.is_absolute() else path.parent / base
    spec.setdefault("seeds", [0])
    return spec


def run_sweep(spec: dict, out: str | Path, *, only: list[str] | None = None, extra_overrides: list[str] | None = None,
              progress: bool = True) -> pd.DataFrame:
    out = Path(out)
    names = list(spec["settings"])
    if only:
        unknown = set(only) - set(names)
        if unknown:
            raise ValueError(f"unknown setting(s) {sorted(unknown)}; choose from {names}")
        names = [n for n in names if n in only]
    for name in names:
        for seed in spec["seeds"]:
            run_dir = out / name / f"seed{seed}"
            if (run_dir / "metrics.json").exists():
                continue
            overrides = [f"{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}"
                         for k, v in (spec["settings"][name] or {}).items()]
            # sweep-wide overrides first, so that a setting can still change what they set
            cfg = load_config(spec["base"], [*(extra_overrides or []), *overrides, f"run.seed={seed}"])
            log.info("sweep: %s seed %s", name, seed)
            finetune(cfg, run_dir, resume=(run_dir / "checkpoints" / "last").exists(), progress=progress)
    return collect(out, names)


def collect(out: str | Path, names: list[str] | None = None) -> pd.DataFrame:
    """One row per setting: mean and std over seeds of the test metrics, parameters and training time.

    ``sweep.csv`` / ``sweep.md`` always hold every finished setting; the returned table only ``names``.
    """
    out = Path(out)
    rows = []
    for setting_dir in sorted(p for p in out.iterdir() if p.is_dir()):
        runs = [json.loads(p.read_text()) for p in sorted(setting_dir.glob("seed*/metrics.json"))]
        if not runs:
            continue
        row = {"setting": setting_dir.name, "seeds": len(runs), "regime": runs[0]["regime"],
               "n_train": runs[0]["n_train"], "trainable_parameters": runs[0]["trainable_parameters"],
               "train_seconds": float(np.mean([r["train_seconds"] for r in runs]))}
        for m in TABLE_METRICS:
            vals = np.array([r.get("test", {}).get(m, np.nan) for r in runs], dtype=float)
            row[m] = float(np.nanmean(vals)) if np.isfinite(vals).any() else np.nan
            row[f"{m}_sd"] = float(np.nanstd(vals)) if np.isfinite(vals).sum() > 1 else np.nan
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        write_table(df, out / "sweep.csv")
        (out / "sweep.md").write_text(to_markdown(df))
        if names:
            df = df[df["setting"].isin(names)].reset_index(drop=True)
    return df


def to_markdown(df: pd.DataFrame) -> str:
    head = ("| setting | regime | seeds | n_train | MAE (eV) | RMSE (eV) | Spearman ρ(σ, abs. err.) (T=32) | NLL | "
            "miscal. area | trainable params | train time (s) |\n|" + "---|" * 11 + "\n")

    def pm(row, m, fmt="{:.3f}"):
        v, sd = row[m], row.get(f"{m}_sd", np.nan)
        if not np.isfinite(v):
            return "—"
        return fmt.format(v) + (f" ± {sd:.3f}" if np.isfinite(sd) else "")

    lines = [f"| {r['setting']} | {r['regime']} | {r['seeds']} | {r['n_train']} | {pm(r, 'mae_ev')} | "
             f"{pm(r, 'rmse_ev')} | {pm(r, 'spearman_std_abs_error')} | {pm(r, 'nll')} | "
             f"{pm(r, 'miscalibration_area')} | {r['trainable_parameters']:,} | {r['train_seconds']:.0f} |"
             for r in df.to_dict("records")]
    return head + "\n".join(lines) + "\n"
