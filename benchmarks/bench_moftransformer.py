"""CPU cost per structure of the MOFTransformer backbone (full-size architecture: 12 layers, 768
wide, up to 519 tokens), as ratios to one frozen CHGNet forward pass (graph + trunk) measured in the
same run.

- preparation: the package's graph + GRIDAY energy grid (once per structure; cached afterwards);
- frozen forward (batch of 8, no gradient): what evaluation costs per stochastic pass;
- forward + backward with BaLoRA (rank 8) on the attention and MLP layers of all 12 blocks: a
  training step;
- T = 4 stochastic passes (``predict_inputs``): T full forwards, nothing is shared between passes.

Timing does not depend on the weights, so the package's default architecture is used with random
weights (``checkpoint=None``); pass a checkpoint path to time a real one.

    python benchmarks/bench_moftransformer.py [N] [CHECKPOINT]  (default N = 8 QMOF test structures)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import torch
from _common import best_time, qmof_test_paths


def main(n: int = 8, checkpoint: str | None = None) -> None:
    os.environ["MOFBALORA_CACHE"] = tempfile.mkdtemp(prefix="bench-cache-")
    from mofbalora.adapters import AdapterConfig, adapter_layers
    from mofbalora.adapters.context import sampling
    from mofbalora.backbones import FeaturizationError, load_backbone
    from mofbalora.data.structures import read_structure
    from mofbalora.model import build_model

    structures = [read_structure(p) for p in qmof_test_paths(n)]
    chgnet = load_backbone("chgnet")
    with torch.no_grad():
        base = best_time(lambda: chgnet.featurize(structures), repeat=2) / n
    print(
        f"threads {torch.get_num_threads()}; {n} QMOF test structures, "
        f"median {sorted(len(s) for s in structures)[n // 2]} atoms"
    )
    print(
        "baseline: frozen CHGNet forward (graph + trunk), "
        f"per structure: {base * 1e3:7.0f} ms = 1.00x"
    )

    model = build_model(
        "balora",
        backbone="moftransformer",
        backbone_options={"checkpoint": checkpoint},
        adapter=AdapterConfig(kind="balora", rank=8),
    )
    bb = model.backbone
    for _, layer in adapter_layers(bb):
        layer.adapter_B.data.normal_(std=0.02)
    n_adapter = sum(p.numel() for p in model.trainable_parameters())
    n_base = sum(p.numel() for name, p in bb.named_parameters() if "adapter_" not in name)
    print(
        f"MOFTransformer: {n_base / 1e6:.1f} M frozen weights, {bb.n_tokens} tokens, "
        f"{len(adapter_layers(bb))} BaLoRA layers, "
        f"{n_adapter / 1e6:.2f} M trainable (adapters + head)"
    )

    inputs, failed, t0 = [], 0, time.perf_counter()
    for s in structures:
        try:
            inputs.extend(bb.featurize([s]))
        except FeaturizationError as exc:
            failed += 1
            print(f"  preparation failed: {exc}")
    prep = (time.perf_counter() - t0) / n
    print(
        f"preparation (graph + GRIDAY energy grid):     {prep * 1e3:7.0f} ms = "
        f"{prep / base:6.2f}x  ({failed} failed)"
    )
    k = len(inputs)
    batch = bb.collate(inputs)
    model.eval()

    def forward():
        with torch.no_grad(), sampling(stochastic=False):
            model(batch)

    fwd = best_time(forward, repeat=1) / k
    print(
        f"frozen forward (batch {k}):                    {fwd * 1e3:7.0f} ms = {fwd / base:6.2f}x"
    )

    def step():
        model.zero_grad(set_to_none=True)
        with sampling(stochastic=True, generator=torch.Generator().manual_seed(0)):
            gap, _, _ = model(batch)
        gap.sum().backward()

    model.train()
    train = best_time(step, repeat=1) / k
    print(
        f"forward + backward, BaLoRA on all blocks:     {train * 1e3:7.0f} ms = "
        f"{train / base:6.2f}x ({train / fwd:.1f}x the frozen forward)"
    )
    t0 = time.perf_counter()
    model.predict_inputs(inputs, n_samples=4, seed=0)
    t4 = (time.perf_counter() - t0) / k
    print(
        f"prediction, T = 4 stochastic passes:          {t4 * 1e3:7.0f} ms = {t4 / base:6.2f}x "
        f"({t4 / fwd:.1f}x the frozen forward)"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8, sys.argv[2] if len(sys.argv) > 2 else None)
