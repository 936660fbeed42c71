"""UMA through fairchem-core: a tiny UMA-architecture checkpoint written in fairchem's inference
format, loaded through the user's path, fine-tuned with BaLoRA on QMOF, saved, reloaded and checked
for rotation / translation / permutation invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip(
    "fairchem.core", reason="the UMA backbone needs fairchem-core (pip install mofbalora[uma])"
)

from mofbalora.backbones.uma_checkpoint import TINY_DIMS, write_random_checkpoint  # noqa: E402
from mofbalora.model import build_model, load_model  # noqa: E402


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return write_random_checkpoint(
        tmp_path_factory.mktemp("uma") / "uma-tiny.pt", seed=3, **TINY_DIMS
    )


@pytest.fixture(scope="module")
def structures(sample_cifs):
    from mofbalora.data.structures import read_structure

    return [read_structure(p) for p in sample_cifs[:4]]


def test_embeddings_match_fairchems_predict_unit_on_the_same_checkpoint(
    tiny_checkpoint, structures
):
    """Our loader, graph and l = 0 slice agree with the backbone fairchem's load_predict_unit builds
    (which makes its own radius graph on the fly): the file is a valid inference checkpoint and
    nothing is lost."""
    from fairchem.core.datasets.atomic_data import AtomicData, atomicdata_list_to_batch
    from fairchem.core.units.mlip_unit import load_predict_unit

    from mofbalora.backbones import load_backbone
    from mofbalora.data.structures import structure_to_atoms

    bb = load_backbone("uma", checkpoint=str(tiny_checkpoint))
    assert bb.embedding_dim == TINY_DIMS["sphere_channels"] and bb.task == "omat"
    batch = bb.collate(bb.featurize(structures))
    with torch.no_grad():
        out = bb(batch)
    assert out.atom_embedding.shape == (sum(s.num_sites for s in structures), bb.embedding_dim)
    unit = load_predict_unit(str(tiny_checkpoint), device="cpu")
    data = atomicdata_list_to_batch(
        [AtomicData.from_ase(structure_to_atoms(s), task_name="omat") for s in structures]
    )
    with torch.no_grad():
        ref = unit.model.module.backbone(data)["node_embedding"][:, 0, :]
    assert torch.allclose(out.atom_embedding, ref, atol=1e-5), (
        (out.atom_embedding - ref).abs().max()
    )
    # every row type the adapted layers see has its structure index
    assert out.row_sets["atom"].numel() == out.atom_embedding.shape[0]
    assert out.row_sets["edge"].numel() == batch["data"].edge_index.shape[1]
    assert out.row_sets["system"].numel() == out.n_structures


def test_bad_options_are_named(tiny_checkpoint, tmp_path):
    from mofbalora.backbones.uma import UMABackbone

    with pytest.raises(ValueError, match="adapter placement 'readout'.*messages"):
        UMABackbone(str(tiny_checkpoint), adapt="readout")
    with pytest.raises(ValueError, match="task 'qmof'.*omat"):
        UMABackbone(str(tiny_checkpoint), task="qmof")
    with pytest.raises(FileNotFoundError, match="backbone.checkpoint"):
        UMABackbone(str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="backbone.checkpoint=PATH"):
        UMABackbone(None)


def test_predictions_and_samples_are_invariant(tiny_checkpoint, structures):
    """Tolerance 2e-4 eV (float32 Wigner rotations and sums over ~10^3 edges); with random adapter
    weights of unit scale, so that a non-equivariant adapter or noise would show as O(0.1) eV
    differences. The ``all`` preset holds every adapted layer of the other presets, SO(3)-linear
    and MOLE maps included."""
    from pymatgen.core import Lattice, Structure
    from scipy.spatial.transform import Rotation

    from mofbalora.adapters import AdapterConfig

    model = build_model(
        "balora",
        backbone="uma",
        backbone_options={"checkpoint": str(tiny_checkpoint), "adapt": "all"},
        adapter=AdapterConfig(kind="balora", rank=4, noise_scope="structure"),
    )
    # exact per-structure weight noise: draw for draw independent of atom order (row noise is keyed
    # by row)
    kinds = {type(m).__name__ for m in model.backbone.modules()}
    assert {"SO3BaLoRALinear", "MOLEBaLoRALinear", "BaLoRALinear"} <= kinds
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "adapter_B" in name or "adapter_alpha_w" in name:
            p.data.normal_(0.0, 0.3)
    s = structures[3]
    rot = Rotation.random(random_state=1).as_matrix()
    perm = np.random.default_rng(0).permutation(len(s))
    variants = {
        "rotated": Structure(Lattice(s.lattice.matrix @ rot.T), s.species, s.frac_coords),
        "translated": Structure(s.lattice, s.species, (s.frac_coords + [0.31, 0.17, 0.73]) % 1.0),
        "permuted": Structure(s.lattice, [s.species[k] for k in perm], s.frac_coords[perm]),
    }
    ref = model.predict_inputs(model.backbone.featurize([s]), n_samples=4, seed=5)
    assert ref.std_ev[0] > 1e-3  # the noise reaches the output
    for name, v in variants.items():
        p = model.predict_inputs(model.backbone.featurize([v]), n_samples=4, seed=5)
        assert abs(p.mean_ev[0] - ref.mean_ev[0]) < 2e-4, (name, p.mean_ev, ref.mean_ev)
        assert np.allclose(p.samples_ev, ref.samples_ev, atol=2e-4), (
            name,
            p.samples_ev - ref.samples_ev,
        )


def test_shipped_workflow_finetunes_screens_and_reloads(
    tiny_checkpoint, tiny_split, qmof_path, sample_cifs, tmp_path
):
    """``mofbalora finetune --config workflows/finetune_uma.yaml --set backbone.checkpoint=PATH`` on
    a tiny split, then ``mofbalora screen --model RUN``; the run rebuilds UMA from the stored
    checkpoint path."""
    from pathlib import Path

    import pandas as pd

    from mofbalora.cli import main
    from mofbalora.config import load_config
    from mofbalora.train import load_inputs, split_ids

    workflow = Path(__file__).resolve().parents[1] / "workflows" / "finetune_uma.yaml"
    run = tmp_path / "run"
    sets = [
        f"backbone.checkpoint={tiny_checkpoint}",
        f"data.path={qmof_path}",
        f"data.split={tiny_split}",
        "optim.epochs=1",
        "optim.lr=0.02",
        "adapter.rank=4",
        "run.eval_samples=4",
        "run.eval_test=false",
        "run.threads=1",
    ]
    assert (
        main(
            [
                "finetune",
                "--config",
                str(workflow),
                *[a for s in sets for a in ("--set", s)],
                "--out",
                str(run),
                "--quiet",
            ]
        )
        == 0
    )
    # rebuilds UMA from the stored checkpoint path and checks its weights' hash
    model = load_model(run)
    assert model.regime == "balora" and model.backbone_options["checkpoint"] == str(tiny_checkpoint)
    adapted = [n for n, m in model.backbone.named_modules() if hasattr(m, "adapter_A")]
    n_blocks = TINY_DIMS["num_layers"]
    assert len(adapted) == 6 * n_blocks  # messages: 3 radial + 1 gate + 2 MOLE fc_m0 per block
    assert sum("fc_m0" in n for n in adapted) == 2 * n_blocks
    # all were trained
    assert all(model.backbone.get_submodule(n).adapter_B.abs().sum() > 0 for n in adapted)
    ds, ids = split_ids(load_config(workflow, sets))
    _, inputs, _ = load_inputs(model, ds, ids["val"], "val")
    pred = model.predict_inputs(inputs, n_samples=8, seed=0)
    assert pred.samples_ev.shape == (len(inputs), 8)
    assert np.all(pred.std_ev > 0) and np.all(np.isfinite(pred.mean_ev))
    again = load_model(run).predict_inputs(inputs, n_samples=8, seed=0)
    # fairchem's CPU scatter sums are not bit-stable
    assert np.allclose(pred.samples_ev, again.samples_ev, atol=1e-5)
    out = tmp_path / "ranked.csv"
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
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    table = pd.read_csv(out)
    assert len(table) == 2 and (table["status"] == "ok").all()


def test_so3_adapter_merges_exactly_and_its_noise_keeps_equivariance():
    """The SO(3) adapter on its own: merged == unmerged with ε = 0; a rotated l = 1 input gives the
    rotated output in a stochastic pass with the same draw (tolerance 1e-5, float32)."""
    from fairchem.core.models.uma.nn.so3_layers import SO3_Linear
    from scipy.spatial.transform import Rotation

    from mofbalora.adapters import sampling
    from mofbalora.adapters.so3 import SO3BaLoRALinear, register_so3_adapters
    from mofbalora.rows import row_sets

    register_so3_adapters()
    torch.manual_seed(0)
    layer = SO3BaLoRALinear(SO3_Linear(6, 5, lmax=1), rank=3)
    layer.adapter_B.data.normal_()
    layer.adapter_alpha_w.data.normal_()
    x = torch.randn(7, 4, 6)
    with torch.no_grad(), sampling(stochastic=False):
        before = layer(x)
        layer.merge()
        merged = layer(x)
        layer.unmerge()
    assert torch.allclose(before, merged, atol=1e-5)
    # real spherical harmonics of degree 1 are ordered (y, z, x): rotate them with the permuted
    # matrix
    rot = torch.tensor(Rotation.random(random_state=2).as_matrix(), dtype=torch.float32)[[1, 2, 0]][
        :, [1, 2, 0]
    ]
    x_rot = x.clone()
    x_rot[:, 1:4] = torch.einsum("ab,nbi->nai", rot, x[:, 1:4])
    # the 7 rows are the atoms of one structure: one weight draw for all of them
    layer.row_set = "atom"
    with (
        torch.no_grad(),
        sampling(stochastic=True, noise_seed=4),
        row_sets(atom=torch.zeros(7, dtype=torch.long)),
    ):
        y = layer(x)
    with (
        torch.no_grad(),
        sampling(stochastic=True, noise_seed=4),
        row_sets(atom=torch.zeros(7, dtype=torch.long)),
    ):
        y_rot = layer(x_rot)
    with torch.no_grad(), sampling(stochastic=False):
        assert (y - layer(x)).abs().max() > 1e-2  # the draw changed the output
    assert torch.allclose(y_rot[:, 0], y[:, 0], atol=1e-5)
    assert torch.allclose(y_rot[:, 1:4], torch.einsum("ab,nbi->nai", rot, y[:, 1:4]), atol=1e-5)


#: left out of `make test-fast` (trains models, starts clusters or runs notebooks); `make test` runs
#: it
pytestmark = pytest.mark.slow
