"""Accuracy study on the documented QMOF split: the shipped recipe against the all-layer head and the
in-project baselines, same split, same training structures, same validation structures for early
stopping and calibration, T = 32 on the 1,826 test structures.

    python reports/accuracy/run.py --train-size 6000 [--runs runs/accuracy] [--threads 2]   # resumable

Variants (workflow files in workflows/):
- ``balora_readout``: the shipped recipe (workflows/finetune_chgnet.yaml);
- ``balora_all_layers`` / ``lora_all_layers``: BaLoRA / LoRA on the readout, head reading every
  layer, L1 loss (workflows/finetune_chgnet_all_layers.yaml);
- ``head_only_all_layers``: the same head on frozen features, no adapters (deterministic);
- ``gbm``: gradient boosting on pooled mean/max/std of six layers, quantile (16/84 %) half-width as
  std;
- ``balora_nll_all_layers`` / ``balora_laplace_all_layers``: the all-layer recipe with a Gaussian /
  Laplace NLL and an aleatoric head (the Laplace one is the shipped default's recipe,
  workflows/finetune_chgnet_laplace.yaml); ``lora_*`` the same with plain LoRA.
Writes results-<train size>.csv and table-<train size>.md beside this file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VARIANTS = {
    "balora_readout": ("finetune_chgnet.yaml", []),
    "balora_all_layers": ("finetune_chgnet_all_layers.yaml", []),
    "lora_all_layers": ("finetune_chgnet_all_layers.yaml", ["model.regime=lora"]),
    "head_only_all_layers": ("finetune_chgnet_all_layers.yaml", ["model.regime=head_only"]),
    "gbm": ("finetune_chgnet_all_layers.yaml", ["model.regime=gbm"]),
    "balora_nll_all_layers": ("finetune_chgnet_all_layers.yaml", ["model.likelihood=gaussian_nll"]),
    "lora_nll_all_layers": (
        "finetune_chgnet_all_layers.yaml",
        ["model.likelihood=gaussian_nll", "model.regime=lora"],
    ),
    "balora_laplace_all_layers": ("finetune_chgnet_laplace.yaml", []),
    "lora_laplace_all_layers": ("finetune_chgnet_laplace.yaml", ["model.regime=lora"]),
    # how much of the ranking BaLoRA's own spread carries (issue 17): one weight draw per structure
    # instead of per atom row (row noise averages out over a structure's atoms), and a wider prior
    # (α0 = p0 / (1 − p0))
    "balora_laplace_structure": ("finetune_chgnet_laplace.yaml", ["adapter.noise_scope=structure"]),
    "balora_laplace_structure_p03": (
        "finetune_chgnet_laplace.yaml",
        ["adapter.noise_scope=structure", "adapter.prior_dropout=0.3"],
    ),
    "balora_laplace_structure_p05": (
        "finetune_chgnet_laplace.yaml",
        ["adapter.noise_scope=structure", "adapter.prior_dropout=0.5"],
    ),
    # β-NLL (fifth session): the shipped recipe with each structure's NLL weighted by its own
    # scale^β
    "balora_structure_p03_beta05": ("finetune_chgnet_structure.yaml", ["model.nll_beta=0.5"]),
}
REFERENCES = [
    ("predicting the mean", 0.94),
    ("random forest, matminer", 0.362),
    ("SOAP kernel", 0.344),
    ("gradient-boosted matminer (JARVIS)", 0.342),
    ("CGCNN", 0.27),
    ("MOFTransformer (pretrained)", 0.27),
    ("ALIGNN", 0.20),
    ("JMP-S", 0.18),
    ("JMP-L", 0.16),
]


def main() -> None:
    from mofbalora.config import load_config
    from mofbalora.train import finetune

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-size", type=int, default=6000)
    ap.add_argument("--runs", default="runs/accuracy")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument(
        "--seeds-table",
        action="store_true",
        help="only write seeds-<train size>.md: mean ± sd over the seeds in results-<n>-s*.csv",
    )
    ap.add_argument(
        "--ensemble",
        metavar="VARIANT",
        default=None,
        help="only score the deep ensemble of VARIANT's runs over the seeds in --members (mean of "
        "the members' test predictions; σ = their spread, ddof = 1) into ensembles-<n>.csv",
    )
    ap.add_argument("--members", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument(
        "--learning-curve",
        action="store_true",
        help="only write learning_curve.md / .png from every results-<n>-s0.csv (test MAE and "
        "Spearman against the number of training structures, per variant in --variants)",
    )
    ap.add_argument(
        "--cross-ranking",
        action="store_true",
        help="only write cross-ranking-<n>.md: Spearman ρ of each variant's σ (seed --seed) with "
        "each variant's absolute errors on the same test structures, with bootstrap intervals",
    )
    args = ap.parse_args()
    if args.cross_ranking:
        cross_ranking(args.variants, args.train_size, args.seed, Path(args.runs))
        return
    if args.learning_curve:
        learning_curve(args.variants)
        return
    if args.ensemble:
        score_ensemble(args.ensemble, args.train_size, args.members, Path(args.runs))
        return
    if args.seeds_table:
        seeds_table(args.train_size)
        return
    csv_path = HERE / f"results-{args.train_size}-s{args.seed}.csv"
    # rows of variants not rerun now are kept, so the table grows one variant at a time
    kept = pd.read_csv(csv_path) if csv_path.is_file() else pd.DataFrame(columns=["variant"])
    rows = [r for r in kept.to_dict("records") if r["variant"] not in args.variants]
    for name in args.variants:
        workflow, overrides = VARIANTS[name]
        out = Path(args.runs) / f"{name}-n{args.train_size}-s{args.seed}"
        cfg = load_config(
            ROOT / "workflows" / workflow,
            [
                *overrides,
                f"data.train_size={args.train_size}",
                f"run.threads={args.threads}",
                f"run.seed={args.seed}",
            ],
        )
        if not (out / "metrics.json").is_file():
            finetune(cfg, out, resume=True, progress=False)
        m = json.loads((out / "metrics.json").read_text())
        t = m["test"]
        rows.append(
            {
                "variant": name,
                "n_train": m["n_train"],
                "seed": args.seed,
                "mae_ev": t["mae_ev"],
                "rmse_ev": t["rmse_ev"],
                "spearman": t.get("spearman_std_abs_error"),
                # without an aleatoric head a stochastic model's σ is all epistemic; gbm's is a
                # quantile width
                "spearman_epistemic": t.get(
                    "spearman_epistemic_std_abs_error",
                    None if m["regime"] == "gbm" else t.get("spearman_std_abs_error"),
                ),
                "val_mae_ev": m["val"]["mae_ev"],
                "val_spearman": m["val"].get("spearman_std_abs_error"),
                "val_spearman_epistemic": m["val"].get("spearman_epistemic_std_abs_error"),
                "coverage95_cal": (t.get("calibrated") or {}).get("coverage_95"),
                "train_seconds": m["train_seconds"],
                "trainable_parameters": m.get("trainable_parameters"),
            }
        )
        print(rows[-1], flush=True)
        pd.DataFrame(rows).to_csv(csv_path, index=False)
    df = pd.DataFrame(rows)
    lines = [
        "| model | training structures | test MAE (eV) | RMSE (eV) | Spearman ρ(σ, abs. error) | "
        "ρ, epistemic σ only | 95 % coverage (calibrated) | val MAE | val ρ | train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt(value: object, spec: str) -> str:
        return "–" if value is None or pd.isna(value) else format(value, spec)

    for r in df.to_dict("records"):
        lines.append(
            f"| {r['variant']} | {int(r['n_train']):,} | {r['mae_ev']:.3f} | {r['rmse_ev']:.3f} | "
            f"{fmt(r['spearman'], '.3f')} | {fmt(r.get('spearman_epistemic'), '.3f')} | "
            f"{fmt(r['coverage95_cal'], '.2f')} | {fmt(r.get('val_mae_ev'), '.3f')} | "
            f"{fmt(r.get('val_spearman'), '.3f')} | {r['train_seconds']:.0f} |"
        )
    lines += [
        "",
        "References (published, random 80/10/10 QMOF splits, MAE eV): "
        + "; ".join(f"{n} {v}" for n, v in REFERENCES)
        + ".",
    ]
    (HERE / f"table-{args.train_size}-s{args.seed}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def score_ensemble(variant: str, train_size: int, members: list[int], runs: Path) -> dict:
    """A deep ensemble built from independently trained runs (different seeds, same data): its test
    MAE and the Spearman correlation of the members' spread with its absolute error (the
    LoRA-ensemble and deep-ensemble-of-heads baselines of issue 17)."""
    import numpy as np
    from scipy.stats import spearmanr

    tables = [
        pd.read_csv(runs / f"{variant}-n{train_size}-s{seed}" / "test_predictions.csv").set_index(
            "id"
        )
        for seed in members
    ]
    ids = tables[0].index
    preds = np.stack([t.loc[ids, "bandgap_mean_ev"].to_numpy() for t in tables], 1)
    y = tables[0].loc[ids, "bandgap_true_ev"].to_numpy()
    mean, spread = preds.mean(1), preds.std(1, ddof=1)
    err = np.abs(mean - y)
    row = {
        "ensemble": f"{variant} x{len(members)}",
        "members": " ".join(map(str, members)),
        "n_train": train_size,
        "mae_ev": float(err.mean()),
        "rmse_ev": float(np.sqrt(((mean - y) ** 2).mean())),
        "spearman": float(spearmanr(spread, err)[0]),
        "member_mae_ev": float(np.abs(preds - y[:, None]).mean(0).mean()),
    }
    path = HERE / f"ensembles-{train_size}.csv"
    old = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=list(row))
    old = old[old["ensemble"] != row["ensemble"]]
    pd.concat([old, pd.DataFrame([row])], ignore_index=True).to_csv(path, index=False)
    print(row)
    return row


def cross_ranking(
    variants: list[str], train_size: int, seed: int, runs: Path, n_boot: int = 1000
) -> pd.DataFrame:
    """ρ(σ of A, |error| of B) on the test structures every run predicted: the diagonal is each
    model's own figure (the issue's target compares those), the off-diagonal says whether a σ ranks
    hard structures in general or only its own model's errors. The diagonal gets a 95 % bootstrap
    interval (structures resampled)."""
    import numpy as np
    from scipy.stats import rankdata

    tables = {}
    for v in variants:
        path = runs / f"{v}-n{train_size}-s{seed}" / "test_predictions.csv"
        if path.is_file():
            tables[v] = pd.read_csv(path).set_index("id")
    ids = sorted(set.intersection(*(set(t.index) for t in tables.values())))
    std = {v: t.loc[ids, "bandgap_std_ev"].to_numpy() for v, t in tables.items()}
    err = {v: t.loc[ids, "abs_error_ev"].to_numpy() for v, t in tables.items()}
    if any(np.allclose(s, s[0]) for s in std.values()):
        raise ValueError(
            f"a variant without a σ: {[v for v, s in std.items() if np.allclose(s, s[0])]}"
        )

    def rho(a, b):
        return float(np.corrcoef(rankdata(a), rankdata(b))[0, 1])

    rng = np.random.default_rng(0)
    boots = [rng.integers(0, len(ids), len(ids)) for _ in range(n_boot)]
    names = list(tables)
    lines = ["| σ of ↓ / errors of → | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    rows = []
    for a in names:
        cells = []
        for b in names:
            r = rho(std[a], err[b])
            cell = f"{r:.3f}"
            if a == b:
                lo, hi = np.percentile([rho(std[a][i], err[b][i]) for i in boots], [2.5, 97.5])
                cell = f"**{r:.3f}** [{lo:.3f}, {hi:.3f}]"
            cells.append(cell)
            rows.append({"sigma_of": a, "errors_of": b, "spearman": r})
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Spearman ρ(σ, |error|) on the {len(ids):,} test structures, {train_size:,} training "
        f"structures, seed {seed}; bold: a model's σ against its "
        f"own errors, with a 95 % bootstrap interval ({n_boot} "
        "resamples of the structures). Regenerate: `python reports/accuracy/run.py --cross-ranking "
        f"--train-size {train_size} --seed {seed} --variants {' '.join(names)}`.",
    ]
    (HERE / f"cross-ranking-{train_size}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return pd.DataFrame(rows)


def seeds_table(train_size: int) -> None:
    """Mean ± sd (over seeds) of every variant's test figures, from the per-seed result files."""
    frames = [pd.read_csv(p) for p in sorted(HERE.glob(f"results-{train_size}-s*.csv"))]
    df = pd.concat(frames, ignore_index=True)
    cols = [
        ("mae_ev", "test MAE (eV)"),
        ("rmse_ev", "RMSE (eV)"),
        ("spearman", "Spearman ρ(σ, abs. error)"),
        ("spearman_epistemic", "ρ, epistemic σ only"),
    ]
    lines = [
        "| model | seeds | " + " | ".join(c[1] for c in cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for variant, g in df.groupby("variant", sort=False):
        cells = []
        for col, _ in cols:
            v = g[col].dropna() if col in g else pd.Series(dtype=float)
            cells.append(
                "–"
                if v.empty
                else f"{v.mean():.3f}" + (f" ± {v.std(ddof=1):.3f}" if len(v) > 1 else "")
            )
        lines.append(
            f"| {variant} | {', '.join(str(int(x)) for x in sorted(g['seed']))} | "
            + " | ".join(cells)
            + " |"
        )
    lines += [
        "",
        f"{train_size:,} training structures; test split (1,826); mean ± sd over the seeds listed "
        "(sd with ddof = 1). Regenerate: `python reports/accuracy/run.py --train-size "
        f"{train_size} --seeds-table`.",
    ]
    (HERE / f"seeds-{train_size}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def learning_curve(variants: list[str]) -> None:
    """Test MAE and Spearman ρ(σ, |error|) against the training-set size, seed 0, from
    results-<n>-s0.csv."""
    from mofbalora.uq.plots import new_figure, save_figure

    frames = [pd.read_csv(p) for p in HERE.glob("results-*-s0.csv")]
    df = pd.concat(frames, ignore_index=True)
    df = df[df["variant"].isin(variants)].sort_values(["variant", "n_train"])
    sizes = sorted(df["n_train"].astype(int).unique())
    lines = [
        "| model | " + " | ".join(f"{n:,}" for n in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for metric, label in (("mae_ev", "test MAE (eV)"), ("spearman", "Spearman ρ(σ, abs. error)")):
        lines.append(f"| *{label}* |" + " |" * len(sizes))
        for variant in variants:
            g = df[df["variant"] == variant].set_index("n_train")
            cells = [
                "–" if n not in g.index or pd.isna(g.loc[n, metric]) else f"{g.loc[n, metric]:.3f}"
                for n in sizes
            ]
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Training structures: the first N of the documented split's training part (seed 0); test "
        "split (1,826), T = 32. Regenerate the runs with `python reports/accuracy/run.py "
        f"--train-size N --variants {' '.join(variants)}` for each N, then this table "
        "and `learning_curve.png` with `--learning-curve`.",
    ]
    (HERE / "learning_curve.md").write_text("\n".join(lines) + "\n")
    fig = new_figure((10.0, 4.0))
    axes = fig.subplots(1, 2)
    for variant in variants:
        g = df[df["variant"] == variant]
        axes[0].plot(g["n_train"], g["mae_ev"], "o-", label=variant)
        if g["spearman"].notna().any():
            axes[1].plot(g["n_train"], g["spearman"], "o-", label=variant)
    # CGCNN and MOFTransformer share 0.27: one line, one label
    same_mae: dict[float, list[str]] = {}
    for name, mae in REFERENCES[3:6]:
        same_mae.setdefault(mae, []).append(name)
    for mae, names in same_mae.items():
        axes[0].axhline(mae, color="grey", lw=0.6, ls=":")
        axes[0].annotate(", ".join(names), (sizes[0], mae), fontsize=7, color="grey", va="bottom")
    for ax, ylabel in zip(axes, ("test MAE (eV)", "Spearman ρ(σ, |error|)"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("training structures")
        ax.set_ylabel(ylabel)
    axes[0].legend(fontsize=7)
    save_figure(fig, HERE / "learning_curve.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
