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

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

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


def first_linears(
    gmlp: nn.Module, parts: Sequence[torch.Tensor], index: Sequence[torch.Tensor], copies: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The outputs of the first linear layer of the core and of the gate MLP, (copies · n_edges,
    hidden) each: each layer's frozen pre-activation, then (adapted layers) the adapter's part
    added into it."""
    outs = []
    for layer in (gmlp.mlp_core.layers[0], gmlp.mlp_gate.layers[0]):
        base = _base(layer)
        pre = frozen_pre_activation(base.weight, base.bias, parts, index)
        if hasattr(layer, "forward_gathered"):
            outs.append(layer.forward_gathered(pre, parts, index, copies))
        else:
            outs.append(pre if copies == 1 else pre.repeat(copies, 1))
    return outs[0], outs[1]


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
    core, gate = first_linears(gmlp, parts, index, copies)
    messages = gated_rest(gmlp, core, gate).view(copies, len(center), -1)
    weights = bond_weights.index_select(0, directed2undirected)
    messages = messages.mul_(weights) if not torch.is_grad_enabled() else messages * weights
    new = scatter_messages(messages, center, len(atom_feas)).reshape(copies * len(atom_feas), -1)
    if conv.use_mlp_out:
        new = conv.mlp_out(new)
    if conv.resnet:
        new = (new.view(copies, len(atom_feas), -1) + atom_feas).reshape(
            copies * len(atom_feas), -1
        )
    if conv.atom_norm is not None:
        new = conv.atom_norm(new)
    return new
