"""CHGNet 0.3.0 (Deng et al., Nat. Mach. Intell. 2023) as a band-gap backbone.

The pretrained weights (412,525 parameters, trained on MPtrj) ship inside the ``chgnet`` package and
load offline. The backbone returns CHGNet's per-atom features after its readout MLP's hidden layers
(the energy output layer is dropped): 64 numbers per atom.

Adapter placement (``adapt``), a measured choice (see README and reports/):

- ``"readout"`` (default): adapters on the three hidden layers of CHGNet's per-atom readout MLP. The
  message-passing trunk is frozen and *cached*: :meth:`featurize` runs it once per structure and
  stores the (n_atoms, 64) features after the readout LayerNorm, so training and T-sample inference
  only run the readout (T samples cost almost nothing more than one).
- ``"last_block_cached"``: also the last atom-convolution block, trained from a cache of that
  block's inputs (atom and bond features, bond weights, graph indices: the *cut*), so a step runs
  one block and the readout instead of the whole trunk; same adapters and outputs as ``last_block``.
  The block runs without building its 192-wide edge messages
  (:mod:`mofbalora.backbones.chgnet_block`), and a batch that repeats its inputs (the T stacked
  draws of a prediction) is collated once and shares the frozen work.
- ``"last_block"``: also the last atom-convolution block; needs the full graph each step (no trunk
  cache).
- ``"all"``: all atom, bond and angle blocks and the readout; full forward each step.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from mofbalora.backbones.base import Backbone, BackboneOutput, FeaturizationError, structure_mean
from mofbalora.backbones.chgnet_block import cut_block_forward, supports_gathered
from mofbalora.backbones.chgnet_cache import CUT_NAMESPACES, run_trunk_pass
from mofbalora.backbones.chgnet_graph import use_array_graphs
from mofbalora.rows import frozen_pass, owners_from_sizes, row_sets

Adapt = Literal["readout", "last_block_cached", "last_block", "all"]
#: per-atom layer outputs kept by :meth:`CHGNetBackbone.trunk_activations`, in order
ATOM_LAYERS = (
    "atom_embedding",
    "atom_conv_0",
    "atom_conv_1",
    "atom_conv_2",
    "atom_conv_3",
    "readout_norm",
)
ACTIVATION_ARRAYS = ("readout", "atom_layers", "atomic_numbers")
CUT_ARRAYS = ("cut_bond_feas", "cut_bond_weights", "cut_atom_graph", "cut_directed2undirected")
CUT_DTYPES = ("float16", "float32")
ACTIVATIONS_NAMESPACE = "activations/v1"
FEATURES = ("readout", "all_layers")
#: float16 cut: the block's atom input is the float16 ``atom_layers[:, 3]`` of the activations
#: entry; float32 (exact, for tests) keeps its own ``cut_atom_feas``
ADAPT_CHOICES = ("readout", "last_block_cached", "last_block", "all")
#: placements that train from cached trunk activations (no graph, no trunk pass per step)
CACHED = ("readout", "last_block_cached")

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
        raise ImportError(
            "the CHGNet backbone needs the chgnet package: pip install mofbalora"
        ) from exc
    return CHGNet, BatchedGraph


def _copies(inputs: list) -> int:
    """How many times ``inputs`` repeats its first part object for object (``chunk * T``: T
    stacked draws)."""
    n = len(inputs)
    period = next((j for j in range(1, n) if inputs[j] is inputs[0]), n)
    if n % period or any(inputs[j] is not inputs[j % period] for j in range(period, n)):
        return 1
    return n // period


def _collate_cut(inputs: list) -> dict:
    """Concatenate the cached inputs of the last block; graph indices shifted past earlier
    structures."""

    def cat(name, dtype=torch.float32):
        return torch.from_numpy(np.concatenate([np.asarray(x[name]) for x in inputs])).to(dtype)

    n_atoms = [int(x["n_atoms"]) for x in inputs]
    n_bonds = [len(x["cut_bond_feas"]) for x in inputs]
    n_edges = [len(x["cut_atom_graph"]) for x in inputs]
    atom_shift = torch.repeat_interleave(
        torch.cumsum(torch.tensor([0] + n_atoms[:-1]), 0), torch.tensor(n_edges)
    )
    bond_shift = torch.repeat_interleave(
        torch.cumsum(torch.tensor([0] + n_bonds[:-1]), 0), torch.tensor(n_edges)
    )
    return {
        "cut_atom_feas": cat("cut_atom_feas"),
        "cut_bond_feas": cat("cut_bond_feas"),
        "cut_bond_weights": cat("cut_bond_weights"),
        "cut_atom_graph": cat("cut_atom_graph", torch.long) + atom_shift[:, None],
        "cut_directed2undirected": cat("cut_directed2undirected", torch.long) + bond_shift,
        "edge_owner": owners_from_sizes(n_edges),
    }


class CHGNetBackbone(Backbone):
    name = "chgnet"
    embedding_dim = 64
    descriptor_dim = 64
    target_presets = {
        "readout": _READOUT,
        "last_block_cached": _READOUT + _LAST,
        "last_block": _READOUT + _LAST,
        "all": _READOUT + _ALL,
    }
    #: run the cut's last block without building its edge messages (False: CHGNet's own module, the
    #: reference)
    fast_block = True
    #: input rows of each adaptable layer: messages of the atom convolutions are directed atom-graph
    #: edges, of the bond convolutions and angle updates bond-graph angles; their output MLPs act on
    #: atoms and undirected bonds; the readout on atoms
    row_set_rules = [
        (r"re:^readout_mlp\.", "atom"),
        (r"re:\.twoBody_atom\.", "edge"),
        (r"re:^trunk\.atom_conv_layers\.\d+\.mlp_out\.", "atom"),
        (r"re:^trunk\.bond_conv_layers\.\d+\.twoBody_bond\.", "angle"),
        (r"re:^trunk\.bond_conv_layers\.\d+\.mlp_out\.", "bond"),
        (r"re:^trunk\.angle_layers\.", "angle"),
    ]

    def __init__(
        self,
        adapt: Adapt = "readout",
        model_name: str = "0.3.0",
        features: str = "readout",
        cut_dtype: str = "float16",
    ) -> None:
        """``features``: what the head reads per atom: ``readout`` (the readout MLP's output, 64) or
        ``all_layers`` (that, the readout input, and the frozen outputs of the atom embedding and
        the four atom convolutions: 448; cached placements only). ``cut_dtype``: precision of the
        cached inputs of the last block (``last_block_cached``; float32 reproduces the full trunk
        to float tolerance)."""
        super().__init__()
        if adapt not in ADAPT_CHOICES:
            raise ValueError(
                f"unknown CHGNet adapter placement {adapt!r}; choose from {list(ADAPT_CHOICES)}"
            )
        if features not in FEATURES:
            raise ValueError(
                f"unknown CHGNet head features {features!r}; choose from {list(FEATURES)}"
            )
        if features == "all_layers" and adapt not in CACHED:
            raise ValueError(
                f"features='all_layers' reads cached trunk activations: needs adapt in "
                f"{list(CACHED)}, got {adapt!r}"
            )
        if cut_dtype not in CUT_DTYPES:
            raise ValueError(f"unknown cut_dtype {cut_dtype!r}; choose from {list(CUT_DTYPES)}")
        self.cut_dtype = cut_dtype
        self.features = features
        if adapt == "last_block_cached":
            # the block's rows are directed edges (~76 per QMOF atom): 1,024 atoms keep each
            # (edges, 64) float tensor near 20 MB, below glibc's 32 MB mmap ceiling, past which
            # every allocation is fresh pages and page faults (prediction at 64 structures per pass
            # spent a fifth of its time in them)
            self.max_batch_atoms = 1024
            # a prediction's stacked draws share one copy of the inputs and the frozen
            # pre-activations, and the block runs them on cache-sized tiles
            # (chgnet_block._messages_in_tiles): no (copies x edges, 64) tensor is formed, so more
            # copies per pass pay (1,024 -> 4,096 atom rows: 24 % less CPU time per draw, 10 QMOF
            # structures, T = 32, one thread)
            self.max_draw_atoms = 4096
        self.embedding_dim = 64 if features == "readout" else 64 * 7
        CHGNet, _ = _import_chgnet()
        chgnet = CHGNet.load(model_name=model_name, use_device="cpu", verbose=False)
        if not chgnet.mlp_first:
            raise ValueError(
                f"CHGNet {model_name} pools before its MLP; only per-atom readouts are supported"
            )
        self.adapt = adapt
        self.model_name = model_name
        self.name = f"chgnet-{model_name}"
        mlp_layers = list(chgnet.mlp.layers)
        # hidden layers of the per-atom readout: Linear, SiLU, Linear, SiLU, Linear, SiLU (drop the
        # energy output)
        last_linear = max(i for i, m in enumerate(mlp_layers) if isinstance(m, nn.Linear))
        self.readout_mlp = nn.Sequential(
            *[m for m in mlp_layers[:last_linear] if not isinstance(m, nn.Dropout)]
        )
        chgnet.mlp = _NoEnergy()
        self.trunk = chgnet
        use_array_graphs(chgnet.graph_converter)  # the same graphs, from arrays (chgnet_graph.py)
        self._captured: list[torch.Tensor] = []
        self.trunk.readout_norm.register_forward_hook(
            lambda _m, _i, out: self._captured.append(out)
        )
        for p in self.parameters():
            p.requires_grad_(False)

    # -- structure -> input ------------------------------------------------------------------------
    def featurize_namespace(self) -> str:
        what = "readout-features" if self.adapt == "readout" else "graph"
        return f"{self.name}/{what}/v1"

    def array_namespace(self) -> str | None:
        """Cached placements keep plain arrays (:class:`~mofbalora.data.arrays.ArrayStore`, no
        pickles)."""
        return f"{self.name}/{ACTIVATIONS_NAMESPACE}" if self.adapt in CACHED else None

    def array_namespaces(self) -> dict[str, tuple[str, ...]]:
        """Each array-store namespace this placement reads, with the arrays kept there."""
        spaces = {f"{self.name}/{ACTIVATIONS_NAMESPACE}": ACTIVATION_ARRAYS}
        if self.adapt == "last_block_cached":
            extra = ("cut_atom_feas",) if self.cut_dtype == "float32" else ()
            spaces[f"{self.name}/{CUT_NAMESPACES[self.cut_dtype]}"] = CUT_ARRAYS + extra
        return spaces

    def to_arrays(self, x: dict) -> dict[str, np.ndarray]:
        return {k: x[k] for names in self.array_namespaces().values() for k in names}

    def from_arrays(self, arrays: dict[str, np.ndarray]) -> dict:
        """An input from cached activations: the readout-norm features (float32, exact), every
        layer's per-atom output (float16, for heads that read all layers) and, for
        ``last_block_cached``, the inputs of the last atom convolution."""
        readout = torch.from_numpy(np.asarray(arrays["readout"], dtype=np.float32))
        x = {
            **{k: np.asarray(arrays[k]) for k in ACTIVATION_ARRAYS},
            "atom_features": readout,
            "n_atoms": int(readout.shape[0]),
        }
        if self.adapt == "last_block_cached":
            x.update({k: arrays[k] for k in CUT_ARRAYS})
            x["cut_atom_feas"] = (
                arrays["cut_atom_feas"] if "cut_atom_feas" in arrays else x["atom_layers"][:, 3]
            )
        return x

    def prefill_cache(
        self, paths: list, *, workers: int, max_atoms: int, progress: bool = True
    ) -> bool:
        """The frozen trunk over ``paths`` in ``workers`` one-thread processes (readout placement on
        a CPU): small graphs use two processes better than two threads of one forward
        (benchmarks/bench_screen.py)."""
        if (
            workers < 2
            or self.adapt != "readout"
            or next(self.trunk.parameters()).device.type != "cpu"
        ):
            return False
        build_trunk_cache(
            paths,
            workers=workers,
            cut=False,
            model_name=self.model_name,
            max_atoms=max_atoms,
            progress="trunk" if progress else False,
        )
        return True

    def to_plain(self, x: dict) -> dict:
        """Uncached placements keep a CHGNet ``CrystalGraph`` per input: cached as its tensors
        and cutoffs."""
        return {**x, "graph": x["graph"].to_dict()} if "graph" in x else x

    def from_plain(self, x: dict) -> dict:
        if "graph" not in x:
            return x
        from chgnet.graph.crystalgraph import CrystalGraph

        return {**x, "graph": CrystalGraph.from_dict(x["graph"])}

    def _graph(self, structure) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return self.trunk.graph_converter(structure)
        except Exception as exc:
            raise FeaturizationError(f"CHGNet graph construction failed: {exc}") from None

    def featurize_batch_size(self) -> int:
        """One structure per trunk pass on a CPU: CHGNet's batched graphs (concatenated bond and
        angle indices) made the frozen pass slower there, not faster (0.83x the throughput of one
        graph at a time on 120 CoRE MOF files, benchmarks/bench_screen.py); batches of 8 on a
        GPU."""
        return 1 if next(self.trunk.parameters()).device.type == "cpu" else 8

    def featurize(self, structures: list) -> list[Any]:
        graphs = [self._graph(s) for s in structures]
        if self.adapt == "last_block_cached":  # the cut is taken one graph at a time
            return [
                self.from_arrays(self.trunk_activations([g], cut=True, cut_dtype=self.cut_dtype)[0])
                for g in graphs
            ]
        if self.adapt not in CACHED:
            return [{"graph": g, "n_atoms": int(g.atomic_number.numel())} for g in graphs]
        return [self.from_arrays(a) for a in self.trunk_activations(graphs)]

    def trunk_activations(
        self, graphs: list, *, cut: bool = False, cut_dtype: str = "float16"
    ) -> list[dict[str, np.ndarray]]:
        """The frozen trunk's activations, one dict of arrays per graph (one batched pass):

        - ``readout`` (n_atoms, 64) float32: features after the readout LayerNorm (the readout's
          input);
        - ``atom_layers`` (n_atoms, 6, 64) float16: per-atom output of the atom embedding, the four
          atom convolutions and the readout LayerNorm (:data:`ATOM_LAYERS`);
        - ``atomic_numbers`` (n_atoms,) int16;
        - with ``cut=True`` (one graph at a time), the inputs of the last atom convolution (the cut
          that lets adapters in that block train from a cache, :data:`CUT_ARRAYS`):
          ``cut_atom_feas`` (n_atoms, 64), ``cut_bond_feas`` and ``cut_bond_weights`` (n_bonds, 64)
          in ``cut_dtype``, ``cut_atom_graph`` (n_edges, 2) and ``cut_directed2undirected``
          (n_edges,) int32.
        """
        if cut and len(graphs) != 1:
            raise ValueError("the cut of the last block is cached one graph at a time")
        captured: dict[str, torch.Tensor] = {}
        modules = {
            "atom_embedding": self.trunk.atom_embedding,
            "readout_norm": self.trunk.readout_norm,
            **{f"atom_conv_{i}": m for i, m in enumerate(self.trunk.atom_conv_layers)},
        }
        hooks = [
            m.register_forward_hook(lambda _m, _i, out, n=n: captured.__setitem__(n, out.detach()))
            for n, m in modules.items()
        ]
        if cut:
            hooks.append(
                self.trunk.atom_conv_layers[-1].register_forward_pre_hook(
                    lambda _m, _a, kw: captured.update(
                        {f"cut_{k}": v.detach() for k, v in kw.items()}
                    ),
                    with_kwargs=True,
                )
            )
        try:
            # cached activations are the pretrained trunk's, adapters or not
            with torch.no_grad(), frozen_pass():
                self._run_trunk(graphs)
        finally:
            for h in hooks:
                h.remove()
        sizes = [int(g.atomic_number.numel()) for g in graphs]
        layers = torch.stack([captured[n].cpu() for n in ATOM_LAYERS], 1)
        readout = captured["readout_norm"].cpu().to(torch.float32)
        z = torch.cat([g.atomic_number.cpu() for g in graphs])
        out = [
            {
                "readout": r.clone().numpy(),
                "atom_layers": a.to(torch.float16).numpy(),
                "atomic_numbers": zz.to(torch.int16).numpy(),
            }
            for r, a, zz in zip(
                torch.split(readout, sizes),
                torch.split(layers, sizes),
                torch.split(z, sizes),
                strict=True,
            )
        ]
        if cut:
            dt = getattr(torch, cut_dtype)
            out[0].update(
                {
                    "cut_atom_feas": captured["cut_atom_feas"].cpu().to(dt).numpy(),
                    "cut_bond_feas": captured["cut_bond_feas"].cpu().to(dt).numpy(),
                    "cut_bond_weights": captured["cut_bond_weights"].cpu().to(dt).numpy(),
                    "cut_atom_graph": captured["cut_atom_graph"].cpu().to(torch.int32).numpy(),
                    "cut_directed2undirected": captured["cut_directed2undirected"]
                    .cpu()
                    .to(torch.int32)
                    .numpy(),
                }
            )
        return out

    def _cut_block(self, batch: dict, sets: dict[str, torch.Tensor]) -> torch.Tensor:
        """The last atom convolution and the readout norm from the cut, for the batch's ``copies``:
        without building the edge messages
        (:func:`~mofbalora.backbones.chgnet_block.cut_block_forward`) unless :attr:`fast_block` is
        off or an adapter there cannot take gathered rows (then CHGNet's own module on the
        stacked copies: the reference computation)."""
        copies = batch.get("copies", 1)
        n_structures = len(batch["n_atoms"]) // copies
        owner = batch["edge_owner"]  # copy t of structure g is structure t · n_structures + g
        sets["edge"] = (
            owner
            if copies == 1
            else (
                owner + n_structures * torch.arange(copies, device=owner.device)[:, None]
            ).reshape(-1)
        )
        conv = self.trunk.atom_conv_layers[-1]
        cut = {
            "atom_feas": batch["cut_atom_feas"],
            "bond_feas": batch["cut_bond_feas"],
            "bond_weights": batch["cut_bond_weights"],
            "atom_graph": batch["cut_atom_graph"],
            "directed2undirected": batch["cut_directed2undirected"],
        }
        with row_sets(**sets):
            if self.fast_block and supports_gathered(conv):
                atom_feas = cut_block_forward(conv, **cut, copies=copies)
            else:
                atom_feas = conv(**(cut if copies == 1 else _stacked_cut(batch, copies)))
            return self.trunk.readout_norm(atom_feas)

    def _run_trunk(self, graphs: list) -> torch.Tensor:
        _, BatchedGraph = _import_chgnet()
        device = next(self.trunk.parameters()).device
        if device.type != "cpu":
            graphs = [g.to(str(device)) for g in graphs]
        batched = BatchedGraph.from_graphs(
            graphs,
            bond_basis_expansion=self.trunk.bond_basis_expansion,
            angle_basis_expansion=self.trunk.angle_basis_expansion,
        )
        self._captured.clear()
        self.trunk._compute(batched)
        out = self._captured.pop()
        self._captured.clear()
        return out

    # -- batch -> embeddings -----------------------------------------------------------------------
    def collate(self, inputs: list[Any]) -> dict:
        """A batch of ``inputs``. With ``last_block_cached``, inputs that repeat object for object
        (``chunk * T``, the T stacked draws of a prediction) keep the cut of one copy (``copies`` =
        T): the block's frozen work is done once for all copies; per-atom arrays and indices
        cover every copy, as for distinct inputs."""
        sizes = torch.tensor([x["n_atoms"] for x in inputs], dtype=torch.long)
        batch = {
            "n_atoms": sizes,
            "structure_index": torch.repeat_interleave(torch.arange(len(inputs)), sizes),
        }
        copies = _copies(inputs) if self.adapt in CACHED else 1
        one = inputs[: len(inputs) // copies]
        if self.adapt == "last_block_cached":
            batch.update(_collate_cut(one))
        if self.adapt in CACHED:
            batch["copies"] = copies
            # one copy of the per-atom inputs: forward repeats only what the adapters change
            batch["atom_features"] = torch.cat([x["atom_features"] for x in one])
            if self.features == "all_layers":
                # float16 -> float32 in torch (vectorised; numpy's astype took 3x longer)
                layers = torch.cat(
                    [torch.from_numpy(np.asarray(x["atom_layers"])[:, :5]) for x in one]
                )
                batch["atom_layers"] = layers.to(torch.float32).reshape(len(layers), -1)
        else:
            batch["graphs"] = [x["graph"] for x in inputs]
        return batch

    def structure_descriptor(self, batch: dict) -> torch.Tensor:
        """Mean over atoms of the frozen trunk features (readout) or of the atom embeddings
        (graph modes)."""
        if self.adapt == "readout":  # one copy of repeated inputs, as for the cut below
            copies = batch.get("copies", 1)
            one = len(batch["n_atoms"]) // copies
            feats = batch["atom_features"]
            mean = structure_mean(
                feats,
                {
                    "n_atoms": batch["n_atoms"][:one],
                    "structure_index": batch["structure_index"][: len(feats)],
                },
            )
            return mean.repeat(copies, 1) if copies > 1 else mean
        elif self.adapt == "last_block_cached":  # the cut holds one copy of repeated inputs
            copies = batch.get("copies", 1)
            one = len(batch["n_atoms"]) // copies
            feats = batch["cut_atom_feas"]
            mean = structure_mean(
                feats,
                {
                    "n_atoms": batch["n_atoms"][:one],
                    "structure_index": batch["structure_index"][: len(feats)],
                },
            )
            return mean.repeat(copies, 1) if copies > 1 else mean
        else:
            z = torch.cat([g.atomic_number for g in batch["graphs"]]).long()
            feats = self.trunk.atom_embedding(z - 1)
        return structure_mean(feats, batch)

    def _readout(self, atom_feas: torch.Tensor, copies: int) -> torch.Tensor:
        """The readout MLP's hidden layers for ``copies`` stacked copies (copy-major). Under the
        readout placement ``atom_feas`` is one copy of frozen rows: an adapter on the first layer
        that takes gathered rows (duck typing, as :mod:`~mofbalora.backbones.chgnet_block`) gets
        its frozen product and its own per-row work once for all copies, and only the noise per
        copy."""
        if self.adapt != "readout" or copies == 1:
            return self.readout_mlp(atom_feas)
        first = self.readout_mlp[0]
        if not hasattr(first, "forward_gathered"):
            return self.readout_mlp(atom_feas.repeat(copies, 1))
        rows = torch.arange(len(atom_feas), device=atom_feas.device)
        pre = getattr(first, "base_layer", first)(atom_feas)
        return self.readout_mlp[1:](first.forward_gathered(pre, [atom_feas], [rows], copies))

    def forward(self, batch: dict) -> BackboneOutput:
        index = batch["structure_index"]
        sets = {"atom": index}
        copies = batch.get("copies", 1)
        if self.adapt == "readout":
            atom_feas = batch["atom_features"]  # one copy (frozen)
        elif self.adapt == "last_block_cached":  # the last block and the readout norm, from the cut
            atom_feas = self._cut_block(batch, sets)
        else:
            graphs = batch["graphs"]
            # rows of the trunk's layers: directed atom-graph edges, undirected bonds and bond-graph
            # angles
            sets["edge"] = owners_from_sizes([g.atom_graph.shape[0] for g in graphs])
            sets["bond"] = owners_from_sizes(
                [
                    int(g.directed2undirected.max()) + 1 if g.directed2undirected.numel() else 0
                    for g in graphs
                ]
            )
            sets["angle"] = owners_from_sizes([g.bond_graph.shape[0] for g in graphs])
            with row_sets(**sets):
                atom_feas = self._run_trunk(graphs)
        with row_sets(**sets):
            emb = self._readout(atom_feas, copies)
        shared = None
        if self.features == "all_layers":
            layers = batch["atom_layers"].to(emb.dtype)
            if copies == 1:
                emb = torch.cat([emb, atom_feas, layers], dim=1)
            elif self.adapt == "readout":  # the frozen columns once, not once per copy (the head)
                shared = torch.cat([atom_feas, layers], dim=1)
            else:
                emb, shared = torch.cat([emb, atom_feas], dim=1), layers
        return BackboneOutput(emb, index, len(batch["n_atoms"]), sets, shared)


def _stacked_cut(batch: dict, copies: int) -> dict[str, torch.Tensor]:
    """The cut of ``copies`` stacked copies of a batch, built (CHGNet's own module needs them
    so)."""
    n_atoms, n_bonds = len(batch["cut_atom_feas"]), len(batch["cut_bond_feas"])
    graph, d2u = batch["cut_atom_graph"], batch["cut_directed2undirected"]
    shift = torch.arange(copies, device=graph.device).repeat_interleave(len(graph))
    return {
        "atom_feas": batch["cut_atom_feas"].repeat(copies, 1),
        "bond_feas": batch["cut_bond_feas"].repeat(copies, 1),
        "bond_weights": batch["cut_bond_weights"].repeat(copies, 1),
        "atom_graph": graph.repeat(copies, 1) + (shift * n_atoms)[:, None],
        "directed2undirected": d2u.repeat(copies) + shift * n_bonds,
    }


def build_trunk_cache(
    paths,
    *,
    workers: int = 2,
    cut: bool = True,
    chunk: int = 16,
    model_name: str = "0.3.0",
    progress: bool | str = True,
    max_atoms: int | None = None,
) -> dict[str, int]:
    """Run CHGNet's frozen trunk over ``paths`` in ``workers`` processes into the array store
    (resumable); returns a tally by outcome (``ok`` or the failure reason). ``screen(workers=N)``
    uses it as a pre-pass over its candidates, ``mofbalora data trunk-cache`` over a dataset."""
    return run_trunk_pass(
        paths,
        backbone_class=CHGNetBackbone,
        workers=workers,
        cut=cut,
        chunk=chunk,
        model_name=model_name,
        progress=progress,
        max_atoms=max_atoms,
    )
