"""JMP (Shoghi et al., ICLR 2024) as a band-gap backbone: GemNet-OC in plain torch, JMP checkpoints
by path.

``JMPBackbone(checkpoint="jmp-s.pt", size="s")`` loads a JMP pretraining checkpoint (``jmp-s.pt`` or
``jmp-l.pt``; see README "JMP backbone") key by key into
:class:`~mofbalora.backbones.gemnet_oc.GemNetOC` and its atom embedding; with ``checkpoint=None`` it
builds deterministic *random* weights of the named size (for tests and benchmarks; the backbone's
name then ends in ``-random`` and a warning says so). The head gets JMP's per-atom output embedding
(``out_mlp_E``, 256 numbers per atom for S and L).

Graphs follow JMP's QMOF recipe (one 19 Å cutoff; 30 nearest main neighbours, 10 above 200 atoms, 5
above 300) and are built with pymatgen's periodic neighbour search in :meth:`featurize` (cached per
structure: positions, cell, and the main, a2ee2a and qint edges with their cell offsets, ~50 kB for
a 70-atom MOF); the atom-atom graph (up to ~1000 neighbours per atom, ~0.8 MB) is rebuilt in
:meth:`collate`, where the triplets and quadruplets of the batch are enumerated too.

Adapter placement (``adapt``): ``"blocks"`` (default) puts adapters on every linear layer of the
interaction blocks; ``"last_block"`` on the last interaction block only; ``"readout"`` on the final
output MLP only; ``"all"`` on blocks, output blocks and the output MLP. Every step runs the full
trunk (no trunk cache), so JMP fine-tuning costs seconds per structure on a CPU
(``benchmarks/bench_jmp.py``).
"""

from __future__ import annotations

import pickle
import re
import types
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from mofbalora.backbones.base import Backbone, BackboneOutput, FeaturizationError, structure_mean
from mofbalora.backbones.checkpoint import load_checkpoint
from mofbalora.backbones.gemnet_graph import (
    GRAPHS,
    NeighbourLimits,
    a2a_graph,
    build_graphs,
    interaction_indices,
)
from mofbalora.backbones.gemnet_oc import SIZES, GemNetOC, init_random_
from mofbalora.rows import row_sets

Adapt = Literal["blocks", "last_block", "readout", "all"]
ADAPT_CHOICES = ("blocks", "last_block", "readout", "all")

#: checkpoint tensors that a band-gap backbone does not use (JMP's force outputs)
IGNORED_KEYS = (
    re.compile(r"^backbone\.out_mlp_F\."),
    re.compile(r"^backbone\.out_blocks\.\d+\.(seq_forces|dense_rbf_F|scale_rbf_F)\."),
)
#: prefixes of the tensors this backbone takes from a JMP checkpoint
KEPT_PREFIXES = ("embedding.atom_embedding.", "backbone.")
#: wrappers some tools put in front of every key
WRAPPER_PREFIXES = ("model.", "module.")


class JMPCheckpointError(ValueError):
    """A checkpoint whose tensors do not fit the model (names the missing, unexpected and
    mis-shaped keys)."""


class _AtomEmbedding(nn.Module):
    def __init__(self, num_elements: int, dim: int) -> None:
        super().__init__()
        self.atom_embedding = nn.Embedding(num_elements, dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.atom_embedding(z - 1)  # row 0 = hydrogen


# ------------------------------------------------------------------------------------------------
# checkpoint reading
# ------------------------------------------------------------------------------------------------
class _Unresolved:
    """Stands in for a class the checkpoint names but this environment lacks (e.g. JMP's own
    config classes)."""

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state) -> None:
        self.state = state


class _LenientUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return _Unresolved


_LENIENT_PICKLE = types.SimpleNamespace(
    Unpickler=_LenientUnpickler, load=pickle.load, __name__="lenient_pickle"
)


def _torch_load(path: Path, trust: bool) -> Any:
    """Tensors and plain containers only, unless ``trust``: a Lightning checkpoint also pickles its
    hyperparameters (JMP's pydantic configs), which need full unpickling; trusted, classes of
    packages that are not installed are unpickled as inert placeholders."""
    if not trust:
        return load_checkpoint(path, what="JMP checkpoint")
    try:
        return load_checkpoint(path, what="JMP checkpoint", trust=True)
    except (ImportError, AttributeError):
        return load_checkpoint(
            path, what="JMP checkpoint", trust=True, pickle_module=_LENIENT_PICKLE
        )


def _with_ema(ckpt: dict, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """JMP fine-tunes from the EMA weights kept in the optimizer state; map them back onto parameter
    names.

    The EMA list follows the checkpoint's parameter order (state-dict keys less basis buffers, scale
    factors, the ``seq_energy_pre`` alias and ``task_steps``). Falls back to the raw weights, with a
    warning, if the counts or shapes disagree.
    """
    opt = ckpt.get("optimizer_states") or []
    ema = opt[0].get("ema") if len(opt) == 1 and isinstance(opt[0], dict) else None
    if ema is None:
        return state
    names = [
        k
        for k in state
        if not (
            k.endswith(("rbf.offset", "rbf.temps", "scale_factor"))
            or ".seq_energy_pre." in k
            or k.startswith("task_steps")
        )
    ]
    ema = list(ema)
    if len(names) != len(ema) or any(
        state[n].shape != e.shape for n, e in zip(names, ema, strict=True)
    ):
        warnings.warn(
            f"checkpoint EMA weights ({len(ema)}) do not line up with its {len(names)} parameters; "
            "using the raw weights",
            stacklevel=3,
        )
        return state
    return {**state, **dict(zip(names, ema, strict=True))}


def read_jmp_checkpoint(
    path: str | Path, ema: bool = True, *, trust: bool = False
) -> dict[str, torch.Tensor]:
    """The embedding and backbone tensors of a JMP checkpoint (``{"state_dict": ...}`` or a bare
    state dict).

    Keys keep JMP's names (``embedding.atom_embedding.weight``, ``backbone.…``); a leading
    ``model.`` or ``module.`` is stripped; heads, task parameters and force outputs are dropped. The
    released ``jmp-s.pt`` / ``jmp-l.pt`` pickle JMP's configuration classes: without ``trust`` they
    are refused (:class:`~mofbalora.backbones.checkpoint.UntrustedCheckpointError`); a bare state
    dict loads either way.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"JMP checkpoint {str(path)!r} not found (download jmp-s.pt / jmp-l.pt; see README)"
        )
    obj = _torch_load(path, trust)
    if not isinstance(obj, dict):
        raise JMPCheckpointError(
            f"{path}: expected a dict (a Lightning checkpoint "
            f"or a state dict), got {type(obj).__name__}"
        )
    state = obj.get("state_dict", obj)
    if ema:
        state = _with_ema(obj, state)
    out = {}
    for key, value in state.items():
        if not torch.is_tensor(value):
            continue
        for wrapper in WRAPPER_PREFIXES:
            if key.startswith(wrapper) and key[len(wrapper) :].startswith(KEPT_PREFIXES):
                key = key[len(wrapper) :]
        if key.startswith(KEPT_PREFIXES) and not any(p.search(key) for p in IGNORED_KEYS):
            out[key] = value
    return out


def load_jmp_state(
    module: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint"
) -> None:
    """Load ``state`` key by key; raise :class:`JMPCheckpointError` naming missing, unexpected
    and mis-shaped keys."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:

        def show(items):
            return "\n    ".join(items[:20]) + (
                f"\n    ... and {len(items) - 20} more" if len(items) > 20 else ""
            )

        parts = [f"{source} does not fit the JMP backbone ({len(expected)} tensors expected):"]
        if missing:
            parts.append(f"  missing {len(missing)}:\n    {show(missing)}")
        if unexpected:
            parts.append(f"  unexpected {len(unexpected)}:\n    {show(unexpected)}")
        if mismatched:
            parts.append(
                f"  shape mismatch {len(mismatched)} (wrong size=?):\n    {show(mismatched)}"
            )
        raise JMPCheckpointError("\n".join(parts))
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


# ------------------------------------------------------------------------------------------------
# the backbone
# ------------------------------------------------------------------------------------------------
class JMPBackbone(Backbone):
    target_presets: dict[str, list[str]] = {}
    #: input rows of GemNet-OC's linear layers (first match wins): the quadruplet interaction's
    #: circular basis map acts on its input triplets; the atom→edge interaction embeds atoms, then
    #: works on a2ee2a edges; the edge→atom interaction ends on atoms; pair interactions, atom
    #: layers and the output MLP act on atoms; everything else in the blocks on main edges
    row_set_rules = [
        (r"re:\.quad_interaction\.mlp_cbf\.", "quad_triplet"),
        (r"re:\.atom_edge_interaction\.dense_ba\.", "atom"),
        (r"re:\.atom_edge_interaction\.(mlp_rbf|down_projection)\.", "a2ee2a"),
        (r"re:\.edge_atom_interaction\.(mlp_cbf|up_projection_ca)\.", "atom"),
        (r"re:\.(atom_interaction|atom_emb_layers|atom_update\.layers)\.", "atom"),
        (r"re:^backbone\.out_blocks\.\d+\.(layers|seq_energy_pre|seq_energy2)\.", "atom"),
        (r"re:^backbone\.out_mlp_E\.", "atom"),
        (r"re:^backbone\.(int_blocks|out_blocks)\.", "edge"),
    ]
    #: a 19 Å GemNet-OC graph has thousands of quadruplets per atom: keep stacked sample passes
    #: small
    max_batch_atoms = 300

    def __init__(
        self,
        checkpoint: str | None = None,
        size: str = "s",
        cutoff: float = 19.0,
        max_neighbors: int | None = None,
        adapt: Adapt = "blocks",
        ema: bool = True,
        seed: int = 0,
        trust_checkpoint: bool = False,
    ) -> None:
        """``trust_checkpoint``: allow full unpickling of ``checkpoint`` (the released JMP files
        need it: they pickle JMP's configuration classes); see
        :mod:`mofbalora.backbones.checkpoint`."""
        super().__init__()
        if size not in SIZES:
            raise ValueError(f"unknown JMP size {size!r}; choose from {sorted(SIZES)}")
        if adapt not in ADAPT_CHOICES:
            raise ValueError(
                f"unknown JMP adapter placement {adapt!r}; choose from {list(ADAPT_CHOICES)}"
            )
        if cutoff <= 0 or (max_neighbors is not None and max_neighbors < 1):
            raise ValueError(
                "cutoff must be > 0 and max_neighbors >= 1 "
                f"(or None), got {cutoff!r}, {max_neighbors!r}"
            )
        config = SIZES[size]
        self.config = config
        self.size, self.checkpoint, self.adapt = size, checkpoint, adapt
        self.cutoff, self.max_neighbors = float(cutoff), max_neighbors
        self.embedding_dim = self.descriptor_dim = config.emb_size_atom
        self.embedding = _AtomEmbedding(config.num_elements, config.emb_size_atom)
        self.backbone = GemNetOC(config)
        if checkpoint is None:
            init_random_(self, seed)
            self.name = f"jmp-{size}-random"
            warnings.warn(
                f"JMP backbone with random weights (size {size!r}, seed {seed}); pass "
                f"checkpoint=PATH to jmp-{size}.pt for the pretrained model",
                stacklevel=2,
            )
        else:
            load_jmp_state(
                self,
                read_jmp_checkpoint(checkpoint, ema=ema, trust=trust_checkpoint),
                source=str(checkpoint),
            )
            self.name = f"jmp-{size}"
        for p in self.parameters():
            p.requires_grad_(False)
        last = config.num_blocks - 1
        blocks = [r"re:^backbone\.int_blocks\.\d+\..*\.linear$"]
        readout = [r"re:^backbone\.out_mlp_E\..*\.linear$"]
        self.target_presets = {
            "blocks": blocks,
            "last_block": [rf"re:^backbone\.int_blocks\.{last}\..*\.linear$"],
            "readout": readout,
            "all": blocks + readout + [r"re:^backbone\.out_blocks\.\d+\..*\.linear$"],
        }

    # -- structure -> input ------------------------------------------------------------------------
    def featurize_namespace(self) -> str:
        k = "qmof-rule" if self.max_neighbors is None else self.max_neighbors
        return f"jmp/graphs-cutoff{self.cutoff:g}-k{k}/v2"

    def featurize(self, structures: list) -> list[Any]:
        out = []
        for s in structures:
            z = np.asarray(s.atomic_numbers, dtype=np.int64)
            if z.size == 0 or z.min() < 1 or z.max() > self.config.num_elements:
                raise FeaturizationError(f"atomic numbers outside 1..{self.config.num_elements}")
            pos = np.asarray(s.cart_coords, dtype=np.float64)
            cell = np.asarray(s.lattice.matrix, dtype=np.float64)
            graphs = build_graphs(pos, cell, self._limits(len(s)), include_a2a=False)
            out.append(
                {
                    "z": z.astype(np.int16),
                    "pos": pos,
                    "cell": cell,
                    "graphs": graphs,
                    "n_atoms": int(z.size),
                }
            )
        return out

    def _limits(self, n_atoms: int) -> NeighbourLimits:
        return NeighbourLimits.jmp_qmof(n_atoms, self.cutoff, self.max_neighbors)

    # -- batch -> embeddings -----------------------------------------------------------------------
    def collate(self, inputs: list[Any]) -> dict:
        sizes = torch.tensor([x["n_atoms"] for x in inputs], dtype=torch.long)
        atom_offset = torch.cumsum(sizes, 0) - sizes
        graphs: dict[str, dict[str, torch.Tensor]] = {}
        for name in GRAPHS:
            # not cached (up to ~1000 neighbours per atom): rebuilt here, ~0.2-0.7 s per structure
            if name == "a2a":
                built: dict[int, dict] = {}  # T-sample batches repeat the same inputs
                parts = [
                    built.setdefault(
                        id(x), a2a_graph(x["pos"], x["cell"], self._limits(x["n_atoms"]))
                    )
                    if id(x) not in built
                    else built[id(x)]
                    for x in inputs
                ]
            else:
                parts = [x["graphs"][name] for x in inputs]
            counts = torch.tensor([len(p["s"]) for p in parts], dtype=torch.long)
            shift = torch.repeat_interleave(atom_offset, counts)
            g = {
                "s": torch.from_numpy(np.concatenate([p["s"] for p in parts])).long() + shift,
                "t": torch.from_numpy(np.concatenate([p["t"] for p in parts])).long() + shift,
                "o": torch.from_numpy(np.concatenate([p["o"] for p in parts])).long(),
                "owner": torch.repeat_interleave(torch.arange(len(inputs)), counts),
            }
            if name == "main":
                edge_offset = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
                g["swap"] = (
                    torch.from_numpy(np.concatenate([p["swap"] for p in parts])).long()
                    + edge_offset
                )
            graphs[name] = g
        n_atoms = int(sizes.sum())
        return {
            "n_atoms": sizes,
            "structure_index": torch.repeat_interleave(torch.arange(len(inputs)), sizes),
            "z": torch.from_numpy(np.concatenate([x["z"] for x in inputs])).long(),
            "pos": torch.from_numpy(np.concatenate([x["pos"] for x in inputs])),
            "cell": torch.from_numpy(np.stack([x["cell"] for x in inputs])),
            "graphs": graphs,
            "idx": interaction_indices(graphs, n_atoms),
        }

    def _geometry(self, batch: dict) -> dict:
        dtype = self.embedding.atom_embedding.weight.dtype
        pos, cell = batch["pos"].to(dtype), batch["cell"].to(dtype)
        geo = {}
        for name, g in batch["graphs"].items():
            shift = torch.bmm(g["o"].to(dtype)[:, None, :], cell[g["owner"]]).squeeze(1)
            vec = pos[g["t"]] - (pos[g["s"]] + shift)
            d = vec.norm(dim=-1)
            geo[name] = {**g, "d": d, "v": vec / d[:, None]}
        return geo

    def structure_descriptor(self, batch: dict) -> torch.Tensor:
        """Mean over atoms of the (frozen) atom-type embedding."""
        return structure_mean(self.embedding(batch["z"]), batch)

    def named_row_sets(self, batch: dict) -> dict[str, torch.Tensor]:
        """Structure index of the rows the adaptable layers see: atoms, main edges, a2ee2a edges and
        the quadruplet interaction's input triplets."""
        g, idx = batch["graphs"], batch["idx"]
        return {
            "atom": batch["structure_index"],
            "edge": g["main"]["owner"],
            "a2ee2a": g["a2ee2a"]["owner"],
            "quad_triplet": g["main"]["owner"][idx["qin_in"]],
        }

    def forward(self, batch: dict) -> BackboneOutput:
        index = batch["structure_index"]
        sets = self.named_row_sets(batch)
        with row_sets(**sets):
            h = self.embedding(batch["z"])
            emb = self.backbone(h, self._geometry(batch), batch["idx"])
        return BackboneOutput(emb, index, len(batch["n_atoms"]), sets)
