"""CHGNet's last atom convolution run from its cached inputs (the cut) at the cost its arithmetic
needs.

CHGNet's ``AtomConv`` builds one 192-wide message per directed edge, ``x_ij = [atom_i, bond_ij,
atom_j]`` (about 7,600 edges per QMOF structure against about 100 atoms and half as many bonds as
edges), and runs two gated MLPs over them. Everything this block does with ``x_ij`` before the first
nonlinearity is linear, so it is taken on the atoms' and bonds' rows and gathered to the edges,
never building the messages:

- the frozen pre-activation ``W0 x + b`` of both first linear layers (core and gate,
  :func:`frozen_pre_activation`), computed once per batch and shared by the T stacked draws of a
  prediction;
- the adapters' part of those two layers (θ_A x, BaLoRA's α probe and (θ_A²)(x²), the noise):
  through the adapters' ``forward_gathered(pre, parts, index, copies)``, which adds only the
  low-rank part to ``pre``.

The rest (the second linear layers, the LayerNorms and gates, the bond weights, the scatter onto
atoms, ``mlp_out``, the residual) runs on the edge and atom rows as CHGNet runs it, for each of the
``copies`` stacked draws. The result equals ``AtomConv.forward`` on the same inputs up to float
round-off (the first products are summed in three parts), with and without noise
(tests/test_cut_cache.py).

Adapters are reached by duck typing (a layer with ``forward_gathered``), so this module imports no
adapter; a first layer that is a plain ``nn.Linear`` (not adapted) gets its pre-activation as it is,
and one adapted by a type without ``forward_gathered`` sends the block back to CHGNet's own module
(:func:`supports_gathered`).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from mofbalora.rows import current_row_sets, row_sets

#: run the block with subnormal floats flushed to zero (:func:`denormals_flushed`)
FLUSH_DENORMALS = True


@contextmanager
def denormals_flushed() -> Iterator[None]:
    """Subnormal floats flushed to zero (the CPU's FTZ/DAZ modes, ``torch.set_flush_denormal``)
    inside, and the mode as it was after.

    The pretrained block's first-layer pre-activations are large (on QMOF test structures, median
    |W0 x + b| = 141 and 71 % beyond ±80), so the SiLU and sigmoid that follow take ``exp`` far into
    underflow: every such element costs the CPU a microcode assist for the subnormal intermediate,
    about 10× the time of a normal one (22 ms against 2.2 ms for one SiLU over 50,000 edge rows × 64
    on one thread). Flushing changes only values below 1.2e-38 (to 0), far under the float32
    round-off of anything the block outputs. The mode is a per-thread CPU flag; torch sets it on
    its intra-op threads too."""
    if not FLUSH_DENORMALS or bool(torch.tensor(1e-30) * 1e-10 == 0):  # off, or flushing already
        yield
        return
    if not torch.set_flush_denormal(True):  # a CPU without the modes
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _base(layer: nn.Module) -> nn.Linear:
    return getattr(layer, "base_layer", layer)


def supports_gathered(conv: nn.Module) -> bool:
    """Whether :func:`cut_block_forward` can run ``conv`` (an ``AtomConv``): both first linear
    layers of its gated MLP are plain linears or adapters with ``forward_gathered``."""
    gmlp = conv.twoBody_atom
    return all(
        isinstance(m, nn.Linear)
        or (hasattr(m, "forward_gathered") and isinstance(_base(m), nn.Linear))
        for m in (gmlp.mlp_core.layers[0], gmlp.mlp_gate.layers[0])
    )


def frozen_pre_activation(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    parts: Sequence[torch.Tensor],
    index: Sequence[torch.Tensor],
) -> torch.Tensor:
    """``x @ weight.T + bias`` for ``x = cat([p[i] for p, i in zip(parts, index)], 1)`` without
    building x: each part's product on its own rows, gathered and summed in one ``embedding_bag``
    pass (the adapters' ``gathered_product`` does the same for their low-rank part; the two
    packages do not import each other)."""
    bounds = torch.tensor([0, *(p.shape[1] for p in parts)]).cumsum(0).tolist()
    products = [p @ weight[:, a:b].T for p, a, b in zip(parts, bounds, bounds[1:], strict=False)]
    # every row gathers exactly one row of each part: the bias rides on the first
    if bias is not None:
        products[0] = products[0] + bias
    offsets = torch.tensor([0, *(p.shape[0] for p in parts[:-1])]).cumsum(0).tolist()
    bags = torch.stack([i + o for i, o in zip(index, offsets, strict=True)], 1)
    return F.embedding_bag(bags, torch.cat(products), mode="sum")


def _first_layers(
    gmlp: nn.Module, parts: Sequence[torch.Tensor], index: Sequence[torch.Tensor]
) -> Iterator[tuple[nn.Module, torch.Tensor]]:
    """The first linear layer of the core and of the gate MLP, each with its frozen
    pre-activation (n_edges, hidden)."""
    for layer in (gmlp.mlp_core.layers[0], gmlp.mlp_gate.layers[0]):
        base = _base(layer)
        yield layer, frozen_pre_activation(base.weight, base.bias, parts, index)


def first_linears(
    gmlp: nn.Module, parts: Sequence[torch.Tensor], index: Sequence[torch.Tensor], copies: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The outputs of the first linear layer of the core and of the gate MLP, (copies · n_edges,
    hidden) each: each layer's frozen pre-activation, then (adapted layers) the adapter's part
    added into it."""
    core, gate = (
        layer.forward_gathered(pre, parts, index, copies)
        if hasattr(layer, "forward_gathered")
        else (pre if copies == 1 else pre.repeat(copies, 1))
        for layer, pre in _first_layers(gmlp, parts, index)
    )
    return core, gate


Terms = tuple[torch.Tensor, "torch.Tensor | None", "torch.Tensor | None"]


def first_linear_terms(
    gmlp: nn.Module, parts: Sequence[torch.Tensor], index: Sequence[torch.Tensor], copies: int
) -> tuple[Terms, Terms]:
    """:func:`first_linears` left as sums ``(base, h, B)``: ``base`` (n_edges, hidden) shared by
    the copies, plus each copy's rank-space rows ``h`` (copies · n_edges, r) @ ``B`` (r, hidden)
    where given (an adapter's ``gathered_terms``); :func:`_term_rows` forms any rows of it."""
    core, gate = (
        layer.gathered_terms(pre, parts, index, copies)
        if hasattr(layer, "gathered_terms")
        else (pre, None, None)
        for layer, pre in _first_layers(gmlp, parts, index)
    )
    return core, gate


def _term_rows(terms: Terms, copy: int, lo: int, hi: int) -> torch.Tensor:
    """Rows ``lo:hi`` of copy ``copy`` of a first layer's output given as :data:`Terms`: a fresh
    (hi − lo, hidden) tensor (the chain after it works in place)."""
    base, h, B = terms
    if h is None:
        return base[lo:hi].clone()
    n = base.shape[0]
    return torch.addmm(base[lo:hi], h[copy * n + lo : copy * n + hi], B)


def gated_rest(gmlp: nn.Module, core: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """The rest of CHGNet's ``GatedMLP.forward`` after the first linear layers: act(norm(core)) ·
    σ(norm(gate)). Without autograd (prediction) the activations overwrite their inputs: the rows
    are memory-bound, and a fresh tensor per step costs a pass and an allocation each."""
    inplace = not torch.is_grad_enabled()
    for m in list(gmlp.mlp_core.layers)[1:]:
        core = _apply(m, core, inplace)
    for m in list(gmlp.mlp_gate.layers)[1:]:
        gate = _apply(m, gate, inplace)
    if gmlp.norm is not None:
        core, gate = gmlp.bn1(core), gmlp.bn2(gate)
    if inplace:
        return _apply(gmlp.activation, core, True).mul_(gate.sigmoid_())
    return gmlp.activation(core) * gmlp.sigmoid(gate)


def _apply(module: nn.Module, x: torch.Tensor, inplace: bool) -> torch.Tensor:
    """``module(x)``, overwriting x when allowed and the module is a SiLU."""
    if inplace and type(module) is nn.SiLU:
        return F.silu(x, inplace=True)
    return module(x)


def scatter_messages(messages: torch.Tensor, center: torch.Tensor, n_atoms: int) -> torch.Tensor:
    """Sum of each copy's edge messages (copies, n_edges, d) onto their centre atoms: (copies,
    n_atoms, d)."""
    out = messages.new_zeros(messages.shape[0], n_atoms, messages.shape[2])
    return out.index_add_(1, center, messages)


#: run the block's chain after the first linear layers tile by tile at inference
#: (:func:`_messages_in_tiles`; False: over all rows at once, the code before)
TILED_INFERENCE = True
#: edge rows per tile of the block's elementwise chain at inference (:func:`_messages_in_tiles`)
INFERENCE_TILE_ROWS = 32768


def _messages_in_tiles(
    gmlp: nn.Module,
    terms: tuple[Terms, Terms],
    weights: torch.Tensor,
    center: torch.Tensor,
    n_atoms: int,
    copies: int,
) -> torch.Tensor:
    """Inference's block from the first linear layers' terms (:func:`first_linear_terms`) to the
    atoms: each tile's first-layer rows, the gated MLP rest, bond weights and scatter
    (:func:`gated_rest`, :func:`scatter_messages`), tile by tile: (copies, n_atoms, d). A tile is
    one copy's edge rows of whole structures, about :data:`INFERENCE_TILE_ROWS` of them (one
    structure at least).

    After the first linear layers the block is a chain of about fifteen row-wise passes (the
    low-rank update, SiLU, the second linear layers, LayerNorm, the gates, the bond weights) over
    (copies · n_edges, 64) floats: a prediction's stacked draws make those tensors tens of MB, and
    each pass then streams them through main memory. On tiles the chain works on a few MB that
    the caches hold, and the (copies · n_edges, 64) first-layer outputs are never formed: the same
    arithmetic, 14 % less time per draw (reports/trunk/README.md, "Fourth pass"). The tiles hold
    whole structures and name their own rows (``row_sets(edge=...)``), so an adapted second layer
    sees each structure's rows as in the untiled pass (its noise is keyed by the row's place in
    its structure); rows are summed onto atoms in the same order, so the result equals the
    untiled chain to float round-off.

    On a CPU with several threads (:data:`INFERENCE_TILE_THREADS`) and several copies, the copies
    are split between the threads, each running its tiles with one intra-op thread
    (:func:`_in_threads`)."""
    n_edges = len(center)
    owner = current_row_sets().get("edge")
    if owner is not None and owner.numel() != copies * n_edges:
        owner = None
    tiles = _tiles(None if owner is None else owner[:n_edges], n_edges)
    core_terms, gate_terms = terms
    width = _base(gmlp.mlp_core.layers[-1]).out_features
    out = core_terms[0].new_zeros(copies, n_atoms, width)

    def run(copy_range: range) -> None:
        for t in copy_range:
            for lo, hi in tiles:
                core, gate = _term_rows(core_terms, t, lo, hi), _term_rows(gate_terms, t, lo, hi)
                if owner is None:
                    tile = gated_rest(gmlp, core, gate)
                else:
                    with row_sets(edge=owner[t * n_edges + lo : t * n_edges + hi]):
                        tile = gated_rest(gmlp, core, gate)
                out[t].index_add_(0, center[lo:hi], tile.mul_(weights[lo:hi]))

    workers = INFERENCE_TILE_THREADS or torch.get_num_threads()
    workers = min(workers, copies) if center.device.type == "cpu" and tiles else 1
    if workers <= 1:
        run(range(copies))
    else:
        bounds = torch.linspace(0, copies, workers + 1).round().long().tolist()
        _in_threads(run, [range(a, b) for a, b in zip(bounds, bounds[1:], strict=False)])
    return out


#: CPU threads that share a prediction's copies in :func:`_messages_in_tiles`, each with one
#: intra-op thread (None: torch's intra-op thread count; 1: the calling thread alone, with torch's
#: intra-op threads inside each kernel). Small kernels (the adapters' noise and probes) then run
#: side by side instead of one after another: 15 % less time per prediction on 2 cores
#: (reports/trunk/README.md, "Fifth pass")
INFERENCE_TILE_THREADS: int | None = None
_POOL: tuple[ThreadPoolExecutor, int] | None = None  # (pool, its worker count)


def _in_threads(fn, jobs: list) -> None:
    """``fn(job)`` for each job, the first on the calling thread and the others on a shared pool,
    each with one intra-op thread, inference mode off autograd, subnormals flushed and the caller's
    context variables (row sets, sampling state)."""
    global _POOL
    if _POOL is None or _POOL[1] < len(jobs) - 1:
        _POOL = ThreadPoolExecutor(max_workers=max(1, len(jobs) - 1)), max(1, len(jobs) - 1)
    pool = _POOL[0]

    def job(arg):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.no_grad(), denormals_flushed():
                fn(arg)
        finally:
            torch.set_num_threads(threads)

    futures = [pool.submit(contextvars.copy_context().run, job, arg) for arg in jobs[1:]]
    contextvars.copy_context().run(job, jobs[0])
    for f in futures:
        f.result()


def _tiles(owner: torch.Tensor | None, n_rows: int) -> list[tuple[int, int]]:
    """Row ranges ``(lo, hi)`` of about :data:`INFERENCE_TILE_ROWS` rows that never split a run
    of equal ``owner`` (a structure's rows; ``None``: any split)."""
    if owner is None:
        return [
            (lo, min(lo + INFERENCE_TILE_ROWS, n_rows))
            for lo in range(0, n_rows, INFERENCE_TILE_ROWS)
        ]
    cuts = (torch.nonzero(owner[1:] != owner[:-1]).flatten() + 1).tolist() + [n_rows]
    tiles, lo, prev = [], 0, 0
    for cut in cuts:
        if cut - lo > INFERENCE_TILE_ROWS and prev > lo:
            tiles.append((lo, prev))
            lo = prev
        prev = cut
    if n_rows > lo:
        tiles.append((lo, n_rows))
    return tiles


def cut_block_forward(
    conv: nn.Module,
    atom_feas: torch.Tensor,
    bond_feas: torch.Tensor,
    bond_weights: torch.Tensor,
    atom_graph: torch.Tensor,
    directed2undirected: torch.Tensor,
    copies: int = 1,
) -> torch.Tensor:
    """CHGNet's ``AtomConv.forward`` (``conv``) on one set of inputs, for ``copies`` stacked draws:
    the new atom features (copies · n_atoms, d), copy-major. The caller names the row sets of the
    stacked rows (``edge``: copies · n_edges, ``atom``: copies · n_atoms) for the adapters. Runs
    with subnormals flushed to zero (:func:`denormals_flushed`)."""
    with denormals_flushed():
        return _cut_block_forward(
            conv, atom_feas, bond_feas, bond_weights, atom_graph, directed2undirected, copies
        )


def _cut_block_forward(
    conv: nn.Module,
    atom_feas: torch.Tensor,
    bond_feas: torch.Tensor,
    bond_weights: torch.Tensor,
    atom_graph: torch.Tensor,
    directed2undirected: torch.Tensor,
    copies: int,
) -> torch.Tensor:
    center, neighbour = atom_graph[:, 0], atom_graph[:, 1]
    parts, index = (atom_feas, bond_feas, atom_feas), (center, directed2undirected, neighbour)
    gmlp = conv.twoBody_atom
    weights = bond_weights.index_select(0, directed2undirected)
    if torch.is_grad_enabled() or not TILED_INFERENCE:
        core, gate = first_linears(gmlp, parts, index, copies)
        messages = gated_rest(gmlp, core, gate).view(copies, len(center), -1)
        messages = messages * weights if torch.is_grad_enabled() else messages.mul_(weights)
        new = scatter_messages(messages, center, len(atom_feas))
    else:
        terms = first_linear_terms(gmlp, parts, index, copies)
        new = _messages_in_tiles(gmlp, terms, weights, center, len(atom_feas), copies)
    new = new.reshape(copies * len(atom_feas), -1)
    if conv.use_mlp_out:
        new = conv.mlp_out(new)
    if conv.resnet:
        new = (new.view(copies, len(atom_feas), -1) + atom_feas).reshape(
            copies * len(atom_feas), -1
        )
    if conv.atom_norm is not None:
        new = conv.atom_norm(new)
    return new
