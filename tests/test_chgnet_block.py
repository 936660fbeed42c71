"""The cut's last block without built edge messages (mofbalora/backbones/chgnet_block.py) against
CHGNet's own ``AtomConv`` on the same cut (the reference computation): outputs, KL and gradients,
with and without noise, for each noise scope; T stacked draws against one draw at a time; a batch
against one structure at a time. (tests/test_cut_cache.py checks the cut against the full trunk.)"""

from __future__ import annotations

import pytest
import torch

from mofbalora.adapters import AdapterConfig, total_kl
from mofbalora.adapters.balora import BaLoRALinear
from mofbalora.adapters.context import sampling, structure_keys

DIGESTS = ["1a" * 32, "2b" * 32, "3c" * 32]


@pytest.fixture(scope="module")
def cut_model(qmof):
    from mofbalora.data.structures import read_structure
    from mofbalora.model import build_model

    torch.manual_seed(0)
    m = build_model(
        "balora",
        backbone_options={"adapt": "last_block_cached"},
        adapter=AdapterConfig(kind="balora", rank=4, prior_dropout=0.3),
    )
    torch.manual_seed(1)
    for n, p in m.named_parameters():
        if "adapter_" in n:
            p.data.normal_(std=0.1)
    inputs = m.backbone.featurize([read_structure(p) for p in qmof.cif_paths[3:6]])
    for x, d in zip(inputs, DIGESTS, strict=True):
        x["digest"] = d
    return m, inputs


def _set_scope(model, scope: str) -> None:
    for mod in model.modules():
        if isinstance(mod, BaLoRALinear):
            mod.noise_scope = scope


def _run(
    model,
    inputs,
    *,
    fast: bool,
    stochastic: bool,
    passes: list[int] | None = None,
    grad: bool = False,
):
    """(gaps, KL, gradients of the adapters) of one forward; ``passes``: the pass index of each
    input."""
    model.backbone.fast_block = fast
    model.zero_grad(set_to_none=True)
    keys = structure_keys([x["digest"] for x in inputs], passes if passes is not None else 0)
    try:
        with (
            torch.set_grad_enabled(grad),
            sampling(stochastic=stochastic, noise_seed=9, structure_keys=keys),
        ):
            gap = model(model.backbone.collate(inputs))[0]
            kl = total_kl(model)
        if grad:
            (gap.square().sum() + kl).backward()
    finally:
        model.backbone.fast_block = True
    grads = {
        n: p.grad.clone()
        for n, p in model.named_parameters()
        if p.grad is not None and "adapter_" in n
    }
    return gap.detach(), kl.detach(), grads


@pytest.mark.parametrize("scope", ["row", "structure", "rank_shared"])
@pytest.mark.parametrize("stochastic", [False, True])
def test_fast_block_equals_chgnet_module(cut_model, scope, stochastic):
    model, inputs = cut_model
    _set_scope(model, scope)
    try:
        ref = _run(model, inputs, fast=False, stochastic=stochastic, grad=True)
        fast = _run(model, inputs, fast=True, stochastic=stochastic, grad=True)
    finally:
        _set_scope(model, "row")
    torch.testing.assert_close(fast[0], ref[0], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(fast[1], ref[1], rtol=1e-5, atol=0)
    assert set(fast[2]) == set(ref[2]) and any(".atom_conv_layers.3." in n for n in fast[2])
    for name, g in ref[2].items():  # to float round-off relative to the gradient's scale
        torch.testing.assert_close(
            fast[2][name], g, atol=1e-5 * float(g.abs().max()), rtol=1e-4, msg=name
        )


@pytest.mark.parametrize("scope", ["row", "structure"])
def test_stacked_draws_equal_one_draw_at_a_time(cut_model, scope):
    model, inputs = cut_model
    _set_scope(model, scope)
    try:
        t = 3
        passes = [p for p in range(t) for _ in inputs]
        stacked = _run(model, inputs * t, fast=True, stochastic=True, passes=passes)[0].view(t, -1)
        reference = _run(model, inputs * t, fast=False, stochastic=True, passes=passes)[0].view(
            t, -1
        )
        alone = torch.stack(
            [
                _run(model, inputs, fast=True, stochastic=True, passes=[p] * len(inputs))[0]
                for p in range(t)
            ]
        )
    finally:
        _set_scope(model, "row")
    assert model.backbone.collate(inputs * t)["copies"] == t
    torch.testing.assert_close(stacked, alone, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(stacked, reference, atol=2e-5, rtol=1e-5)
    assert not torch.allclose(stacked[0], stacked[1], atol=1e-4)  # the passes draw differently


@pytest.mark.parametrize("scope", ["row", "structure"])
@pytest.mark.parametrize(("tile_rows", "tile_threads"), [(1, 1), (700, 1), (10**6, 1), (700, 2)])
def test_inference_tiles_equal_the_untiled_chain(
    cut_model, scope, tile_rows, tile_threads, monkeypatch
):
    """Inference's tiles (of whole structures, one copy at a time) give the untiled draws: tiles of
    one structure (1 row asked), of a few, of every structure of a copy; the copies shared by two
    threads too, which leaves the caller's intra-op threads and grad mode as they were."""
    from mofbalora.backbones import chgnet_block as block

    monkeypatch.setattr(block, "INFERENCE_TILE_THREADS", tile_threads)
    threads = torch.get_num_threads()

    model, inputs = cut_model
    _set_scope(model, scope)
    t = 3
    passes = [p for p in range(t) for _ in inputs]
    try:
        monkeypatch.setattr(block, "TILED_INFERENCE", False)
        untiled = _run(model, inputs * t, fast=True, stochastic=True, passes=passes)[0]
        monkeypatch.setattr(block, "TILED_INFERENCE", True)
        monkeypatch.setattr(block, "INFERENCE_TILE_ROWS", tile_rows)
        tiled = _run(model, inputs * t, fast=True, stochastic=True, passes=passes)[0]
        mean = _run(model, inputs * t, fast=True, stochastic=False)[0]
    finally:
        _set_scope(model, "row")
    torch.testing.assert_close(tiled, untiled, atol=2e-5, rtol=1e-5)
    assert not torch.allclose(tiled, mean, atol=1e-4)  # the draws are noisy
    assert torch.get_num_threads() == threads and torch.is_grad_enabled()


def test_tiles_never_split_a_structure(monkeypatch):
    from mofbalora.backbones import chgnet_block as block

    owner = torch.tensor([0] * 5 + [1] * 3 + [2] * 9 + [3] * 2)
    monkeypatch.setattr(block, "INFERENCE_TILE_ROWS", 8)
    assert block._tiles(owner, 19) == [(0, 8), (8, 17), (17, 19)]
    monkeypatch.setattr(block, "INFERENCE_TILE_ROWS", 1)
    assert block._tiles(owner, 19) == [(0, 5), (5, 8), (8, 17), (17, 19)]
    assert block._tiles(None, 19) == [(k, k + 1) for k in range(19)]
    monkeypatch.setattr(block, "INFERENCE_TILE_ROWS", 100)
    assert block._tiles(owner, 19) == [(0, 19)]


def test_a_batch_equals_one_structure_at_a_time(cut_model):
    model, inputs = cut_model
    batched = _run(model, inputs, fast=True, stochastic=True)[0]
    alone = torch.cat([_run(model, [x], fast=True, stochastic=True)[0] for x in inputs])
    torch.testing.assert_close(batched, alone, atol=2e-5, rtol=1e-5)


def test_prediction_draws_do_not_depend_on_how_copies_are_stacked(cut_model):
    model, inputs = cut_model
    model.eval()
    one_copy = model.predict_inputs(inputs, n_samples=4, seed=3, max_rows=1)  # one draw per forward
    # all four in one forward
    all_copies = model.predict_inputs(inputs, n_samples=4, seed=3, max_rows=10**6)
    assert one_copy.samples_ev.shape == (3, 4)
    assert abs(one_copy.samples_ev - all_copies.samples_ev).max() < 1e-4
    assert one_copy.epistemic_std_ev.min() > 0


def test_collate_detects_only_object_for_object_repeats(cut_model):
    model, inputs = cut_model
    collate = model.backbone.collate
    assert collate(inputs * 2)["copies"] == 2
    assert collate([inputs[0], inputs[0]])["copies"] == 2
    assert collate(inputs + inputs[:2])["copies"] == 1
    # equal content, not the same object
    assert collate([inputs[0], dict(inputs[0])])["copies"] == 1
    batch = collate(inputs * 2)
    assert len(batch["n_atoms"]) == 6 and len(batch["structure_index"]) == 2 * sum(
        x["n_atoms"] for x in inputs
    )
    assert model.backbone.structure_descriptor(batch).shape == (6, 64)


def test_denormals_are_flushed_inside_the_block_and_the_mode_restored_after():
    from mofbalora.backbones.chgnet_block import denormals_flushed

    def flushing() -> bool:
        return bool(torch.tensor(1e-30) * 1e-10 == 0)

    assert not flushing()
    with denormals_flushed():
        assert flushing()
    assert not flushing()
    torch.set_flush_denormal(True)
    try:
        with denormals_flushed():
            assert flushing()
        assert flushing()  # a mode the caller set stays set
    finally:
        torch.set_flush_denormal(False)


def test_flushing_denormals_does_not_change_the_draws(cut_model):
    """The block's first SiLUs run deep into exp's underflow (the pretrained pre-activations are
    large); flushing the subnormals there changes the draws only below float round-off."""
    import mofbalora.backbones.chgnet_block as block

    model, inputs = cut_model
    passes = [p for p in range(3) for _ in inputs]
    flushed = _run(model, inputs * 3, fast=True, stochastic=True, passes=passes)[0]
    block.FLUSH_DENORMALS = False
    try:
        plain = _run(model, inputs * 3, fast=True, stochastic=True, passes=passes)[0]
    finally:
        block.FLUSH_DENORMALS = True
    torch.testing.assert_close(flushed, plain, atol=1e-6, rtol=1e-6)


def test_the_draw_cap_replaces_the_batch_cap_for_stacked_draws(cut_model, monkeypatch):
    """Prediction stacks a chunk's T copies up to the backbone's ``max_draw_atoms`` (the trunk
    placement's tiles make more copies per pass pay), not its ``max_batch_atoms``; the draws do not
    change."""
    from mofbalora import prediction

    model, inputs = cut_model
    model.eval()
    assert model.backbone.max_draw_atoms > model.backbone.max_batch_atoms
    seen = []
    real = prediction.draw_groups

    def spy(sizes, n_samples, max_rows):
        seen.append(max_rows)
        return real(sizes, n_samples, max_rows)

    monkeypatch.setattr(prediction, "draw_groups", spy)
    wide = model.predict_inputs(inputs, n_samples=4, seed=3)
    assert seen and set(seen) == {model.backbone.max_draw_atoms}
    monkeypatch.setattr(model.backbone, "max_draw_atoms", None)
    seen.clear()
    narrow = model.predict_inputs(inputs, n_samples=4, seed=3)
    assert set(seen) == {model.backbone.max_batch_atoms}
    assert abs(wide.samples_ev - narrow.samples_ev).max() < 1e-4
