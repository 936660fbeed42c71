"""One-call prediction (``model.predict``): Structures, Atoms and CIF paths, the screen's
numbers, the README."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from mofbalora.scoring import PREDICT_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
COMPARED = [
    "formula",
    "n_atoms",
    "bandgap_mean_ev",
    "bandgap_median_ev",
    "bandgap_std_ev",
    "epistemic_std_ev",
    "aleatoric_std_ev",
    "bandgap_std_calibrated_ev",
    "bandgap_lo68_ev",
    "bandgap_hi68_ev",
    "bandgap_lo95_ev",
    "bandgap_hi95_ev",
    "bandgap_spread_ev",
    "physical_flag",
    "domain_distance",
    "in_domain",
    "digest",
]


def test_predict_gives_the_screens_numbers_for_the_same_file(tiny_model, sample_cifs, tmp_path):
    from mofbalora.model import load_model
    from mofbalora.screen import screen

    model = load_model(tiny_model)
    files = [str(p) for p in sample_cifs[:3]]
    got = model.predict(files, n_samples=4, seed=3, checks="off")
    ranked = screen(files, model=model, n_samples=4, seed=3, checks="off", progress=False)
    assert list(got["path"]) == files  # input order
    want = ranked.set_index("path").loc[files].reset_index()
    for col in COMPARED:
        a, b = got[col].to_numpy(), want[col].to_numpy()
        if got[col].dtype.kind == "f":
            np.testing.assert_allclose(
                a.astype(float), b.astype(float), rtol=0, atol=1e-12, err_msg=col
            )
        else:
            assert list(a) == list(b), col
    assert not (tmp_path / "ranked.csv").exists() and not Path("ranked.csv").exists()


def test_predict_takes_structures_atoms_and_bad_paths_in_one_call(
    tiny_model, sample_cifs, tmp_path
):
    from pymatgen.core import Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    from mofbalora.model import load_model

    model = load_model(tiny_model)
    s = Structure.from_file(sample_cifs[0])
    shuffled = Structure.from_sites([s[i] for i in np.random.default_rng(0).permutation(len(s))])
    atoms = AseAtomsAdaptor.get_atoms(s)
    table = model.predict([s, atoms, shuffled, str(tmp_path / "missing.cif")], n_samples=4)
    # the documented columns, plus the intervals
    assert list(table.columns[: len(PREDICT_COLUMNS)]) != []
    assert set(PREDICT_COLUMNS) <= set(table.columns)
    assert {"bandgap_lo68_ev", "bandgap_hi68_ev", "bandgap_lo95_ev", "bandgap_hi95_ev"} <= set(
        table.columns
    )
    assert list(table["status"]) == ["ok", "ok", "ok", "error"]
    assert table.loc[3, "error"] == "unreadable"
    ok = table.iloc[:3]
    # a Structure, its Atoms and a reordering of its sites are one content key: the same draws
    assert ok["digest"].nunique() == 1
    np.testing.assert_allclose(
        ok["bandgap_mean_ev"].astype(float), ok["bandgap_mean_ev"].iloc[0], atol=1e-5
    )
    assert (ok["bandgap_lo95_ev"] <= ok["bandgap_lo68_ev"]).all()
    assert (ok["bandgap_lo68_ev"] <= ok["bandgap_mean_ev"]).all() and (
        ok["bandgap_mean_ev"] <= ok["bandgap_hi68_ev"]
    ).all()
    assert set(ok["checks"]) == {"not_run"}
    assert len(table.attrs["samples_ev"][0]) == 4 and table.attrs["samples_ev"][3] == []
    with pytest.raises(TypeError, match="pymatgen Structure, an ASE Atoms or a CIF path"):
        model.predict([42])
    with pytest.raises(ValueError, match="n_samples must be an integer >= 1"):
        model.predict([s], n_samples=0)


def test_readme_python_quick_start_runs_as_printed(monkeypatch, capsys):
    block = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md has no ```python block"
    monkeypatch.chdir(ROOT)  # the block's paths are relative to the repository
    namespace: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)
    table = namespace["table"]
    assert (table["status"] == "ok").all()
    assert table["bandgap_std_calibrated_ev"].notna().all()
    assert "bandgap_hi95_ev" in capsys.readouterr().out


def test_gradient_boosting_model_predicts_like_its_screen(
    tmp_path_factory, tiny_split, qmof_path, sample_cifs
):
    from pymatgen.core import Structure

    from mofbalora.config import load_config
    from mofbalora.model import load_model
    from mofbalora.screen import screen
    from mofbalora.train import finetune

    cfg = load_config(
        None,
        [
            f"data.path={qmof_path}",
            f"data.split={tiny_split}",
            "run.threads=1",
            "model.regime=gbm",
            "gbm.max_iter=20",
            "gbm.min_samples_leaf=2",
        ],
    )
    out = tmp_path_factory.mktemp("gbm-predict")
    finetune(cfg, out, progress=False)
    model = load_model(out)
    files = [str(sample_cifs[0])]
    got = model.predict([*files, Structure.from_file(files[0])], checks="off")
    want = screen(files, model=model, n_samples=1, checks="off", progress=False)
    assert list(got["status"]) == ["ok", "ok"]
    for col in (
        "bandgap_mean_ev",
        "bandgap_std_ev",
        "bandgap_std_calibrated_ev",
        "bandgap_median_ev",
    ):
        np.testing.assert_allclose(
            float(got.loc[0, col]), float(want.loc[0, col]), rtol=0, atol=1e-12, err_msg=col
        )
    # the gradient-boosting model has no draws to key: the in-memory structure gives the file's
    # numbers
    np.testing.assert_allclose(
        float(got.loc[1, "bandgap_mean_ev"]), float(got.loc[0, "bandgap_mean_ev"]), atol=1e-6
    )
