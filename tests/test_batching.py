"""Evaluation batches capped by atoms (Backbone.max_batch_atoms), used by prediction and
validation."""

from __future__ import annotations

from mofbalora.backbones.base import atom_capped_batches


def test_batches_respect_the_count_and_the_atom_cap_and_keep_order():
    inputs = [{"n_atoms": n, "k": k} for k, n in enumerate([30, 50, 10, 200, 5, 5, 5])]
    batches = atom_capped_batches(inputs, batch_size=3, max_atoms=60)
    assert [[x["k"] for x in b] for b in batches] == [[0], [1, 2], [3], [4, 5, 6]]
    # an input larger than the cap is alone; no other batch goes over the cap or the count
    assert all(len(b) <= 3 and (len(b) == 1 or sum(x["n_atoms"] for x in b) <= 60) for b in batches)
    assert [[x["k"] for x in b] for b in atom_capped_batches(inputs, batch_size=3)] == [
        [0, 1, 2],
        [3, 4, 5],
        [6],
    ]
    assert atom_capped_batches([], batch_size=4, max_atoms=10) == []
