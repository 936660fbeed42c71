"""Forward and forward+backward time of BaLoRA relative to LoRA and to the frozen base layer.

Realistic layer sizes (64–768 wide), ranks 4–32, 4,096 rows (atoms of ~40 structures, one noise draw
per structure). Prints ratios measured in one run, and the parameter overhead.

    python benchmarks/bench_adapters.py
"""

from __future__ import annotations

import torch
from _common import best_time
from torch import nn

from mofbalora.adapters import BaLoRALinear, LoRALinear, sampling


def main(rows: int = 4096, widths=(64, 256, 768), ranks=(4, 8, 16, 32)) -> None:
    torch.manual_seed(0)
    groups = torch.arange(rows) // 100
    print(f"rows={rows}  threads={torch.get_num_threads()}")
    print(
        f"{'width':>5} {'rank':>4} | {'fwd LoRA/base':>13} {'fwd BaLoRA/LoRA':>15} | "
        f"{'f+b LoRA/base':>13} {'f+b BaLoRA/LoRA':>15} | {'BaLoRA params/LoRA':>18}"
    )
    worst = 0.0
    for width in widths:
        x = torch.randn(rows, width)
        for r in ranks:
            base = nn.Linear(width, width)
            lora = LoRALinear(base, r)
            bal = BaLoRALinear(base, r)
            for m in (lora, bal):
                m.adapter_B.data.normal_()
            ctx = dict(stochastic=True, row_groups={rows: groups})

            def fwd(m):
                def run():
                    with torch.no_grad(), sampling(**ctx):
                        m(x)

                return run

            def fwd_bwd(m):
                xg = x.clone().requires_grad_(False)

                def run():
                    with sampling(**ctx):
                        m(xg).sum().backward()

                return run

            base.weight.requires_grad_(False)
            base.bias.requires_grad_(False)
            t = {
                name: (best_time(fwd(m)), best_time(fwd_bwd(m)) if name != "base" else None)
                for name, m in (("base", base), ("lora", lora), ("balora", bal))
            }
            base_fb = best_time(lambda: base(x.requires_grad_(True)).sum().backward())
            x.requires_grad_(False)
            n_lora = sum(p.numel() for n, p in lora.named_parameters() if "adapter_" in n)
            n_bal = sum(p.numel() for n, p in bal.named_parameters() if "adapter_" in n)
            ratio = t["balora"][0] / t["lora"][0]
            worst = max(worst, ratio)
            print(
                f"{width:>5} {r:>4} | {t['lora'][0] / t['base'][0]:13.2f} {ratio:15.2f} | "
                f"{t['lora'][1] / base_fb:13.2f} "
                f"{t['balora'][1] / t['lora'][1]:15.2f} | {n_bal / n_lora:18.3f}"
            )
    print(f"worst forward BaLoRA/LoRA ratio: {worst:.2f} (target ≤ 1.15)")


if __name__ == "__main__":
    main()
