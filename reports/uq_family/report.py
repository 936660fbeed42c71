"""The shipped default's uncertainty scored in its own family, and recalibrations fitted on validation only.

    python reports/uq_family/report.py [--pred runs/uq_family] [--publish]

Reads the cached predictions of ``reports/uq_family/predict.py`` (validation at T = 64, test at T =
32, seed 0) and writes ``reports/uq_family/tables.md`` and ``results.json``:

* the shipped calibration as it was (a Gaussian ``scale_floor``), scored as a Gaussian (the figures
  the model card quoted) and, unchanged, as a Laplace;
* the raw predictive in each family (Gaussian, Laplace of the total std, mixture of Laplace kernels
  over the T draws);
* for each family, the recalibrations fitted on validation (``scale_floor`` by maximum likelihood in
  the family, isotonic and split-conformal intervals) scored on test.

``--publish`` writes the Laplace ``scale_floor`` calibration into
``mofbalora/pretrained/default/model_config.json`` (same fields as before plus ``family``) and the
test figures into its metadata (``test_T32``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CONFIG = ROOT / "mofbalora" / "pretrained" / "default" / "model_config.json"
KEYS = (
    "coverage_68",
    "coverage_95",
    "miscalibration_area",
    "rms_calibration_error",
    "nll",
    "crps_ev",
)


def load_prediction(path: Path):
    from mofbalora.prediction import Prediction

    z = np.load(path)
    alea = z["aleatoric_std_ev"] if z["aleatoric_std_ev"].size else None
    pred = Prediction(
        z["mean_ev"],
        z["std_ev"],
        z["samples_ev"],
        z["epistemic_std_ev"],
        alea,
        np.zeros((len(z["mean_ev"]), 0), dtype=np.float32),
    )
    return pred, z["y_true_ev"], [str(i) for i in z["ids"]]


def _fmt(v) -> str:
    if v is None:
        return "—"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _row(name: str, scores: dict) -> str:
    return f"| {name} | " + " | ".join(_fmt(scores.get(k)) for k in KEYS) + " |"


def main() -> None:
    from mofbalora.uq import distribution as D
    from mofbalora.uq.recalibration import compare_recalibrations, fit_calibration

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pred", default=str(ROOT / "runs" / "uq_family"))
    p.add_argument("--publish", action="store_true")
    args = p.parse_args()
    val, y_val, _ = load_prediction(Path(args.pred) / "pred_val_T64.npz")
    test, y_test, _ = load_prediction(Path(args.pred) / "pred_test_T32.npz")
    cfg = json.loads(CONFIG.read_text())
    shipped = cfg["calibration"]
    # the Gaussian fit shipped before issue 29 (kept under "previous" once the Laplace fit is
    # published)
    before = shipped.get("previous") or shipped
    legacy = {
        "method": before["method"],
        "family": "gaussian",
        "std_factor": before["std_factor"],
        "std_floor_ev": before["std_floor_ev"],
    }

    results: dict = {
        "n_val": len(y_val),
        "n_test": len(y_test),
        "T_val": int(val.samples_ev.shape[1]),
        "T_test": int(test.samples_ev.shape[1]),
        "mae_test_ev": float(np.mean(np.abs(test.mean_ev - y_test))),
        "mean_epistemic_std_ev": float(np.mean(test.epistemic_std_ev)),
        "mean_aleatoric_std_ev": float(np.mean(test.aleatoric_std_ev)),
    }
    pick = lambda m: {k: m[k] for k in KEYS}  # noqa: E731
    # the shipped (Gaussian) calibration, scored as a Gaussian and, unchanged, as a Laplace
    results["shipped_gaussian_calibration"] = {
        "calibration": legacy,
        "scored_gaussian": pick(D.all_metrics(test.predictive(legacy), y_test)),
        "scored_laplace": pick(
            D.all_metrics(
                test.predictive(family="laplace").rescaled(
                    legacy["std_factor"], legacy["std_floor_ev"]
                ),
                y_test,
            )
        ),
    }
    # each family: raw, and recalibrated on validation only
    results["families"] = {}
    for family in ("gaussian", "laplace", "mixture"):
        v, t = val.predictive(family=family), test.predictive(family=family)
        results["families"][family] = compare_recalibrations(v, y_val, t, y_test)
    laplace_cal = fit_calibration(
        val.predictive(family="laplace"),
        y_val,
        n_samples=results["T_val"],
        fitted_on=f"validation ({len(y_val)} structures, qmof_v1; "
        "reports/uq_family/report.py, maximum likelihood in the Laplace family)",
    )
    results["laplace_calibration"] = laplace_cal
    (HERE / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")

    header = (
        "| predictive | coverage 68.27 % | coverage 95 % | miscal. area | RMS cal. error | NLL "
        "(nats) | CRPS (eV) |\n|---|---|---|---|---|---|---|"
    )
    lines = [
        f"Test part of qmof_v1: {len(y_test)} structures, T = {results['T_test']}, seed 0; "
        f"recalibrations fitted on the {len(y_val)} validation structures (T = "
        f"{results['T_val']}). Test MAE {results['mae_test_ev']:.3f} eV; mean epistemic std "
        f"{results['mean_epistemic_std_ev']:.4f} eV, mean aleatoric std "
        f"{results['mean_aleatoric_std_ev']:.3f} eV. Regenerate: "
        "`python reports/uq_family/report.py` (after `reports/uq_family/predict.py`).",
        "",
        "**The shipped calibration as it was** (a Gaussian fit "
        f"`sqrt(({legacy['std_factor']:.3f} σ)² + ({legacy['std_floor_ev']:.3f} eV)²)`):",
        "",
        header,
        _row(
            "scored as a Gaussian (the model card's figures)",
            results["shipped_gaussian_calibration"]["scored_gaussian"],
        ),
        _row(
            "the same σ scored as a Laplace",
            results["shipped_gaussian_calibration"]["scored_laplace"],
        ),
        "",
        "**Each family, raw and recalibrated on validation** (`scale_floor`: `sqrt((a σ)² + b²)` "
        "by maximum likelihood in the family; `isotonic` / `conformal`: the family's intervals at "
        "a recalibrated level, no density):",
        "",
        header,
    ]
    names = {
        "gaussian": "Gaussian",
        "laplace": "Laplace (total σ)",
        "mixture": "mixture of T Laplace kernels",
    }
    for family, methods in results["families"].items():
        for method, scores in methods.items():
            extra = (
                f" (a = {scores['std_factor']:.3f}, b = {scores['std_floor_ev']:.3f} eV)"
                if method == "scale_floor"
                else ""
            )
            lines.append(_row(f"{names[family]}, {method}{extra}", scores))
    (HERE / "tables.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    if args.publish:
        from mofbalora.evaluate import CALIBRATED_METRICS, metrics_from_prediction

        raw = metrics_from_prediction(test, y_test, results["T_test"], "laplace")
        calibrated = D.all_metrics(test.predictive(laplace_cal), y_test)
        previous = {
            k: shipped[k]
            for k in ("method", "std_factor", "std_floor_ev", "n_samples", "fitted_on")
            if k in shipped
        }
        cfg["calibration"] = {**laplace_cal, "previous": shipped.get("previous", previous)}
        keep = (
            "mae_ev",
            "rmse_ev",
            "r2",
            "spearman_std_abs_error",
            "miscalibration_area",
            "coverage_68",
            "coverage_95",
            "nll",
            "nll_gaussian",
            "crps_ev",
            "family",
        )
        cfg["metadata"]["test_T32"] = {
            **{k: raw[k] for k in keep},
            "calibrated": {k: calibrated[k] for k in CALIBRATED_METRICS},
        }
        CONFIG.write_text(json.dumps(cfg, indent=2))
        print(f"published the Laplace calibration into {CONFIG}")


if __name__ == "__main__":
    main()
