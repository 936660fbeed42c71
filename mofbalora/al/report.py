"""The benchmark's report: learning and discovery curves, tables and a verdict over strategies and
seeds.

Per strategy and number of labels (mean ± sample sd over seeds, and a bootstrap 95 % interval of the
mean over seeds): structures found per DFT calculation below ``al.low_gap_ev`` and below 0.5 eV, the
recall of the pool's 100 smallest gaps, test MAE and test Spearman (total std against the absolute
error), the labels each strategy needs to reach random's final test MAE, and the seconds per
round (select + train + evaluate); then the benchmark's three targets (``targets.csv``), each with
its verdict. Every table compares the strategies at one round over one set of seeds
(:func:`comparison_point`), so a report written while campaigns still run is a fair interim one."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from mofbalora.al.state import CONFIG_FILE, STATE_FILE
from mofbalora.io import atomic_write_bytes, read_yaml, write_table
from mofbalora.uq.plots import new_figure, save_figure

#: the second discovery threshold (eV) of the report, besides ``al.low_gap_ev``
STRICT_GAP_EV = 0.5
#: bootstrap resamples of the seeds for the 95 % intervals
N_BOOTSTRAP = 2000
#: the lock file, in the runs folder, that one report writer holds at a time
REPORT_LOCK = ".report.lock"


@contextmanager
def report_lock(runs_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``runs_dir``'s report (POSIX ``flock``; no lock elsewhere): the
    seeds of a benchmark run as separate processes rewrite the same report after their rounds, and
    one report's files must come from one reading of the campaigns."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    if not runs_dir.is_dir():  # nothing to read: the reader says so
        yield
        return
    with open(runs_dir / REPORT_LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _round_seconds(row: dict) -> float | None:
    """Seconds of one history row's round (select + train + evaluate); None when not recorded."""
    seconds = row.get("seconds") or {}
    return sum(float(v or 0) for v in seconds.values()) if seconds else None


def collect_runs(runs_dir: str | Path):
    """One row per (strategy, seed, round) of every campaign below ``runs_dir`` (a pandas
    DataFrame)."""
    rows = []
    for path in sorted(Path(runs_dir).rglob(STATE_FILE)):
        st = json.loads(path.read_text())
        strategy = st.get("name") or path.parent.parent.name
        stats = st.get("pool_stats") or {}
        base = stats.get("low_gap_fraction")
        smallest = set(stats.get("smallest_gap_ids") or [])
        bought: list[float] = []
        bought_ids: set[str] = set()
        for h in st["history"]:
            bought += [g for g in h.get("picked_bandgaps_ev") or [] if g is not None]
            bought_ids |= set(h.get("picked") or [])
            seconds = h.get("seconds") or {}
            rows.append(
                {
                    "strategy": strategy,
                    "seed": st["seed"],
                    "run": str(path.parent),
                    "low_gap_base_rate": base,
                    **{
                        k: h.get(k)
                        for k in (
                            "round",
                            "n_labelled",
                            "n_acquired",
                            "relative_dft_cost",
                            "n_low_gap_found",
                            "test_mae_ev",
                            "val_mae_ev",
                        )
                    },
                    "test_spearman": h.get("test_spearman_std_abs_error"),
                    "n_found_strict": int(sum(g < STRICT_GAP_EV for g in bought))
                    if "picked" in h
                    else None,
                    "recall_smallest": (len(bought_ids & smallest) / len(smallest))
                    if smallest
                    else None,
                    "round_seconds": _round_seconds(h),
                    "train_seconds": float(seconds["train"]) if "train" in seconds else None,
                }
            )
    if not rows:
        raise FileNotFoundError(f"no campaign ({STATE_FILE}) with a trained round below {runs_dir}")
    return pd.DataFrame(rows)


def comparison_point(table) -> tuple[int, list]:
    """(round, seeds) at which the report compares the strategies: the furthest round that every
    strategy reached in the same seeds, and those seeds. While campaigns still run, a seed whose
    slowest strategy lags is left out rather than pulling every strategy back to its round (the
    strategies are always compared at one number of labels, over one set of seeds)."""
    last = table.groupby(["seed", "strategy"])["round"].max().unstack()
    per_seed = last.reindex(columns=sorted(table["strategy"].unique())).min(axis=1, skipna=False)
    per_seed = per_seed.fillna(-1)
    common = int(per_seed.max())
    if common < 0:
        raise ValueError("no seed has a trained round in every strategy; nothing to compare")
    return common, sorted(per_seed.index[per_seed >= common].tolist())


def progress(runs_dir: str | Path):
    """One row per campaign below ``runs_dir`` (a pandas DataFrame, read from the state files only):
    strategy, seed, the round and phase it is in, the rounds trained of its ``al.n_rounds`` + 1
    (round 0 included), the mean seconds of its rounds after round 0, and the process seconds its
    remaining rounds should take at that pace (a campaign with no such round yet: its strategy's
    mean elsewhere, else every campaign's)."""
    rows = []
    for path in sorted(Path(runs_dir).rglob(STATE_FILE)):
        st = json.loads(path.read_text())
        cfg = read_yaml(path.parent / CONFIG_FILE, what="campaign configuration")
        secs = [_round_seconds(h) or 0.0 for h in st["history"] if h.get("round", 0) > 0]
        rows.append(
            {
                "strategy": st.get("name") or path.parent.parent.name,
                "seed": st["seed"],
                "round": st["round"],
                "phase": st["phase"],
                "rounds_trained": len(st["history"]),
                "rounds_planned": int(cfg["al"]["n_rounds"]) + 1,
                "seconds_per_round": float(np.mean(secs)) if secs else float("nan"),
            }
        )
    if not rows:
        raise FileNotFoundError(f"no campaign ({STATE_FILE}) below {runs_dir}")
    table = pd.DataFrame(rows)
    pace = table["seconds_per_round"].fillna(
        table.groupby("strategy")["seconds_per_round"].transform("mean")
    )
    pace = pace.fillna(table["seconds_per_round"].mean())
    left = (table["rounds_planned"] - table["rounds_trained"]).clip(lower=0)
    table["remaining_seconds"] = left * pace
    return table.sort_values(["seed", "strategy"], kind="stable").reset_index(drop=True)


def _spread(x) -> float:
    return float(np.std(x, ddof=1)) if len(x) > 1 else 0.0


def _mean(x) -> float:
    x = np.asarray(x, dtype=float)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def bootstrap_interval(values, n: int = N_BOOTSTRAP, seed: int = 0) -> tuple[float, float]:
    """The 95 % percentile-bootstrap interval of the mean of ``values`` (NaNs dropped; one value:
    itself)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if not x.size:
        return float("nan"), float("nan")
    means = np.random.default_rng(seed).choice(x, size=(n, x.size), replace=True).mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def summarize_curves(table):
    """Mean and spread (sample standard deviation) over seeds per strategy and round."""
    table = table.copy()
    for col in ("test_spearman", "n_found_strict", "recall_smallest", "round_seconds"):
        if col not in table:
            table[col] = np.nan
        table[col] = pd.to_numeric(table[col], errors="coerce")
    g = table.groupby(["strategy", "round"])
    out = g.agg(
        n_seeds=("seed", "nunique"),
        n_labelled=("n_labelled", "mean"),
        n_acquired=("n_acquired", "mean"),
        relative_dft_cost=("relative_dft_cost", "mean"),
        test_mae_ev=("test_mae_ev", "mean"),
        test_mae_ev_sd=("test_mae_ev", _spread),
        test_spearman=("test_spearman", "mean"),
        test_spearman_sd=("test_spearman", _spread),
        n_low_gap_found=("n_low_gap_found", "mean"),
        n_low_gap_found_sd=("n_low_gap_found", _spread),
        n_found_strict=("n_found_strict", "mean"),
        n_found_strict_sd=("n_found_strict", _spread),
        recall_smallest=("recall_smallest", "mean"),
        recall_smallest_sd=("recall_smallest", _spread),
        round_seconds=("round_seconds", "mean"),
    )
    return out.reset_index()


def labels_to_reach(
    curves, reference: str = "random", at_round: int | None = None
) -> dict[str, float | None]:
    """Per strategy, the fewest labels at which its mean test MAE is at or below ``reference``'s
    mean test MAE at the last round every strategy reached (None: never; {} without the
    reference). ``at_round``: only the curves up to that round count (the report's comparison
    round: its goal is the reference's MAE there, not at a round some seeds have not reached)."""
    if at_round is not None:
        curves = curves[curves["round"] <= at_round]
    ref = curves[curves["strategy"] == reference].dropna(subset=["test_mae_ev"])
    if ref.empty:
        return {}
    last = int(curves.groupby("strategy")["round"].max().min())
    ref = ref[ref["round"] <= last]
    goal = float(ref.sort_values("round")["test_mae_ev"].iloc[-1])
    out: dict[str, float | None] = {}
    for strategy, c in curves.groupby("strategy"):
        hit = c[(c["round"] <= last) & (c["test_mae_ev"] <= goal + 1e-12)].sort_values("round")
        out[strategy] = float(hit["n_labelled"].iloc[0]) if len(hit) else None
    return out


def final_summary(table, at_round: int | None = None):
    """Per strategy, at round ``at_round`` (default: the last round every seed of the strategy
    reached): low-gap finds per DFT calculation (mean ± sd) and the other columns of the report."""
    rows = []
    for strategy, t in table.groupby("strategy"):
        last = t.groupby("seed")["round"].max().min() if at_round is None else at_round
        f = t[t["round"] == last]
        per_calc = (f["n_low_gap_found"] / f["n_acquired"].where(f["n_acquired"] > 0)).to_numpy(
            dtype=float
        )
        per_cost = (
            f["n_low_gap_found"] / f["relative_dft_cost"].where(f["relative_dft_cost"] > 0)
        ).to_numpy(dtype=float)
        mae = f["test_mae_ev"].dropna().to_numpy(dtype=float)
        strict = (
            pd.to_numeric(f.get("n_found_strict"), errors="coerce").to_numpy(dtype=float)
            if "n_found_strict" in f
            else np.full(len(f), np.nan)
        )
        strict_per_calc = strict / f["n_acquired"].where(f["n_acquired"] > 0).to_numpy(dtype=float)
        recall = (
            pd.to_numeric(f.get("recall_smallest"), errors="coerce").to_numpy(dtype=float)
            if "recall_smallest" in f
            else np.full(len(f), np.nan)
        )
        rho = (
            pd.to_numeric(f.get("test_spearman"), errors="coerce").to_numpy(dtype=float)
            if "test_spearman" in f
            else np.full(len(f), np.nan)
        )
        secs = (
            pd.to_numeric(t[t["round"] > 0].get("round_seconds"), errors="coerce").to_numpy(
                dtype=float
            )
            if "round_seconds" in t
            else np.array([])
        )
        extra = {
            "found_per_calculation_ci": bootstrap_interval(per_calc),
            "strict_per_calculation": _mean(strict_per_calc),
            "strict_per_calculation_sd": _spread(strict_per_calc[np.isfinite(strict_per_calc)]),
            "strict_per_calculation_ci": bootstrap_interval(strict_per_calc),
            "recall_smallest": _mean(recall),
            "recall_smallest_sd": _spread(recall[np.isfinite(recall)]),
            "recall_smallest_ci": bootstrap_interval(recall),
            "test_mae_ev_ci": bootstrap_interval(mae),
            "test_spearman": _mean(rho),
            "test_spearman_sd": _spread(rho[np.isfinite(rho)]),
            "seconds_per_round": _mean(secs),
        }
        rows.append(
            {
                "strategy": strategy,
                "n_seeds": int(f["seed"].nunique()),
                "seeds": " ".join(str(x) for x in sorted(f["seed"].unique())),
                "round": int(last),
                "n_labelled": float(f["n_labelled"].mean()),
                **extra,
                "n_acquired": float(f["n_acquired"].mean()),
                "n_low_gap_found": float(f["n_low_gap_found"].mean()),
                "n_low_gap_found_sd": _spread(f["n_low_gap_found"]),
                "found_per_calculation": _mean(per_calc),
                "found_per_calculation_sd": _spread(per_calc),
                "found_per_relative_cost": _mean(per_cost),
                "test_mae_ev": float(mae.mean()) if mae.size else float("nan"),
                "test_mae_ev_sd": _spread(mae),
                "low_gap_base_rate": f["low_gap_base_rate"].iloc[0],
            }
        )
    return pd.DataFrame(rows).sort_values("found_per_calculation", ascending=False, kind="stable")


#: the strategies the issue's targets name (benchmark.strategies in workflows/al_qmof.yaml)
RANDOM, GREEDY, ENSEMBLE, BALORA_PREFIX = "random", "greedy_mean", "ensemble_lcb", "balora_"
#: the targets: BaLoRA's sub-0.5 eV finds per DFT over greedy's; an uncertainty strategy's labels to
#: random's final test MAE over random's labels; BaLoRA's training cost over the ensemble's
DISCOVERY_GAIN, LABEL_FRACTION, COST_FRACTION = 1.1, 0.75, 0.2


def paired_ratio_interval(num, den, n: int = N_BOOTSTRAP, seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of mean(num) / mean(den), resampling the seeds jointly
    (the campaigns of one seed share their initial labels: the pairs are the seeds)."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    if num.size == 0 or num.shape != den.shape:
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, num.size, size=(n, num.size))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = num[idx].mean(1) / den[idx].mean(1)
    ratios = ratios[np.isfinite(ratios)]
    if not ratios.size:
        return float("nan"), float("nan")
    return float(np.quantile(ratios, 0.025)), float(np.quantile(ratios, 0.975))


def _per_seed(table, strategy: str, at_round: int, column: str) -> pd.Series:
    t = table[(table["strategy"] == strategy) & (table["round"] == at_round)]
    return pd.to_numeric(t.set_index("seed")[column], errors="coerce").sort_index()


def target_checks(table, curves, at_round: int, n_rounds: int) -> list[dict]:
    """The issue's three targets, measured at ``at_round`` over the seeds of ``table`` (rows:
    target, strategy, measured, interval, verdict). A verdict is "interim" before ``n_rounds``.

    - discovery: a BaLoRA strategy's sub-0.5 eV finds per DFT ≥ 1.1× greedy's (same seeds: the
      ratio of the means with a paired bootstrap interval), and a recall of the 100 smallest gaps at
      least greedy's;
    - learning: an uncertainty strategy (neither random nor greedy) reaches random's final test MAE
      with ≤ 75 % of random's labels (initial labels included);
    - cost: a BaLoRA strategy at or above the LoRA ensemble on both (sub-0.5 eV finds and test MAE)
      with ≤ 1/5 of its training seconds (every round's training, round 0 included)."""
    strategies = sorted(table["strategy"].unique())
    balora = [s for s in strategies if s.startswith(BALORA_PREFIX)]
    interim = at_round < n_rounds
    rows: list[dict] = []

    def verdict(ok: bool) -> str:
        return (
            f"interim (round {at_round} of {n_rounds})" if interim else ("met" if ok else "not met")
        )

    if GREEDY in strategies:
        g_strict = _per_seed(table, GREEDY, at_round, "n_found_strict")
        g_recall = _per_seed(table, GREEDY, at_round, "recall_smallest")
        for s in balora:
            strict = _per_seed(table, s, at_round, "n_found_strict").reindex(g_strict.index)
            recall = _per_seed(table, s, at_round, "recall_smallest").reindex(g_recall.index)
            ratio = strict.mean() / g_strict.mean() if g_strict.mean() > 0 else float("nan")
            lo, hi = paired_ratio_interval(strict.to_numpy(), g_strict.to_numpy())
            ok = bool(ratio >= DISCOVERY_GAIN and recall.mean() >= g_recall.mean())
            rows.append(
                {
                    "target": f"discovery: ≥ {DISCOVERY_GAIN:g}× greedy's sub-{STRICT_GAP_EV:g} eV "
                    "finds per DFT, recall ≥ greedy's",
                    "strategy": s,
                    "measured": f"{ratio:.2f}× greedy; recall {recall.mean():.2f} vs "
                    f"{g_recall.mean():.2f}",
                    "interval": f"[{lo:.2f}, {hi:.2f}]",
                    "verdict": verdict(ok),
                }
            )
    reach = labels_to_reach(curves, at_round=at_round)
    if RANDOM in strategies and reach:
        rand = curves[(curves["strategy"] == RANDOM) & (curves["round"] == at_round)]
        random_labels = float(rand["n_labelled"].iloc[0]) if len(rand) else float("nan")
        for s in strategies:
            if s in (RANDOM, GREEDY):
                continue
            need = reach.get(s)
            frac = need / random_labels if need is not None else float("nan")
            rows.append(
                {
                    "target": f"learning: random's final test MAE with ≤ {LABEL_FRACTION:.0%} of "
                    "its labels",
                    "strategy": s,
                    "measured": (
                        f"{need:.0f} of {random_labels:.0f} labels ({frac:.0%})"
                        if need is not None
                        else f"not reached in {random_labels:.0f} labels"
                    ),
                    "interval": "",
                    "verdict": verdict(bool(frac <= LABEL_FRACTION)),
                }
            )
    if ENSEMBLE in strategies:
        done = table[table["round"] <= at_round]
        cost = (
            pd.to_numeric(done["train_seconds"], errors="coerce")
            .groupby([done["strategy"], done["seed"]])
            .sum(min_count=1)
        )
        e_strict = _per_seed(table, ENSEMBLE, at_round, "n_found_strict")
        e_mae = _per_seed(table, ENSEMBLE, at_round, "test_mae_ev")
        e_cost = cost.get(ENSEMBLE, pd.Series(dtype=float)).reindex(e_strict.index)
        for s in balora:
            strict = _per_seed(table, s, at_round, "n_found_strict").reindex(e_strict.index)
            mae = _per_seed(table, s, at_round, "test_mae_ev").reindex(e_mae.index)
            s_cost = cost.get(s, pd.Series(dtype=float)).reindex(e_strict.index)
            frac = s_cost.mean() / e_cost.mean() if e_cost.mean() > 0 else float("nan")
            lo, hi = paired_ratio_interval(strict.to_numpy(), e_strict.to_numpy())
            ok = bool(
                strict.mean() >= e_strict.mean()
                and mae.mean() <= e_mae.mean()
                and frac <= COST_FRACTION
            )
            rows.append(
                {
                    "target": f"vs the LoRA ensemble: at or above it at ≤ {COST_FRACTION:g} of its "
                    "training cost",
                    "strategy": s,
                    "measured": f"sub-{STRICT_GAP_EV:g} eV finds "
                    f"{strict.mean() / e_strict.mean():.2f}× "
                    f"the ensemble's; test MAE {mae.mean():.3f} vs {e_mae.mean():.3f} eV; training "
                    f"{frac:.2f}× its seconds",
                    "interval": f"finds ratio [{lo:.2f}, {hi:.2f}]",
                    "verdict": verdict(ok),
                }
            )
    return rows


def _curve_plot(
    curves,
    x: str,
    y: str,
    path: Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    base_rate: float | None = None,
) -> Path:
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
    return _curve_plot(
        curves,
        "n_labelled",
        "test_mae_ev",
        Path(path),
        xlabel="labelled structures",
        ylabel="test MAE (eV)",
        title="Learning curves",
    )


def plot_discovery_curves(
    curves, path: str | Path, *, low_gap_ev: float = 1.0, base_rate: float | None = None
) -> Path:
    """Low-gap structures found against DFT calculations spent; mean ± sd band over seeds."""
    return _curve_plot(
        curves,
        "n_acquired",
        "n_low_gap_found",
        Path(path),
        xlabel="DFT calculations",
        ylabel=f"found with PBE gap < {low_gap_ev:g} eV",
        title="Discovery curves",
        base_rate=base_rate,
    )


def discovery_statement(summary, low_gap_ev: float = 1.0) -> str:
    """A plain sentence: which strategy finds the most low-gap MOFs per DFT calculation."""
    s = summary.reset_index(drop=True)
    best = s.iloc[0]
    text = (
        f"**{best['strategy']}** finds the most MOFs with a PBE band gap below {low_gap_ev:g} eV "
        f"per DFT calculation: {best['found_per_calculation']:.3f} ± "
        f"{best['found_per_calculation_sd']:.3f} per calculation ({best['n_low_gap_found']:.1f} ± "
        f"{best['n_low_gap_found_sd']:.1f} in {best['n_acquired']:.0f} calculations; mean ± "
        f"standard deviation over {best['n_seeds']} seed(s))."
    )
    if len(s) > 1:
        second = s.iloc[1]
        gap = best["found_per_calculation"] - second["found_per_calculation"]
        spread = max(best["found_per_calculation_sd"], second["found_per_calculation_sd"])
        if gap <= spread:
            text += (
                f" The runner-up, {second['strategy']} ({second['found_per_calculation']:.3f} ± "
                f"{second['found_per_calculation_sd']:.3f}), is within the spread over seeds, so "
                f"these runs do not separate the two."
            )
        else:
            text += (
                f" The runner-up is {second['strategy']} "
                f"({second['found_per_calculation']:.3f} per calculation)."
            )
    rand = s[s["strategy"] == "random"]
    if len(rand) and best["strategy"] != "random" and rand.iloc[0]["found_per_calculation"] > 0:
        r = rand.iloc[0]["found_per_calculation"]
        text += (
            f" Random picking finds {r:.3f} per calculation, so {best['strategy']} is "
            f"{best['found_per_calculation'] / r:.1f}× random."
        )
    base = best.get("low_gap_base_rate")
    if base is not None and isinstance(base, float) and math.isfinite(base):
        text += f" (Fraction of the initial pool below {low_gap_ev:g} eV: {base:.3f}.)"
    return text


def _num(x, digits: int = 3) -> str:
    return "n/a" if x is None or not np.isfinite(float(x)) else f"{float(x):.{digits}f}"


def _cell(row, key: str, digits: int = 3, *, ci: bool = True) -> str:
    """``mean ± sd [lo, hi]`` of a summary column (n/a when missing)."""
    text = f"{_num(row.get(key), digits)} ± {_num(row.get(f'{key}_sd'), digits)}"
    lo_hi = row.get(f"{key}_ci")
    if ci and isinstance(lo_hi, tuple) and all(np.isfinite(lo_hi)):
        text += f" [{lo_hi[0]:.{digits}f}, {lo_hi[1]:.{digits}f}]"
    return text


def write_report(runs_dir: str | Path, out: str | Path) -> Path:
    """Learning and discovery curves (PNG), tables (CSV) and ``report.md`` for the campaigns below
    ``runs_dir``; returns the markdown path. One writer at a time per ``runs_dir``
    (:func:`report_lock`)."""
    runs_dir = Path(runs_dir)
    with report_lock(runs_dir):
        return _write_report(runs_dir, Path(out))


def _write_report(runs_dir: Path, out: Path) -> Path:
    every = collect_runs(runs_dir)
    at_round, seeds = comparison_point(every)
    left_out = sorted(set(every["seed"]) - set(seeds))
    table = every[every["seed"].isin(seeds)]
    out.mkdir(parents=True, exist_ok=True)
    first = read_yaml(Path(table["run"].iloc[0]) / CONFIG_FILE, what="campaign configuration")
    al = first["al"]
    curves = summarize_curves(table)
    summary = final_summary(table, at_round)
    labels = int(table.loc[table["round"] == at_round, "n_labelled"].iloc[0])
    interim = at_round < int(al["n_rounds"])
    base = summary["low_gap_base_rate"].dropna()
    base_rate = float(base.iloc[0]) if len(base) else None
    targets = pd.DataFrame(target_checks(table, curves, at_round, int(al["n_rounds"])))
    for name, frame in (
        ("runs.csv", every),
        ("curves.csv", curves),
        ("summary.csv", summary),
        ("targets.csv", targets),
    ):
        write_table(frame, out / name)
    plot_learning_curves(curves, out / "learning_curves.png")
    plot_discovery_curves(
        curves, out / "discovery_curves.png", low_gap_ev=al["low_gap_ev"], base_rate=base_rate
    )
    lines = [
        "# Active learning on QMOF band gaps",
        "",
        f"Campaigns in `{runs_dir}`: {table['strategy'].nunique()} strategies, "
        f"{len(seeds)} seed(s) each ({', '.join(str(x) for x in seeds)}). Start from "
        f"{al['initial_labelled']} labelled structures, batches of {al['batch_size']}, up to "
        f"{al['n_rounds']} rounds; split `{first['data']['split']}` (the pool is its train part; "
        f"the test part is never in the pool). Campaigns with the same seed start from the same "
        "labelled set. Bands and ± are the sample standard deviation over seeds; a relative DFT "
        "cost of 1 is one structure of the initial set's median size.",
        "",
        f"Every table compares the strategies at round {at_round} ({labels} labels), the furthest "
        "round every strategy reached in these seeds"
        + (
            f"; seed(s) {', '.join(str(x) for x in left_out)} have not reached it in every "
            "strategy yet and are left out"
            if left_out
            else ""
        )
        + ".",
        "",
    ]
    if interim:
        lines += [
            f"> **Interim**: the campaigns run {al['n_rounds']} rounds; this report stops at round "
            f"{at_round}. Rerun the benchmark command (it resumes) and this report is rewritten.",
            "",
        ]
    lines += [
        discovery_statement(summary, al["low_gap_ev"]),
        "",
        "| strategy | seeds | DFT calculations | found (< {:g} eV) | found per calculation | found "
        "per relative DFT cost | final test MAE (eV) |".format(al["low_gap_ev"]),
        "|---|---|---|---|---|---|---|",
    ]
    for _, r in summary.iterrows():
        lines.append(
            f"| {r['strategy']} | {r['n_seeds']} | {r['n_acquired']:.0f} | "
            f"{r['n_low_gap_found']:.1f} ± {r['n_low_gap_found_sd']:.1f} | "
            f"{r['found_per_calculation']:.3f} ± {r['found_per_calculation_sd']:.3f} | "
            f"{r['found_per_relative_cost']:.3f} | {r['test_mae_ev']:.3f} ± "
            f"{r['test_mae_ev_sd']:.3f} |"
        )
    reach = labels_to_reach(curves, at_round=at_round)
    lines += [
        "",
        f"Per strategy at round {at_round} (mean ± sd over seeds; [95 % bootstrap interval of "
        "the mean over seeds]): found per DFT calculation below "
        f"{al['low_gap_ev']:g} eV and below {STRICT_GAP_EV:g} "
        "eV, recall of the pool's 100 smallest gaps, test MAE and test Spearman (total std against "
        "the absolute error), the labels at which the strategy's mean test MAE first reaches "
        "random's final one, and the mean seconds of a "
        "round after round 0 (select + train + evaluate).",
        "",
        f"| strategy | found/calc < {al['low_gap_ev']:g} eV | found/calc < {STRICT_GAP_EV:g} eV | "
        "recall of the 100 smallest | test MAE (eV) | test "
        "Spearman | labels to random's final MAE | s / round |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for _, r in summary.iterrows():
        need = reach.get(r["strategy"])
        lines.append(
            f"| {r['strategy']} | {_cell(r, 'found_per_calculation')} | "
            f"{_cell(r, 'strict_per_calculation')} | {_cell(r, 'recall_smallest', 2)} | "
            f"{_cell(r, 'test_mae_ev')} | {_cell(r, 'test_spearman', 3, ci=False)} | "
            f"{'not reached' if need is None else f'{need:.0f}'} | "
            f"{_num(r['seconds_per_round'], 0)} |"
        )
    if len(targets):
        lines += [
            "",
            "The issue's targets at this round (intervals: 95 % bootstrap over seeds, paired by "
            "seed; a training cost is the sum of every round's training seconds):",
            "",
            "| target | strategy | measured | interval | verdict |",
            "|---|---|---|---|---|",
            *(
                f"| {r['target']} | {r['strategy']} | {r['measured']} | {r['interval']} | "
                f"{r['verdict']} |"
                for _, r in targets.iterrows()
            ),
        ]
    lines += [
        "",
        "![learning curves](learning_curves.png)",
        "",
        "![discovery curves](discovery_curves.png)",
        "",
    ]
    md = out / "report.md"
    atomic_write_bytes(md, "\n".join(lines).encode())
    return md
