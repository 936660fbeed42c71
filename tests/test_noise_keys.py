"""A structure's BaLoRA draws depend on (seed, its content, pass) only: alone, in a batch of 32 in any
order, in two processes, through a screen in chunks; and exact structure noise through the real CHGNet
graph layers (adapt='all': atoms, edges, bonds and angles as named row sets)."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def model_and_inputs(qmof, tmp_path_factory):
    from mofbalora.adapters import AdapterConfig
    from mofbalora.featurize import featurize_files
    from mofbalora.model import build_model

    torch.manual_seed(0)
    m = build_model("balora", adapter=AdapterConfig(kind="balora", rank=4, prior_dropout=0.3))
    for n, p in m.named_parameters():
        if "adapter_B" in n:
            p.data.normal_(std=0.3)
    paths = qmof.cif_paths[:32]
    inputs, errors = featurize_files(m.backbone, paths, progress=False)
    assert all(e is None for e in errors)
    folder = tmp_path_factory.mktemp("keyed") / "model"
    m.save(folder)
    return m, inputs, folder


def _predict_share(folder, inputs, cache):
    import os

    os.environ["MOFBALORA_CACHE"] = cache
    torch.set_num_threads(1)
    from mofbalora.model import load_model

    return load_model(folder).predict_inputs(inputs, n_samples=8, seed=3).samples_ev


def test_draws_equal_alone_in_a_shuffled_batch_of_32_and_in_two_processes(model_and_inputs):
    import os

    m, inputs, folder = model_and_inputs
    together = m.predict_inputs(inputs, n_samples=8, seed=3).samples_ev
    assert together.std(1).min() > 0
    order = np.random.default_rng(0).permutation(len(inputs))
    shuffled = m.predict_inputs([inputs[k] for k in order], n_samples=8, seed=3).samples_ev
    np.testing.assert_allclose(shuffled, together[order], atol=1e-5)
    for k in (0, 17, 31):
        alone = m.predict_inputs([inputs[k]], n_samples=8, seed=3).samples_ev[0]
        np.testing.assert_allclose(alone, together[k], atol=1e-5)
    other_seed = m.predict_inputs(inputs[:4], n_samples=8, seed=4).samples_ev
    assert not np.allclose(other_seed, together[:4])
    strip = [{k: v for k, v in x.items() if k in ("atom_features", "n_atoms", "digest")} for x in inputs]
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        halves = list(pool.map(_predict_share, [folder, folder], [strip[:13], strip[13:]],
                               [os.environ["MOFBALORA_CACHE"]] * 2))
    np.testing.assert_allclose(np.concatenate(halves), together, atol=1e-5)


def test_screen_rows_do_not_depend_on_chunking(model_and_inputs, qmof, tmp_path):
    from mofbalora.screen import screen

    m, _, folder = model_and_inputs
    paths = [str(p) for p in qmof.cif_paths[:12]]
    a = screen(paths, model=folder, n_samples=6, out=tmp_path / "a.csv", chunk_size=12, progress=False)
    b = screen(paths, model=folder, n_samples=6, out=tmp_path / "b.csv", chunk_size=5, progress=False)
    a, b = a.sort_values("path").reset_index(drop=True), b.sort_values("path").reset_index(drop=True)
    np.testing.assert_allclose(a["bandgap_std_ev"], b["bandgap_std_ev"], atol=1e-6)
    np.testing.assert_allclose(a["bandgap_mean_ev"], b["bandgap_mean_ev"], atol=1e-6)


def test_chgnet_graph_layers_get_their_own_row_sets(qmof):
    """adapt='all': every adapted CHGNet layer finds its row set with exactly its input rows (a wrong rule
    would raise), and a structure's draws are the same alone and beside another structure."""
    from mofbalora.adapters import AdapterConfig
    from mofbalora.adapters.context import sampling, structure_keys
    from mofbalora.adapters.inject import adapter_layers
    from mofbalora.data.structures import read_structure
    from mofbalora.model import build_model

    torch.manual_seed(0)
    m = build_model("balora", backbone_options={"adapt": "all"}, adapter=AdapterConfig(kind="balora", rank=2))
    sets = {layer.row_set for _, layer in adapter_layers(m.backbone)}
    assert sets == {"atom", "edge", "bond", "angle"}
    for n, p in m.named_parameters():
        if "adapter_B" in n:
            p.data.normal_(std=0.05)
    structures = [read_structure(p) for p in qmof.cif_paths[:2]]
    inputs = m.backbone.featurize(structures)
    digests = ["ab" * 32, "cd" * 32]

    def run(idx):
        with torch.no_grad(), sampling(stochastic=True, noise_seed=5, structure_keys=structure_keys([digests[i] for i in idx])):
            return m(m.backbone.collate([inputs[i] for i in idx]))[0]

    both = run([0, 1])
    np.testing.assert_allclose(run([1])[0].item(), both[1].item(), atol=1e-4)
    np.testing.assert_allclose(run([1, 0])[1].item(), both[0].item(), atol=1e-4)
