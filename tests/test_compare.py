"""Model comparison: end to end through the CLI on tiny real fine-tunes, the nested T-curve, the
verdict."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mofbalora.cli import main
from mofbalora.compare import compare_models, parse_samples, subsample_prediction, verdict

SAMPLES = (1, 2, 4, 8)
REGIMES = {"balora": "balora", "ensemble": "lora_ensemble", "mcdrop": "mc_dropout"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_cfg) -> dict[str, Path]:
    """One tiny fine-tune per regime (trained once for the module); keys are the run folder
    names."""
    from mofbalora.train import finetune

    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, regime in REGIMES.items():
        cfg = tiny_cfg("run.eval_test=false", f"model.regime={regime}")
        finetune(cfg, root / name, progress=False)
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def report_dir(runs, tmp_path_factory, tiny_split, qmof_path) -> Path:
    out = tmp_path_factory.mktemp("compare") / "report"
    rc = main(
        [
            "compare",
            *map(str, runs.values()),
            "--data",
            str(qmof_path),
            "--split-name",
            str(tiny_split),
            "--samples",
            ",".join(map(str, SAMPLES)),
            "--out",
            str(out),
            "--seed",
            "3",
        ]
    )
    assert rc == 0
    return out


def _report(report_dir: Path) -> dict:
    return json.loads((report_dir / "comparison.json").read_text())


def _cells(row: str) -> int:
    return len(re.split(r"(?<!\\)\|", row)) - 2  # pipes escaped as \| sit inside a cell


def _same(a, b) -> bool:
    """Equal to tolerance, with JSON null standing for NaN (text, e.g. the scoring family,
    exactly)."""
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    a = float("nan") if a is None else a
    b = float("nan") if b is None else b
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def test_markdown_has_a_row_per_model_and_a_verdict(report_dir):
    text = (report_dir / "comparison.md").read_text()
    main_table = text.split("\n## ")[0]
    for name, regime in REGIMES.items():
        rows = [ln for ln in main_table.splitlines() if ln.startswith(f"| {name} | {regime} |")]
        assert len(rows) == 1, f"no single row for {name} in\n{main_table}"
        assert _cells(rows[0]) == _cells(main_table.splitlines()[4])  # as many cells as the header
    assert "## Spearman ρ(std, |error|) vs number of samples T" in text
    assert "## NLL vs number of samples T" in text
    report = _report(report_dir)
    assert report["verdict"]["text"] in text
    assert ("beats the ensemble" in text) != ("does not beat the ensemble" in text)
    rising, not_rising = "rises monotonically" in text, "does not rise monotonically" in text
    assert (rising != not_rising) != ("is flat in T" in text)  # exactly one of the three


def test_json_has_the_t_curves_and_run_facts(report_dir, runs):
    report = _report(report_dir)
    assert report["samples"] == list(SAMPLES) and report["n_structures"] == 8
    models = {m["label"]: m for m in report["models"]}
    assert set(models) == set(REGIMES)
    for name in ("balora", "mcdrop"):
        m = models[name]
        assert m["stochastic"] and m["n_samples"] == max(SAMPLES)
        assert list(m["by_samples"]) == [str(t) for t in SAMPLES]
        assert m["metrics"] == m["by_samples"][str(max(SAMPLES))]
        # one draw has no spread: its uncertainty metrics are undefined
        assert m["by_samples"]["1"]["spearman_std_abs_error"] is None
        assert m["by_samples"]["1"]["mae_ev"] > 0 and m["by_samples"]["1"]["nll"] is None
        assert all(m["by_samples"][str(t)]["samples"] == t for t in SAMPLES)
    ens = models["ensemble"]
    assert not ens["stochastic"] and ens["n_members"] == 2 and list(ens["by_samples"]) == ["2"]
    run_metrics = json.loads((runs["balora"] / "metrics.json").read_text())
    assert models["balora"]["train_seconds"] == pytest.approx(run_metrics["train_seconds"])
    assert models["balora"]["trainable_parameters"] == run_metrics["trainable_parameters"]
    for m in models.values():
        assert (
            m["inference_seconds_per_structure_t1"] > 0
            and m["inference_seconds_per_structure_tmax"] > 0
        )
    assert report["verdict"]["best_ensemble"] == "ensemble"


def test_every_listed_figure_and_prediction_table_exists(report_dir):
    report = _report(report_dir)
    expected = {
        "calibration.png",
        "rejection.png",
        "spearman_vs_T.png",
        "nll_vs_T.png",
        *(f"{kind}_{name}.png" for name in REGIMES for kind in ("parity", "error_vs_std")),
    }
    assert expected <= set(report["figures"])
    for name in report["figures"]:
        path = report_dir / name
        assert path.is_file() and path.stat().st_size > 0
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for m in report["models"]:
        table = pd.read_csv(report_dir / m["predictions_csv"])
        assert len(table) == report["n_structures"]
        assert np.allclose(table["abs_error_ev"].mean(), m["metrics"]["mae_ev"])


def test_t_curve_is_the_first_t_columns_of_one_prediction(report_dir, runs, qmof, tiny_split):
    from mofbalora.data.splits import load_split
    from mofbalora.evaluate import metrics_from_prediction
    from mofbalora.model import load_model
    from mofbalora.train import load_inputs

    curve = {m["label"]: m for m in _report(report_dir)["models"]}["balora"]["by_samples"]
    model = load_model(runs["balora"])
    kept, inputs, _ = load_inputs(model, qmof, load_split(tiny_split)["test"], "test")
    # labels as stored, not float32
    y = qmof.bandgaps_ev[[qmof.index_of(i) for i in kept]].astype(np.float64)
    pred = model.predict_inputs(inputs, n_samples=max(SAMPLES), seed=3)
    assert subsample_prediction(pred, max(SAMPLES)) is pred
    direct = metrics_from_prediction(pred, y, max(SAMPLES))
    assert set(direct) == set(curve[str(max(SAMPLES))])
    assert all(_same(curve[str(max(SAMPLES))][k], v) for k, v in direct.items())
    sub = subsample_prediction(pred, 4)
    np.testing.assert_array_equal(sub.samples_ev, pred.samples_ev[:, :4])
    np.testing.assert_allclose(sub.mean_ev, pred.samples_ev[:, :4].mean(1))
    # as the full prediction
    np.testing.assert_allclose(sub.std_ev, pred.samples_ev[:, :4].std(1, ddof=1))
    assert all(_same(curve["4"][k], v) for k, v in metrics_from_prediction(sub, y, 4).items())


def test_bad_samples_name_the_value(runs, tmp_path, capsys):
    assert parse_samples("8, 1,2,2") == (1, 2, 8)
    assert parse_samples([4, np.int64(2)]) == (2, 4)
    for bad, shown in (("1,0", "'0'"), ("2,x", "'x'"), ("1.5", "'1.5'"), ("", "''")):
        with pytest.raises(ValueError, match=shown):
            parse_samples(bad)
    for bad in ([2, -1], [True], [2.0]):
        with pytest.raises(ValueError, match=repr(bad[-1])):
            compare_models([runs["balora"]], samples=bad, out_dir=tmp_path)
    assert (
        main(["compare", str(runs["balora"]), "--samples", "2,x", "--out", str(tmp_path / "r")])
        == 2
    )
    assert "'x'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_run_dir_without_a_model_gives_load_models_message(runs, tmp_path, capsys):
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    assert main(["compare", str(runs["balora"]), str(empty), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "no model found at" in err and "not_a_run" in err


def _model(label, regime, spearman_by_t):
    by = {str(t): {"spearman_std_abs_error": r} for t, r in spearman_by_t.items()}
    return {
        "label": label,
        "regime": regime,
        "stochastic": regime in ("balora", "mc_dropout"),
        "n_members": 5 if regime == "lora_ensemble" else 1,
        "n_samples": max(spearman_by_t),
        "by_samples": by,
        "metrics": by[str(max(spearman_by_t))],
    }


def test_verdict_states_both_outcomes():
    ens = _model("ens", "lora_ensemble", {5: 0.30})
    up = _model("b", "balora", {1: float("nan"), 2: 0.1, 4: 0.2, 8: 0.35})
    v = verdict({"n_structures": 500, "split": "test", "models": [ens, up]})
    assert v["best_stochastic"] == "b" and v["beats_ensemble"] and v["monotonic_in_t"]
    assert "beats the ensemble ens" in v["text"] and "rises monotonically" in v["text"]
    assert "noisy" not in v["text"]
    down = _model("m", "mc_dropout", {2: 0.2, 4: 0.1, 8: 0.25})
    v = verdict({"n_structures": 10, "split": "test", "models": [ens, down]})
    assert v["beats_ensemble"] is False and v["monotonic_in_t"] is False and v["drops"] == [(2, 4)]
    assert (
        "does not beat" in v["text"]
        and "does not rise monotonically" in v["text"]
        and "noisy" in v["text"]
    )
    v = verdict({"n_structures": 10, "split": "test", "models": [ens]})
    assert v["best_stochastic"] is None and "No stochastic model" in v["text"]


def test_verdict_calls_a_curve_equal_to_3_decimals_flat():
    flat = _model("b", "balora", {1: 0.4941, 2: 0.4939, 4: 0.4942, 8: 0.4938})
    v = verdict({"n_structures": 500, "split": "test", "models": [flat]})
    assert v["flat_in_t"] is True
    assert "is flat in T (0.494 at every T from 1 to 8" in v["text"]
    assert "monotonically" not in v["text"]


#: left out of `make test-fast` (trains models, starts clusters or runs notebooks); `make test` runs
#: it
pytestmark = pytest.mark.slow


def test_a_laplace_model_is_scored_in_its_family_as_evaluate_scores_it(qmof_path, tmp_path):
    """The shipped default states a Laplace predictive: compare scores coverage, NLL and the
    calibration curve in that family, from the predictive object, and its numbers at T = 4, seed 1,
    are evaluate's (its golden file), before and after recalibration."""
    from mofbalora.uq import distribution as D

    golden = json.loads((Path(__file__).parent / "golden" / "evaluate_default.json").read_text())
    report = compare_models(
        ["default"],
        data=qmof_path,
        split="test",
        samples=(1, 4),
        limit=6,
        out_dir=tmp_path / "r",
        seed=1,
    )
    (m,) = report["models"]
    assert m["family"] == "laplace" == golden["family"] and m["n_samples"] == 4
    for key in (
        "nll",
        "crps_ev",
        "coverage_68",
        "coverage_95",
        "miscalibration_area",
        "nll_gaussian",
        "mae_ev",
    ):
        assert m["metrics"][key] == pytest.approx(golden[key], rel=1e-4, abs=1e-4), key
    for key, value in golden["calibrated"].items():
        assert m["calibrated"][key] == pytest.approx(value, rel=1e-4, abs=1e-4), key
    # the Gaussian reading of the same std differs: the family is not a label only
    table = pd.read_csv(tmp_path / "r" / m["predictions_csv"])
    y, mean, std = (
        table[c].to_numpy(float) for c in ("bandgap_true_ev", "bandgap_mean_ev", "bandgap_std_ev")
    )
    laplace, gauss = D.LaplacePredictive(mean, std), D.GaussianPredictive(mean, std)
    assert m["metrics"]["nll"] == pytest.approx(D.nll(laplace, y), rel=1e-9)
    assert D.nll(gauss, y) != pytest.approx(D.nll(laplace, y), rel=1e-3)
    text = (tmp_path / "r" / "comparison.md").read_text()
    assert "| default | balora | laplace |" in text and "## Recalibrated" in text
