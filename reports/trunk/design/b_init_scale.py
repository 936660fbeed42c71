"""The θ_B initialisation's scale S for the design study's ``*_binit`` designs (issue 26).

With θ_B ~ N(0, S²) every entry of a layer's initial update u = s · θ_B θ_A x has standard deviation
s · S · ‖θ_A x‖ (a sum of r independent terms θ_B,or (θ_A x)_r), so it is a fraction f of the
layer's pre-activation scale σ_pre when

    S = f · σ_pre / (s · rms‖θ_A x‖)

(rms‖θ_A x‖ over the layer's rows). σ_pre is the pre-activation's spread over rows, sqrt of the mean
over outputs of var_rows(W0 x + b): the part of W0 x + b that changes with the input. Its rms
including the mean over rows is 4.0–6.2× larger in CHGNet's readout MLP (the pretrained weights
are large, and so is the mean activation they produce), and is recorded too (``S_uncentred``).
Both are measured here on the first ``--structures`` training structures of the study's split (the
readout placement's cached inputs, θ_A as initialised with seed 0, θ_B = 0: the pretrained model's
activations), per adapted layer, for f = 0.1; S is the median over the layers, rounded down to one
significant figure.

    MOFBALORA_QMOF=/work/shared/data/qmof nice -n 10 .venv/bin/python \
        reports/trunk/design/b_init_scale.py

writes ``results/b_init_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as design  # noqa: E402  (the study's protocol: split, recipe, passes)


def measure(n_structures: int, fraction: float, runs: Path) -> dict:
    from mofbalora.adapters import adapter_layers
    from mofbalora.featurize import load_inputs
    from mofbalora.train import model_from_config, split_ids

    torch.manual_seed(0)
    cfg = design.config("readout", runs)
    model = model_from_config(cfg)
    ds, ids = split_ids(cfg)
    _, x, _ = load_inputs(model, ds, ids["train"][:n_structures], False)
    sums: dict[str, dict[str, float]] = {}

    def hook(mod, args, _out, name):
        xin = args[0].detach().reshape(-1, mod.in_features)
        pre = mod.base_layer(xin)
        h = mod.adapter_hidden(xin)
        s = sums.setdefault(name, {"pre": 0.0, "pre2": 0.0, "h2": 0.0, "rows": 0})
        s["pre"] = s["pre"] + pre.sum(0).double()  # per output
        s["pre2"] = s["pre2"] + (pre**2).sum(0).double()
        s["h2"] += float((h**2).sum(1).sum())
        s["rows"] += xin.shape[0]
        s["scale"] = mod.scale

    hooks = [
        m.register_forward_hook(lambda mod, a, o, n=n: hook(mod, a, o, n))
        for n, m in adapter_layers(model)
    ]
    try:
        design._passes(model, x)
    finally:
        for h in hooks:
            h.remove()
    layers = {}
    for name, s in sums.items():
        n = s["rows"]
        mean2 = s["pre2"] / n
        spread = math.sqrt(float((mean2 - (s["pre"] / n) ** 2).mean()))
        rms = math.sqrt(float(mean2.mean()))
        h = math.sqrt(s["h2"] / n)
        layers[name] = {
            "rows": n,
            "spread_pre_activation": spread,
            "rms_pre_activation": rms,
            "rms_norm_theta_a_x": h,
            "lora_scale": s["scale"],
            "S": fraction * spread / (s["scale"] * h),
            "S_uncentred": fraction * rms / (s["scale"] * h),
        }
    median = float(np.median([v["S"] for v in layers.values()]))
    digit = 10 ** math.floor(math.log10(median))
    return {
        "structures": n_structures,
        "fraction": fraction,
        "layers": layers,
        "median": median,
        "median_uncentred": float(np.median([v["S_uncentred"] for v in layers.values()])),
        "S": round(math.floor(median / digit) * digit, 12),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--structures", type=int, default=32)
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--runs", default="/tmp/trunk/design", help="where the split file goes")
    args = p.parse_args(argv)
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    out = measure(args.structures, args.fraction, runs)
    for name, v in out["layers"].items():
        print(
            f"{name}: rows {v['rows']}, spread(W0x+b) {v['spread_pre_activation']:.4g} (rms "
            f"{v['rms_pre_activation']:.4g}), rms|θ_A x| {v['rms_norm_theta_a_x']:.4g}, s "
            f"{v['lora_scale']:g} -> S {v['S']:.4g} (uncentred {v['S_uncentred']:.4g})"
        )
    print(
        f"median {out['median']:.4g} (uncentred {out['median_uncentred']:.4g}) -> S = {out['S']:g}"
    )
    design.RESULTS.mkdir(parents=True, exist_ok=True)
    (design.RESULTS / "b_init_scale.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
