"""Would another acquisition have beaten greedy at discovery? One batch, re-ranked, per saved round.

The full-scale benchmark (reports/active_learning/) found BaLoRA's LCB on the draws' spread equal to
greedy and its LCB on the total sigma (kappa = 2) behind it. This study asks, cheaply, whether any
other use of the same predictive distribution picks more sub-0.5 eV MOFs per DFT calculation: it
takes the round-k model of a finished campaign (only read; the study works on a rewound copy),
predicts the pool that campaign had at round k (T = 32 draws, the campaign's own scoring), and ranks
that pool under each variant below with the screen's rule (in-domain rows first; error rows never).
Each variant's batch of 100 is scored against QMOF's PBE gaps:

- ``greedy``: smallest robust median first (the campaign's ``mean`` acquisition);
- ``lcb_k``: median - k * spread (spread = the capped 16-84 % half-width of the draws, total);
- ``cautious_k``: median + k * spread, i.e. the smallest *upper* bound first (not in the library:
  kappa >= 0 there);
- ``p_below_X``: P(gap < X eV) under N(median, spread^2) (the library's window_probability);
- ``lcb_epistemic_k``: median - k * epistemic spread (k = 2 as the benchmark; large k to see whether
  the tiny epistemic part carries any signal at all);
- ``thompson``: one of the T draws per structure.

It measures one batch, not a campaign: a variant's later batches would come from a model trained on
its own picks. Run from the repository root on a machine where the benchmark's campaigns are:

    MOFBALORA_QMOF=... python benchmarks/study_acquisition_onestep.py --runs runs/al_qmof \\
        --strategy greedy_mean --seed 0 --seed 1 --seed 2 --round 0 --round 5 --round 9
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import campaign_at_round

from mofbalora.acquisition.functions import window_probability

BATCH = 100
METRICS = ("below_0.5", "below_1.0", "smallest_100")


def _case(src: Path, k: int, work: Path) -> Path:
    """A copy of campaign ``src`` rewound to the selection of round k + 1 (round k's model; the
    pool it had then)."""
    st = campaign_at_round(src, k, work)
    later = [i for h in st["history"][k + 1 :] for i in h["picked"]]
    bought_later = set(later)
    st.update(
        pool=list(st["pool"]) + later,
        labelled={i: g for i, g in st["labelled"].items() if i not in bought_later},
        acquired=[i for i in st["acquired"] if i not in bought_later],
        history=st["history"][: k + 1],
        round=k,
        phase="select",
    )
    (work / "campaign.json").write_text(json.dumps(st))
    return work


def variant_scores(table, samples: list[np.ndarray], rng: np.random.Generator) -> dict:
    """Score per variant (higher = sent to DFT first) from the ranked table's columns."""
    m = table["bandgap_median_ev"].to_numpy(float)
    s = table["bandgap_spread_ev"].to_numpy(float)
    e = table["epistemic_std_ev"].to_numpy(float)
    out = {"greedy": -m}
    for k in (0.25, 0.5, 1.0, 2.0):
        out[f"lcb_{k:g}"] = k * s - m
    for k in (0.25, 0.5, 1.0):
        out[f"cautious_{k:g}"] = -m - k * s
    for x in (0.5, 1.0):
        out[f"p_below_{x:g}"] = window_probability(m, s, -np.inf, x)
    for k in (2.0, 100.0, 1000.0):
        out[f"lcb_epistemic_{k:g}"] = k * e - m
    out["thompson"] = -np.array([d[rng.integers(len(d))] if len(d) else np.nan for d in samples])
    return out


def top(score: np.ndarray, ok: np.ndarray, in_domain: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` best rows: eligible rows only, in-domain rows before the others."""
    order = np.lexsort((-score, ~in_domain))  # last key first: in-domain, then score
    return order[ok[order]][:n]


def summarize(cases: list[dict]) -> str:
    """Markdown: per metric, each variant's finds summed over the cases, and as a ratio to greedy's
    (overall and per round)."""
    names = [k for k in cases[0] if isinstance(cases[0][k], dict)]
    rounds = sorted({c["round"] for c in cases})
    lines = [
        f"{len(cases)} cases (seeds {sorted({c['seed'] for c in cases})}, rounds {rounds}), "
        f"batches of {BATCH}; sums over the cases, and the ratio to greedy's sum.",
        "",
        "| variant | "
        + " | ".join(f"{m}: sum (ratio)" for m in METRICS)
        + " | "
        + " | ".join(f"below_0.5 ratio, round {r}" for r in rounds)
        + " |",
        "|---|" + "---|" * (len(METRICS) + len(rounds)),
    ]
    for name in names:
        cells = []
        for m in METRICS:
            total = sum(c[name][m] for c in cases)
            base = sum(c["greedy"][m] for c in cases)
            cells.append(f"{total} ({total / base:.2f})" if base else f"{total}")
        for r in rounds:
            sub = [c for c in cases if c["round"] == r]
            base = sum(c["greedy"]["below_0.5"] for c in sub)
            cells.append(f"{sum(c[name]['below_0.5'] for c in sub) / base:.2f}" if base else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs/al_qmof", help="the benchmark's campaigns")
    ap.add_argument("--strategy", default="greedy_mean")
    ap.add_argument("--seed", type=int, action="append", default=None)
    ap.add_argument("--round", type=int, action="append", default=None, help="k: model of round k")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="acquisition_onestep.jsonl", help="one JSON line per case")
    ap.add_argument(
        "--summarize", action="store_true", help="only print the tables of the cases in --out"
    )
    args = ap.parse_args()
    if args.summarize:
        print(summarize([json.loads(line) for line in Path(args.out).read_text().splitlines()]))
        return

    import torch

    from mofbalora.al.campaign import Campaign
    from mofbalora.scoring import rank

    torch.set_num_threads(args.threads)
    inputs: dict = {}  # backbone inputs, read from the cache once for every case
    with tempfile.TemporaryDirectory() as tmp, open(args.out, "a") as out:
        for seed in args.seed or [0]:
            for k in args.round or [0]:
                src = Path(args.runs) / args.strategy / f"seed_{seed}"
                c = Campaign(_case(src, k, Path(tmp) / "case"), inputs=inputs)
                t0 = time.perf_counter()
                keys = list(c.pool)
                cfg = c.cfg.al.scoring(c._seed("select"))
                records = c._score_pool(keys, cfg)
                table = rank(records, cfg, best_ev=c._best_ev())
                ok = table["rank"].notna().to_numpy()
                in_domain = table["in_domain"].fillna(True).to_numpy(bool)
                ds = c.dataset()
                truth = np.array([ds.bandgaps_ev[ds.index_of(key)] for key in keys])
                smallest = set(np.argsort(truth)[:BATCH].tolist())
                samples = [np.asarray(r.get("samples_ev") or [], dtype=float) for r in records]
                rng = np.random.default_rng([seed, k])
                rec = {
                    "strategy": args.strategy,
                    "seed": seed,
                    "round": k,
                    "n_labelled": len(c.labelled),
                    "pool": len(keys),
                    "seconds": time.perf_counter() - t0,
                    "median_spread_ev": float(np.median(table["bandgap_spread_ev"][ok])),
                    "median_epistemic_ev": float(np.median(table["epistemic_std_ev"][ok])),
                }
                for name, score in variant_scores(table, samples, rng).items():
                    picks = top(score, ok, in_domain, BATCH)
                    rec[name] = {
                        "below_0.5": int((truth[picks] < 0.5).sum()),
                        "below_1.0": int((truth[picks] < 1.0).sum()),
                        "smallest_100": len(smallest.intersection(picks.tolist())),
                    }
                print(json.dumps(rec), flush=True)
                out.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
