"""Campaign configuration pieces that need no model: the epistemic LCB, the start-model document,
the batch note's score meaning, the report's recall and labels-to-reach tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mofbalora.acquisition import acquisition_scores
from mofbalora.al.campaign import score_meaning
from mofbalora.al.config import campaign_config, load_campaign_config
from mofbalora.al.report import bootstrap_interval, labels_to_reach


def test_lcb_epistemic_uses_the_spread_of_the_draws_not_the_total_std():
    mean = np.array([1.0, 1.0, 2.0])
    std = np.array([5.0, 0.1, 0.1])  # a large aleatoric part on the first
    samples = np.stack(
        [
            mean[0] + np.linspace(-0.1, 0.1, 33),
            mean[1] + np.linspace(-1, 1, 33),
            mean[2] + np.linspace(-0.2, 0.2, 33),
        ]
    )
    got = acquisition_scores("lcb_epistemic", mean, std, samples, kappa=2.0)
    half = (np.quantile(samples, 0.84, axis=1) - np.quantile(samples, 0.16, axis=1)) / 2
    np.testing.assert_allclose(got, 2.0 * half - mean)
    assert np.argmax(got) == 1  # the wide draws win; lcb on the total std would pick the first
    assert np.argmax(acquisition_scores("lcb", mean, std, samples, kappa=2.0)) == 0
    with pytest.raises(ValueError, match="needs samples_ev"):
        acquisition_scores("lcb_epistemic", mean, std, None, kappa=2.0)


def test_start_model_document_is_the_shipped_recipe():
    from mofbalora.al.start import START_ROUND_EPOCHS, start_model_document

    cfg = campaign_config(start_model_document("default"))
    assert cfg.al.start_model == "default" and cfg.al.round_epochs == START_ROUND_EPOCHS
    assert cfg.backbone.options == {"adapt": "readout", "features": "all_layers"}
    assert (cfg.model.likelihood, cfg.model.head.pooling, cfg.adapter.noise_scope) == (
        "laplace_nll",
        "mean_max_attention",
        "structure",
    )
    assert (cfg.data.split, cfg.data.train_size, cfg.data.val_size) == ("qmof_v1", None, 600)
    # the model is built exactly as shipped: its weights load
    from mofbalora.model import DEFAULT_MODEL_DIR, load_weights
    from mofbalora.train import model_from_config

    load_weights(model_from_config(cfg), DEFAULT_MODEL_DIR)
    with pytest.raises(ValueError, match="al.start_model must be"):
        load_campaign_config(None, ["al.start_model=3"])


def test_score_meaning_says_what_a_negative_lcb_score_is():
    text = score_meaning("lcb", 2.0)
    assert "κ·s − m with κ = 2" in text and "−2.13" in text
    assert "greedy" in score_meaning("mean", 2.0) and "random" in score_meaning("random", 2.0)
    assert "[0.5, 1.5] eV" in score_meaning("target", 2.0, target=(0.5, 1.5))


def test_labels_to_reach_and_bootstrap():
    curves = pd.DataFrame(
        {
            "strategy": ["random"] * 3 + ["lcb"] * 3 + ["slow"] * 3,
            "round": [0, 1, 2] * 3,
            "n_labelled": [500, 600, 700] * 3,
            "test_mae_ev": [0.9, 0.8, 0.7, 0.9, 0.7, 0.6, 0.95, 0.9, 0.85],
        }
    )
    assert labels_to_reach(curves) == {"random": 700.0, "lcb": 600.0, "slow": None}
    lo, hi = bootstrap_interval([1.0, 2.0, 3.0])
    assert 1.0 <= lo < 2.0 < hi <= 3.0
    assert bootstrap_interval([2.0]) == (2.0, 2.0)
