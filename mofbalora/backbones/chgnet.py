"""CHGNet 0.3.0 (Deng et al., Nat. Mach. Intell. 2023) as a band-gap backbone.

The pretrained weights (412,525 parameters, trained on MPtrj) ship inside the ``chgnet`` package and
load offline. The backbone returns CHGNet's per-atom features after its readout MLP's hidden layers
(the energy output layer is dropped): 64 numbers per atom.

Adapter placement (``adapt``), a measured choice (see README and reports/):

- ``"readout"`` (default): adapters on the three hidden layers of CHGNet's per-atom readout MLP. The
  message-passing trunk is frozen and *cached*: :meth:`featurize` runs it once per structure and stores
  the (n_atoms, 64) features after the readout LayerNorm, so training and T-sample inference only run the
  readout (T samples cost almost nothing more than one).
- ``"last_block"``: also the last atom-convolution block; needs the full graph each step (no trunk cache).
- ``"all"``: all atom, bond and angle blocks and the readout; full forward each step.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from torch import nn

from mofbalora.adapters.context import current, sampling
from mofbalora.backbones.base import Backbone, BackboneOutput, FeaturizationError, structure_mean

Adapt = Literal["readout", "last_block", "all"]
ADAPT_CHOICES = ("readout", "last_block", "all")

_READOUT = [r"re:^readout_mlp\.(0|2|4)$"]
_LAST = [r"re:^trunk\.atom_conv_layers\.3\..*(layers\.\d+)$"]
_ALL = [r"re:^trunk\.(atom_conv_layers|bond_conv_layers|angle_layers)\.\d+\..*layers\.\d+$"]


class _NoEnergy(nn.Module):
    """Stands in for CHGNet's readout MLP inside the trunk (we apply our own readout)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], 1)


def _import_chgnet():
    try:
        from chgnet.model import CHGNet
        from chgnet.model.model import BatchedGraph
    except ImportError as exc:  # pragma: no cover - chgnet is a core dependency
        raise ImportError("the CHGNet backbone needs the chgnet package: pip install mofbalora") from exc
    return CHGNet, BatchedGraph


class CHGNetBackbone(Backbone):
    name = "chgnet"
    embedding_dim = 64
    descriptor_dim = 64
    target_presets = {"readout": _READOUT, "last_block": _READOUT + _LAST, "all": _READOUT + _ALL}

    def __init__(self, adapt: Adapt = "readout", model_name: str = "0.3.0") -> None:
        super().__init__()
        if adapt not in ADAPT_CHOICES:
            raise ValueError(f"unknown CHGNet adapter placement {adapt!r}; choose from {list(ADAPT_CHOICES)}")
        CHGNet, _ = _import_chgnet()
        chgnet = CHGNet.load(model_name=model_name, use_device="cpu", verbose=False)
        if not chgnet.mlp_first:
            raise ValueError(f"CHGNet {model_name} pools before its MLP; only per-atom readouts are supported")
        self.adapt = adapt
        self.model_name = model_name
        self.name = f"chgnet-{model_name}"
        mlp_layers = list(chgnet.mlp.layers)
        # hidden layers of the per-atom readout: Linear, SiLU, Linear, SiLU, Linear, SiLU (drop the energy output)
        last_linear = max(i for i, m in enumerate(mlp_layers) if isinstance(m, nn.Linear))
        self.readout_mlp = nn.Sequential(*[m for m in mlp_layers[:last_linear] if not isinstance(m, nn.Dropout)])
        chgnet.mlp = _NoEnergy()
        self.trunk = chgnet
        self._captured: list[torch.Tensor] = []
        self.trunk.readout_norm.register_forward_hook(lambda _m, _i, out: self._captured.append(out))
        for p in self.parameters():
            p.requires_grad_(False)

    # -- structure -> input -------------------------------------------------------------------------
    def featurize_namespace(self) -> str:
        what = "readout-features" if self.adapt == "readout" else "graph"
        return f"{self.name}/{what}/v1"

    def _graph(self, structure) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return self.trunk.graph_converter(structure)
        except Exception as exc:
            raise FeaturizationError(f"CHGNet graph construction failed: {exc}") from None

    def featurize(self, structures: list) -> list[Any]:
        graphs = [self._graph(s) for s in structures]
        if self.adapt != "readout":
            return [{"graph": g, "n_atoms": int(g.atomic_number.numel())} for g in graphs]
        feats = self.trunk_atom_features(graphs)
        # clone: a slice of the batch tensor would pickle the whole batch storage into every cache entry
        return [{"atom_features": f.to(torch.float32).clone(), "n_atoms": int(f.shape[0])} for f in feats]

    def trunk_atom_features(self, graphs: list) -> list[torch.Tensor]:
        """Frozen CHGNet trunk → per-atom features after the readout LayerNorm, one tensor per graph."""
        with torch.no_grad():
            out = self._run_trunk(graphs).cpu()  # cached features live on the CPU, whatever runs the trunk
        sizes = [int(g.atomic_number.numel()) for g in graphs]
        return list(torch.split(out, sizes))

    def _run_trunk(self, graphs: list) -> torch.Tensor:
        _, BatchedGraph = _import_chgnet()
        device = next(self.trunk.parameters()).device
        if device.type != "cpu":
            graphs = [g.to(str(device)) for g in graphs]
        batched = BatchedGraph.from_graphs(graphs, bond_basis_expansion=self.trunk.bond_basis_expansion,
                                           angle_basis_expansion=self.trunk.angle_basis_expansion)
        self._captured.clear()
        self.trunk._compute(batched)
        out = self._captured.pop()
        self._captured.clear()
        return out

    # -- batch -> embeddings ------------------------------------------------------------------------
    def collate(self, inputs: list[Any]) -> dict:
        sizes = torch.tensor([x["n_atoms"] for x in inputs], dtype=torch.long)
        batch = {"n_atoms": sizes, "structure_index": torch.repeat_interleave(torch.arange(len(inputs)), sizes)}
        if self.adapt == "readout":
            batch["atom_features"] = torch.cat([x["atom_features"] for x in inputs])
        else:
            batch["graphs"] = [x["graph"] for x in inputs]
        return batch

    def structure_descriptor(self, batch: dict) -> torch.Tensor:
        """Mean over atoms of the frozen trunk features (readout) or of the atom embeddings (graph modes)."""
        if self.adapt == "readout":
            feats = batch["atom_features"]
        else:
            z = torch.cat([g.atomic_number for g in batch["graphs"]]).long()
            feats = self.trunk.atom_embedding(z - 1)
        return structure_mean(feats, batch)

    def forward(self, batch: dict) -> BackboneOutput:
        index = batch["structure_index"]
        row_groups = {int(index.numel()): index}
        if self.adapt == "readout":
            atom_feas = batch["atom_features"]
        else:
            graphs = batch["graphs"]
            # rows of the trunk's layers: directed atom-graph edges, undirected bonds and bond-graph angles,
            # each belonging to one structure (so BaLoRA can share one noise draw per structure)
            edge_owner = torch.cat([torch.full((g.atom_graph.shape[0],), k) for k, g in enumerate(graphs)])
            row_groups.setdefault(int(edge_owner.numel()), edge_owner)
            bond_owner = torch.cat([torch.full((int(g.directed2undirected.max()) + 1 if g.directed2undirected.numel() else 0,), k)
                                    for k, g in enumerate(graphs)])
            row_groups.setdefault(int(bond_owner.numel()), bond_owner)
            angle_owner = torch.cat([torch.full((g.bond_graph.shape[0],), k) for k, g in enumerate(graphs)])
            row_groups.setdefault(int(angle_owner.numel()), angle_owner)
            with sampling(row_groups={**current().row_groups, **row_groups}):
                atom_feas = self._run_trunk(graphs)
        with sampling(row_groups={**current().row_groups, **row_groups}):
            emb = self.readout_mlp(atom_feas)
        return BackboneOutput(emb, index, len(batch["n_atoms"]), row_groups)
