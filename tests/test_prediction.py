"""The prediction layer: spreads combine one way, and survive a trip through JSON records."""

from __future__ import annotations

import json

import numpy as np

from mofbalora.prediction import MIN_STD_EV, Prediction, floor_std, total_std


def _prediction(aleatoric: bool) -> Prediction:
    rng = np.random.default_rng(0)
    samples = rng.normal(2.0, 0.3, size=(5, 8))
    epi = samples.std(1, ddof=1)
    alea = rng.uniform(0.1, 0.2, size=5) if aleatoric else None
    return Prediction(
        samples.mean(1),
        total_std(epi, alea),
        samples,
        epi,
        alea,
        rng.normal(size=(5, 3)).astype(np.float32),
    )


def test_total_std_adds_variances_and_the_floor_only_raises():
    np.testing.assert_allclose(total_std(np.array([3.0, 0.0]), np.array([4.0, 0.0])), [5.0, 0.0])
    np.testing.assert_allclose(total_std(np.array([3.0])), [3.0])
    assert floor_std(np.array([0.0, 0.5])).tolist() == [MIN_STD_EV, 0.5]


def test_records_keep_the_aleatoric_part():
    for aleatoric in (False, True):
        pred = _prediction(aleatoric)
        records = [
            {**json.loads(json.dumps(pred.to_record(j))), "embedding": pred.embedding[j].tolist()}
            for j in range(len(pred))
        ]
        back = Prediction.from_records(records)
        for name in ("mean_ev", "std_ev", "samples_ev", "epistemic_std_ev", "embedding"):
            np.testing.assert_allclose(getattr(back, name), getattr(pred, name), err_msg=name)
        if aleatoric:
            np.testing.assert_allclose(back.aleatoric_std_ev, pred.aleatoric_std_ev)
            np.testing.assert_allclose(
                back.std_ev, total_std(back.epistemic_std_ev, back.aleatoric_std_ev)
            )
        else:
            assert back.aleatoric_std_ev is None


def test_subsample_keeps_the_aleatoric_part_and_recombines():
    pred = _prediction(aleatoric=True)
    sub = pred.subsample(4)
    np.testing.assert_allclose(sub.mean_ev, pred.samples_ev[:, :4].mean(1))
    np.testing.assert_allclose(
        sub.std_ev, np.sqrt(pred.samples_ev[:, :4].std(1, ddof=1) ** 2 + pred.aleatoric_std_ev**2)
    )
    assert pred.subsample(8) is pred
