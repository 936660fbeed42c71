"""Does refitting the error scale on held-out structures rank test errors better? (issue 17, a route
tried)

The Laplace head's scale b(x) is fitted to *training* residuals, which are smaller than held-out
ones and can sit elsewhere. Here a scale log b = w·f(x) + c is refitted by the Laplace NLL (mean of
log b + |r| / b, L2 on w) on all 1,826 validation structures' residuals of a trained run, and scored
on the test part by Spearman ρ(b, |error|). Inputs f: (a) the pooled structure embedding (384
numbers) with log σ_alea, log σ_epi and the predicted gap; (b) only log σ_alea and log σ_epi (a
geometric mix of the two parts, in place of the quadrature sum); (c) (b) with the log of the
applicability-domain distance (mean distance to the 5 nearest training embeddings,
:mod:`mofbalora.domain`). Five-fold cross-validation on the validation part picks the L2 weight of
(a).

    python reports/accuracy/heldout_scale.py [RUN]   (default: the shipped default's run)  -> heldout-scale.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_RUN = "runs/accuracy/balora_laplace_structure_p03-n14609-s0"


def fit_log_scale(x: np.ndarray, r: np.ndarray, l2: float) -> np.ndarray:
    """Weights (last: intercept) of log b = x·w + c minimising mean(log b + r / b) + l2 |w|²."""
    from scipy.optimize import minimize

    xb = np.c_[x, np.ones(len(x))]

    def objective(w):
        z = xb @ w
        ratio = r * np.exp(-z)
        grad = xb.T @ (1 - ratio) / len(r)
        grad[:-1] += 2 * l2 * w[:-1]
        return (z + ratio).mean() + l2 * (w[:-1] ** 2).sum(), grad

    w0 = np.zeros(xb.shape[1])
    w0[-1] = np.log(r.mean())
    return minimize(objective, w0, jac=True, method="L-BFGS-B").x


def main(run: str = DEFAULT_RUN) -> None:
    import torch
    from scipy.stats import spearmanr

    from mofbalora.config import load_config
    from mofbalora.model import load_model
    from mofbalora.train import load_inputs, split_ids

    torch.set_num_threads(1)
    cfg = load_config(Path(run) / "config.yaml")
    cfg["data"]["val_size"] = None  # all 1,826 validation structures
    model = load_model(run)
    if model.training_domain is None or not model.training_domain.has_embedding:
        raise ValueError(
            f"{run} carries no applicability domain with an embedding reference (fit one with "
            "scripts/fit_domain.py): the distance refit needs it"
        )
    ds, ids = split_ids(cfg)
    parts = {}
    for part in ("val", "test"):
        _, x, y = load_inputs(model, ds, ids[part], part)
        p = model.predict_inputs(x, n_samples=32, seed=0)
        parts[part] = {
            "r": np.abs(p.mean_ev - y.numpy()),
            "al": p.aleatoric_std_ev,
            "ep": p.epistemic_std_ev,
            "mean": p.mean_ev,
            "emb": p.embedding,
            "dist": model.training_domain.distances(p.embedding),
        }
    va, te = parts["val"], parts["test"]
    mu, sd = va["emb"].mean(0), va["emb"].std(0) + 1e-6

    def inputs(s, embedding=True, distance=False):
        logs = np.stack(
            [np.log(s["al"]), np.log(s["ep"] + 1e-4)] + ([np.log(s["dist"])] if distance else []), 1
        )
        return np.hstack([(s["emb"] - mu) / sd, logs, s["mean"][:, None]]) if embedding else logs

    def rho(score, s):
        return float(spearmanr(score, s["r"])[0])

    lines = [
        "| scale | validation ρ (refits: 5-fold CV) | test ρ |",
        "|---|---|---|",
        f"| the head's own (quadrature total) | {rho(np.hypot(va['al'], va['ep']), va):.3f} | "
        f"{rho(np.hypot(te['al'], te['ep']), te):.3f} |",
        f"| the domain distance alone | {rho(va['dist'], va):.3f} | {rho(te['dist'], te):.3f} |",
    ]
    folds = np.random.default_rng(0).integers(0, 5, len(va["r"]))
    for embedding, distance, l2s in (
        (True, False, (1e-3, 1e-2, 1e-1, 1.0)),
        (False, False, (0.0,)),
        (False, True, (0.0,)),
    ):
        xv, xt = inputs(va, embedding, distance), inputs(te, embedding, distance)
        for l2 in l2s:
            cv = np.zeros(len(xv))
            for k in range(5):
                w = fit_log_scale(xv[folds != k], va["r"][folds != k], l2)
                cv[folds == k] = np.c_[xv[folds == k], np.ones((folds == k).sum())] @ w
            w = fit_log_scale(xv, va["r"], l2)
            what = (
                f"refit on validation: embedding + log σ_alea, log σ_epi, gap (L2 {l2:g})"
                if embedding
                else f"refit on validation: log σ_alea, log σ_epi, log distance (b ∝ "
                f"σ_alea^{w[0]:.2f} σ_epi^{w[1]:.2f} d^{w[2]:.2f})"
                if distance
                else "refit on validation: log σ_alea, log σ_epi "
                f"only (b ∝ σ_alea^{w[0]:.2f} σ_epi^{w[1]:.2f})"
            )
            lines.append(
                f"| {what} | {rho(cv, va):.3f} | {rho(np.c_[xt, np.ones(len(xt))] @ w, te):.3f} |"
            )
    lines += [
        "",
        f"Run `{run}`; validation: all {len(va['r']):,} structures; test: {len(te['r']):,}; T = "
        "32. Regenerate: `python reports/accuracy/heldout_scale.py`.",
    ]
    (HERE / "heldout-scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:2])
