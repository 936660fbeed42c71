"""Adapters on gathered rows (``forward_gathered``): rows ``x = [a_i, b_ij, a_j]`` given as parts
and indices, with the frozen pre-activation from the caller and T stacked copies, equal the
adapter's own forward on the built, stacked rows (draw for draw), for every noise scope and
α-network."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mofbalora.adapters import BaLoRALinear, LoRALinear
from mofbalora.adapters.context import sampling, structure_keys
from mofbalora.adapters.lora import gathered_product, gathered_rows
from mofbalora.rows import frozen_pass, row_sets


def _graph(seed: int = 0):
    """Three structures of 3, 4 and 2 'atoms' and some 'bonds'; edges reference rows of their own
    structure."""
    g = torch.Generator().manual_seed(seed)
    atom_owner = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2])
    bond_owner = torch.tensor([0, 0, 1, 1, 1, 2])
    atoms, bonds = torch.randn(9, 5, generator=g), torch.randn(6, 3, generator=g)
    edges = []
    for s in range(3):
        a = torch.nonzero(atom_owner == s).squeeze(1)
        b = torch.nonzero(bond_owner == s).squeeze(1)
        for _ in range(7 + 2 * s):  # rows in structure order, as a graph batch holds them
            pick = torch.randint(0, 10**6, (3,), generator=g)
            edges.append((a[pick[0] % len(a)], b[pick[1] % len(b)], a[pick[2] % len(a)], s))
    e = torch.tensor(edges)
    return (atoms, bonds, atoms), (e[:, 0], e[:, 1], e[:, 2]), e[:, 3]


def _layer(kind: str, scope: str = "row", alpha_network: str = "probe", seed: int = 0):
    torch.manual_seed(seed)
    base = nn.Linear(13, 6)
    layer = (
        BaLoRALinear(
            base, rank=4, noise_scope=scope, alpha_network=alpha_network, prior_dropout=0.3
        )
        if kind == "balora"
        else LoRALinear(base, rank=4)
    )
    layer.set_identity("block.layer", "edge")
    with torch.no_grad():
        layer.adapter_B.normal_(std=0.3)
        if kind == "balora" and alpha_network == "probe":
            layer.adapter_alpha_w.normal_(std=0.2)
    return layer


def _both(layer, parts, index, owner, copies: int, **state):
    """(built rows through forward, gathered rows through forward_gathered), T stacked copies
    each."""
    n_structures = int(owner.max()) + 1
    stacked_owner = (owner + n_structures * torch.arange(copies)[:, None]).reshape(-1)
    keys = structure_keys(
        [f"{k:02x}" * 32 for k in range(n_structures)] * copies,
        [t for t in range(copies) for _ in range(n_structures)],
    )
    x = gathered_rows(parts, index)
    pre = x @ layer.base_layer.weight.T + layer.base_layer.bias
    logits = torch.randn(copies * n_structures, 1, generator=torch.Generator().manual_seed(5))
    with (
        row_sets(edge=stacked_owner),
        sampling(noise_seed=11, structure_keys=keys, shared_alpha_logits=logits, **state),
    ):
        built = layer(x.repeat(copies, 1))
        kl_built = layer.kl()
        gathered = layer.forward_gathered(pre, parts, index, copies)
        kl_gathered = layer.kl()
    return built, gathered, kl_built, kl_gathered


def test_gathered_product_equals_the_product_on_built_rows():
    parts, index, _ = _graph()
    w = torch.randn(4, 13)
    torch.testing.assert_close(gathered_product(parts, index, w), gathered_rows(parts, index) @ w.T)
    with pytest.raises(ValueError, match="13 columns"):
        gathered_product(parts, index, torch.randn(4, 12))


@pytest.mark.parametrize("scope", ["row", "structure", "rank_shared"])
@pytest.mark.parametrize("copies", [1, 3])
@pytest.mark.parametrize("stochastic", [False, True])
def test_balora_gathered_equals_forward_on_built_rows(scope, copies, stochastic):
    parts, index, owner = _graph()
    layer = _layer("balora", scope)
    built, gathered, kl_b, kl_g = _both(layer, parts, index, owner, copies, stochastic=stochastic)
    assert gathered.shape == (copies * len(owner), 6)
    torch.testing.assert_close(gathered, built, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(kl_g, kl_b)  # KL averaged over the rows of every copy, as forward's
    if stochastic and copies > 1:  # each copy draws its own noise
        assert not torch.allclose(
            gathered[: len(owner)], gathered[len(owner) : 2 * len(owner)], atol=1e-4
        )


@pytest.mark.parametrize("alpha_network", ["constant", "shared"])
def test_balora_gathered_alpha_networks(alpha_network):
    parts, index, owner = _graph()
    layer = _layer("balora", "row", alpha_network)
    if alpha_network == "shared":
        layer.shared_alpha_index = 0
    built, gathered, kl_b, kl_g = _both(layer, parts, index, owner, 2, stochastic=True)
    torch.testing.assert_close(gathered, built, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(kl_g, kl_b)


def test_gathered_gradients_equal_those_of_built_rows():
    parts, index, owner = _graph()
    keys = structure_keys([f"{k:02x}" * 32 for k in range(3)])
    grads = []
    for path in ("built", "gathered"):
        layer = _layer("balora", "structure")
        layer.base_layer.requires_grad_(False)
        x = gathered_rows(parts, index)
        with row_sets(edge=owner), sampling(stochastic=True, noise_seed=3, structure_keys=keys):
            out = (
                layer(x)
                if path == "built"
                else layer.forward_gathered(layer.base_layer(x), parts, index)
            )
        (out.square().sum() + layer.kl()).backward()
        grads.append({n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None})
    assert (
        set(grads[0])
        == set(grads[1])
        == {"adapter_A", "adapter_B", "adapter_alpha_w", "adapter_alpha_b"}
    )
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-4, rtol=1e-4)


def test_lora_gathered_and_merged_and_frozen_pass():
    parts, index, owner = _graph()
    layer = _layer("lora")
    built, gathered, _, _ = _both(layer, parts, index, owner, 2)
    torch.testing.assert_close(gathered, built, atol=1e-5, rtol=1e-5)
    x = gathered_rows(parts, index)
    with frozen_pass():
        base = layer.forward_gathered(
            x @ layer.base_layer.weight.T + layer.base_layer.bias, parts, index, 2
        )
    torch.testing.assert_close(base, layer.base_layer(x).repeat(2, 1))
    layer.merge()  # the caller's pre-activation then holds the update: nothing is added twice
    with torch.no_grad():
        merged = layer.forward_gathered(
            x @ layer.base_layer.weight.T + layer.base_layer.bias, parts, index
        )
    torch.testing.assert_close(merged, built[: len(x)], atol=1e-5, rtol=1e-5)


def test_merged_balora_adds_only_its_noise():
    parts, index, owner = _graph()
    layer = _layer("balora", "row")
    built, _, _, _ = _both(layer, parts, index, owner, 1, stochastic=True)
    layer.merge()
    with torch.no_grad():
        _, merged, _, _ = _both(layer, parts, index, owner, 1, stochastic=True)
    torch.testing.assert_close(merged, built, atol=1e-5, rtol=1e-5)


def test_copies_noise_equals_the_product_on_repeated_rows():
    """The structure scope's product for a prediction's stacked copies (each part row times its
    structure's weights of every copy in one product) equals the per-row product on the parts
    repeated per copy; a part row no edge reads (the last bond) changes nothing."""
    from mofbalora.adapters.balora import _copies_noise, grouped_matmul

    parts, index, owner = _graph(3)
    keep = index[1] != 5  # no edge reads bond 5 (structure 2)
    index, owner = tuple(i[keep] for i in index), owner[keep]
    copies, n = 4, len(owner)
    weights = torch.randn(copies, 3, 2, 13, generator=torch.Generator().manual_seed(1))
    got = _copies_noise(parts, index, owner, weights)
    x = gathered_rows(parts, index).repeat(copies, 1)
    group = (owner + 3 * torch.arange(copies)[:, None]).reshape(-1)
    want = grouped_matmul(x, group, weights.reshape(copies * 3, 2, 13))
    assert got.shape == (copies * n, 2)
    torch.testing.assert_close(got, want)
