"""Predict the validation and test parts of qmof_v1 with a model once and cache everything a recalibration
needs (per-structure draws, aleatoric std, mean, total std, reference gaps), so that recalibration
variants are refitted without predicting again.

    MOFBALORA_CACHE=cache python reports/uq_family/predict.py [--model default] [--out
    runs/uq_family]

Writes ``<out>/pred_val_T64.npz`` (the T the shipped calibration is fitted at) and
``<out>/pred_test_T32.npz`` (the T of the reported test figures), seed 0. The frozen CHGNet trunk is
read from the cache (``mofbalora data trunk-cache --order test,val --no-cut`` fills it; without it,
featurizing ~3,650 structures takes about an hour on 2 cores).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def predict_split(model, ds, split: str, n_samples: int, out: Path) -> Path:
    from mofbalora.evaluate import select_split_ids
    from mofbalora.featurize import load_inputs

    ids = select_split_ids(ds, split)
    start = time.perf_counter()
    kept, inputs, y = load_inputs(model, ds, ids, f"{split} set")
    pred = model.predict_inputs(inputs, n_samples=n_samples, seed=0)
    path = out / f"pred_{split}_T{n_samples}.npz"
    np.savez_compressed(
        path,
        ids=np.array(kept),
        y_true_ev=y.numpy().astype(np.float64),
        mean_ev=pred.mean_ev,
        std_ev=pred.std_ev,
        samples_ev=pred.samples_ev,
        epistemic_std_ev=pred.epistemic_std_ev,
        aleatoric_std_ev=pred.aleatoric_std_ev
        if pred.aleatoric_std_ev is not None
        else np.array([]),
        n_failed=len(ids) - len(kept),
        seconds=time.perf_counter() - start,
    )
    print(
        f"{split}: {len(kept)} structures ({len(ids) - len(kept)} failed), T = {n_samples}, "
        f"{time.perf_counter() - start:.0f} s -> {path}",
        flush=True,
    )
    return path


def main() -> None:
    import torch

    from mofbalora.data.qmof import load_dataset
    from mofbalora.model import load_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--out", default="runs/uq_family")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--splits", default="val,test", help="which parts: val (T = 64), test (T = 32)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(args.model)
    ds = load_dataset(None)
    for split in args.splits.split(","):
        predict_split(model, ds, split, {"val": 64, "test": 32}[split], out)


if __name__ == "__main__":
    main()
