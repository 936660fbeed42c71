"""Adapters in CHGNet's last atom convolution trained from a cache of that block's inputs (the cut):
the same outputs as running the whole trunk, with and without BaLoRA noise
(tests/test_chgnet_block.py checks the cut path's block against CHGNet's own module, gradients
and stacked draws included)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mofbalora.adapters import AdapterConfig
from mofbalora.adapters.context import sampling, structure_keys


@pytest.fixture(scope="module")
def pair(qmof):
    from mofbalora.data.structures import read_structure
    from mofbalora.model import build_model

    models = {}
    for adapt, opts in (("last_block", {}), ("last_block_cached", {"cut_dtype": "float32"})):
        torch.manual_seed(0)
        models[adapt] = build_model(
            "balora",
            backbone_options={"adapt": adapt, **opts},
            adapter=AdapterConfig(kind="balora", rank=4, prior_dropout=0.3),
        )
    full, cut = models["last_block"], models["last_block_cached"]
    torch.manual_seed(1)
    for n, p in full.named_parameters():
        if "adapter_" in n:
            p.data.normal_(std=0.1)
    cut.load_trained_state(full.trained_state())
    structures = [read_structure(p) for p in qmof.cif_paths[3:6]]
    return full, cut, structures


def test_cut_placement_adapts_the_same_layers(pair):
    full, cut, _ = pair
    assert set(full.trained_state()) == set(cut.trained_state())
    rows = {
        n: m.row_set for n, m in cut.backbone.named_modules() if hasattr(m, "row_set") and m.row_set
    }
    assert set(rows.values()) == {"atom", "edge"}


@pytest.mark.parametrize("scope", ["row", "structure"])
@pytest.mark.parametrize("stochastic", [False, True])
def test_cut_cache_equals_the_full_trunk(pair, stochastic, scope):
    """The cut path (the block without built edge messages, mofbalora/backbones/chgnet_block.py)
    against the whole trunk run from the graph: the same gaps, with and without noise, in each
    noise scope."""
    from mofbalora.adapters.balora import BaLoRALinear

    full, cut, structures = pair
    keys = structure_keys(["1a" * 32, "2b" * 32, "3c" * 32])
    outs = []
    for m in (full, cut):
        for layer in m.modules():
            if isinstance(layer, BaLoRALinear):
                layer.noise_scope = scope
        batch = m.backbone.collate(m.backbone.featurize(structures))
        with torch.no_grad(), sampling(stochastic=stochastic, noise_seed=9, structure_keys=keys):
            outs.append(m(batch)[0])
        for layer in m.modules():
            if isinstance(layer, BaLoRALinear):
                layer.noise_scope = "row"
    assert torch.allclose(outs[0], outs[1], atol=2e-4), (outs[0], outs[1])
    if stochastic:
        with torch.no_grad(), sampling(stochastic=False):
            mean = cut(cut.backbone.collate(cut.backbone.featurize(structures)))[0]
        assert not torch.allclose(mean, outs[1], atol=1e-4)  # the noise does something


def test_cut_inputs_round_trip_through_the_array_store(pair, qmof):
    from mofbalora.featurize import featurize_files

    _, cut, _ = pair
    paths = qmof.cif_paths[3:5]
    first, errors = featurize_files(cut.backbone, paths, progress=False)
    assert errors == [None, None]
    # from the store (memory-mapped cut)
    again, _ = featurize_files(cut.backbone, paths, progress=False)
    for a, b in zip(first, again, strict=True):
        for k in ("cut_atom_feas", "cut_bond_feas", "cut_atom_graph"):
            np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))
    with torch.no_grad(), sampling(stochastic=False):
        y1 = cut(cut.backbone.collate(first))[0]
        y2 = cut(cut.backbone.collate(again))[0]
    assert torch.equal(y1, y2)
