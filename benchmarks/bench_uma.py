"""CPU cost per structure of the UMA backbone with BaLoRA, against CHGNet's frozen forward in the
same run.

Two random UMA-architecture checkpoints written in fairchem's inference format (real weights cannot
be downloaded here; the cost does not depend on the weights): the tiny test model and a UMA-S-sized
one (uma-s-1p1 dimensions: 128 channels, lmax 2, 4 blocks, 32 experts, 6 Å cutoff). On a few small
QMOF structures it times, per structure, the posterior-mean forward pass (no grad), one BaLoRA
training step's forward + backward (adapters of the ``messages`` preset, noise on), and the peak
resident-memory growth of each; and CHGNet 0.3.0's full forward (trunk + readout, no grad) on the
same structures as the baseline.

    python benchmarks/bench_uma.py [--structures 3] [--max-atoms 60] [--skip-uma-s]
    python benchmarks/bench_uma.py --presets-only   # adapter size of each preset, UMA-S-sized model
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import torch
from _common import best_time

from mofbalora.adapters import AdapterConfig, sampling

PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


def peak_rss_growth_mb(fn) -> float:
    """Peak resident memory during ``fn()`` minus the resident memory before it (MB), sampled
    every 2 ms."""
    import ctypes
    import gc

    gc.collect()
    # hand freed heap back, so the growth is not hidden by reuse
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    base, peak, done = _rss(), [0], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.002)

    t = threading.Thread(target=watch)
    t.start()
    try:
        fn()
    finally:
        done.set()
        t.join()
    return max(0, max(peak[0], _rss()) - base) / 2**20


def small_qmof_structures(n: int, max_atoms: int):
    from mofbalora.data.qmof import load_dataset
    from mofbalora.data.splits import load_split
    from mofbalora.data.structures import read_structure

    ds = load_dataset()
    out = []
    for i in load_split("qmof_v1")["test"]:
        s = read_structure(ds.cif_paths[ds.index_of(i)])
        if len(s) <= max_atoms:
            out.append(s)
        if len(out) == n:
            return out
    raise ValueError(f"fewer than {n} test structures with <= {max_atoms} atoms")


def measure(model, inputs, repeat: int) -> dict:
    """Per-structure seconds and peak MB of a no-grad forward and a BaLoRA forward+backward (one
    at a time)."""
    bb = model.backbone
    batches = [bb.collate([x]) for x in inputs]

    def fwd():
        with torch.no_grad(), sampling(stochastic=False):
            for b in batches:
                model(b)

    def fwd_bwd():
        for b in batches:
            with sampling(stochastic=True, generator=torch.Generator().manual_seed(0)):
                gap, _, _ = model(b)
            gap.sum().backward()

    n = len(inputs)
    return {
        "fwd_s": best_time(fwd, repeat=repeat) / n,
        "fwd_mb": peak_rss_growth_mb(fwd),
        "fb_s": best_time(fwd_bwd, repeat=repeat) / n,
        "fb_mb": peak_rss_growth_mb(fwd_bwd),
    }


def preset_sizes(backbone, rank: int = 8) -> dict[str, tuple[int, int]]:
    """(adapted layers, LoRA parameters at ``rank``) of each adapter preset, from the layer
    shapes."""
    from mofbalora.adapters.inject import matches

    out = {}
    for preset, patterns in backbone.target_presets.items():
        layers = [m for n, m in backbone.named_modules() if any(matches(n, p) for p in patterns)]
        # SO(3)-linear maps: one update per degree
        per_degree = [getattr(m, "lmax", 0) + 1 for m in layers]
        out[preset] = (
            len(layers),
            sum(
                k * rank * (m.in_features + m.out_features)
                for k, m in zip(per_degree, layers, strict=True)
            ),
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--structures", type=int, default=3)
    ap.add_argument("--max-atoms", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--skip-uma-s", action="store_true")
    ap.add_argument(
        "--presets-only", action="store_true", help="only the adapter size of each preset"
    )
    args = ap.parse_args()
    if args.presets_only:
        from mofbalora.backbones.uma import UMABackbone
        from mofbalora.backbones.uma_checkpoint import UMA_S_DIMS, write_random_checkpoint

        with tempfile.TemporaryDirectory() as tmp:
            bb = UMABackbone(str(write_random_checkpoint(Path(tmp) / "uma-s.pt", **UMA_S_DIMS)))
        frozen = sum(p.numel() for p in bb.parameters())
        print(f"UMA-S size: {frozen:,} frozen parameters; LoRA parameters at rank 8 per preset:")
        for preset, (n, size) in preset_sizes(bb).items():
            print(
                f"  {preset:>9}: {n:>3} layers, {size:>9,} "
                f"parameters ({size / frozen:.3%} of the backbone)"
            )
        return
    from mofbalora.backbones.chgnet import CHGNetBackbone
    from mofbalora.backbones.uma_checkpoint import TINY_DIMS, UMA_S_DIMS, write_random_checkpoint
    from mofbalora.model import build_model

    structures = small_qmof_structures(args.structures, args.max_atoms)
    print(f"threads={torch.get_num_threads()}  structures: atoms {[len(s) for s in structures]}")
    chgnet = CHGNetBackbone(adapt="all")
    graphs = chgnet.featurize(structures)
    chg_batches = [chgnet.collate([g]) for g in graphs]

    def chg_fwd():
        with torch.no_grad():
            for b in chg_batches:
                chgnet(b)

    chg_s = best_time(chg_fwd, repeat=args.repeat) / len(structures)
    print(f"CHGNet 0.3.0 frozen forward: {chg_s * 1e3:.1f} ms/structure")
    sizes = {"tiny": TINY_DIMS} if args.skip_uma_s else {"tiny": TINY_DIMS, "UMA-S": UMA_S_DIMS}
    print(
        f"{'model':>6} {'params':>10} {'edges':>7} | {'fwd ms':>8} {'x CHGNet':>8} {'fwd MB':>7} | "
        f"{'fwd+bwd ms':>10} {'x CHGNet':>8} {'f+b MB':>7} | {'ms/edge f+b':>11}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for label, dims in sizes.items():
            path = write_random_checkpoint(Path(tmp) / f"{label}.pt", **dims)
            model = build_model(
                "balora",
                backbone="uma",
                adapter=AdapterConfig(kind="balora", rank=8),
                backbone_options={"checkpoint": str(path), "adapt": "messages"},
            )
            path.unlink()  # free the disk; the model is in memory
            for name, p in model.named_parameters():
                if "adapter_B" in name:
                    p.data.normal_(0, 0.01)  # as after some training: the noise path is not zero
            inputs = model.backbone.featurize(structures)
            edges = sum(x["edge_index"].shape[1] for x in inputs) / len(inputs)
            n_params = sum(
                p.numel() for n, p in model.backbone.uma.named_parameters() if "adapter_" not in n
            )
            r = measure(model, inputs, args.repeat)
            print(
                f"{label:>6} {n_params:>10,} {edges:>7.0f} | {r['fwd_s'] * 1e3:8.1f} "
                f"{r['fwd_s'] / chg_s:8.1f} {r['fwd_mb']:7.0f} | {r['fb_s'] * 1e3:10.1f} "
                f"{r['fb_s'] / chg_s:8.1f} {r['fb_mb']:7.0f} | {r['fb_s'] * 1e3 / edges:11.4f}"
            )
            del model


if __name__ == "__main__":
    main()
