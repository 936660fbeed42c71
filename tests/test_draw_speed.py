"""The fast paths of test-time draws equal their reference computations (issues 26 and 27):

- the numpy ``uint32`` Threefry of a CPU draws the very words of the torch int64 cipher, so the
  keyed normals are bit for bit the same;
- the grouped product of stacked copies (one batched product per run position) equals the loop of
  one product per run;
- the head on per-copy columns plus shared frozen columns equals the head on the built rows, and
  the sparse attention and mean pooling of inference equal torch_geometric's;
- the shipped model's prediction (T stacked draws sharing the frozen work) equals one structure and
  one draw at a time through the plain path, with noise on.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mofbalora.adapters.balora import grouped_matmul
from mofbalora.adapters.context import sampling, structure_keys
from mofbalora.adapters.noise import (
    keyed_normal,
    stream_heads,
    threefry4x32,
    threefry4x32_uint32,
)
from mofbalora.heads import BandGapHead, HeadConfig


def _torch_keyed_normal(heads: torch.Tensor, n: int) -> torch.Tensor:
    """keyed_normal as the torch int64 cipher computes it (the path of non-CPU devices)."""
    import math

    n_blocks = (n + 3) // 4
    col = [heads[:, j : j + 1] for j in range(heads.shape[1])]
    w = threefry4x32(
        (col[0], col[1], col[2], col[3]), (torch.arange(n_blocks)[None], col[4], col[5], col[6])
    )
    r1 = torch.sqrt(-2.0 * torch.log((w[0].to(torch.float64) + 1.0) / 4294967296.0))
    r2 = torch.sqrt(-2.0 * torch.log((w[2].to(torch.float64) + 1.0) / 4294967296.0))
    a1 = w[1].to(torch.float64) * (2.0 * math.pi / 4294967296.0)
    a2 = w[3].to(torch.float64) * (2.0 * math.pi / 4294967296.0)
    z = torch.stack([r1 * a1.cos(), r1 * a1.sin(), r2 * a2.cos(), r2 * a2.sin()], dim=-1)
    return z.reshape(len(heads), 4 * n_blocks)[:, :n].to(torch.float32)


@pytest.mark.parametrize(("streams", "n"), [(1, 1), (3, 7), (64, 512), (5, 70_001), (0, 4)])
def test_numpy_cipher_draws_the_same_normals_bit_for_bit(streams, n):
    gen = torch.Generator().manual_seed(streams + n)
    words = torch.randint(0, 2**32, (streams, 3), generator=gen)
    heads = stream_heads(-3, words, 2**32 - 1)
    heads[:, 4] = torch.randint(0, 2**32, (streams,), generator=gen)  # rows
    assert torch.equal(keyed_normal(heads, n), _torch_keyed_normal(heads, n))


def test_uint32_threefry_equals_the_int64_one_on_extreme_words():
    edge = torch.tensor([0, 1, 2**31 - 1, 2**31, 2**32 - 1], dtype=torch.long)
    key = [edge[:, None, None], edge[None, :, None], edge[None, None, :], 2**32 - 1]
    counter = [edge[None, None, :], 0, edge[:, None, None], 7]
    want = threefry4x32(key, counter)
    got = threefry4x32_uint32(
        [np.asarray(k, dtype=np.uint32) for k in key],
        [np.asarray(c, dtype=np.uint32) for c in counter],
    )
    for a, b in zip(got, want, strict=True):
        assert torch.equal(torch.from_numpy(a.astype(np.int64)), b)


def test_grouped_matmul_of_stacked_copies_equals_one_product_per_run():
    torch.manual_seed(0)
    sizes, copies = [5, 0, 9, 3], 4
    group = torch.repeat_interleave(torch.arange(copies * len(sizes)), torch.tensor(sizes * copies))
    x = torch.randn(len(group), 6)
    weights = torch.randn(copies * len(sizes), 3, 6)
    want = torch.stack([weights[g] @ row for g, row in zip(group, x, strict=True)])
    with torch.no_grad():
        got = grouped_matmul(x, group, weights)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # not a repeat (the last period differs): the per-run loop, the same numbers
    other = torch.repeat_interleave(
        torch.arange(copies * len(sizes)), torch.tensor(sizes * (copies - 1) + [5, 0, 9, 2])
    )
    with torch.no_grad():
        got = grouped_matmul(x[: len(other)], other, weights)
    torch.testing.assert_close(got, want[: len(other)], rtol=1e-5, atol=1e-5)


def _random_head(pooling: str, atom_mlp: int, width: int) -> BandGapHead:
    torch.manual_seed(1)
    head = BandGapHead(
        width, HeadConfig(hidden_dim=16, pooling=pooling, aleatoric=True, atom_mlp=atom_mlp)
    )
    with torch.no_grad():  # a trained-looking norm: not the identity
        for name, p in head.named_parameters():
            p.add_(torch.randn_like(p) * 0.3)
            if "atom_mlp.0.weight" in name:
                p.add_(1.0)
    return head.eval()


@pytest.mark.parametrize("pooling", ["mean_max_attention", "mean_max"])
@pytest.mark.parametrize("atom_mlp", [32, 0])
def test_head_on_shared_columns_equals_the_head_on_built_rows(pooling, atom_mlp):
    per_copy_width, shared_width, copies = 8, 40, 5
    head = _random_head(pooling, atom_mlp, per_copy_width + shared_width)
    sizes = torch.tensor([7, 1, 12])
    torch.manual_seed(2)
    shared = torch.randn(int(sizes.sum()), shared_width) * 3 + 1.5  # offset: a cancellation test
    per_copy = torch.randn(copies * len(shared), per_copy_width) + 0.5
    index = torch.repeat_interleave(torch.arange(copies * len(sizes)), sizes.repeat(copies))
    built = torch.cat([per_copy, shared.repeat(copies, 1)], dim=1)
    n = copies * len(sizes)
    with torch.no_grad():
        fast = head(per_copy, index, n, shared)
    want = head(built, index, n)  # with autograd: torch_geometric's pooling, the reference
    for got, ref in zip(fast, want, strict=True):
        torch.testing.assert_close(got, ref.detach(), rtol=2e-5, atol=2e-5)


def test_inference_pooling_takes_rows_in_any_order():
    head = _random_head("mean_max_attention", 0, 6)
    torch.manual_seed(3)
    x, index = torch.randn(30, 6), torch.randint(0, 4, (30,))
    with torch.no_grad():
        fast = head.pooling(x, index, 5)  # structure 4 has no rows (torch_geometric: zeros)
    torch.testing.assert_close(fast, head.pooling(x, index, 5).detach(), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def shipped(sample_cifs):
    from mofbalora.featurize import featurize_files
    from mofbalora.model import load_model

    model = load_model("default")
    inputs, errors = featurize_files(model.backbone, sample_cifs[:5], progress=False)
    assert all(e is None for e in errors)
    return model, inputs


def test_shipped_draws_equal_one_structure_and_one_draw_at_a_time(shipped):
    """The stacked draws (frozen columns of the head once per structure, the readout's first layer
    on one copy of its frozen input, a batched noise product) against the plain path: each
    structure alone, each draw its own forward, the head on the built 448-wide rows."""
    model, inputs = shipped
    n_samples, seed = 6, 11
    pred = model.predict_inputs(inputs, n_samples=n_samples, seed=seed)
    assert pred.epistemic_std_ev.min() > 0  # the noise is on
    want_gap, want_var = _one_at_a_time(model, inputs, n_samples, seed)
    np.testing.assert_allclose(pred.samples_ev, want_gap, rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(
        pred.aleatoric_std_ev, np.sqrt(want_var.mean(1)), rtol=1e-5, atol=2e-5
    )
    alone = model.predict_inputs(inputs[2:3], n_samples=n_samples, seed=seed)
    np.testing.assert_allclose(alone.samples_ev[0], pred.samples_ev[2], atol=2e-5)


def _one_at_a_time(model, inputs, n_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, T) gaps and aleatoric variances of each structure alone, each draw its own forward, on
    the training path of every layer (autograd on: torch_geometric's pooling, the head on built
    rows)."""
    want_gap = np.zeros((len(inputs), n_samples))
    want_var = np.zeros((len(inputs), n_samples))
    for k, x in enumerate(inputs):
        batch = model.backbone.collate([x])
        assert batch["copies"] == 1
        for t in range(n_samples):
            keys = structure_keys([x["digest"]], t)
            with (
                torch.enable_grad(),
                sampling(stochastic=True, noise_seed=seed, structure_keys=keys),
            ):
                gap, var, _ = (out.detach() for out in model(batch))
            want_gap[k, t], want_var[k, t] = gap.item(), var.item()
    return want_gap, want_var


def test_trunk_placement_draws_equal_one_structure_and_one_draw_at_a_time(qmof):
    """The last-block placement with the shipped head (all-layer features: 128 per-copy columns,
    320 shared): stacked draws against the plain path."""
    from mofbalora.adapters import AdapterConfig
    from mofbalora.data.structures import read_structure
    from mofbalora.model import build_model

    torch.manual_seed(0)
    model = build_model(
        "balora",
        backbone_options={
            "adapt": "last_block_cached",
            "features": "all_layers",
            "cut_dtype": "float32",
        },
        adapter=AdapterConfig(kind="balora", rank=4, prior_dropout=0.3, noise_scope="structure"),
        head=HeadConfig(hidden_dim=16, atom_mlp=16, pooling="mean_max_attention", aleatoric=True),
    )
    for name, p in model.named_parameters():
        if "adapter_B" in name:
            p.data.normal_(std=0.1)
    model.eval()
    inputs = model.backbone.featurize([read_structure(p) for p in qmof.cif_paths[3:6]])
    pred = model.predict_inputs(inputs, n_samples=4, seed=5)
    assert pred.epistemic_std_ev.min() > 0
    np.testing.assert_allclose(
        pred.samples_ev, _one_at_a_time(model, inputs, 4, 5)[0], rtol=1e-5, atol=2e-5
    )
