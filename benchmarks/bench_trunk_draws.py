"""Test-time cost of T draws through CHGNet's last block (``adapt=last_block_cached``), in one run.

Measured against the CHGNet floor of benchmarks/bench_screen.py.

The floor is what any screen of these files must do: parse each CIF, build its CHGNet graph and run
one frozen CHGNet forward, file by file (bench_screen.py's ``_floor``). The trunk placement's screen
does that too (featurization: the trunk pass that leaves the cut, into an empty cache), then T = 32
stochastic passes through the last block, the readout and the head
(:meth:`~mofbalora.model.BandGapModel.predict_inputs`). Paths:

- ``reference``: the block as CHGNet's own module (the path before issue 26), prediction's default
  chunks;
- ``default chunks``: the block without built edge messages (mofbalora/backbones/chgnet_block.py)
  and prediction's default chunks: chunks of up to 64 structures, capped by the backbone at 1,024
  atoms (``max_batch_atoms``), whose draws run a structure or a few at a time with as many of the
  T copies per forward as the draw cap allows (``max_draw_atoms``, 4,096 atom rows;
  ``prediction.draw_groups``; about 32 for a QMOF structure), so the collate and the frozen
  pre-activations are shared by the stacked draws (before issue 26's draw work: one copy of ~10
  structures per forward);
- ``default chunks, untiled``: the same with the block's chain after the first linear layers run
  over all stacked rows at once (``chgnet_block.TILED_INFERENCE = False``, the code before the
  tiles): what the cache-sized tiles are worth;
- ``default chunks, 1 tile thread``: the same with the tiles run by the calling thread alone,
  torch's intra-op threads inside each kernel (``chgnet_block.INFERENCE_TILE_THREADS = 1``, the
  code of the fourth pass); ``default chunks`` shares the copies' tiles between as many threads as
  torch's intra-op threads, one intra-op thread each (the default since the fifth pass);
- ``stacked draws``: the default chunks' forwards in chunks of 2 structures (since
  ``draw_groups``, the same forwards: kept to compare with earlier runs).

Subnormal floats are flushed in every path (``chgnet_block.FLUSH_DENORMALS``; what the flush is
worth is in reports/trunk/README.md, "Second pass").

BaLoRA rank 8 with the shipped recipe's noise scope (``structure``) and all-layer head; the draws do
not depend on the chunking (tests/test_chgnet_block.py). Each round runs the floor, the
featurization into an empty cache and every path, in turn; each is the best of ``--rounds`` rounds
(the machine is shared); ``× floor`` is the floor's time over the path's (throughput ratio, ≥ 0.5 is
the target).

    python benchmarks/bench_trunk_draws.py [N] [--samples T] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from _common import qmof_test_paths
from bench_screen import _floor

STACKED = {"batch_size": 2, "max_rows": 10**6}
#: path name: (fast block, flush subnormals, tiled chain, tile threads, predict_inputs settings)
PATHS = {
    "reference": (False, True, False, 1, {}),
    "default chunks, untiled": (True, True, False, None, {}),
    "default chunks, 1 tile thread": (True, True, True, 1, {}),
    "default chunks": (True, True, True, None, {}),
    "stacked draws": (True, True, True, None, STACKED),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", nargs="?", type=int, default=24, help="QMOF test-split files (default 24)")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from mofbalora.adapters import AdapterConfig
    from mofbalora.backbones import chgnet_block as block
    from mofbalora.featurize import featurize_files
    from mofbalora.heads import HeadConfig
    from mofbalora.model import build_model

    paths = qmof_test_paths(args.n)
    work = Path(tempfile.mkdtemp(prefix="bench-trunk-draws-"))
    torch.manual_seed(0)
    model = build_model(
        "balora",
        backbone_options={"adapt": "last_block_cached", "features": "all_layers"},
        adapter=AdapterConfig(kind="balora", rank=8, prior_dropout=0.3, noise_scope="structure"),
        head=HeadConfig(hidden_dim=128, atom_mlp=128, pooling="mean_max_attention", aleatoric=True),
    )
    for name, p in model.named_parameters():
        # a trained-looking update (θ_B starts at zero); the cost does not depend on it
        if "adapter_B" in name:
            p.data.normal_(std=0.05)
    model.eval()
    load_before = os.getloadavg()[0]
    best = dict.fromkeys(["floor", "featurize", *PATHS], float("inf"))
    inputs = None
    default_threads = block.INFERENCE_TILE_THREADS
    for r in range(args.rounds):
        with torch.no_grad():
            os.environ["MOFBALORA_CACHE"] = str(work / f"cache-floor-{r}")
            best["floor"] = min(best["floor"], _floor(paths))
            # cold: the trunk pass leaves the cut
            os.environ["MOFBALORA_CACHE"] = str(work / f"cache-trunk-{r}")
            t0 = time.perf_counter()
            featurized, _ = featurize_files(model.backbone, paths, progress=False)
            best["featurize"] = min(best["featurize"], time.perf_counter() - t0)
        if inputs is None:
            inputs = [x for x in featurized if x is not None]
        for name, (fast, flush, tiled, tile_threads, kwargs) in PATHS.items():
            model.backbone.fast_block, block.FLUSH_DENORMALS = fast, flush
            block.TILED_INFERENCE, block.INFERENCE_TILE_THREADS = tiled, tile_threads
            try:
                t0 = time.perf_counter()
                model.predict_inputs(inputs, n_samples=args.samples, seed=0, **kwargs)
                best[name] = min(best[name], time.perf_counter() - t0)
            finally:
                model.backbone.fast_block, block.FLUSH_DENORMALS = True, True
                block.TILED_INFERENCE, block.INFERENCE_TILE_THREADS = True, default_threads
    n = len(inputs)
    floor, featurize = best.pop("floor"), best.pop("featurize")
    assert torch.get_num_threads() == args.threads, "a path changed the intra-op threads"
    print(
        f"{n} QMOF test-split files, T = {args.samples}, {torch.get_num_threads()} threads, cold "
        f"cache; best of {args.rounds} interleaved rounds (load "
        f"average {load_before:.1f} → {os.getloadavg()[0]:.1f})"
    )
    print(
        "| path | seconds | files/s | × floor throughput "
        "| T draws alone, ms per structure per draw |"
    )
    print("|---|---|---|---|---|")
    print(f"| CHGNet floor (graph + one forward) | {floor:.1f} | {n / floor:.2f} | 1.00 | |")
    print(
        f"| featurize (graph + trunk + cut) | {featurize:.1f} | {n / featurize:.2f} | "
        f"{floor / featurize:.2f} | |"
    )
    for name, sec in best.items():
        total = featurize + sec
        print(
            f"| featurize + {args.samples} draws, {name} | {total:.1f} | {n / total:.2f} | "
            f"{floor / total:.2f} | {1000 * sec / (n * args.samples):.2f} |"
        )


if __name__ == "__main__":
    main()
