"""Training cost per epoch for each CHGNet adapter placement, as ratios in one run.

- ``readout``: BaLoRA on the readout MLP, from cached trunk activations (the shipped default);
- ``last_block_cached``: also the last atom convolution, from the cached inputs of that block (the cut);
- ``last_block``: the same adapters, recomputing the whole frozen trunk from the graph every step.

One epoch = forward + backward + AdamW step over N QMOF structures in batches of 8, BaLoRA noise on;
featurization (the one-off cache) is excluded. Best of 3 epochs after a warm-up.

    python benchmarks/bench_placements.py [N]      (default 48 test-split structures)
"""

from __future__ import annotations

import sys

import torch
from _common import best_time, qmof_test_paths


def epoch_seconds(adapt: str, paths) -> float:
    from mofbalora.adapters import AdapterConfig, total_kl
    from mofbalora.adapters.context import sampling, structure_keys
    from mofbalora.featurize import featurize_files
    from mofbalora.model import build_model

    torch.manual_seed(0)
    m = build_model("balora", backbone_options={"adapt": adapt}, adapter=AdapterConfig(kind="balora", rank=8))
    inputs, _ = featurize_files(m.backbone, paths, progress=False)
    inputs = [x for x in inputs if x is not None]
    opt = torch.optim.AdamW(m.trainable_parameters(), lr=1e-3)
    batches = [inputs[i:i + 8] for i in range(0, len(inputs), 8)]

    def epoch():
        m.train()
        for step, chunk in enumerate(batches):
            opt.zero_grad()
            keys = structure_keys([x["digest"] for x in chunk])
            with sampling(stochastic=True, noise_seed=step, structure_keys=keys):
                gap, _, _ = m(m.backbone.collate(chunk))
            (gap.pow(2).mean() + total_kl(m) / 1000).backward()
            opt.step()

    return best_time(epoch, repeat=3, warmup=1) / len(inputs)


def main(n: int = 48) -> None:
    torch.set_num_threads(2)
    paths = qmof_test_paths(n)
    results = {adapt: epoch_seconds(adapt, paths) for adapt in ("readout", "last_block_cached", "last_block")}
    print(f"{n} QMOF test-split structures, batch 8, BaLoRA rank 8, {torch.get_num_threads()} threads")
    print("| placement | ms per structure per epoch | × readout | × full trunk |")
    print("|---|---|---|---|")
    for adapt, sec in results.items():
        print(f"| {adapt} | {1000 * sec:.1f} | {sec / results['readout']:.1f} | {sec / results['last_block']:.3f} |")
    full_epoch_h = results["last_block_cached"] * 14609 / 3600
    print(f"last_block_cached on all 14,609 training structures: {full_epoch_h * 60:.1f} min per epoch")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 48)
