"""A structure's BaLoRA draws depend on (seed, its content, pass) only: alone, in a batch of 32 in
any order, in two processes, through a screen in chunks; and exact structure noise through the real
CHGNet graph layers (adapt='all': atoms, edges, bonds and angles as named row sets)."""

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
    strip = [
        {k: v for k, v in x.items() if k in ("atom_features", "n_atoms", "digest")} for x in inputs
    ]
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        halves = list(
            pool.map(
                _predict_share,
                [folder, folder],
                [strip[:13], strip[13:]],
                [os.environ["MOFBALORA_CACHE"]] * 2,
            )
        )
    np.testing.assert_allclose(np.concatenate(halves), together, atol=1e-5)


def test_screen_rows_do_not_depend_on_chunking(model_and_inputs, qmof, tmp_path):
    from mofbalora.screen import screen

    m, _, folder = model_and_inputs
    paths = [str(p) for p in qmof.cif_paths[:12]]
    a = screen(
        paths, model=folder, n_samples=6, out=tmp_path / "a.csv", chunk_size=12, progress=False
    )
    b = screen(
        paths, model=folder, n_samples=6, out=tmp_path / "b.csv", chunk_size=5, progress=False
    )
    a, b = (
        a.sort_values("path").reset_index(drop=True),
        b.sort_values("path").reset_index(drop=True),
    )
    np.testing.assert_allclose(a["bandgap_std_ev"], b["bandgap_std_ev"], atol=1e-6)
    np.testing.assert_allclose(a["bandgap_mean_ev"], b["bandgap_mean_ev"], atol=1e-6)


def test_chgnet_graph_layers_get_their_own_row_sets(qmof):
    """adapt='all': every adapted CHGNet layer finds its row set with exactly its input rows (a
    wrong rule would raise), and a structure's draws are the same alone and beside another
    structure."""
    from mofbalora.adapters import AdapterConfig
    from mofbalora.adapters.context import sampling, structure_keys
    from mofbalora.adapters.inject import adapter_layers
    from mofbalora.data.structures import read_structure
    from mofbalora.model import build_model

    torch.manual_seed(0)
    m = build_model(
        "balora", backbone_options={"adapt": "all"}, adapter=AdapterConfig(kind="balora", rank=2)
    )
    sets = {layer.row_set for _, layer in adapter_layers(m.backbone)}
    assert sets == {"atom", "edge", "bond", "angle"}
    for n, p in m.named_parameters():
        if "adapter_B" in n:
            p.data.normal_(std=0.05)
    structures = [read_structure(p) for p in qmof.cif_paths[:2]]
    inputs = m.backbone.featurize(structures)
    digests = ["ab" * 32, "cd" * 32]

    def run(idx):
        with (
            torch.no_grad(),
            sampling(
                stochastic=True,
                noise_seed=5,
                structure_keys=structure_keys([digests[i] for i in idx]),
            ),
        ):
            return m(m.backbone.collate([inputs[i] for i in idx]))[0]

    both = run([0, 1])
    np.testing.assert_allclose(run([1])[0].item(), both[1].item(), atol=1e-4)
    np.testing.assert_allclose(run([1, 0])[1].item(), both[0].item(), atol=1e-4)


# -- the counter-based generator: Threefry-4x32, every field unchanged into the cipher -------------
def test_threefry4x32_matches_the_random123_known_answers():
    from mofbalora.adapters.noise import threefry4x32

    kat = [
        ((0, 0, 0, 0), (0, 0, 0, 0), (0x9C6CA96A, 0xE17EAE66, 0xFC10ECD4, 0x5256A7D8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 4, (0x2A881696, 0x57012287, 0xF6C7446E, 0xA16A6732)),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0, 0x082EFA98, 0xEC4E6C89),
            (0x59CD1DBB, 0xB8879579, 0x86B5D00C, 0xAC8B6D84),
        ),
    ]
    for counter, key, expected in kat:  # Random123's kat_vectors: counter, key, output
        out = threefry4x32(
            tuple(torch.tensor([k]) for k in key), tuple(torch.tensor([c]) for c in counter)
        )
        assert [int(o) for o in out] == list(expected)


def _old_stream_heads(seed, words, layer_key):
    """The scheme before issue 29: seed, structure, pass and layer folded into one 32-bit head."""
    m32 = 0xFFFFFFFF

    def mul32(x, c):
        return ((((x * (c >> 16)) & 0xFFFF) << 16) + x * (c & 0xFFFF)) & m32

    def mix32(x):
        x = x ^ (x >> 16)
        x = mul32(x, 0x7FEB352D)
        x = x ^ (x >> 15)
        x = mul32(x, 0x846CA68B)
        return x ^ (x >> 16)

    def absorb(h, w):
        return mix32((h + 0x9E3779B9) & m32 ^ (torch.as_tensor(w, dtype=torch.long) & m32))

    h = torch.full((words.shape[0],), seed & m32, dtype=torch.long)
    h = absorb(h, seed >> 32 & m32)
    for j in range(words.shape[1]):
        h = absorb(h, words[:, j])
    before_layer = h.clone()
    return absorb(h, layer_key & m32), before_layer


def test_the_pair_that_collided_in_one_32_bit_head_now_draws_different_normals():
    """Two distinct (seed, structure, pass, layer) tuples built to share the old 32-bit head (the
    issue found 4 such pairs among 175,296 heads of one evaluation): the old scheme gave them the
    same normals; the keyed cipher gives them different ones, and every field reaches it
    unchanged."""
    from mofbalora.adapters.noise import STREAM_WORDS, keyed_normal, stream_heads, with_row

    structure = (0x1A2B3C4D, 0x5E6F7081)
    words_a = torch.tensor([[*structure, 0]])
    words_b = torch.tensor([[*structure, 1]])  # the next pass
    layer_a = 0x0BADF00D
    _, ha = _old_stream_heads(7, words_a, 0)
    _, hb = _old_stream_heads(7, words_b, 0)
    c = 0x9E3779B9
    layer_b = layer_a ^ ((int(ha) + c) & 0xFFFFFFFF) ^ ((int(hb) + c) & 0xFFFFFFFF)
    old_a, _ = _old_stream_heads(7, words_a, layer_a)
    old_b, _ = _old_stream_heads(7, words_b, layer_b)
    assert int(old_a) == int(old_b) and layer_a != layer_b  # one head: the same normals, before

    new_a, new_b = stream_heads(7, words_a, layer_a), stream_heads(7, words_b, layer_b)
    za, zb = (
        keyed_normal(new_a, 512, dtype=torch.float64),
        keyed_normal(new_b, 512, dtype=torch.float64),
    )
    assert not torch.isclose(za, zb).any()
    # the stream is the tuple itself: structure, seed, row, pass and layer words, each exact
    assert STREAM_WORDS == (
        "structure_hi",
        "structure_lo",
        "seed_hi",
        "seed_lo",
        "row",
        "pass",
        "layer",
    )
    assert new_a.tolist() == [[*structure, 0, 7, 0, 0, layer_a]]
    assert new_b.tolist() == [[*structure, 0, 7, 0, 1, layer_b]]
    big = stream_heads(2**64 - 1, words_a, layer_a)
    assert big[0, 2:4].tolist() == [0xFFFFFFFF, 0xFFFFFFFF]
    assert stream_heads(-1, words_a, layer_a).tolist() == big.tolist()  # a negative seed: mod 2^64
    with pytest.raises(ValueError, match="below 2\\*\\*64"):
        stream_heads(2**64, words_a, layer_a)
    assert with_row(new_a, 5)[0, 4] == 5
    with pytest.raises(ValueError, match="row positions"):
        with_row(new_a, 2**32)


def test_changing_any_one_field_changes_every_draw():
    from mofbalora.adapters.noise import keyed_normal, stream_heads, with_row

    base = stream_heads(3, torch.tensor([[11, 22, 4]]), 99)
    variants = [
        stream_heads(4, torch.tensor([[11, 22, 4]]), 99),
        stream_heads(3 + 2**32, torch.tensor([[11, 22, 4]]), 99),
        stream_heads(3, torch.tensor([[12, 22, 4]]), 99),
        stream_heads(3, torch.tensor([[11, 23, 4]]), 99),
        stream_heads(3, torch.tensor([[11, 22, 5]]), 99),
        stream_heads(3, torch.tensor([[11, 22, 4]]), 100),
        with_row(base, 1),
    ]
    z = keyed_normal(base, 64, dtype=torch.float64)
    for v in variants:
        assert not torch.isclose(keyed_normal(v, 64, dtype=torch.float64), z).any()
    # elements: a longer stream extends a shorter one (element j depends on j only)
    assert torch.equal(
        keyed_normal(base, 7, dtype=torch.float64),
        keyed_normal(base, 64, dtype=torch.float64)[:, :7],
    )


# -- content keys: the Python quick start draws the same numbers in any list order -----------------
def test_content_digest_is_invariant_to_atom_order_rotation_and_translation(qmof):
    from pymatgen.core import Structure

    from mofbalora.data.content_key import structure_content_digest
    from mofbalora.data.structures import read_structure

    s = read_structure(qmof.cif_paths[0])
    key = structure_content_digest(s)
    order = np.random.default_rng(0).permutation(len(s))
    shuffled = Structure.from_sites([s[int(i)] for i in order])
    assert structure_content_digest(shuffled) == key
    shifted = Structure(s.lattice, s.species, s.frac_coords + np.array([1.0, -1.0, 0.0]))
    assert structure_content_digest(shifted) == key
    translated = Structure(s.lattice, s.species, (s.frac_coords + [0.31, 0.17, 0.73]) % 1.0)
    assert structure_content_digest(translated) == key
    from pymatgen.core import Lattice
    from scipy.spatial.transform import Rotation

    rotated = Structure(
        Lattice(s.lattice.matrix @ Rotation.random(random_state=1).as_matrix().T),
        s.species,
        s.frac_coords,
    )
    assert structure_content_digest(rotated) == key
    moved = s.copy()
    moved.translate_sites([0], [0.01, 0.0, 0.0])
    assert structure_content_digest(moved) != key
    swapped = s.copy()
    swapped.replace(0, "Cl" if s[0].species_string != "Cl" else "Br")
    assert structure_content_digest(swapped) != key
    assert structure_content_digest(read_structure(qmof.cif_paths[1])) != key
    with pytest.raises(TypeError, match="periodic pymatgen Structure"):
        structure_content_digest("not a structure")


def test_python_quick_start_draws_do_not_depend_on_list_order(model_and_inputs, qmof):
    """``model.predict_inputs(model.backbone.featurize([...]))`` (no files, so no file digest): each
    input carries its structure's content key, and a structure draws the same numbers at any
    position, alone or in a list, with its atoms in any order."""
    from pymatgen.core import Structure

    from mofbalora.data.content_key import structure_content_digest
    from mofbalora.data.structures import read_structure

    m, _, _ = model_and_inputs
    a, b, c = (read_structure(p) for p in qmof.cif_paths[:3])
    feats = m.backbone.featurize([a, b, c])
    assert [x["digest"] for x in feats] == [structure_content_digest(s) for s in (a, b, c)]
    together = m.predict_inputs(feats, n_samples=6, seed=3).samples_ev
    assert together.std(1).min() > 0
    reordered = m.predict_inputs(m.backbone.featurize([c, a, b]), n_samples=6, seed=3).samples_ev
    np.testing.assert_allclose(reordered, together[[2, 0, 1]], atol=1e-5)
    # atoms in reverse order: the same content key, so under the ``structure`` scope (one weight
    # draw per structure; ``row`` keys each atom's own noise by its position) the same draws
    from mofbalora.adapters.balora import BaLoRALinear

    layers = [mod for mod in m.modules() if isinstance(mod, BaLoRALinear)]
    scopes = [layer.noise_scope for layer in layers]
    try:
        for layer in layers:
            layer.noise_scope = "structure"
        ref = m.predict_inputs(m.backbone.featurize([b, a]), n_samples=6, seed=3).samples_ev[1]
        a_reversed = Structure.from_sites(list(a)[::-1])
        alone = m.predict_inputs(
            m.backbone.featurize([a_reversed]), n_samples=6, seed=3
        ).samples_ev[0]
    finally:
        for layer, scope in zip(layers, scopes, strict=True):
            layer.noise_scope = scope
    np.testing.assert_allclose(alone, ref, atol=1e-5)
    # two different structures, each first in its own call, no longer share the position-0 key
    from mofbalora.adapters.context import structure_keys

    keys = [structure_keys([m.backbone.featurize([s])[0]["digest"]]) for s in (a, b)]
    assert not torch.equal(keys[0], keys[1])
