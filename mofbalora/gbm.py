"""The gradient-boosting baseline: frozen multi-layer CHGNet features + HistGradientBoosting.

What a user would try first with a frozen foundation model: pool every layer's per-atom output (atom
embedding, four atom convolutions, readout LayerNorm: 6 × 64) over each structure's atoms by mean,
max and std (1,152 numbers), and fit scikit-learn's ``HistGradientBoostingRegressor``: one with the
absolute error for the point prediction, and a quantile pair (16 % and 84 %) whose half-width is the
reported std (a Gaussian's ±1σ interval). Its predictive family is therefore **Gaussian**: its std
is recalibrated (finetune, on validation) and its interval columns are computed as a Gaussian's (the
central 68.27 % interval is mean ± the calibrated std). Trained, evaluated and compared through the
same ``finetune`` / ``evaluate`` / ``compare`` commands as the adapter models
(``model.regime=gbm``).

Saved with skops (no pickles): loading accepts only scikit-learn's own tree types.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from mofbalora.backbones import load_backbone
from mofbalora.io import MODEL_CONFIG, atomic_write_bytes
from mofbalora.prediction import MIN_STD_EV, Prediction, recalibrate, weights_fingerprint
from mofbalora.scoring import PredictsStructures

GBM_FILE = "gbm.skops"
QUANTILES = (0.16, 0.84)
#: the only types a saved baseline may contain beyond skops' defaults
TRUSTED = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]


def pooled_layer_features(inputs: list) -> np.ndarray:
    """(n, 1152): mean, max and std over atoms of each of the six cached per-atom layer outputs."""
    rows = []
    for x in inputs:
        a = np.asarray(x["atom_layers"], dtype=np.float32).reshape(int(x["n_atoms"]), -1)
        rows.append(np.concatenate([a.mean(0), a.max(0), a.std(0)]))
    return np.stack(rows)


class GBMBandGapModel(PredictsStructures):
    """Frozen CHGNet features + gradient boosting; the same prediction interface as a BandGapModel
    (``predict``: :meth:`mofbalora.scoring.PredictsStructures.predict`)."""

    regime = "gbm"
    is_stochastic = False
    n_members = 1

    def __init__(self, backbone_options: dict | None = None, params: dict | None = None) -> None:
        self.backbone_options = {"name": "chgnet", "adapt": "readout", **(backbone_options or {})}
        opts = {k: v for k, v in self.backbone_options.items() if k != "name"}
        self.backbone = load_backbone(self.backbone_options["name"], **opts)
        if not hasattr(self.backbone, "array_namespace") or self.backbone.array_namespace() is None:
            raise ValueError(
                "the gbm baseline reads cached per-layer "
                "activations: backbone chgnet with adapt=readout"
            )
        self.params = {
            "max_iter": 600,
            "learning_rate": 0.05,
            "max_leaf_nodes": 31,
            "min_samples_leaf": 20,
            "l2_regularization": 1.0,
            "early_stopping": False,
            **(params or {}),
        }
        self.models: dict = {}
        self.calibration: dict | None = None
        #: the gradient-boosting baseline records no training domain (every row's domain is unknown)
        self.training_domain = None

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def to(self, device) -> GBMBandGapModel:
        return self

    def eval(self) -> GBMBandGapModel:
        return self

    def _regressor(self, **kw):
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(random_state=0, **{**self.params, **kw})

    def fit(self, inputs: list, y: np.ndarray) -> GBMBandGapModel:
        X = pooled_layer_features(inputs)
        y = np.asarray(y, dtype=float)
        self.models = {"median": self._regressor(loss="absolute_error").fit(X, y)}
        for q in QUANTILES:
            self.models[f"q{int(q * 100)}"] = self._regressor(loss="quantile", quantile=q).fit(X, y)
        return self

    def predict_inputs(
        self, inputs: list, *, n_samples: int = 1, seed: int | None = 0, **_
    ) -> Prediction:
        X = pooled_layer_features(inputs)
        mean = np.maximum(self.models["median"].predict(X), 0.0)
        lo, hi = (self.models[f"q{int(q * 100)}"].predict(X) for q in QUANTILES)
        std = np.maximum((hi - lo) / 2.0, MIN_STD_EV)
        # one "draw", the point prediction: the baseline is deterministic (its quantiles are not
        # draws, and the screen's robust spread of a one-draw model is its std)
        return Prediction(mean, std, mean[:, None].copy(), std, None, X.astype(np.float32))

    def calibrated_std(self, std_ev: np.ndarray) -> np.ndarray | None:
        return recalibrate(self.calibration, std_ev)

    def trainable_parameters(self) -> list:
        return []

    def fingerprint(self) -> str:
        """sha256 (hex, first 16) of the fitted trees (each tree's node table and the baseline) and
        the calibration (skops' bytes would not do: its zip records a time stamp)."""

        def arrays():
            for name, model in sorted(self.models.items()):
                yield f"{name}.baseline", np.asarray(model._baseline_prediction, dtype=float)
                for i, trees in enumerate(model._predictors):
                    for j, tree in enumerate(trees):
                        yield f"{name}.{i}.{j}", tree.nodes

        return weights_fingerprint(arrays(), self.calibration)

    def config_dict(self) -> dict:
        return {
            "regime": "gbm",
            "backbone": self.backbone_options,
            "gbm": {
                "params": self.params,
                "quantiles": list(QUANTILES),
                "features": "mean, max, std over atoms of 6 CHGNet layers (1152)",
            },
            "base": self.backbone.identity(),
            "calibration": self.calibration,
        }

    def save(self, directory: str | Path, metadata: dict | None = None) -> Path:
        import skops.io as sio

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(directory / GBM_FILE, sio.dumps(self.models))
        cfg = {**self.config_dict(), "metadata": metadata or {}}
        atomic_write_bytes(directory / MODEL_CONFIG, json.dumps(cfg, indent=2).encode())
        return directory

    @classmethod
    def load(cls, directory: str | Path, cfg: dict) -> GBMBandGapModel:
        import skops.io as sio

        m = cls(cfg["backbone"], cfg["gbm"]["params"])
        m.models = sio.loads((Path(directory) / GBM_FILE).read_bytes(), trusted=TRUSTED)
        m.calibration = cfg.get("calibration")
        return m
