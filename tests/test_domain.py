"""Applicability domain: unseen elements, embedding distance with a validation threshold, storage
with the model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from mofbalora.domain import (
    ApplicabilityDomain,
    cif_elements,
    domain_policy,
    fit_embedding_domain,
    load_domain,
)


def test_a_structure_with_an_element_unseen_in_training_is_out_of_domain():
    dom = ApplicabilityDomain(element_counts={"C": 10, "H": 10, "O": 9, "Zn": 4}, n_structures=10)
    a, b = dom.assess([["C", "H", "O", "Zn"], ["C", "H", "U", "Er"]], None)
    assert a["in_domain"] and a["unseen_elements"] == "" and np.isnan(a["domain_distance"])
    assert not b["in_domain"] and b["unseen_elements"] == "Er;U"


def test_embedding_threshold_is_the_validation_quantile_and_far_points_are_out():
    rng = np.random.default_rng(0)
    train, val = (
        rng.standard_normal((400, 6)) * [1, 2, 3, 1, 1, 5],
        rng.standard_normal((200, 6)) * [1, 2, 3, 1, 1, 5],
    )
    emb = fit_embedding_domain(train, val, k=5, quantile=0.9, max_reference=300)
    dom = ApplicabilityDomain(element_counts={"C": 1}, n_structures=400, **emb)
    assert dom.reference.shape == (300, 6)
    outside = (dom.distances(val) > dom.threshold).mean()
    assert 0.08 <= outside <= 0.12
    far = dom.assess([["C"], ["C"]], np.array([np.zeros(6), np.full(6, 40.0)]))
    assert (
        far[0]["in_domain"]
        and not far[1]["in_domain"]
        and far[1]["domain_distance"] > dom.threshold
    )


def test_finetune_stores_the_domain_and_it_round_trips(tiny_model, tmp_path):
    from mofbalora.model import load_model, resolve_model_dir

    m = load_model(tiny_model)
    dom = m.training_domain
    assert dom is not None and dom.n_structures == 16 and dom.has_embedding
    assert {"C", "H", "O"} <= set(dom.element_counts) and dom.reference.shape[0] == 16
    m.save(tmp_path / "copy")
    again = load_domain(tmp_path / "copy")
    assert again.element_counts == dom.element_counts and again.threshold == pytest.approx(
        dom.threshold
    )
    np.testing.assert_allclose(again.reference, dom.reference, rtol=1e-6)
    assert (tmp_path / "copy" / "domain.safetensors").is_file()
    assert json.loads((resolve_model_dir(tiny_model) / "model_config.json").read_text())[
        "training_domain"
    ]


def test_screen_ranks_an_unseen_element_last_or_excludes_it(tiny_model, sample_cifs, tmp_path):
    from mofbalora.model import load_model
    from mofbalora.screen import screen

    cands = tmp_path / "c"
    cands.mkdir()
    for p in sample_cifs[:4]:
        shutil.copy(p, cands / p.name)
    m = load_model(tiny_model)
    cu = next(p.stem for p in sample_cifs[:4] if "Cu" in cif_elements(p))
    m.training_domain.element_counts.pop("Cu", None)  # as if no training structure held copper
    t = screen(
        [str(cands)], model=m, n_samples=4, out=tmp_path / "r.csv", progress=False, checks="off"
    )
    t = t.set_index("structure_id")
    assert not t.loc[cu, "in_domain"] and "Cu" in t.loc[cu, "unseen_elements"].split(";")
    in_domain = t[t["in_domain"].astype(bool)]
    assert t.loc[cu, "rank"] > in_domain["rank"].max()  # rank-separately: after every in-domain row
    assert np.isfinite(t["domain_distance"]).all()
    ex = screen(
        [str(cands)],
        model=m,
        n_samples=4,
        out=tmp_path / "x.csv",
        progress=False,
        checks="off",
        domain="exclude",
    ).set_index("structure_id")
    assert ex.loc[cu, "status"] == "error" and ex.loc[cu, "error"] == "out_of_domain"
    assert "Cu" in ex.loc[cu, "detail"]


def test_the_default_model_carries_its_training_element_counts():
    from mofbalora.model import DEFAULT_MODEL_DIR

    dom = load_domain(DEFAULT_MODEL_DIR)
    n_train = json.loads((DEFAULT_MODEL_DIR / "model_config.json").read_text())["metadata"][
        "n_train"
    ]
    # the whole qmof_v1 training part
    assert dom is not None and dom.n_structures == n_train == 14609
    # every QMOF MOF has carbon; zinc is common but not universal
    assert dom.element_counts["C"] == n_train and 0 < dom.element_counts["Zn"] < n_train
    assert dom.unseen_elements(["C", "Og"]) == ["Og"]


def test_cif_elements_reads_the_atom_sites(sample_cifs):
    from mofbalora.data.structures import read_structure

    for p in sample_cifs[:3]:
        assert cif_elements(p) == sorted(str(e) for e in read_structure(p).composition.elements)


def test_unknown_domain_policy_names_the_choices():
    with pytest.raises(ValueError, match=r"'penalise'.*rank-separately.*exclude.*ignore"):
        domain_policy("penalise")
