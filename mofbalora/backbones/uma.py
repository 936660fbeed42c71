"""UMA (Meta FAIR's Universal Model for Atoms, fairchem-core 2.x) as a band-gap backbone.

The checkpoint is a local file in fairchem's inference format (``uma-s-1p1.pt`` from HuggingFace
``facebook/UMA``, or one written by
:func:`mofbalora.backbones.uma_checkpoint.write_random_checkpoint`); it is loaded by fairchem's own
``load_inference_model`` (the loader behind ``load_predict_unit``), with the EMA weights, as the
predict unit does. Only the backbone (``eSCNMDMoeBackbone``) is kept; the energy/force heads are
dropped. The backbone returns UMA's per-atom l = 0 (rotation-invariant) channel after its final
norm: ``sphere_channels`` numbers per atom (128 for UMA-S).

Structures become fairchem ``AtomicData`` inputs (periodic, charge 0, spin 0, dataset = ``task``,
default ``"omat"``: the PBE/PBE+U bulk-materials task, closest to QMOF's PBE MOFs).
:meth:`featurize` builds the radius graph once (fairchem's pymatgen neighbour list with the
checkpoint's cutoff and neighbour cap, i.e. fairchem's ``external_graph_gen`` mode) and stores plain
tensors, so the cache holds the graph and every step only runs the network.

Adapter placement (``adapt``): which linear maps get (Ba)LoRA. Most of UMA's linear maps are not
``nn.Linear``: the SO(2) convolutions' ``fc_m0`` / ``so2_m_conv.fc`` are mixture-of-linear-experts
(MOLE) layers whose expert mixture depends on the system's composition (adapted through
:mod:`mofbalora.adapters.mole`: one low-rank update shared by all experts), and the atom-wise
feed-forward uses SO(3)-linear maps acting per degree l. The first four presets adapt only maps
whose inputs are invariant under rotations and whose outputs are used as invariants, so that neither
the LoRA update nor BaLoRA's noise (drawn per row in rank space, with a variance that depends on the
row) can break equivariance; ``all`` adds the SO(3)-linear maps through an adapter built to keep it:

- ``"radial"``: in every block, the radial MLP of the first SO(2) convolution (edge distance and
  element embeddings → per-edge filter weights that scale every message; 3 linear layers) and the
  atom-wise gate MLP (l = 0 features → gates of the l > 0 channels).
- ``"messages"`` (default): ``radial`` + the m = 0 MOLE map (``fc_m0``) of both SO(2) convolutions
  of every block. In the edge-aligned frame the m = 0 coefficients are invariant (they do not change
  under the roll about the edge), so a per-edge update and per-edge noise keep the model
  equivariant; this is the channel mixing that carries most of each message.
- ``"routing"``: the MOLE routing MLP only (composition, charge, spin, task → expert coefficients,
  one row per structure): the fewest parameters; the noise perturbs each structure's expert mixture.
- ``"invariant"``: ``messages`` + ``routing`` + the edge-degree embedding's radial MLP.
- ``"all"``: ``invariant`` + the two SO(3)-linear maps of every block's atom-wise feed-forward
  (:mod:`mofbalora.adapters.so3`: a low-rank update per degree l that mixes channels only, and
  BaLoRA noise sampled as one weight draw per structure and degree, shared by the 2l + 1 components
  m, with α from the l = 0 input, so samples stay equivariant too).

Not adapted: the m > 0 SO(2) maps ``so2_m_conv.fc``. They act on each (+m, −m) pair as one complex
number; a LoRA update keeps that structure, but BaLoRA's rank-space noise has a row-dependent
variance and would differ between the two rows, so samples would lose SO(2) equivariance (an exact
per-structure weight draw, as for the SO(3) maps, would fix this; not done). tests/test_uma.py
checks that the mean prediction and every sample are invariant with the ``all`` preset, which holds
every adapted layer.

The trunk cannot be cached: adapters sit inside it, so each training step and each of the T
stochastic inference passes runs the whole network (see benchmarks/bench_uma.py for the cost).
Noise is shared per structure on every row type the adapted layers see: atoms, edges and systems.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn

from mofbalora.backbones.base import Backbone, BackboneOutput, FeaturizationError, structure_mean
from mofbalora.backbones.checkpoint import load_checkpoint, refuse
from mofbalora.data.structures import structure_to_atoms
from mofbalora.rows import row_sets

Adapt = Literal["radial", "messages", "routing", "invariant", "all"]
ADAPT_CHOICES = ("radial", "messages", "routing", "invariant", "all")

_RADIAL = [
    r"re:^uma\.blocks\.\d+\.edge_wise\.so2_conv_1\.rad_func\.net\.(0|3|6)$",
    r"re:^uma\.blocks\.\d+\.atom_wise\.scalar_mlp\.0$",
]
_M0 = [r"re:^uma\.blocks\.\d+\.edge_wise\.so2_conv_(1|2)\.fc_m0$"]
_ROUTING = [r"re:^uma\.routing_mlp\.(0|2|4)$"]
_EDGE_DEGREE = [r"re:^uma\.edge_degree_embedding\.rad_func\.net\.(0|3|6)$"]
_SO3 = [r"re:^uma\.blocks\.\d+\.atom_wise\.so3_linear_(1|2)$"]


def _import_fairchem():
    try:
        from fairchem.core.datasets.atomic_data import AtomicData
        from fairchem.core.units.mlip_unit.utils import load_inference_model
    except ImportError as exc:
        raise ImportError(
            "the UMA backbone needs fairchem-core: pip install mofbalora[uma]"
        ) from exc
    return AtomicData, load_inference_model


#: keys of a fairchem model configuration whose string values name a class or function to build
_CALLABLE_KEYS = ("_target_", "model", "module", "head_cls")


def _untrusted_targets(config, where: str = "model_config") -> list[str]:
    """The classes / functions a fairchem model configuration names outside fairchem (hydra builds
    the model by calling what ``_target_`` and its kin name, so a foreign name there would run on
    load)."""
    found = []
    if isinstance(config, dict):
        for key, value in config.items():
            if (
                key in _CALLABLE_KEYS
                and isinstance(value, str)
                and "." in value
                and not value.startswith("fairchem.")
            ):
                found.append(f"{where}.{key}={value!r}")
            found += _untrusted_targets(value, f"{where}.{key}")
    elif isinstance(config, (list, tuple)):
        for i, value in enumerate(config):
            found += _untrusted_targets(value, f"{where}[{i}]")
    return found


def read_uma_checkpoint(path: Path, *, trust: bool = False):
    """fairchem's ``MLIPInferenceCheckpoint`` of ``path``. Without ``trust``: loaded with weights
    only (the checkpoint class, tensors and plain containers), and refused when its model
    configuration names a class or function outside fairchem (see
    :mod:`mofbalora.backbones.checkpoint`)."""
    from fairchem.core.units.mlip_unit.api.inference import MLIPInferenceCheckpoint

    what = "UMA checkpoint"
    ckpt = load_checkpoint(path, what=what, trust=trust, allowed=[MLIPInferenceCheckpoint])
    if not isinstance(ckpt, MLIPInferenceCheckpoint):
        raise ValueError(
            f"{what} {str(path)!r} holds a {type(ckpt).__name__}, "
            "not fairchem's MLIPInferenceCheckpoint"
        )
    foreign = (
        []
        if trust
        else _untrusted_targets(ckpt.model_config)
        + _untrusted_targets(ckpt.tasks_config, "tasks_config")
    )
    if foreign:
        raise refuse(
            path, what, f"its configuration names code outside fairchem: {', '.join(foreign[:3])}"
        )
    return ckpt


def load_uma_backbone(checkpoint: str | Path, *, trust_checkpoint: bool = False) -> nn.Module:
    """fairchem's ``eSCNMDMoeBackbone`` from an inference checkpoint, with the EMA weights, set up
    for external graphs, no activation checkpointing and no force/stress gradients (we never need
    ∂E/∂r)."""
    _, load_inference_model = _import_fairchem()
    from fairchem.core.units.mlip_unit.api.inference import InferenceSettings
    from fairchem.core.units.mlip_unit.utils import get_backbone_class_from_checkpoint

    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"UMA checkpoint {str(checkpoint)!r} not found: download it (README, "
            "'UMA backbone') and pass its local path as backbone.checkpoint"
        )
    ckpt = read_uma_checkpoint(path, trust=trust_checkpoint)
    settings = InferenceSettings(
        activation_checkpointing=False, external_graph_gen=True, merge_mole=False
    )
    # activation checkpointing would recompute the forward in the backward pass and draw new BaLoRA
    # noise
    overrides = {
        "backbone": {
            **get_backbone_class_from_checkpoint(ckpt).build_inference_settings(settings),
            "regress_forces": False,
            "regress_stress": False,
            "direct_forces": False,
        }
    }
    if "num_experts" in ckpt.model_config.get("backbone", {}):
        # plain-PyTorch MOLE layers (same weights as the fused kernels): what the MOLE adapters wrap
        overrides["backbone"]["moe_layer_type"] = "pytorch"
    model = load_inference_model(
        str(path),
        use_ema=True,
        overrides=overrides,
        return_checkpoint=False,
        preloaded_checkpoint=ckpt,
    )
    hydra = model.module if hasattr(model, "module") else model
    return hydra.backbone


class UMABackbone(Backbone):
    name = "uma"
    row_set_rules = [
        (r"re:\.(rad_func|fc_m0)", "edge"),
        (r"re:\.atom_wise\.", "atom"),
        (r"re:^uma\.routing_mlp\.", "system"),
    ]
    adapter_extensions = ("mole", "so3")  # fairchem's MOLE and SO3_Linear layers
    target_presets = {
        "radial": _RADIAL,
        "messages": _RADIAL + _M0,
        "routing": _ROUTING,
        "invariant": _RADIAL + _M0 + _ROUTING + _EDGE_DEGREE,
        "all": _RADIAL + _M0 + _ROUTING + _EDGE_DEGREE + _SO3,
    }

    def __init__(
        self,
        checkpoint: str | None = None,
        task: str = "omat",
        adapt: Adapt = "messages",
        max_batch_atoms: int = 2048,
        trust_checkpoint: bool = False,
    ) -> None:
        """``checkpoint``: local fairchem inference checkpoint; ``task``: UMA task (dataset
        embedding and MOLE routing input); ``adapt``: adapter preset; ``max_batch_atoms``: most
        atoms per evaluation pass (UMA holds ~100 edges per atom at its 6 Å cutoff, each with
        (lmax+1)² × 2C activations); ``trust_checkpoint``: allow full unpickling of
        ``checkpoint`` (:mod:`mofbalora.backbones.checkpoint`)."""
        super().__init__()
        if adapt not in ADAPT_CHOICES:
            raise ValueError(
                f"unknown UMA adapter placement {adapt!r}; choose from {list(ADAPT_CHOICES)}"
            )
        if not checkpoint:
            raise ValueError(
                "the UMA backbone needs a local checkpoint file: set backbone.checkpoint=PATH "
                "(e.g. uma-s-1p1.pt, see README 'UMA backbone')"
            )
        _import_fairchem()  # a missing extra fails here, with the install hint
        self.uma = load_uma_backbone(checkpoint, trust_checkpoint=trust_checkpoint)
        tasks = sorted(getattr(self.uma, "dataset_mapping", None) or [])
        if tasks and task not in tasks:
            raise ValueError(f"unknown UMA task {task!r} for this checkpoint; choose from {tasks}")
        self.checkpoint = str(checkpoint)
        self.task = task
        self.adapt = adapt
        self.max_batch_atoms = int(max_batch_atoms)
        # recorded with the weights' hash in saved models: the model id, not the file name, so a
        # moved or renamed copy of the same checkpoint still loads
        self.name = f"uma-{getattr(self.uma, 'model_id', None) or 'unknown'}"
        self.embedding_dim = self.descriptor_dim = int(self.uma.sphere_channels)
        self.cutoff = float(self.uma.cutoff)
        self.max_neighbors = int(self.uma.max_neighbors)
        for p in self.parameters():
            p.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> UMABackbone:
        """Adapters follow ``mode``; the frozen UMA stays in eval mode (no MOLE/composition
        dropout)."""
        super().train(mode)
        # the MoE backbone's own flag gates composition dropout and its logging
        self.uma.training = False
        for m in self.uma.modules():
            if isinstance(m, nn.Dropout):
                m.eval()
        return self

    # -- structure -> input ------------------------------------------------------------------------
    def featurize_namespace(self) -> str:
        return f"uma/graph-c{self.cutoff:g}-n{self.max_neighbors}-{self.task}/v1"

    def featurize(self, structures: list) -> list[dict]:
        return [self._graph(s) for s in structures]

    def _graph(self, structure) -> dict:
        AtomicData, _ = _import_fairchem()
        z_max = int(max(structure.atomic_numbers))
        if z_max >= self.uma.max_num_elements:
            raise FeaturizationError(
                f"element Z={z_max} is beyond this UMA model's {self.uma.max_num_elements} elements"
            )
        try:
            data = AtomicData.from_ase(
                structure_to_atoms(structure),
                r_edges=True,
                radius=self.cutoff,
                max_neigh=self.max_neighbors,
                task_name=self.task,
            )
        except Exception as exc:
            raise FeaturizationError(f"UMA graph construction failed: {exc}") from None
        if data.edge_index.shape[1] == 0:
            raise FeaturizationError(
                f"no neighbours within the {self.cutoff:g} Å cutoff (isolated atoms)"
            )
        return {
            "pos": data.pos.clone(),
            "atomic_numbers": data.atomic_numbers.clone(),
            "cell": data.cell.clone(),
            "pbc": data.pbc.clone(),
            "edge_index": data.edge_index.clone(),
            "cell_offsets": data.cell_offsets.clone(),
            "n_atoms": int(data.natoms.item()),
        }

    # -- batch -> embeddings -----------------------------------------------------------------------
    def collate(self, inputs: list[dict]) -> dict:
        """One fairchem ``AtomicData`` batch (edges offset per structure, kept contiguous per
        structure as MOLE needs) plus the structure index of atoms and edges."""
        AtomicData, _ = _import_fairchem()
        sizes = torch.tensor([x["n_atoms"] for x in inputs], dtype=torch.long)
        n_edges = torch.tensor([x["edge_index"].shape[1] for x in inputs], dtype=torch.long)
        offsets = torch.cumsum(sizes, 0) - sizes
        n = len(inputs)
        index = torch.repeat_interleave(torch.arange(n), sizes)
        data = AtomicData(
            pos=torch.cat([x["pos"] for x in inputs]),
            atomic_numbers=torch.cat([x["atomic_numbers"] for x in inputs]),
            cell=torch.cat([x["cell"] for x in inputs]),
            pbc=torch.cat([x["pbc"] for x in inputs]),
            natoms=sizes,
            edge_index=torch.cat(
                [x["edge_index"] + o for x, o in zip(inputs, offsets.tolist(), strict=True)], 1
            ),
            cell_offsets=torch.cat([x["cell_offsets"] for x in inputs]),
            nedges=n_edges,
            charge=torch.zeros(n, dtype=torch.long),
            spin=torch.zeros(n, dtype=torch.long),
            fixed=torch.zeros(len(index), dtype=torch.long),
            tags=torch.zeros(len(index), dtype=torch.long),
            batch=index,
            sid=[""] * n,
            dataset=[self.task] * n,
        )
        return {
            "data": data,
            "n_atoms": sizes,
            "structure_index": index,
            "edge_structure_index": torch.repeat_interleave(torch.arange(n), n_edges),
        }

    def structure_descriptor(self, batch: dict) -> torch.Tensor:
        """Mean over atoms of UMA's frozen element embedding (n_structures, sphere_channels)."""
        return structure_mean(self.uma.sphere_embedding(batch["data"].atomic_numbers), batch)

    def forward(self, batch: dict) -> BackboneOutput:
        index = batch["structure_index"]
        n = len(batch["n_atoms"])
        # rows of the adapted layers: atoms (gate MLP, SO(3) linears), edges (radial MLPs, m = 0
        # maps), systems (routing MLP)
        sets = {"atom": index, "edge": batch["edge_structure_index"], "system": torch.arange(n)}
        data = batch["data"].clone()  # the backbone writes derived fields into its input
        with row_sets(**sets):
            out = self.uma(data)
        scalars = out["node_embedding"][:, 0, :]  # l = 0: the rotation-invariant channel
        return BackboneOutput(scalars, index, n, sets)

    def extra_repr(self) -> str:
        return f"checkpoint={self.checkpoint!r}, task={self.task!r}, adapt={self.adapt!r}"
