"""Sweeps: train and evaluate a grid of settings (one run folder each, resumable) and collect one
table.

A sweep file names a base run configuration, a list of seeds and named settings (dotted overrides)::

    base: finetune_chgnet.yaml
    seeds: [0, 1, 2]
    settings:
      default: {}
      lora: {model.regime: lora}

Each (setting, seed) trains into ``OUT/<setting>/seed<k>``; finished runs (with ``metrics.json``)
are skipped and interrupted ones resumed, so rerunning a sweep continues it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mofbalora.config import load_run_config
from mofbalora.io import atomic_write_text, read_yaml, write_table
from mofbalora.train import finetune
from mofbalora.validation import check_int, check_keys

log = logging.getLogger(__name__)

TABLE_METRICS = ["mae_ev", "rmse_ev", "spearman_std_abs_error", "nll", "miscalibration_area"]


@dataclass
class SweepSpec:
    """A sweep file: the base run configuration, the named settings (``{"section.key": value}``
    each; None or ``{}`` for the base as it is) and the seeds."""

    base: Path
    settings: dict[str, dict[str, Any] | None]
    seeds: list[int] = field(default_factory=lambda: [0])

    def __post_init__(self) -> None:
        if not isinstance(self.settings, dict) or not self.settings:
            raise ValueError(
                f"sweep settings must be a non-empty mapping name -> changes, got {self.settings!r}"
            )
        for name, changes in self.settings.items():
            if changes is not None and not isinstance(changes, dict):
                raise ValueError(
                    f"sweep setting {name!r} must be a mapping "
                    f"section.key -> value, got {changes!r}"
                )
        for seed in self.seeds:
            check_int("sweep seeds[]", seed, 0)

    def overrides(self, name: str) -> list[str]:
        """The ``section.key=value`` overrides of setting ``name``."""
        return [
            f"{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}"
            for k, v in (self.settings[name] or {}).items()
        ]


def load_sweep(path: str | Path) -> SweepSpec:
    """The sweep in the YAML file ``path`` (``base`` relative to the file's folder); unknown keys
    refused."""
    path = Path(path)
    data = read_yaml(path, what="sweep")
    check_keys(data, ("base", "settings", "seeds"), what="sweep key")
    for key in ("base", "settings"):
        if key not in data:
            raise ValueError(f"{path}: a sweep needs {key!r}")
    base = Path(data["base"])
    return SweepSpec(
        base=base if base.is_absolute() else path.parent / base,
        settings=data["settings"],
        seeds=list(data.get("seeds", [0])),
    )


def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    *,
    only: list[str] | None = None,
    extra_overrides: list[str] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    out = Path(out)
    names = list(spec.settings)
    if only:
        unknown = set(only) - set(names)
        if unknown:
            raise ValueError(f"unknown setting(s) {sorted(unknown)}; choose from {names}")
        names = [n for n in names if n in only]
    for name in names:
        for seed in spec.seeds:
            run_dir = out / name / f"seed{seed}"
            if (run_dir / "metrics.json").exists():
                continue
            # sweep-wide overrides first, so that a setting can still change what they set
            cfg = load_run_config(
                spec.base, [*(extra_overrides or []), *spec.overrides(name), f"run.seed={seed}"]
            )
            log.info("sweep: %s seed %s", name, seed)
            finetune(
                cfg, run_dir, resume=(run_dir / "checkpoints" / "last").exists(), progress=progress
            )
    return collect(out, names)


def collect(out: str | Path, names: list[str] | None = None) -> pd.DataFrame:
    """One row per setting: mean and std over seeds of the test metrics, parameters and training
    time.

    ``sweep.csv`` / ``sweep.md`` always hold every finished setting; the returned table only
    ``names``.
    """
    out = Path(out)
    rows = []
    for setting_dir in sorted(p for p in out.iterdir() if p.is_dir()):
        runs = [json.loads(p.read_text()) for p in sorted(setting_dir.glob("seed*/metrics.json"))]
        if not runs:
            continue
        row = {
            "setting": setting_dir.name,
            "seeds": len(runs),
            "regime": runs[0]["regime"],
            "n_train": runs[0]["n_train"],
            "trainable_parameters": runs[0]["trainable_parameters"],
            "train_seconds": float(np.mean([r["train_seconds"] for r in runs])),
        }
        for m in TABLE_METRICS:
            vals = np.array([r.get("test", {}).get(m, np.nan) for r in runs], dtype=float)
            row[m] = float(np.nanmean(vals)) if np.isfinite(vals).any() else np.nan
            row[f"{m}_sd"] = float(np.nanstd(vals)) if np.isfinite(vals).sum() > 1 else np.nan
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        write_table(df, out / "sweep.csv")
        atomic_write_text(out / "sweep.md", to_markdown(df))
        if names:
            df = df[df["setting"].isin(names)].reset_index(drop=True)
    return df


def to_markdown(df: pd.DataFrame) -> str:
    head = (
        "| setting | regime | seeds | n_train | MAE (eV) | RMSE (eV) | Spearman ρ(σ, abs. err.) "
        "(T=32) | NLL | miscal. area | trainable params | train time (s) |\n|" + "---|" * 11 + "\n"
    )

    def pm(row, m, fmt="{:.3f}"):
        v, sd = row[m], row.get(f"{m}_sd", np.nan)
        if not np.isfinite(v):
            return "—"
        return fmt.format(v) + (f" ± {sd:.3f}" if np.isfinite(sd) else "")

    lines = [
        f"| {r['setting']} | {r['regime']} | {r['seeds']} | {r['n_train']} | {pm(r, 'mae_ev')} | "
        f"{pm(r, 'rmse_ev')} | {pm(r, 'spearman_std_abs_error')} | {pm(r, 'nll')} | "
        f"{pm(r, 'miscalibration_area')} | "
        f"{r['trainable_parameters']:,} | {r['train_seconds']:.0f} |"
        for r in df.to_dict("records")
    ]
    return head + "\n".join(lines) + "\n"
