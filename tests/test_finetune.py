"""Fine-tuning end to end on real QMOF structures with the pretrained CHGNet, resume, the shipped
model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from mofbalora.adapters import sampling
from mofbalora.model import REGIMES, load_model
from mofbalora.train import finetune


@pytest.mark.parametrize("regime", REGIMES)
def test_one_epoch_with_each_regime_writes_a_run_folder(regime, tiny_cfg, tmp_path):
    cfg = tiny_cfg(f"model.regime={regime}", "optim.epochs=1")
    result = finetune(cfg, tmp_path / regime, progress=False)
    run = tmp_path / regime
    for f in (
        "config.yaml",
        "metrics.csv",
        "metrics.json",
        "checkpoints/best/model.safetensors",
        "checkpoints/last/trainer_state.pt",
        "test_predictions.csv",
    ):
        assert (run / f).exists(), f
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["n_train"] == 16 and saved["test"]["n"] == 8
    assert np.isfinite(saved["test"]["mae_ev"])
    assert result["trainable_parameters"] > 0
    model = load_model(run)
    assert model.regime == regime
    if regime in ("balora", "mc_dropout", "lora_ensemble"):
        assert saved["test"]["samples"] > 1
        # a std recalibration fitted on validation travels with the model and shows in the test
        # table
        cal = model.calibration
        assert cal["method"] == "scale_floor" and cal["std_factor"] > 0 and cal["std_floor_ev"] > 0
        assert saved["calibration"] == cal and 0 <= saved["test"]["calibrated"]["coverage_95"] <= 1
        table = pd.read_csv(run / "test_predictions.csv")
        expect = np.sqrt(
            (cal["std_factor"] * np.maximum(table["bandgap_std_ev"], 1e-6)) ** 2
            + cal["std_floor_ev"] ** 2
        )
        np.testing.assert_allclose(table["bandgap_std_calibrated_ev"], expect, rtol=1e-6)
    else:
        assert model.calibration is None and "bandgap_std_calibrated_ev" not in pd.read_csv(
            run / "test_predictions.csv"
        )


def _run_with_crash(cfg, out, crash_at_step):
    """Train until optimizer step ``crash_at_step``, then raise (an interruption mid-epoch)."""
    import mofbalora.train as train_mod

    original = train_mod.Trainer.fit

    def crashing_fit(self, *a, **k):
        step = self.optimizer.step

        def counted(*sa, **sk):
            if self.step >= crash_at_step:
                raise KeyboardInterrupt("simulated kill")
            return step(*sa, **sk)

        self.optimizer.step = counted
        return original(self, *a, **k)

    train_mod.Trainer.fit = crashing_fit
    try:
        with pytest.raises(KeyboardInterrupt):
            finetune(cfg, out, progress=False)
    finally:
        train_mod.Trainer.fit = original


@pytest.mark.parametrize("regime", ["balora", "lora_ensemble"])
def test_interrupted_run_resumes_to_the_same_final_weights(regime, tiny_cfg, tmp_path):
    cfg = tiny_cfg(
        f"model.regime={regime}", "optim.epochs=3", "optim.patience=10", "run.eval_test=false"
    )
    finetune(cfg, tmp_path / "straight", progress=False)
    # killed in the middle of epoch 2 (2 steps per epoch with 16 structures and batch 8)
    _run_with_crash(cfg, tmp_path / "resumed", crash_at_step=3)
    with pytest.raises(FileExistsError, match="--resume"):
        finetune(cfg, tmp_path / "resumed", progress=False)
    finetune(cfg, tmp_path / "resumed", resume=True, progress=False)
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "checkpoints" / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows_a = (tmp_path / "straight" / "metrics.csv").read_text().splitlines()
    rows_b = (tmp_path / "resumed" / "metrics.csv").read_text().splitlines()
    assert len(rows_a) == len(rows_b) == 4
    assert [r.split(",")[:5] for r in rows_a] == [r.split(",")[:5] for r in rows_b]


def test_default_model_predicts_the_sample_cifs_offline(sample_cifs):
    from mofbalora.featurize import featurize_files

    model = load_model("default")
    assert model.regime == "balora"
    inputs, errors = featurize_files(model.backbone, sample_cifs, progress=False)
    assert len(sample_cifs) == 12 and all(e is None for e in errors)
    pred = model.predict_inputs(inputs, n_samples=32, seed=0)
    assert np.all((pred.mean_ev > 0) & (pred.mean_ev < 8)), pred.mean_ev  # PBE MOF gaps: 0–6.5 eV
    assert np.all(pred.std_ev > 0)
    assert pred.samples_ev.shape == (12, 32)
    # the shipped validation-fitted recalibration widens every std, never narrows it
    calibrated = model.calibrated_std(pred.std_ev)
    assert model.calibration["method"] == "scale_floor" and np.all(calibrated > pred.std_ev)
    assert np.all(calibrated >= model.calibration["std_floor_ev"])


def _rotated(structure, seed=0):
    from pymatgen.core import Lattice, Structure
    from scipy.spatial.transform import Rotation

    rot = Rotation.random(random_state=seed).as_matrix()
    return Structure(
        Lattice(structure.lattice.matrix @ rot.T), structure.species, structure.frac_coords
    )


def test_predictions_are_invariant_to_rotation_translation_and_permutation(sample_cifs):
    """Tolerance 1e-4 eV: CHGNet's inputs are distances and angles, so changes come from float
    round-off."""
    from pymatgen.core import Structure

    model = load_model("default")
    s = Structure.from_file(sample_cifs[1])
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(s))
    variants = {
        "rotated": _rotated(s),
        "translated": Structure(s.lattice, s.species, (s.frac_coords + [0.31, 0.17, 0.73]) % 1.0),
        "permuted": Structure(s.lattice, [s.species[k] for k in perm], s.frac_coords[perm]),
    }
    # the shipped default; the row scope is below
    assert model.adapter_config.noise_scope == "structure"

    def posterior_mean_pass(structure):
        with sampling(stochastic=False), torch.no_grad():
            return model(model.backbone.collate(model.backbone.featurize([structure])))[0][0].item()

    ref = model.predict_inputs(model.backbone.featurize([s]), n_samples=16, seed=5)
    ref_pass = posterior_mean_pass(s)
    for name, v in variants.items():
        assert abs(posterior_mean_pass(v) - ref_pass) < 1e-4, name
        # one exact weight sample per structure, keyed by the structure: the same seed gives the
        # same draws whatever the orientation, origin or atom order
        p = model.predict_inputs(model.backbone.featurize([v]), n_samples=16, seed=5)
        assert np.allclose(p.samples_ev, ref.samples_ev, atol=1e-4), name

    # row scope draws one ε per atom row, keyed by the row's place: a permutation hands the same
    # numbers to other atoms, so the draws differ but follow the same distribution
    for layer in model.modules():
        if hasattr(layer, "noise_scope"):
            layer.noise_scope = "row"
    ref = model.predict_inputs(model.backbone.featurize([s]), n_samples=64, seed=5)
    p = model.predict_inputs(model.backbone.featurize([variants["permuted"]]), n_samples=64, seed=5)
    assert not np.allclose(p.samples_ev, ref.samples_ev, atol=1e-4)
    # the draws' own (the aleatoric part is fixed)
    spread, ref_spread = p.epistemic_std_ev[0], ref.epistemic_std_ev[0]
    assert abs(p.mean_ev[0] - ref.mean_ev[0]) < 5 * np.hypot(spread, ref_spread) / np.sqrt(64)
    assert 0.7 < spread / ref_spread < 1.4
    p = model.predict_inputs(
        model.backbone.featurize([variants["translated"]]), n_samples=64, seed=5
    )
    assert np.allclose(p.samples_ev, ref.samples_ev, atol=1e-4)  # same atom order: the same draws


@pytest.mark.parametrize("alpha_network", ["shared", "constant"])
def test_alpha_network_options_train_save_and_load(alpha_network, tiny_cfg, tmp_path):
    from mofbalora.adapters import sampling
    from mofbalora.train import load_inputs, split_ids

    cfg = tiny_cfg(
        f"adapter.alpha_network={alpha_network}", "optim.epochs=1", "run.eval_test=false"
    )
    finetune(cfg, tmp_path / "run", progress=False)
    model = load_model(tmp_path / "run")
    ds, ids = split_ids(cfg)
    _, inputs, _ = load_inputs(model, ds, ids["val"], "val")
    pred = model.predict_inputs(inputs, n_samples=8, seed=0)
    again = load_model(tmp_path / "run").predict_inputs(inputs, n_samples=8, seed=0)
    assert np.array_equal(pred.samples_ev, again.samples_ev)
    if alpha_network == "shared":
        # one α per structure and layer: different structures get different noise levels
        batch = model.backbone.collate(inputs)
        logits = model.alpha_network(model.backbone.structure_descriptor(batch))
        assert logits.shape == (len(inputs), 3)
        model.alpha_network.adapter_alpha_net[-1].weight.data.normal_()
        logits = model.alpha_network(model.backbone.structure_descriptor(batch))
        assert logits[:, 0].std() > 0
        with sampling(stochastic=True):
            model(batch)  # the layers read their column through the sampling context


#: left out of `make test-fast` (trains models, starts clusters or runs notebooks); `make test` runs
#: it
pytestmark = pytest.mark.slow
