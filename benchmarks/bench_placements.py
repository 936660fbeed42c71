"""Training cost per epoch of each CHGNet adapter placement, against the arithmetic floor, one run.

- ``readout``: BaLoRA on the readout MLP, from cached trunk activations (the shipped default);
- ``last_block_cached``: also the last atom convolution, from the cached inputs of that block (the
  cut), with the adapters' default noise scope (``row``: a rank-space draw per edge row);
- ``last_block_cached, structure noise``: the same with one weight draw per structure
  (``noise_scope: structure``, the shipped recipe's scope,
  workflows/finetune_chgnet_structure.yaml);
- ``last_block``: the same adapters, recomputing the whole frozen trunk from the graph every step;
- ``floor``: the bare loop of the last block's arithmetic with this code's shapes (issue 26), on the
  same structures' cut, collated once outside the timing: per batch of 8, the edge messages built
  from the atom and bond features (192 wide), the two gated MLPs' first linear layers as their
  frozen pre-activations (cached, computed outside the timing) plus rank-8 LoRA (θ_A x on the
  messages, θ_B), SiLU, the frozen 64 → 64 second layers, SiLU · sigmoid gating, the bond weights,
  the index_add onto atoms; backward through all of it and an AdamW step on the LoRA weights. It has
  no LayerNorm, no noise, no KL, no ``mlp_out``, readout or head, and reads no cache: strictly less
  than what ``last_block_cached`` computes.

One epoch = forward + backward + AdamW step over N QMOF test-split structures in batches of 8,
BaLoRA noise on (featurization, the one-off cache, is excluded). The placements and the floor run in
interleaved rounds (one epoch of each per round, after a warm-up epoch each) and each shows its best
round, so that a machine shared with other work loads them alike; the ``× floor`` column is the
ratio to the floor measured in the same run.

``--batch 32`` times the recipes' batch instead (every path, the floor too): per structure it costs
more than 8, since its (edge rows, 64) tensors of ~60 MB pass glibc's mmap threshold and are
page-faulted afresh each step unless huge pages are on (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``,
which the ``mofbalora`` command sets: mofbalora/allocator.py).

    python benchmarks/bench_placements.py [N] [--rounds R] [--threads T] [--batch B]
        [--no-full-trunk]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from _common import qmof_test_paths

PLACEMENTS = {
    "readout": ("readout", "row"),
    "last_block_cached": ("last_block_cached", "row"),
    "last_block_cached, structure noise": ("last_block_cached", "structure"),
    "last_block": ("last_block", "row"),
}


def placement_epoch(adapt: str, scope: str, paths, batch: int = 8):
    """A function that runs one training epoch of ``adapt`` over ``paths``; and the number of
    structures."""
    from mofbalora.adapters import AdapterConfig, total_kl
    from mofbalora.adapters.context import sampling, structure_keys
    from mofbalora.featurize import featurize_files
    from mofbalora.model import build_model

    torch.manual_seed(0)
    m = build_model(
        "balora",
        backbone_options={"adapt": adapt},
        adapter=AdapterConfig(kind="balora", rank=8, noise_scope=scope),
    )
    inputs, _ = featurize_files(m.backbone, paths, progress=False)
    inputs = [x for x in inputs if x is not None]
    opt = torch.optim.AdamW(m.trainable_parameters(), lr=1e-3)
    batches = [inputs[i : i + batch] for i in range(0, len(inputs), batch)]

    def epoch():
        m.train()
        for step, chunk in enumerate(batches):
            opt.zero_grad()
            keys = structure_keys([x["digest"] for x in chunk])
            with sampling(stochastic=True, noise_seed=step, structure_keys=keys):
                gap, _, _ = m(m.backbone.collate(chunk))
            (gap.pow(2).mean() + total_kl(m) / 1000).backward()
            opt.step()

    return epoch, len(inputs)


def floor_epoch(paths, rank: int = 8, batch: int = 8):
    """The bare loop of the last block's arithmetic (module docstring) on the cut of ``paths``."""
    import torch.nn.functional as F

    from mofbalora.featurize import featurize_files
    from mofbalora.model import build_model

    torch.manual_seed(0)
    bb = build_model("head_only", backbone_options={"adapt": "last_block_cached"}).backbone
    inputs, _ = featurize_files(bb, paths, progress=False)
    inputs = [x for x in inputs if x is not None]
    gmlp = bb.trunk.atom_conv_layers[-1].twoBody_atom
    core1, core2 = gmlp.mlp_core.layers[0], gmlp.mlp_core.layers[3]
    gate1, gate2 = gmlp.mlp_gate.layers[0], gmlp.mlp_gate.layers[3]
    w1 = torch.cat([core1.weight, gate1.weight]).detach()
    b1 = torch.cat([core1.bias, gate1.bias]).detach()
    batches = []
    with torch.no_grad():
        for i in range(0, len(inputs), batch):
            c = bb.collate(inputs[i : i + batch])
            src, dst, d2u = (
                c["cut_atom_graph"][:, 0],
                c["cut_atom_graph"][:, 1],
                c["cut_directed2undirected"],
            )
            messages = torch.cat(
                [c["cut_atom_feas"][src], c["cut_bond_feas"][d2u], c["cut_atom_feas"][dst]], 1
            )
            batches.append(
                (
                    c["cut_atom_feas"],
                    c["cut_bond_feas"],
                    c["cut_bond_weights"],
                    src,
                    dst,
                    d2u,
                    messages @ w1.T + b1,
                )
            )  # the frozen pre-activations, cached
    a = torch.nn.Parameter(torch.randn(2 * rank, 192) * 0.05)  # θ_A of core and gate
    b_core = torch.nn.Parameter(torch.randn(64, rank) * 0.05)
    b_gate = torch.nn.Parameter(torch.randn(64, rank) * 0.05)
    w2c, b2c, w2g, b2g = (t.detach() for t in (core2.weight, core2.bias, gate2.weight, gate2.bias))
    opt = torch.optim.AdamW([a, b_core, b_gate], lr=1e-3)

    def epoch():
        for atoms, bonds, bond_weights, src, dst, d2u, pre in batches:
            opt.zero_grad()
            x = torch.cat([atoms[src], bonds[d2u], atoms[dst]], 1)
            h = x @ a.T
            core = pre[:, :64] + h[:, :rank] @ b_core.T
            gate = pre[:, 64:] + h[:, rank:] @ b_gate.T
            core = F.silu(F.silu(core) @ w2c.T + b2c)
            gate = torch.sigmoid(F.silu(gate) @ w2g.T + b2g)
            messages = core * gate * bond_weights[d2u]
            new = atoms.new_zeros(atoms.shape).index_add_(0, src, messages)
            new.square().mean().backward()
            opt.step()

    return epoch, len(inputs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "n", nargs="?", type=int, default=48, help="QMOF test-split structures (default 48)"
    )
    ap.add_argument(
        "--rounds", type=int, default=3, help="timed rounds (each placement's best is shown)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--batch",
        type=int,
        default=8,
        help="structures per step, every path (default 8, the issue's floor; the recipes use 32)",
    )
    ap.add_argument(
        "--no-full-trunk", action="store_true", help="leave out last_block (the slowest by far)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    paths = qmof_test_paths(args.n)
    names = [p for p in PLACEMENTS if not (args.no_full_trunk and p == "last_block")]
    epochs = {name: placement_epoch(*PLACEMENTS[name], paths, args.batch) for name in names}
    epochs["floor"] = floor_epoch(paths, batch=args.batch)
    load_before = os.getloadavg()[0]
    best = dict.fromkeys(epochs, float("inf"))
    for epoch, _ in epochs.values():  # warm-up
        epoch()
    for _ in range(args.rounds):
        for name, (epoch, n) in epochs.items():
            t0 = time.perf_counter()
            epoch()
            best[name] = min(best[name], (time.perf_counter() - t0) / n)
    n = epochs["floor"][1]
    print(
        f"{n} QMOF test-split structures, batch {args.batch}, BaLoRA rank 8, "
        f"{torch.get_num_threads()} threads; best of {args.rounds} interleaved rounds (load "
        f"average {load_before:.1f} → {os.getloadavg()[0]:.1f})"
    )
    print("| placement | ms per structure per epoch | × readout | × floor |")
    print("|---|---|---|---|")
    for name, sec in best.items():
        print(
            f"| {name} | {1000 * sec:.1f} | {sec / best['readout']:.1f} | "
            f"{sec / best['floor']:.2f} |"
        )
    for name in ("last_block_cached", "last_block_cached, structure noise"):
        print(
            f"{name} on all 14,609 training structures: {best[name] * 14609 / 60:.1f} min per epoch"
        )


if __name__ == "__main__":
    main()
