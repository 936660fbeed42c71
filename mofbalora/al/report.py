"""The benchmark's report: learning and discovery curves, tables and a verdict over strategies and seeds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from mofbalora.al.state import CONFIG_FILE, STATE_FILE
from mofbalora.io import atomic_write_bytes, read_yaml, write_table
from mofbalora.uq.plots import new_figure, save_figure


def collect_runs(runs_dir: str | Path):
    """One row per (strategy, seed, round) of every campaign below ``runs_dir`` (a pandas DataFrame)."""
    rows = []
    for path in sorted(Path(runs_dir).rglob(STATE_FILE)):
        st = json.loads(path.read_text())
        strategy = st.get("name") or path.parent.parent.name
        base = (st.get("pool_stats") or {}).get("low_gap_fraction")
        for h in st["history"]:
            rows.append({"strategy": strategy, "seed": st["seed"], "run": str(path.parent), "low_gap_base_rate": base,
                         **{k: h.get(k) for k in ("round", "n_labelled", "n_acquired", "relative_dft_cost",
                                                  "n_low_gap_found", "test_mae_ev", "val_mae_ev")}})
    if not rows:
        raise FileNotFoundError(f"no campaign ({STATE_FILE}) with a trained round below {runs_dir}")
    return pd.DataFrame(rows)


def _spread(x) -> float:
    return float(np.std(x, ddof=1)) if len(x) > 1 else 0.0


def summarize_curves(table):
    """Mean and spread (sample standard deviation) over seeds per strategy and round."""
    g = table.groupby(["strategy", "round"])
    out = g.agg(n_seeds=("seed", "nunique"), n_labelled=("n_labelled", "mean"), n_acquired=("n_acquired", "mean"),
                relative_dft_cost=("relative_dft_cost", "mean"),
                test_mae_ev=("test_mae_ev", "mean"), test_mae_ev_sd=("test_mae_ev", _spread),
                n_low_gap_found=("n_low_gap_found", "mean"), n_low_gap_found_sd=("n_low_gap_found", _spread))
    return out.reset_index()


def final_summary(table):
    """Per strategy, at the last round every seed reached: low-gap finds per DFT calculation (mean ± sd)."""
    rows = []
    for strategy, t in table.groupby("strategy"):
        last = t.groupby("seed")["round"].max().min()
        f = t[t["round"] == last]
        per_calc = (f["n_low_gap_found"] / f["n_acquired"].where(f["n_acquired"] > 0)).to_numpy(dtype=float)
        per_cost = (f["n_low_gap_found"] / f["relative_dft_cost"].where(f["relative_dft_cost"] > 0)).to_numpy(dtype=float)
        mae = f["test_mae_ev"].dropna().to_numpy(dtype=float)
        rows.append({"strategy": strategy, "n_seeds": int(f["seed"].nunique()), "round": int(last),
                     "n_acquired": float(f["n_acquired"].mean()),
                     "n_low_gap_found": float(f["n_low_gap_found"].mean()), "n_low_gap_found_sd": _spread(f["n_low_gap_found"]),
                     "found_per_calculation": float(np.nanmean(per_calc)), "found_per_calculation_sd": _spread(per_calc),
                     "found_per_relative_cost": float(np.nanmean(per_cost)),
                     "test_mae_ev": float(mae.mean()) if mae.size else float("nan"), "test_mae_ev_sd": _spread(mae),
                     "low_gap_base_rate": f["low_gap_base_rate"].iloc[0]})
    return pd.DataFrame(rows).sort_values("found_per_calculation", ascending=False, kind="stable")


def _curve_plot(curves, x: str, y: str, path: Path, *, xlabel: str, ylabel: str, title: str,
                base_rate: float | None = None) -> Path:
    fig = new_figure((5.5, 4.2))
    ax = fig.add_subplot()
    for strategy, c in curves.groupby("strategy"):
        c = c.dropna(subset=[y]).sort_values(x)
        if c.empty:
            continue
        ax.plot(c[x], c[y], marker="o", ms=3, label=strategy)
        ax.fill_between(c[x], c[y] - c[f"{y}_sd"], c[y] + c[f"{y}_sd"], alpha=0.2)
    if base_rate is not None and math.isfinite(base_rate):
        xmax = float(curves[x].max())
        ax.plot([0, xmax], [0, base_rate * xmax], "k--", lw=1, label="pool base rate")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_learning_curves(curves, path: str | Path) -> Path:
    """Test MAE (eV) against the number of labelled structures; mean ± sd band over seeds."""
    return _curve_plot(curves, "n_labelled", "test_mae_ev", Path(path), xlabel="labelled structures",
                       ylabel="test MAE (eV)", title="Learning curves")


def plot_discovery_curves(curves, path: str | Path, *, low_gap_ev: float = 1.0,
                          base_rate: float | None = None) -> Path:
    """Low-gap structures found against DFT calculations spent; mean ± sd band over seeds."""
    return _curve_plot(curves, "n_acquired", "n_low_gap_found", Path(path), xlabel="DFT calculations",
                       ylabel=f"found with PBE gap < {low_gap_ev:g} eV", title="Discovery curves", base_rate=base_rate)


def discovery_statement(summary, low_gap_ev: float = 1.0) -> str:
    """A plain sentence: which strategy finds the most low-gap MOFs per DFT calculation."""
    s = summary.reset_index(drop=True)
    best = s.iloc[0]
    text = (f"**{best['strategy']}** finds the most MOFs with a PBE band gap below {low_gap_ev:g} eV per DFT "
            f"calculation: {best['found_per_calculation']:.3f} ± {best['found_per_calculation_sd']:.3f} per "
            f"calculation ({best['n_low_gap_found']:.1f} ± {best['n_low_gap_found_sd']:.1f} in "
            f"{best['n_acquired']:.0f} calculations; mean ± standard deviation over {best['n_seeds']} seed(s)).")
    if len(s) > 1:
        second = s.iloc[1]
        gap = best["found_per_calculation"] - second["found_per_calculation"]
        spread = max(best["found_per_calculation_sd"], second["found_per_calculation_sd"])
        if gap <= spread:
            text += (f" The runner-up, {second['strategy']} ({second['found_per_calculation']:.3f} ± "
                     f"{second['found_per_calculation_sd']:.3f}), is within the spread over seeds, so these runs "
                     f"do not separate the two.")
        else:
            text += f" The runner-up is {second['strategy']} ({second['found_per_calculation']:.3f} per calculation)."
    rand = s[s["strategy"] == "random"]
    if len(rand) and best["strategy"] != "random" and rand.iloc[0]["found_per_calculation"] > 0:
        r = rand.iloc[0]["found_per_calculation"]
        text += f" Random picking finds {r:.3f} per calculation, so {best['strategy']} is {best['found_per_calculation'] / r:.1f}× random."
    base = best.get("low_gap_base_rate")
    if base is not None and isinstance(base, float) and math.isfinite(base):
        text += f" (Fraction of the initial pool below {low_gap_ev:g} eV: {base:.3f}.)"
    return text


def write_report(runs_dir: str | Path, out: str | Path) -> Path:
    """Learning and discovery curves (PNG), tables (CSV) and ``report.md`` for the campaigns below
    ``runs_dir``; returns the markdown path."""
    runs_dir, out = Path(runs_dir), Path(out)
    table = collect_runs(runs_dir)
    out.mkdir(parents=True, exist_ok=True)
    first = read_yaml(Path(table["run"].iloc[0]) / CONFIG_FILE, what="campaign configuration")
    al = first["al"]
    curves = summarize_curves(table)
    summary = final_summary(table)
    base = summary["low_gap_base_rate"].dropna()
    base_rate = float(base.iloc[0]) if len(base) else None
    for name, frame in (("runs.csv", table), ("curves.csv", curves), ("summary.csv", summary)):
        write_table(frame, out / name)
    plot_learning_curves(curves, out / "learning_curves.png")
    plot_discovery_curves(curves, out / "discovery_curves.png", low_gap_ev=al["low_gap_ev"], base_rate=base_rate)
    lines = [
        "# Active learning on QMOF band gaps", "",
        f"Campaigns in `{runs_dir}`: {table['strategy'].nunique()} strategies, "
        f"{table.groupby('strategy')['seed'].nunique().max()} seed(s) each. Start from {al['initial_labelled']} "
        f"labelled structures, batches of {al['batch_size']}, up to {al['n_rounds']} rounds; split "
        f"`{first['data']['split']}` (the pool is its train part; the test part is never in the pool). "
        f"Campaigns with the same seed start from the same labelled set. Bands and ± are the sample standard "
        f"deviation over seeds; a relative DFT cost of 1 is one structure of the initial set's median size.", "",
        discovery_statement(summary, al["low_gap_ev"]), "",
        "| strategy | seeds | DFT calculations | found (< {:g} eV) | found per calculation | found per relative "
        "DFT cost | final test MAE (eV) |".format(al["low_gap_ev"]),
        "|---|---|---|---|---|---|---|",
    ]
    for _, r in summary.iterrows():
        lines.append(f"| {r['strategy']} | {r['n_seeds']} | {r['n_acquired']:.0f} | {r['n_low_gap_found']:.1f} ± "
                     f"{r['n_low_gap_found_sd']:.1f} | {r['found_per_calculation']:.3f} ± {r['found_per_calculation_sd']:.3f}"
                     f" | {r['found_per_relative_cost']:.3f} | {r['test_mae_ev']:.3f} ± {r['test_mae_ev_sd']:.3f} |")
    lines += ["", "![learning curves](learning_curves.png)", "", "![discovery curves](discovery_curves.png)", ""]
    md = out / "report.md"
    atomic_write_bytes(md, "\n".join(lines).encode())
    return md
