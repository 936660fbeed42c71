"""What adapting one more of CHGNet's blocks would cost per training step, by the same cut method.

Issue 26 asks whether a further block, the bond convolution or the atom convolution before the last,
is affordable by the cut the last block uses (cache the block's inputs once; run only the adapted
blocks per step). CHGNet's message passing is ``atom_conv[i] → bond_conv[i] → angle[i]`` for
i = 0, 1, 2, then ``atom_conv[3]`` (the last block). The last angle update feeds nothing after it,
so the cut for each placement and the blocks a step must run are:

- ``last atom conv``: cut before ``atom_conv[3]``; runs ``atom_conv[3]`` (today's
  ``last_block_cached``);
- ``+ last bond conv``: cut before ``bond_conv[2]``; runs ``bond_conv[2]``, ``atom_conv[3]``;
- ``+ atom conv before``: cut before ``atom_conv[2]``; runs ``atom_conv[2]``, ``bond_conv[2]``,
  ``atom_conv[3]``.

Each is timed as CHGNet's own modules (forward and backward, every parameter of the adapted blocks
taking a gradient, as LoRA's backward must pass through them) on batches of 8 QMOF test structures
whose inputs were captured from one frozen pass, best of ``--rounds`` interleaved rounds, 2 threads.
The ratio to the first row is what the placement would cost against today's block in its reference
form (the fast block of chgnet_block.py is a faster rewrite of the first row only). The cut each
needs per structure (float32: atom, bond and angle features, bond weights and the graphs' indices)
is printed too.

    python reports/trunk/further_blocks.py [N] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _common import qmof_test_paths  # noqa: E402


def _capture(model, g) -> dict[str, dict]:
    """The keyword inputs of atom_conv[2], bond_conv[2] and atom_conv[3] in one frozen pass."""
    seen: dict[str, dict] = {}
    handles = []
    for name, module in (
        ("atom2", model.atom_conv_layers[2]),
        ("bond2", model.bond_conv_layers[2]),
        ("atom3", model.atom_conv_layers[3]),
    ):

        def hook(_mod, _args, kwargs, name=name):
            seen[name] = {k: v.detach() for k, v in kwargs.items()}

        handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    with torch.no_grad():
        model._compute(g)
    for h in handles:
        h.remove()
    return seen


#: the cached inputs each placement needs: (block, its keyword inputs not recomputed by the step)
NEEDS = {
    "last atom conv": [("atom3", None)],
    "+ last bond conv": [
        ("bond2", None),
        ("atom3", ("bond_weights", "atom_graph", "directed2undirected")),
    ],
    "+ atom conv before": [
        ("atom2", None),
        ("bond2", ("bond_weights", "angle_feas", "bond_graph")),
    ],
}


def _cut_bytes(kw: dict[str, dict], placement: str) -> int:
    """Bytes of the distinct cached tensors ``placement`` reads (as held in memory)."""
    seen: dict[int, torch.Tensor] = {}
    for block, names in NEEDS[placement]:
        for name, t in kw[block].items():
            if names is None or name in names:
                seen[id(t)] = t
    return sum(t.numel() * t.element_size() for t in seen.values())


def _step(model, kw: dict[str, dict], placement: str) -> None:
    atom2, bond2 = model.atom_conv_layers[2], model.bond_conv_layers[2]
    a, b = kw["atom3"]["atom_feas"], kw["atom3"]["bond_feas"]
    if placement == "+ atom conv before":
        a = atom2(**kw["atom2"])
    if placement != "last atom conv":
        b = bond2(**{**kw["bond2"], "atom_feas": a})
    out = model.atom_conv_layers[3](**{**kw["atom3"], "atom_feas": a, "bond_feas": b})
    out.square().mean().backward()


PLACEMENTS = ("last atom conv", "+ last bond conv", "+ atom conv before")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", nargs="?", type=int, default=16, help="QMOF test-split files (default 16)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from chgnet.model import CHGNet
    from chgnet.model.model import BatchedGraph
    from pymatgen.core import Structure

    model = CHGNet.load(verbose=False)
    model.eval()
    graphs = [model.graph_converter(Structure.from_file(p)) for p in qmof_test_paths(args.n)]
    batches = []
    sizes = {"atoms": 0, "bonds": 0, "edges": 0, "angles": 0}
    cut = dict.fromkeys(PLACEMENTS, 0)
    for i in range(0, len(graphs), args.batch):
        g = BatchedGraph.from_graphs(
            graphs[i : i + args.batch],
            bond_basis_expansion=model.bond_basis_expansion,
            angle_basis_expansion=model.angle_basis_expansion,
            compute_stress=False,
        )
        batches.append(_capture(model, g))
        for placement in PLACEMENTS:
            cut[placement] += _cut_bytes(batches[-1], placement)
        sizes["atoms"] += len(g.atomic_numbers)
        sizes["edges"] += len(g.batched_atom_graph)
        sizes["bonds"] += int(g.directed2undirected.max()) + 1
        sizes["angles"] += len(g.batched_bond_graph)
    n = len(graphs)
    for p in model.parameters():
        p.requires_grad_(False)
    adapted = {
        "last atom conv": [model.atom_conv_layers[3]],
        "+ last bond conv": [model.bond_conv_layers[2], model.atom_conv_layers[3]],
        "+ atom conv before": [
            model.atom_conv_layers[2],
            model.bond_conv_layers[2],
            model.atom_conv_layers[3],
        ],
    }
    best = dict.fromkeys(PLACEMENTS, float("inf"))
    for _ in range(args.rounds):
        for placement in PLACEMENTS:
            for p in model.parameters():
                p.requires_grad_(False)
                p.grad = None
            for m in adapted[placement]:
                for p in m.parameters():
                    p.requires_grad_(True)
            t0 = time.perf_counter()
            for kw in batches:
                _step(model, kw, placement)
            best[placement] = min(best[placement], time.perf_counter() - t0)
    print(
        f"{n} QMOF test structures in batches of {args.batch}, {args.threads} threads, best of "
        f"{args.rounds}; per structure: {sizes['atoms'] / n:.0f} atoms, {sizes['bonds'] / n:.0f} "
        f"bonds, {sizes['edges'] / n:.0f} directed edges, {sizes['angles'] / n:.0f} angles"
    )
    print(
        "| placement | ms per structure per step (CHGNet modules) | × last atom conv "
        "| cut, MB per structure (float32) |"
    )
    print("|---|---|---|---|")
    base = best["last atom conv"]
    for placement in PLACEMENTS:
        print(
            f"| {placement} | {1000 * best[placement] / n:.1f} | {best[placement] / base:.2f} | "
            f"{cut[placement] / n / 1e6:.2f} |"
        )


if __name__ == "__main__":
    main()
