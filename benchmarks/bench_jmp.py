"""CPU cost per structure of the JMP backbone (GemNet-OC, random weights of JMP-S size) on QMOF
structures.

For each structure: graph sizes under JMP's QMOF recipe (19 Å, 30 nearest main neighbours),
featurize (neighbour lists) and collate (triplet/quadruplet indices) time, forward time,
forward+backward time with BaLoRA (rank 8) on every linear layer of the interaction blocks, and the
memory autograd keeps for the backward pass (activations saved in the forward pass; the dominant
memory of training). Baseline in the same run: CHGNet 0.3.0 with adapters in all its blocks
(``adapt=all``), same structures, same adapter settings. Ratios JMP / CHGNet are printed last.

    python benchmarks/bench_jmp.py                       # 3 QMOF test structures, JMP-S
    python benchmarks/bench_jmp.py --n 5 --size l --cutoff 12
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from _common import best_time, qmof_test_paths

from mofbalora.adapters import AdapterConfig, inject_adapters
from mofbalora.data.structures import read_structure


def saved_for_backward_mib(fn) -> float:
    """MiB of the tensors autograd keeps for the backward pass of ``fn()`` (activation memory of
    training)."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[(t.data_ptr(), t.numel())] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values()) / 2**20


def measure(bb, structure, repeat: int) -> dict:
    t0 = time.perf_counter()
    feats = bb.featurize([structure])
    t_feat = time.perf_counter() - t0
    t0 = time.perf_counter()
    batch = bb.collate(feats)
    t_coll = time.perf_counter() - t0

    def fwd():
        with torch.no_grad():
            bb(batch)

    def fwd_bwd():
        out = bb(batch).atom_embedding
        out.square().mean().backward()

    t_f = best_time(fwd, repeat=repeat, warmup=0)
    t_fb = best_time(fwd_bwd, repeat=repeat, warmup=0)
    saved = saved_for_backward_mib(lambda: bb(batch))
    return {
        "feat": t_feat,
        "collate": t_coll,
        "fwd": t_f,
        "fwd_bwd": t_fb,
        "saved": saved,
        "batch": batch,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--size", default="s")
    ap.add_argument("--cutoff", type=float, default=19.0)
    ap.add_argument("--max-neighbors", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    from mofbalora.backbones import load_backbone

    adapter = AdapterConfig(kind="balora", rank=8, targets=[])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        jmp = load_backbone(
            "jmp", size=args.size, cutoff=args.cutoff, max_neighbors=args.max_neighbors
        )
        chg = load_backbone("chgnet", adapt="all")
    for bb, preset in ((jmp, "blocks"), (chg, "all")):
        adapter.targets = list(bb.target_presets[preset])
        summary = inject_adapters(bb, adapter)
        print(
            f"{bb.name}: {sum(p.numel() for p in bb.parameters()):,} parameters, "
            f"{len(summary.adapted)} adapted layers, {summary.n_adapter:,} adapter parameters"
        )
    print(
        f"threads={torch.get_num_threads()}  cutoff={args.cutoff} Å  "
        f"max_neighbors={args.max_neighbors or 'JMP QMOF rule'}"
    )
    print(
        f"{'structure':<22}{'atoms':>6}{'edges':>8}{'triplets':>10}{'quads':>10} | "
        f"{'feat s':>7}{'coll s':>7}{'fwd s':>8}{'f+b s':>8}{'saved MiB':>10} | "
        f"{'CHGNet fwd':>10}{'f+b':>7}{'MiB':>6} | {'ratio fwd':>9}{'f+b':>6}{'MiB':>6}"
    )
    totals = {"jmp_f": 0.0, "jmp_fb": 0.0, "chg_f": 0.0, "chg_fb": 0.0, "jmp_m": 0.0, "chg_m": 0.0}
    for path in qmof_test_paths(args.n):
        s = read_structure(path)
        r = measure(jmp, s, args.repeat)
        c = measure(chg, s, args.repeat)
        idx, g = r["batch"]["idx"], r["batch"]["graphs"]
        print(
            f"{path.stem[:21]:<22}{len(s):>6}{g['main']['s'].numel():>8}{idx['e2e_in'].numel():>10}"
            f"{idx['quad_out'].numel():>10} | "
            f"{r['feat']:>7.2f}{r['collate']:>7.2f}{r['fwd']:>8.2f}{r['fwd_bwd']:>8.2f}"
            f"{r['saved']:>10.0f} | {c['fwd']:>10.3f}{c['fwd_bwd']:>7.3f}{c['saved']:>6.0f} | "
            f"{r['fwd'] / c['fwd']:>9.1f}{r['fwd_bwd'] / c['fwd_bwd']:>6.1f}"
            f"{r['saved'] / c['saved']:>6.0f}"
        )
        totals["jmp_f"] += r["fwd"]
        totals["jmp_fb"] += r["fwd_bwd"]
        totals["chg_f"] += c["fwd"]
        totals["chg_fb"] += c["fwd_bwd"]
        totals["jmp_m"] += r["saved"]
        totals["chg_m"] += c["saved"]
    n = args.n
    print(
        f"mean per structure: JMP-{args.size.upper()} forward {totals['jmp_f'] / n:.2f} s, "
        f"forward+backward {totals['jmp_fb'] / n:.2f} s; CHGNet forward {totals['chg_f'] / n:.3f} "
        f"s, forward+backward {totals['chg_fb'] / n:.3f} s; ratio "
        f"{totals['jmp_f'] / totals['chg_f']:.1f}x / {totals['jmp_fb'] / totals['chg_fb']:.1f}x; "
        f"saved for backward {totals['jmp_m'] / n:.0f} MiB vs {totals['chg_m'] / n:.0f} MiB"
    )


if __name__ == "__main__":
    main()
