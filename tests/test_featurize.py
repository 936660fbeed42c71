"""CIF files → backbone inputs through the content cache, with the real pretrained CHGNet."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mofbalora.backbones import load_backbone
from mofbalora.data.arrays import ArrayStore
from mofbalora.featurize import featurize_files


@pytest.fixture(scope="module")
def chgnet():
    return load_backbone("chgnet")


def test_cache_entries_hold_only_their_structure_and_are_reused(
    chgnet, sample_cifs, tmp_path, monkeypatch
):
    paths = sample_cifs[:4] + [tmp_path / "missing.cif"]
    inputs, errors = featurize_files(chgnet, paths, batch_size=4, progress=False)
    assert [e is None for e in errors] == [True] * 4 + [False]
    assert errors[4].reason == "unreadable"
    store = ArrayStore(chgnet.array_namespace())
    for x in inputs[:4]:
        assert x["atom_features"].shape == (x["n_atoms"], 64)
        entry = store._path(x["digest"])
        size = sum(f.stat().st_size for f in entry.iterdir())
        # readout input (float32) + six layers (float16) + atomic numbers, nothing of the rest of
        # the batch
        assert size < x["n_atoms"] * (64 * 4 + 6 * 64 * 2 + 2) + 6 * 256, size
        arrays = store.get(x["digest"])  # plain arrays, no pickles
        assert (
            arrays["atom_layers"].shape == (x["n_atoms"], 6, 64)
            and arrays["atom_layers"].dtype == np.float16
        )
        assert torch.equal(torch.from_numpy(arrays["readout"]), x["atom_features"])

    def boom(*a, **k):
        raise AssertionError("featurize called although every file is cached")

    monkeypatch.setattr(chgnet, "featurize", boom)
    again, errors = featurize_files(chgnet, sample_cifs[:4], progress=False)
    assert all(e is None for e in errors)
    for a, b in zip(inputs[:4], again, strict=True):
        assert torch.equal(a["atom_features"], b["atom_features"])


def test_batched_and_single_featurization_agree(chgnet, sample_cifs):
    from mofbalora.data.structures import read_structure

    structures = [read_structure(p) for p in sample_cifs[4:7]]
    batched = chgnet.featurize(structures)
    for s, b in zip(structures, batched, strict=True):
        single = chgnet.featurize([s])[0]
        assert torch.allclose(single["atom_features"], b["atom_features"], atol=1e-5)


def test_raise_policy(chgnet, tmp_path):
    from mofbalora.data.structures import StructureError

    (tmp_path / "e.cif").write_text("")
    with pytest.raises(StructureError, match="empty"):
        featurize_files(chgnet, [tmp_path / "e.cif"], on_error="raise", progress=False)
    with pytest.raises(ValueError, match="choose from"):
        featurize_files(chgnet, [tmp_path / "e.cif"], on_error="ignore", progress=False)
