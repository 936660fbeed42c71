"""Ship a trained run as the default model: copy its best checkpoint into mofbalora/pretrained/default,
refit the std recalibration on the whole validation part (T = 64), score the test part (T = 32) and
write the figures into model_config.json's metadata (the model card quotes them). The run's applicability
domain (training elements and embedding reference, fitted by finetune) travels with it.

    python scripts/publish_default.py RUN [RECIPE]    (RECIPE: the workflow file the run used, for the card)

Reads QMOF from $MOFBALORA_QMOF or ../shared/data/qmof; uses the trunk cache in $MOFBALORA_CACHE.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "mofbalora" / "pretrained" / "default"


def main(run: str, recipe: str = "workflows/finetune_chgnet.yaml") -> None:
    from mofbalora.config import load_config
    from mofbalora.evaluate import metrics_from_prediction
    from mofbalora.model import MODEL_CONFIG, MODEL_FILE, load_model
    from mofbalora.prediction import calibrated_std, floor_std
    from mofbalora.train import load_inputs, split_ids
    from mofbalora.uq.recalibration import fit_std_scale_floor

    run_dir = Path(run)
    cfg = load_config(run_dir / "config.yaml")
    cfg["data"]["val_size"] = None  # calibrate on the whole validation part
    model = load_model(run_dir)
    ds, ids = split_ids(cfg)
    _, va_x, va_y = load_inputs(model, ds, ids["val"], "val")
    va = model.predict_inputs(va_x, n_samples=64, seed=0)
    a, b = fit_std_scale_floor(va.mean_ev, floor_std(va.std_ev), va_y.numpy())
    model.calibration = {"method": "scale_floor", "std_factor": a, "std_floor_ev": b, "n_samples": 64,
                         "fitted_on": f"validation ({len(va_x)} structures, qmof_v1; scripts/publish_default.py)"}
    _, te_x, te_y = load_inputs(model, ds, ids["test"], "test")
    te = model.predict_inputs(te_x, n_samples=32, seed=0)
    test = metrics_from_prediction(te, te_y.numpy(), 32)
    cal = calibrated_std(model, te.std_ev)
    from scipy import stats

    from mofbalora.uq.metrics import coverage, gaussian_nll, miscalibration_area

    y = te_y.numpy()
    one_sigma = float(2.0 * stats.norm.cdf(1.0) - 1.0)  # the level `mofbalora evaluate` calls coverage_68
    test["calibrated"] = {"coverage_68": coverage(te.mean_ev, cal, y, one_sigma),
                          "coverage_95": coverage(te.mean_ev, cal, y, 0.95),
                          "nll": gaussian_nll(te.mean_ev, cal, y), "miscalibration_area": miscalibration_area(te.mean_ev, cal, y)}
    metadata = json.loads((run_dir / "checkpoints" / "best" / MODEL_CONFIG).read_text()).get("metadata", {})
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metadata.update({"recipe": recipe, "n_train": metrics["n_train"],
                     "train_seconds": metrics["train_seconds"], "best_epoch": metrics["best_epoch"],
                     "test_T32": {k: test[k] for k in ("mae_ev", "rmse_ev", "r2", "spearman_std_abs_error",
                                                       "miscalibration_area", "coverage_95", "nll", "calibrated")}})
    tmp = DEST.parent / ".default.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(tmp, metadata=metadata)
    from mofbalora.domain import DOMAIN_FILE

    for name in (MODEL_FILE, MODEL_CONFIG, DOMAIN_FILE):  # the domain: training elements + embedding reference
        if (tmp / name).is_file():
            shutil.copyfile(tmp / name, DEST / name)
    shutil.rmtree(tmp)
    print(json.dumps(metadata, indent=2, default=float))


if __name__ == "__main__":
    main(*sys.argv[1:3])
