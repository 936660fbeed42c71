"""JMP backbone (GemNet-OC in plain torch): checkpoint layout, loading errors, round trip,
invariances, BaLoRA fine-tuning on QMOF structures."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from mofbalora.backbones.jmp import JMPBackbone, JMPCheckpointError

TINY = {"size": "tiny", "cutoff": 5.0, "max_neighbors": 10}


def _backbone(**kw) -> JMPBackbone:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return JMPBackbone(**{**TINY, **kw})


def jmp_s_checkpoint_layout() -> dict[str, tuple[int, ...]]:
    """Parameter and buffer names and shapes of a JMP-S pretraining checkpoint (embedding +
    backbone).

    Source: the JMP code (facebookresearch/JMP, commit 2a130db): ``BackboneConfig.base()`` in
    src/jmp/models/gemnet/config.py for the sizes; the module tree of ``GemNetOCBackbone``
    (backbone.py), ``Bases`` (bases.py), ``InteractionBlock``/``TripletInteraction``/
    ``QuadrupletInteraction``/``PairInteraction`` (layers/interaction_block.py),
    ``AtomUpdateBlock``/ ``OutputBlock`` (layers/atom_update_block.py), ``Dense``/``ResidualLayer``
    (layers/base_layers.py), ``BasisEmbedding``/``EfficientInteractionBilinear``
    (layers/efficient.py), ``ScaleFactor`` (modules/scaling/scale_factor.py: a 0-d buffer) and
    ``GaussianBasis`` (offset/temps buffers); the embedding name ``embedding.atom_embedding`` from
    JMP's fine-tuning scripts. Pretraining used direct forces, so the force outputs (``out_mlp_F``,
    ``seq_forces``, ``dense_rbf_F``, ``scale_rbf_F``) are in the checkpoint too. Written out here by
    hand, independently of mofbalora's module code.
    """
    A, E, R, NS, NB = 256, 512, 128, 7, 4
    rbf, cbf, sbf = 16, 16, 32
    t_in, t_out, q_in, q_out, a_in, a_out = 64, 64, 32, 32, 64, 64
    L: dict[str, tuple[int, ...]] = {"embedding.atom_embedding.weight": (120, A)}
    b = "backbone."

    def dense(name, n_out, n_in):
        L[f"{name}.linear.weight"] = (n_out, n_in)

    def residual(name, units):
        for k in range(2):
            dense(f"{name}.dense_mlp.{k}", units, units)

    def scale(name):
        L[f"{name}.scale_factor"] = ()

    for basis in (
        "radial_basis",
        "cbf_basis_qint.radial_basis",
        "sbf_basis_qint.radial_basis",
        "radial_basis_aeaint",
        "cbf_basis_aeint.radial_basis",
        "cbf_basis_eaint.radial_basis",
        "radial_basis_aint",
        "cbf_basis_tint.radial_basis",
    ):
        L[f"{b}bases.{basis}.rbf.offset"] = (R,)
        L[f"{b}bases.{basis}.rbf.temps"] = (R,)
    for name in ("qint", "aeint", "eaint", "tint"):
        dense(f"{b}bases.mlp_rbf_{name}", rbf, R)
        L[f"{b}bases.mlp_cbf_{name}.weight"] = (R, NS, cbf)
    L[f"{b}bases.mlp_sbf_qint.weight"] = (R, NS * NS, sbf)
    L[f"{b}bases.mlp_rbf_aint.weight"] = (rbf, R)
    dense(f"{b}bases.mlp_rbf_h", rbf, R)
    dense(f"{b}bases.mlp_rbf_out", rbf, R)
    dense(f"{b}bases.edge_emb.dense", E, 2 * A + R)

    def triplet(p, n_in, n_out, symmetric):
        dense(f"{p}.dense_ba", n_in, n_in)
        dense(f"{p}.mlp_rbf", n_in, rbf)
        scale(f"{p}.scale_rbf")
        dense(f"{p}.mlp_cbf.bilinear", t_out, t_in * cbf)
        scale(f"{p}.scale_cbf_sum")
        dense(f"{p}.down_projection", t_in, n_in)
        dense(f"{p}.up_projection_ca", n_out, t_out)
        if symmetric:
            dense(f"{p}.up_projection_ac", n_out, t_out)

    def atom_update(p, n_hidden):
        dense(f"{p}.dense_rbf", E, rbf)
        scale(f"{p}.scale_sum")
        dense(f"{p}.layers.0", A, E)
        for k in range(1, n_hidden + 1):
            residual(f"{p}.layers.{k}", A)

    for i in range(NB):
        p = f"{b}int_blocks.{i}"
        dense(f"{p}.dense_ca", E, E)
        triplet(f"{p}.trip_interaction", E, E, True)
        q = f"{p}.quad_interaction"
        dense(f"{q}.dense_db", E, E)
        dense(f"{q}.mlp_rbf", E, rbf)
        scale(f"{q}.scale_rbf")
        dense(f"{q}.mlp_cbf", q_in, cbf)
        scale(f"{q}.scale_cbf")
        dense(f"{q}.mlp_sbf.bilinear", q_out, q_in * sbf)
        scale(f"{q}.scale_sbf_sum")
        dense(f"{q}.down_projection", q_in, E)
        dense(f"{q}.up_projection_ca", E, q_out)
        dense(f"{q}.up_projection_ac", E, q_out)
        triplet(f"{p}.atom_edge_interaction", A, E, True)
        triplet(f"{p}.edge_atom_interaction", E, A, False)
        dense(f"{p}.atom_interaction.bilinear", a_out, rbf * a_in)
        scale(f"{p}.atom_interaction.scale_rbf_sum")
        dense(f"{p}.atom_interaction.down_projection", a_in, A)
        dense(f"{p}.atom_interaction.up_projection", A, a_out)
        for k in range(2):
            residual(f"{p}.layers_before_skip.{k}", E)
            residual(f"{p}.layers_after_skip.{k}", E)
            residual(f"{p}.atom_emb_layers.{k}", A)
        atom_update(f"{p}.atom_update", 3)
        dense(f"{p}.concat_layer.dense", E, 2 * A + E)
        residual(f"{p}.residual_m.0", E)
    for i in range(NB + 1):
        p = f"{b}out_blocks.{i}"
        for alias in ("layers", "seq_energy_pre"):  # one ModuleList registered under two names
            dense(f"{p}.{alias}.0", A, E)
            for k in range(1, 4):
                residual(f"{p}.{alias}.{k}", A)
        dense(f"{p}.dense_rbf", E, rbf)
        scale(f"{p}.scale_sum")
        for k in range(3):
            residual(f"{p}.seq_energy2.{k}", A)
            residual(f"{p}.seq_forces.{k}", E)
        scale(f"{p}.scale_rbf_F")
        dense(f"{p}.dense_rbf_F", E, rbf)
    dense(f"{b}out_mlp_E.out_mlp.0", A, A * (NB + 1))
    dense(f"{b}out_mlp_F.out_mlp.0", E, E * (NB + 1))
    for k in (1, 2):
        residual(f"{b}out_mlp_E.out_mlp.{k}", A)
        residual(f"{b}out_mlp_F.out_mlp.{k}", E)
    return L


def test_jmp_s_checkpoint_layout_loads_key_by_key(tmp_path):
    layout = jmp_s_checkpoint_layout()
    g = torch.Generator().manual_seed(1)
    state = {k: torch.randn(shape, generator=g) for k, shape in layout.items()}
    # pretraining heads: not part of the backbone
    state["output.out_mlps.0.0.weight"] = torch.randn(4, 4)
    path = tmp_path / "jmp-s.pt"
    torch.save({"state_dict": state, "epoch": 0}, path)
    bb = JMPBackbone(checkpoint=str(path), size="s")
    model_keys = set(bb.state_dict())
    force_keys = {
        k
        for k in layout
        if "out_mlp_F" in k or any(f in k for f in ("seq_forces", "dense_rbf_F", "scale_rbf_F"))
    }
    assert force_keys and model_keys == set(layout) - force_keys
    own = bb.state_dict()
    for k in (
        "embedding.atom_embedding.weight",
        "backbone.int_blocks.3.quad_interaction.mlp_sbf.bilinear.linear.weight",
        "backbone.bases.mlp_sbf_qint.weight",
        "backbone.out_blocks.4.seq_energy2.2.dense_mlp.1.linear.weight",
        "backbone.int_blocks.0.atom_interaction.scale_rbf_sum.scale_factor",
    ):
        assert torch.equal(own[k], state[k]), k
    assert bb.name == "jmp-s" and bb.embedding_dim == 256
    assert sum(p.numel() for p in bb.parameters()) > 20_000_000
    assert not any(p.requires_grad for p in bb.parameters())


def test_checkpoint_that_does_not_fit_names_missing_unexpected_and_misshaped_keys(tmp_path):
    state = _backbone().state_dict()
    state.pop("backbone.int_blocks.1.dense_ca.linear.weight")
    state["backbone.int_blocks.1.not_a_layer.weight"] = torch.zeros(3)
    state["backbone.bases.mlp_rbf_h.linear.weight"] = torch.zeros(5, 5)
    path = tmp_path / "bad.pt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(JMPCheckpointError) as err:
        JMPBackbone(checkpoint=str(path), **TINY)
    msg = str(err.value)
    assert "missing 1" in msg and "int_blocks.1.dense_ca.linear.weight" in msg
    assert "unexpected 1" in msg and "not_a_layer" in msg
    assert "shape mismatch 1" in msg and "mlp_rbf_h.linear.weight: checkpoint (5, 5)" in msg
    with pytest.raises(ValueError, match="unknown JMP size 'xl'"):
        JMPBackbone(size="xl")
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        JMPBackbone(checkpoint=str(tmp_path / "nowhere.pt"), **TINY)


@pytest.fixture(scope="module")
def structures(qmof):
    from mofbalora.data.splits import load_split

    ids = load_split("qmof_v1")["train"][:3]
    return [qmof.structure(i) for i in ids]


def test_checkpoint_pickling_classes_of_an_absent_package_loads_only_when_trusted(
    tmp_path, monkeypatch
):
    """JMP's Lightning checkpoints pickle its pydantic configs (package ``jmp``, not installed
    here): refused without the trust switch, read with placeholders for the absent classes with
    it."""
    import sys
    import types

    from mofbalora.backbones.checkpoint import UntrustedCheckpointError

    fake = types.ModuleType("jmp_fake_config")

    class BackboneConfig:  # stands for a class of the absent package
        def __init__(self):
            self.emb_size_atom = 32

    BackboneConfig.__module__, BackboneConfig.__qualname__ = "jmp_fake_config", "BackboneConfig"
    fake.BackboneConfig = BackboneConfig
    monkeypatch.setitem(sys.modules, "jmp_fake_config", fake)
    state = _backbone(seed=2).state_dict()
    path = tmp_path / "lightning.pt"
    torch.save({"state_dict": state, "hyper_parameters": {"backbone": BackboneConfig()}}, path)
    monkeypatch.delitem(sys.modules, "jmp_fake_config")
    with pytest.raises(
        UntrustedCheckpointError, match=r"lightning\.pt.*backbone\.trust_checkpoint=true"
    ):
        _backbone(checkpoint=str(path))
    loaded = _backbone(checkpoint=str(path), trust_checkpoint=True)
    assert torch.equal(
        loaded.state_dict()["embedding.atom_embedding.weight"],
        state["embedding.atom_embedding.weight"],
    )


def test_random_weights_save_load_round_trip_gives_the_same_embeddings(structures, tmp_path):
    bb = _backbone(seed=3)
    assert bb.name == "jmp-tiny-random"
    path = tmp_path / "tiny.pt"
    # wrapped keys
    torch.save({"state_dict": {f"model.{k}": v for k, v in bb.state_dict().items()}}, path)
    again = _backbone(checkpoint=str(path))
    assert (
        again.name == "jmp-tiny"
        and bb.identity()["weights_sha256"] == again.identity()["weights_sha256"]
    )
    other = _backbone(seed=4)
    batch = bb.collate(bb.featurize(structures[:2]))
    with torch.no_grad():
        a, b, c = bb(batch).atom_embedding, again(batch).atom_embedding, other(batch).atom_embedding
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def _rotated(structure, seed: int):
    from pymatgen.core import Lattice, Structure

    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    lattice = Lattice(structure.lattice.matrix @ q.T)
    return Structure(
        lattice,
        structure.species,
        structure.cart_coords @ q.T + np.array([0.3, -1.7, 2.2]),
        coords_are_cartesian=True,
    )


def test_embeddings_are_invariant_to_rotation_translation_and_atom_order(structures):
    """Tolerance 1e-9 (relative, float64 model): the graph, the angles and every sum are the
    same."""
    from pymatgen.core import Structure

    bb = _backbone().double()
    s = structures[0]
    perm = np.random.default_rng(0).permutation(len(s))
    permuted = Structure.from_sites([s[i] for i in perm])
    with torch.no_grad():
        ref, rot, per = (
            bb(bb.collate(bb.featurize([x]))).atom_embedding for x in (s, _rotated(s, 1), permuted)
        )
    scale = ref.abs().max()
    assert scale > 0
    assert torch.allclose(rot, ref, rtol=0, atol=1e-9 * scale)
    assert torch.allclose(per, ref[torch.from_numpy(perm)], rtol=0, atol=1e-9 * scale)
    # a real change of geometry does change the embedding
    strained = s.copy()
    strained.apply_strain(0.03)
    with torch.no_grad():
        other = bb(bb.collate(bb.featurize([strained]))).atom_embedding
    assert (other - ref).abs().max() > 1e-4 * scale


def test_batched_structures_match_single_structure_passes(structures):
    bb = _backbone()
    feats = bb.featurize(structures)
    with torch.no_grad():
        joint = bb(bb.collate(feats))
        singles = torch.cat([bb(bb.collate([f])).atom_embedding for f in feats])
    assert torch.allclose(joint.atom_embedding, singles, rtol=1e-5, atol=1e-5 * singles.abs().max())
    n = sum(f["n_atoms"] for f in feats)
    assert joint.row_sets["atom"].shape == (n,)
    assert set(joint.row_sets) == {"atom", "edge", "a2ee2a", "quad_triplet"}


def test_balora_fine_tune_from_a_checkpoint_path_then_evaluate_and_screen_with_std(
    tiny_split, qmof_path, sample_cifs, tmp_path
):
    """The user path: ``finetune --config workflows/finetune_jmp.yaml --set
    backbone.checkpoint=PATH``, a few BaLoRA steps on 16 QMOF structures, then ``evaluate`` and
    ``screen`` with T = 4 samples."""
    import json
    from pathlib import Path

    import pandas as pd

    from mofbalora.cli import main
    from mofbalora.model import load_model

    ckpt = tmp_path / "jmp-tiny.pt"
    torch.save({"state_dict": _backbone(seed=5).state_dict()}, ckpt)
    workflow = Path(__file__).resolve().parents[1] / "workflows" / "finetune_jmp.yaml"
    run = tmp_path / "run"
    sets = [
        f"backbone.checkpoint={ckpt}",
        "backbone.size=tiny",
        "backbone.cutoff=5.0",
        "backbone.max_neighbors=8",
        f"data.path={qmof_path}",
        f"data.split={tiny_split}",
        "data.train_size=null",
        "data.val_size=null",
        "optim.epochs=1",
        "optim.batch_size=8",
        "adapter.rank=2",
        "run.eval_samples=4",
        "run.threads=1",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert (
            main(
                [
                    "finetune",
                    "--config",
                    str(workflow),
                    *[a for x in sets for a in ("--set", x)],
                    "--out",
                    str(run),
                    "--quiet",
                ]
            )
            == 0
        )
        model = load_model(run)
        assert (
            main(
                [
                    "evaluate",
                    "--model",
                    str(run),
                    "--data",
                    str(qmof_path),
                    "--split-name",
                    str(tiny_split),
                    "--limit",
                    "4",
                    "--samples",
                    "4",
                    "--out",
                    str(tmp_path / "eval.json"),
                ]
            )
            == 0
        )
        assert (
            main(
                [
                    "screen",
                    *map(str, sample_cifs[:2]),
                    "--model",
                    str(run),
                    "--samples",
                    "4",
                    "--out",
                    str(tmp_path / "ranked.csv"),
                    "--quiet",
                ]
            )
            == 0
        )
    saved = json.loads((run / "metrics.json").read_text())
    assert (
        saved["n_train"] == 16
        and np.isfinite(saved["test"]["mae_ev"])
        and saved["test"]["samples"] == 4
    )
    assert model.backbone.name == "jmp-tiny" and model.backbone_options["checkpoint"] == str(ckpt)
    adapted = [
        n
        for n, _ in model.backbone.named_modules()
        if n.endswith(".linear") and ".int_blocks." in n
    ]
    assert adapted and all(
        type(model.backbone.get_submodule(n)).__name__ == "BaLoRALinear" for n in adapted
    )
    assert not any(
        ".out_blocks." in n
        for n, m in model.backbone.named_modules()
        if type(m).__name__ == "BaLoRALinear"
    )
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["n"] == 4 and np.isfinite(report["mae_ev"])
    ranked = pd.read_csv(tmp_path / "ranked.csv")
    assert (ranked["status"] == "ok").all() and (ranked["bandgap_std_ev"] > 0).all()


def test_ema_weights_of_a_lightning_checkpoint_replace_the_raw_ones(tmp_path):
    """JMP keeps EMA weights in ``optimizer_states[0]["ema"]``, one per parameter in state-dict
    order (basis buffers, scale factors and the ``seq_energy_pre`` alias left out)."""
    state = _backbone(seed=7).state_dict()
    names = [
        k
        for k in state
        if not (k.endswith(("rbf.offset", "rbf.temps", "scale_factor")) or ".seq_energy_pre." in k)
    ]
    ema = tuple(state[k] + 1.0 for k in names)
    path = tmp_path / "ema.pt"
    torch.save({"state_dict": state, "optimizer_states": [{"ema": ema}]}, path)
    key = "backbone.int_blocks.0.trip_interaction.dense_ba.linear.weight"
    assert torch.equal(_backbone(checkpoint=str(path)).state_dict()[key], state[key] + 1.0)
    assert torch.equal(_backbone(checkpoint=str(path), ema=False).state_dict()[key], state[key])
    torch.save({"state_dict": state, "optimizer_states": [{"ema": ema[:-1]}]}, path)
    with pytest.warns(UserWarning, match="do not line up"):
        misaligned = JMPBackbone(checkpoint=str(path), **TINY)
    assert torch.equal(misaligned.state_dict()[key], state[key])


def test_padded_bilinear_equals_the_explicit_sum_over_triplets():
    """GemNet's efficient form Σ_t (W(d_e) · sph_t) ⊗ m_t → bilinear, against the plain
    per-triplet sum."""
    from mofbalora.backbones.gemnet_graph import inner_index
    from mofbalora.backbones.gemnet_oc import EfficientInteractionBilinear, _pad

    g = torch.Generator().manual_seed(0)
    n_edges, n_trip, n_sph, interm, c_in = 7, 40, 5, 3, 4
    out = torch.sort(torch.randint(0, n_edges, (n_trip,), generator=g)).values
    agg = inner_index(out, n_edges)
    k = int(agg.max()) + 1
    rad_w = torch.randn(n_edges, interm, n_sph, generator=g)
    sph = torch.randn(n_trip, n_sph, generator=g)
    m = torch.randn(n_trip, c_in, generator=g)
    layer = EfficientInteractionBilinear(c_in, interm, 2)
    padded = _pad(sph, out, agg, n_edges, k).transpose(1, 2)
    per_trip = torch.einsum("tis,ts,tc->tic", rad_w[out], sph, m)
    explicit = torch.zeros(n_edges, interm, c_in).index_add(0, out, per_trip)
    expected = layer.bilinear(explicit.reshape(n_edges, -1))
    assert torch.allclose(layer(rad_w, padded, m, out, agg, k), expected, atol=1e-5)
    atoms = torch.tensor([0, 1, 1, 2, 0, 2, 1])  # each edge's target atom: then summed per atom
    per_atom = torch.zeros(3, interm, c_in).index_add(0, atoms, explicit)
    assert torch.allclose(
        layer(rad_w, padded, m, out, agg, k, to_atoms=(atoms, 3)),
        layer.bilinear(per_atom.reshape(3, -1)),
        atol=1e-5,
    )


def test_triplet_and_quadruplet_indices_match_a_brute_force_enumeration(structures):
    """Quadruplets d→b→a←c: main edge d→b, qint edge b→a, main edge c→a, with c ≠ d, d ≠ a and b ≠ c
    as periodic images (atom and cell offset); triplets: distinct main edges b→a, c→a."""
    bb = _backbone(cutoff=4.0, max_neighbors=6)
    batch = bb.collate(bb.featurize(structures[:1]))
    g, idx = batch["graphs"], batch["idx"]
    main = [
        (int(s), int(t), tuple(o.tolist()))
        for s, t, o in zip(g["main"]["s"], g["main"]["t"], g["main"]["o"], strict=True)
    ]
    qint = [
        (int(s), int(t), tuple(o.tolist()))
        for s, t, o in zip(g["qint"]["s"], g["qint"]["t"], g["qint"]["o"], strict=True)
    ]

    def add(*offs):
        return tuple(sum(x) for x in zip(*offs, strict=True))

    trip = {
        (i, j)
        for j, (_, a, _) in enumerate(main)
        for i, (_, a2, _) in enumerate(main)
        if a2 == a and i != j
    }
    assert trip == set(zip(idx["e2e_in"].tolist(), idx["e2e_out"].tolist(), strict=True))
    quads = set()
    for qi, (b, a, o_ba) in enumerate(qint):
        for ci, (c, a2, o_ca) in enumerate(main):
            if a2 != a or (c == b and o_ca == o_ba):
                continue
            for di, (d, b2, o_db) in enumerate(main):
                if b2 != b or (d == a and add(o_db, o_ba) == (0, 0, 0)):
                    continue
                if d == c and add(o_db, o_ba) == o_ca:
                    continue
                quads.add((di, qi, ci))
    got = set(
        zip(
            idx["qin_in"][idx["quad_from_qin"]].tolist(),
            idx["qin_out"][idx["quad_from_qin"]].tolist(),
            idx["quad_out"].tolist(),
            strict=True,
        )
    )
    assert len(quads) > 100 and got == quads
    assert torch.equal(idx["qout_in"][idx["quad_from_qout"]], idx["qin_out"][idx["quad_from_qin"]])


@pytest.mark.parametrize("adapt", ["all", "readout", "last_block"])
def test_every_adapted_gemnet_layer_finds_its_row_set(structures, adapt):
    """Each preset's adapters run a stochastic pass: a row-set rule naming the wrong set would raise
    (its row count would not match), and every set the rules name is one the forward pass
    provides."""
    from mofbalora.adapters import AdapterConfig, inject_adapters
    from mofbalora.adapters.context import sampling
    from mofbalora.adapters.inject import adapter_layers

    bb = _backbone(seed=1, adapt=adapt)
    inject_adapters(
        bb,
        AdapterConfig(kind="balora", targets=bb.target_presets[adapt], rank=2),
        row_set_for=bb.row_set_for,
    )
    for n, p in bb.named_parameters():
        if "adapter_B" in n:
            p.data.normal_(std=0.1)
    with torch.no_grad(), sampling(stochastic=True, noise_seed=0):
        out = bb(bb.collate(bb.featurize(structures[:2])))
    used = {m.row_set for _, m in adapter_layers(bb)}
    assert used <= set(out.row_sets) and torch.isfinite(out.atom_embedding).all()


#: left out of `make test-fast` (trains models, starts clusters or runs notebooks); `make test` runs
#: it
pytestmark = pytest.mark.slow
