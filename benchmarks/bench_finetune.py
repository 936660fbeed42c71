"""Fine-tuning and inference throughput of the CHGNet backbone, as ratios to one frozen CHGNet
forward pass measured in the same run.

- fine-tune: structures/s per epoch with the frozen-trunk cache (adapters on the readout) versus
  without it (graph + trunk + readout every step, as adapters inside the trunk require);
- inference from CIF (what `screen` does): T = 1 and T = 32 stochastic passes;
- inference from cached trunk features (evaluation, active learning): T = 1 and T = 32.

    python benchmarks/bench_finetune.py [N]     (default N = 64 QMOF test-split structures)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import torch
from _common import qmof_test_paths


def main(n: int = 64) -> None:
    os.environ["MOFBALORA_CACHE"] = tempfile.mkdtemp(prefix="bench-cache-")
    from mofbalora.adapters import AdapterConfig
    from mofbalora.config import load_config
    from mofbalora.data.structures import read_structure
    from mofbalora.featurize import featurize_files
    from mofbalora.model import build_model
    from mofbalora.train import Trainer

    paths = qmof_test_paths(n)
    structures = [read_structure(p) for p in paths]
    model = build_model("balora", adapter=AdapterConfig(kind="balora"))
    bb = model.backbone
    for layer in bb.modules():
        if hasattr(layer, "adapter_B"):
            layer.adapter_B.data.normal_(std=0.05)

    # the baseline: one frozen CHGNet forward pass (graph construction + trunk + readout), batched
    # by 8
    t0 = time.perf_counter()
    for s in range(0, n, 8):
        with torch.no_grad():
            bb.featurize(structures[s : s + 8])
    frozen_fwd = (time.perf_counter() - t0) / n
    print(
        f"frozen CHGNet forward (graph + trunk), per structure: {frozen_fwd * 1e3:.0f} ms = 1.00x"
    )

    inputs, _ = featurize_files(bb, paths, progress=False)
    y = torch.rand(n) * 4
    cfg = load_config(None, ["optim.epochs=1", "optim.batch_size=16"])
    tr = Trainer(cfg, tempfile.mkdtemp())
    t0 = time.perf_counter()
    tr.fit(inputs, y, inputs[:8], y[:8], progress=False)
    cached_epoch = (time.perf_counter() - t0) / n

    # without the cache: each step rebuilds graphs and runs the trunk before the adapted readout
    def uncached_epoch():
        t0 = time.perf_counter()
        for s in range(0, n, 16):
            feats = bb.featurize(structures[s : s + 16])
            batch = bb.collate(feats)
            gap, _, _ = model(batch)
            gap.sum().backward()
        return (time.perf_counter() - t0) / n

    uncached = uncached_epoch()
    print(
        f"fine-tune, cached trunk:   {1 / cached_epoch:8.1f} structures/s  "
        f"({cached_epoch / frozen_fwd:.3f}x a frozen forward)"
    )
    print(
        f"fine-tune, no cache:       {1 / uncached:8.1f} structures/s  "
        f"({uncached / frozen_fwd:.3f}x a frozen forward)"
    )
    print(f"cache speed-up per epoch:  {uncached / cached_epoch:.0f}x")

    for T in (1, 32):
        t0 = time.perf_counter()
        model.predict_inputs(inputs, n_samples=T, seed=0)
        t_cached = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        for s in range(0, n, 8):
            model.predict_inputs(bb.featurize(structures[s : s + 8]), n_samples=T, seed=0)
        t_cif = (time.perf_counter() - t0) / n
        print(
            f"inference T={T:>2}: from structures {1 / t_cif:7.1f}/s ({t_cif / frozen_fwd:.2f}x a "
            f"frozen forward); from cached trunk {1 / t_cached:8.1f}/s "
            f"({t_cached / frozen_fwd:.4f}x)"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 64)
