"""Ship a trained run as the default model: copy its best checkpoint into
mofbalora/pretrained/default, refit the std recalibration on the whole validation part (T = 64) in
the model's own predictive family (Laplace for a model trained with the Laplace NLL;
:mod:`mofbalora.uq.distribution`), score the test part (T = 32) and write the figures into
model_config.json's metadata (the model card quotes them). The run's applicability domain (training
elements and embedding reference, fitted by finetune) travels with it.

    python scripts/publish_default.py RUN [RECIPE]   (RECIPE: the run's workflow file, for the card)

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
    from mofbalora.train import load_inputs, split_ids
    from mofbalora.uq import distribution as D
    from mofbalora.uq.recalibration import fit_calibration

    run_dir = Path(run)
    cfg = load_config(run_dir / "config.yaml")
    cfg["data"]["val_size"] = None  # calibrate on the whole validation part
    model = load_model(run_dir)
    ds, ids = split_ids(cfg)
    _, va_x, va_y = load_inputs(model, ds, ids["val"], "val")
    va = model.predict_inputs(va_x, n_samples=64, seed=0)
    # the recalibration in the model's own family (a Laplace NLL gives a Laplace predictive), issue
    # 29
    family = D.family_of_likelihood(cfg["model"]["likelihood"])
    model.calibration = fit_calibration(
        va.predictive(family=family),
        va_y.numpy(),
        n_samples=64,
        fitted_on=f"validation ({len(va_x)} structures, qmof_v1; scripts/publish_default.py)",
    )
    _, te_x, te_y = load_inputs(model, ds, ids["test"], "test")
    te = model.predict_inputs(te_x, n_samples=32, seed=0)
    y = te_y.numpy()
    test = metrics_from_prediction(te, y, 32, family)
    calibrated = D.all_metrics(te.predictive(model.calibration), y)
    test["calibrated"] = {
        k: calibrated[k]
        for k in (
            "coverage_68",
            "coverage_95",
            "nll",
            "miscalibration_area",
            "crps_ev",
            "nll_gaussian",
        )
    }
    metadata = json.loads((run_dir / "checkpoints" / "best" / MODEL_CONFIG).read_text()).get(
        "metadata", {}
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metadata.update(
        {
            "recipe": recipe,
            "n_train": metrics["n_train"],
            "train_seconds": metrics["train_seconds"],
            "best_epoch": metrics["best_epoch"],
            "test_T32": {
                k: test[k]
                for k in (
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
                    "calibrated",
                )
            },
        }
    )
    tmp = DEST.parent / ".default.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(tmp, metadata=metadata)
    from mofbalora.domain import DOMAIN_FILE

    # the domain: training elements + embedding reference
    for name in (MODEL_FILE, MODEL_CONFIG, DOMAIN_FILE):
        if (tmp / name).is_file():
            shutil.copyfile(tmp / name, DEST / name)
    shutil.rmtree(tmp)
    print(json.dumps(metadata, indent=2, default=float))


if __name__ == "__main__":
    main(*sys.argv[1:3])
