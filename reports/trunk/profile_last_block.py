"""Where an epoch of the cut-cached last block (``backbone.adapt=last_block_cached``) spends its time.

Trains BaLoRA (rank 8, the noise scope given) on N cached QMOF test-split structures in batches of
8, as ``benchmarks/bench_placements.py`` does, and times each part of the step separately (exclusive
wall time per structure, each part's best epoch):

- ``read cut``: the cut's arrays from the memory-mapped store into memory (page cache), timed apart;
- ``fp16 → fp32``: converting the float16 cut to float32, timed apart;
- ``collate (rest)``: ``collate`` minus those two (0 where collate's own read and conversion cost
  less);
- ``gated MLPs``: the block's two gated MLPs (all their linear layers and adapters, noise excluded);
- ``noise``: BaLoRA's keyed draws (the counter-based normals and what scales them);
- ``scatter``: the index_add of the edge messages onto atoms;
- ``block (rest)``: gathers, bond weights, mlp_out, the residual and the readout LayerNorm;
- ``readout MLP``, ``head``: the adapted readout and the band-gap head;
- ``loss + KL``, ``backward``, ``optimizer``.

``--path reference`` runs the block as CHGNet's own ``AtomConv`` module (as before issue 26; the
adapters' own changes serve both paths);
``--path fast`` the cut path of :mod:`mofbalora.backbones.chgnet_block`; ``--path both`` (default)
runs the two on one model, epochs interleaved, so that the before/after ratio is measured under the
same load.

    MOFBALORA_CACHE=cache python reports/trunk/profile_last_block.py [N] [--scope row] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _common import qmof_test_paths  # noqa: E402

PARTS = (
    "read cut",
    "fp16 → fp32",
    "collate (rest)",
    "gated MLPs",
    "noise",
    "scatter",
    "block (rest)",
    "readout MLP",
    "head",
    "loss + KL",
    "backward",
    "optimizer",
)


class StackTimer:
    """Exclusive wall time per label: time inside a nested timed call counts for the inner label
    only."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.stack: list[list] = []  # [label, start, time of children]
        self.patched: list[tuple] = []

    @contextlib.contextmanager
    def part(self, label: str):
        self.stack.append([label, time.perf_counter(), 0.0])
        try:
            yield
        finally:
            label, start, children = self.stack.pop()
            spent = time.perf_counter() - start
            self.total[label] += spent - children
            if self.stack:
                self.stack[-1][2] += spent

    def wrap(self, owner, attr: str, label: str) -> None:
        """Time every call of ``owner.attr`` (a module instance, a class or a module) under
        ``label``."""
        if not hasattr(owner, attr):
            return
        fn = getattr(owner, attr)
        timer = self

        if isinstance(owner, type):  # a method of a class: keep it a method

            def timed(self_, *a, **k):
                with timer.part(label):
                    return fn(self_, *a, **k)
        else:

            def timed(*a, **k):
                with timer.part(label):
                    return fn(*a, **k)

        self.patched.append(
            (owner, attr, owner.__dict__.get(attr) if isinstance(owner, type) else fn)
        )
        setattr(owner, attr, timed)

    def restore(self) -> None:
        for owner, attr, original in reversed(self.patched):
            if original is None and isinstance(owner, type):
                delattr(owner, attr)
            else:
                setattr(owner, attr, original)
        self.patched.clear()


def instrument(model, timer: StackTimer) -> None:
    import chgnet.model.layers as chgnet_layers

    from mofbalora.adapters.balora import BaLoRALinear

    bb = model.backbone
    block = bb.trunk.atom_conv_layers[-1]
    timer.wrap(chgnet_layers, "aggregate", "scatter")  # CHGNet's own index_add of the messages
    timer.wrap(block.twoBody_atom, "forward", "gated MLPs")
    for name in ("_noise", "_gathered_noise"):
        timer.wrap(BaLoRALinear, name, "noise")
    fast = sys.modules.get("mofbalora.backbones.chgnet_block")
    if fast is not None:
        for name, label in (
            ("first_linears", "gated MLPs"),
            ("gated_rest", "gated MLPs"),
            ("scatter_messages", "scatter"),
        ):
            timer.wrap(fast, name, label)
    timer.wrap(bb, "forward", "block (rest)")
    timer.wrap(bb.readout_mlp, "forward", "readout MLP")
    timer.wrap(model.head, "forward", "head")


def epoch_parts(
    model, opt, inputs: list, timer: StackTimer, fast: bool
) -> tuple[dict[str, float], float]:
    """One training epoch of ``model`` (batches of 8, noise on); its per-part seconds and its
    wall time."""
    from mofbalora.adapters import total_kl
    from mofbalora.adapters.context import sampling, structure_keys

    model.backbone.fast_block = fast
    timer.total.clear()
    t0 = time.perf_counter()
    model.train()
    for step, s in enumerate(range(0, len(inputs), 8)):
        chunk = inputs[s : s + 8]
        opt.zero_grad()
        with timer.part("collate"):
            batch = model.backbone.collate(chunk)
        keys = structure_keys([x["digest"] for x in chunk])
        with sampling(stochastic=True, noise_seed=step, structure_keys=keys):
            gap, _, _ = model(batch)
            with timer.part("loss + KL"):
                loss = gap.pow(2).mean() + total_kl(model) / 1000
        with timer.part("backward"):
            loss.backward()
        with timer.part("optimizer"):
            opt.step()
    return dict(timer.total), time.perf_counter() - t0


def read_and_convert(inputs: list, epochs: int) -> tuple[float, float]:
    """Seconds to read the float16 cut from the store into memory, and to convert it to float32
    (what collate does with them), over ``epochs`` passes."""
    names = ("cut_bond_feas", "cut_bond_weights", "cut_atom_graph", "cut_directed2undirected")
    read = convert = 0.0
    for _ in range(epochs):
        t0 = time.perf_counter()
        loaded = [[np.array(x[k]) for k in names] for x in inputs]
        t1 = time.perf_counter()
        for arrays in loaded:
            for a in arrays[:2]:
                a.astype(np.float32)
        read, convert = read + t1 - t0, convert + time.perf_counter() - t1
    return read, convert


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", nargs="?", type=int, default=48)
    ap.add_argument("--path", choices=("fast", "reference", "both"), default="both")
    ap.add_argument("--scope", choices=("row", "structure", "rank_shared"), default="row")
    ap.add_argument(
        "--epochs", type=int, default=3, help="timed epochs per path (best of them is shown)"
    )
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from mofbalora.featurize import featurize_files
    from mofbalora.model import build_model

    bb = build_model("head_only", backbone_options={"adapt": "last_block_cached"}).backbone
    inputs, _ = featurize_files(bb, qmof_test_paths(args.n), progress=False)
    inputs = [x for x in inputs if x is not None]
    edges = sum(len(x["cut_atom_graph"]) for x in inputs) / len(inputs)
    paths = ("reference", "fast") if args.path == "both" else (args.path,)
    from mofbalora.adapters import AdapterConfig

    torch.manual_seed(0)
    model = build_model(
        "balora",
        backbone_options={"adapt": "last_block_cached"},
        adapter=AdapterConfig(kind="balora", rank=8, noise_scope=args.scope),
    )
    timer = StackTimer()
    instrument(model, timer)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    for path in paths:  # warm-up
        epoch_parts(model, opt, inputs, timer, path == "fast")
    best: dict[str, dict[str, float]] = {p: {} for p in paths}
    walls: dict[str, float] = {p: float("inf") for p in paths}
    # the paths interleaved, so that both see the same load; best of the epochs
    for _ in range(args.epochs):
        for path in paths:
            parts, wall = epoch_parts(model, opt, inputs, timer, path == "fast")
            read, convert = read_and_convert(inputs, 1)
            parts.update(
                {
                    "read cut": read,
                    "fp16 → fp32": convert,
                    "collate (rest)": max(parts.pop("collate") - read - convert, 0.0),
                }
            )
            for k in PARTS:
                best[path][k] = min(best[path].get(k, float("inf")), parts.get(k, 0.0))
            walls[path] = min(walls[path], wall)
    timer.restore()
    per = 1000 / len(inputs)
    tables = {p: ({k: best[p][k] * per for k in PARTS}, walls[p] * per) for p in paths}
    print(
        f"{len(inputs)} QMOF test-split structures ({edges:.0f} directed edges each on average), "
        f"batch 8, BaLoRA rank 8, noise scope {args.scope}, "
        f"{torch.get_num_threads()} threads; best of {args.epochs} "
        "interleaved epochs per path (each part: its best "
        "epoch; the sum of parts is below the best wall time)"
    )
    print("| part | " + " | ".join(f"{p} (ms per structure)" for p in paths) + " |")
    print("|---|" + "---|" * len(paths))
    for k in PARTS:
        print(f"| {k} | " + " | ".join(f"{tables[p][0][k]:.2f}" for p in paths) + " |")
    print("| **epoch wall time** | " + " | ".join(f"**{tables[p][1]:.2f}**" for p in paths) + " |")
    if len(paths) == 2:
        print(f"reference / fast epoch time: {tables['reference'][1] / tables['fast'][1]:.1f}×")


if __name__ == "__main__":
    main()
