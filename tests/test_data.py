"""The QMOF data layer on the real files: labels, layouts, splits, the content cache, `data
info`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from mofbalora.cli import main
from mofbalora.data.cache import ContentCache, file_digest
from mofbalora.data.qmof import load_dataset
from mofbalora.data.splits import load_split, random_split, save_split


def test_all_qmof_labels_load(qmof):
    assert len(qmof) == 18261
    assert len(set(qmof.ids)) == 18261
    gaps = qmof.bandgaps_ev
    assert np.isfinite(gaps).all()
    # README: min 0.0001, max 6.45 eV
    assert 0 < gaps.min() < 0.001 and gaps.max() == pytest.approx(6.45, abs=0.01)
    assert gaps.mean() == pytest.approx(2.09, abs=0.01)
    # the packed tarball was unpacked once into the cache; every label has its CIF
    assert all(p.is_file() for p in qmof.cif_paths[::997])


def test_official_layout_json_and_generic_folder(tmp_path, qmof, sample_cifs):
    ids = [p.stem for p in sample_cifs]
    official = tmp_path / "official"
    (official / "relaxed_structures").mkdir(parents=True)
    records = []
    for p in sample_cifs:
        shutil.copy(p, official / "relaxed_structures" / p.name)
        records.append(
            {
                "qmof_id": p.stem,
                "info": {"natoms": 1},
                "outputs": {"pbe": {"bandgap": float(qmof.bandgaps_ev[qmof.index_of(p.stem)])}},
            }
        )
    (official / "qmof.json").write_text(json.dumps(records))
    ds = load_dataset(official)
    assert ds.ids == ids
    assert np.allclose(ds.bandgaps_ev, [qmof.bandgaps_ev[qmof.index_of(i)] for i in ids])
    # an official CSV with many more columns: only the two named ones are read
    pd.DataFrame(
        {
            "qmof_id": ids,
            "name": "x",
            "outputs.pbe.bandgap": ds.bandgaps_ev,
            "outputs.hse06.bandgap": 1.0,
        }
    ).to_csv(official / "qmof.csv", index=False)
    assert np.allclose(load_dataset(official).bandgaps_ev, ds.bandgaps_ev)
    generic = tmp_path / "generic"
    generic.mkdir()
    for p in sample_cifs[:3]:
        shutil.copy(p, generic / p.name)
    pd.DataFrame({"name": ids[:3], "gap": [1.0, 2.0, 3.0]}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    g = load_dataset(
        generic, labels_csv=tmp_path / "labels.csv", id_column="name", target_column="gap"
    )
    assert g.ids == ids[:3] and list(g.bandgaps_ev) == [1.0, 2.0, 3.0]
    assert g.structure(ids[0]).is_ordered
    with pytest.raises(ValueError, match="no column 'bandgap'"):
        load_dataset(generic, labels_csv=tmp_path / "labels.csv", id_column="name")
    with pytest.raises(FileNotFoundError, match="qmof.csv"):
        load_dataset(generic)


def test_split_is_reproducible_disjoint_and_shipped(qmof, tmp_path):
    a = random_split(qmof.ids, seed=42)
    b = random_split(list(reversed(qmof.ids)), seed=42)  # input order does not matter
    assert a == b
    sets = [set(a[k]) for k in ("train", "val", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert sum(map(len, sets)) == len(qmof)
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (14609, 1826, 1826)
    assert load_split("qmof_v1") == a  # the shipped split is this one
    assert random_split(qmof.ids, seed=1) != a
    p = save_split(a, tmp_path / "s.json", seed=42)
    assert load_split(p) == a
    with pytest.raises(FileNotFoundError, match="shipped"):
        load_split("qmof_v0")
    with pytest.raises(ValueError, match="fractions"):
        random_split(qmof.ids, fractions=(0.5, 0.5, 0.5))


def test_content_cache_keys_on_content_not_path(tmp_path, sample_cifs):
    from mofbalora.data.structures import read_structure

    calls = []

    def parse(p):
        calls.append(p)
        return read_structure(p)

    from pymatgen.core import Structure

    # a Structure is not a plain value: the cache stores its as_dict() (JSON-like), no pickles
    cache = ContentCache(
        "test-structures", root=tmp_path, to_plain=Structure.as_dict, from_plain=Structure.from_dict
    )
    s1 = cache.get_or_compute(sample_cifs[0], parse)
    copy = tmp_path / "renamed.cif"
    shutil.copy(sample_cifs[0], copy)
    s2 = cache.get_or_compute(copy, parse)
    assert len(calls) == 1 and s1 == s2
    copy.write_text(copy.read_text().replace("_cell_length_a", "_cell_length_a ", 1))
    cache.get_or_compute(copy, parse)
    assert len(calls) == 2
    assert file_digest(copy) != file_digest(sample_cifs[0])


def test_data_info_command(capsys, qmof_path):
    assert main(["data", "info", str(qmof_path), "--limit", "20"]) == 0
    out = capsys.readouterr().out
    assert "18,261" in out and "failures: none" in out and "PBE band gap" in out


def test_cli_help_and_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and "mofbalora" in capsys.readouterr().out
    for cmd in (
        "data",
        "candidates",
        "finetune",
        "evaluate",
        "compare",
        "screen",
        "dft-inputs",
        "al",
        "sweep",
    ):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0, cmd
