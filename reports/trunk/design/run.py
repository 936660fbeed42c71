"""Issue 26, part 2: does BaLoRA in CHGNet's last block get a voice? One small protocol per design.

Protocol (the same for every design): the first 1,000 / next 200 / next 300 ids of the documented
split's *training* part (qmof_v1) as train / val / test (the only structures whose last-block cut
was cached when this ran; no model of a design has seen the 300), seed 0, one thread, the shipped
recipe (workflows/finetune_chgnet_structure.yaml: Laplace NLL, noise scope ``structure``, p0 = 0.3,
rank 8, lr 0.002) unless a design changes it; readout placements 20 epochs, trunk placements
(``last_block_cached``) 2 epochs from a readout source (``model.warm_start``), no warm-up; T = 16
draws for val and test.

Per design, besides finetune's metrics (``metrics.json``): on the test part,

- ``contribution_all_ev``: mean |gap with the adapters − gap with every θ_B zeroed| (noise-free
  passes);
- ``contribution_block_ev``: the same with only the block's θ_B zeroed (trunk placements);
- ``alpha``: per BaLoRA layer, the geometric mean of α(x) over its test rows, against α0 = p0 / (1 −
  p0).

Usage (runs in ``--runs``, resumable; each finished design is skipped):

    MOFBALORA_QMOF=/work/shared/data/qmof nice -n 5 .venv/bin/python reports/trunk/design/run.py
    [NAME ...]

writes ``reports/trunk/design/results/<name>.json`` and ``results/table.md``. Needs the cut of the
first 1,500 training-part structures (``mofbalora data trunk-cache --order train --limit 1500``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RECIPE = HERE.parents[2] / "workflows" / "finetune_chgnet_structure.yaml"
SIZES = {"train": 1000, "val": 200, "test": 300}
T_EVAL = 16
TRUNK = ["backbone.adapt=last_block_cached", "optim.epochs=2", "optim.warmup_epochs=0"]
#: θ_B's initial std S of the ``*_binit`` designs (results/b_init_scale.json: 10 % of the readout
#: layers' pre-activation spread, median over the layers, rounded down)
B_INIT = 0.3

#: name -> (warm-start source design or None, overrides of the recipe); order = run order
DESIGNS: dict[str, tuple[str | None, list[str]]] = {
    # the baselines and warm-start sources: readout placement (the shipped default's), 20 epochs
    "readout": (None, ["optim.epochs=20"]),
    "readout_adapted_head": (None, ["optim.epochs=20", "backbone.features=readout"]),
    # BaLoRA in the last block, warm-started from the readout model, every group trained
    "trunk_warm": ("readout", TRUNK),
    # a head that reads only adapted outputs (the readout MLP's, downstream of the block)
    "trunk_warm_adapted_head": ("readout_adapted_head", [*TRUNK, "backbone.features=readout"]),
    # the KL per training structure: β = 0.1 lets the data shape α(x) (at β = 1 it sits at α0 on
    # every row)
    "readout_adapted_head_kl01": (
        None,
        ["optim.epochs=20", "backbone.features=readout", "optim.kl_weight=0.1"],
    ),
    # two stages: stage 1 = the readout source; stage 2 = the adapters only (the head frozen as
    # loaded)
    "trunk_warm_frozen_head": ("readout", [*TRUNK, "optim.lr_scale.head=0"]),
    "trunk_warm_adapted_head_kl01": (
        "readout_adapted_head_kl01",
        [*TRUNK, "backbone.features=readout", "optim.kl_weight=0.1"],
    ),
    # the α prior: p0 = 0.5 (α0 = 1), the KL at full weight holding α there (readout placement: 4
    # min, not 20)
    "readout_adapted_head_p05": (
        None,
        ["optim.epochs=20", "backbone.features=readout", "adapter.prior_dropout=0.5"],
    ),
    # θ_B's initialisation: θ_B ~ N(0, S²) instead of 0, so that BaLoRA's noise (on θ_A, reaching
    # the output through θ_B) is heard from the first step. S = 0.3 makes the initial update about
    # 10 % of the readout layers' pre-activation spread over rows (b_init_scale.py); 3 S: 30 %
    "readout_binit": (None, ["optim.epochs=20", f"adapter.b_init_std={B_INIT}"]),
    "readout_adapted_head_binit": (
        None,
        ["optim.epochs=20", "backbone.features=readout", f"adapter.b_init_std={B_INIT}"],
    ),
    "readout_binit_large": (None, ["optim.epochs=20", f"adapter.b_init_std={3 * B_INIT:g}"]),
    "readout_adapted_head_binit_large": (
        None,
        ["optim.epochs=20", "backbone.features=readout", f"adapter.b_init_std={3 * B_INIT:g}"],
    ),
    # a second seed of the one pair whose epistemic ranking differed by more than the protocol's
    # noise
    "readout_adapted_head_seed1": (
        None,
        ["optim.epochs=20", "backbone.features=readout", "run.seed=1"],
    ),
    "readout_adapted_head_binit_seed1": (
        None,
        [
            "optim.epochs=20",
            "backbone.features=readout",
            f"adapter.b_init_std={B_INIT}",
            "run.seed=1",
        ],
    ),
}


def split_file(runs: Path) -> Path:
    from mofbalora.data.splits import load_split, save_split

    train = load_split("qmof_v1")["train"]
    a, b, c = SIZES["train"], SIZES["train"] + SIZES["val"], sum(SIZES.values())
    parts = {"train": train[:a], "val": train[a:b], "test": train[b:c]}
    return save_split(parts, runs / "split.json", name="qmof_v1-train-part-1000-200-300")


def config(name: str, runs: Path):
    from mofbalora.config import load_run_config

    source, overrides = DESIGNS[name]
    base = [
        f"data.split={split_file(runs)}",
        "data.train_size=null",
        "data.val_size=null",
        "run.threads=1",
        f"run.eval_samples={T_EVAL}",
        "run.seed=0",
    ]
    if source is not None:
        base.append(f"model.warm_start={runs / source}")
    return load_run_config(RECIPE, [*base, *overrides])


def _passes(model, inputs) -> np.ndarray:
    from mofbalora.backbones.base import atom_capped_batches
    from mofbalora.prediction import point_prediction

    model.eval()
    with torch.no_grad():
        return torch.cat(
            [
                point_prediction(model, model.backbone.collate(c))
                for c in atom_capped_batches(inputs, 32, model.backbone.max_batch_atoms)
            ]
        ).numpy()


def contributions(model, inputs) -> dict[str, float]:
    """Mean |Δ gap| (eV) between the model and the model with θ_B zeroed (all adapters; the
    block's only)."""
    from mofbalora.adapters import adapter_layers

    on = _passes(model, inputs)
    out = {}
    layers = adapter_layers(model)
    for what, chosen in (
        ("all", layers),
        ("block", [(n, m) for n, m in layers if ".atom_conv_layers." in n]),
    ):
        if not chosen:
            continue
        saved = [m.adapter_B.detach().clone() for _, m in chosen]
        for _, m in chosen:
            m.adapter_B.data.zero_()
        try:
            out[f"contribution_{what}_ev"] = float(np.abs(on - _passes(model, inputs)).mean())
        finally:
            for (_, m), b in zip(chosen, saved, strict=True):
                m.adapter_B.data.copy_(b)
    return out


def alpha_table(model, inputs) -> dict[str, dict[str, float]]:
    """Per BaLoRA layer: geometric mean, 10th and 90th percentile of α(x) over its rows on
    ``inputs``, and α0. The block runs as CHGNet's own module here (its adapters then see their
    rows through ``forward``)."""
    from mofbalora.adapters.balora import BaLoRALinear

    logs: dict[str, list[torch.Tensor]] = {}
    hooks = [
        m.register_forward_hook(
            lambda mod, args, _out, n=n: logs.setdefault(n, []).append(
                torch.log(mod.alpha(args[0].detach())).flatten()
            )
        )
        for n, m in model.named_modules()
        if isinstance(m, BaLoRALinear)
    ]
    fast = model.backbone.fast_block if hasattr(model.backbone, "fast_block") else None
    if fast is not None:
        model.backbone.fast_block = False
    try:
        _passes(model, inputs)
    finally:
        for h in hooks:
            h.remove()
        if fast is not None:
            model.backbone.fast_block = fast
    out = {}
    for n, parts in logs.items():
        la = torch.cat(parts)
        layer = dict(model.named_modules())[n]
        out[n] = {
            "alpha_geomean": math.exp(float(la.mean())),
            "alpha_p10": math.exp(float(la.quantile(0.1))),
            "alpha_p90": math.exp(float(la.quantile(0.9))),
            "alpha0": layer.alpha0,
        }
    return out


def run_design(name: str, runs: Path) -> dict:
    from mofbalora.featurize import load_inputs
    from mofbalora.model import load_weights
    from mofbalora.train import finetune, model_from_config, split_ids

    out_json = RESULTS / f"{name}.json"
    if out_json.is_file():
        return json.loads(out_json.read_text())
    cfg = config(name, runs)
    run = runs / name
    t0 = time.perf_counter()
    metrics = finetune(cfg, run, resume=True, progress=False)
    seconds = time.perf_counter() - t0
    model = model_from_config(cfg)
    load_weights(model, run / "checkpoints" / "best")
    ds, ids = split_ids(cfg)
    _, te_x, _ = load_inputs(model, ds, ids["test"], False)
    torch.set_num_threads(1)
    result = {
        "design": name,
        "source": DESIGNS[name][0],
        "overrides": DESIGNS[name][1],
        "wall_seconds": seconds,
        "train_seconds": metrics["train_seconds"],
        "best_epoch": metrics["best_epoch"],
        "val": {k: metrics["val"][k] for k in KEYS},
        "test": {k: metrics["test"][k] for k in KEYS},
        **contributions(model, te_x),
        "alpha": alpha_table(model, te_x),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = out_json.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out_json)
    return result


KEYS = (
    "mae_ev",
    "spearman_std_abs_error",
    "spearman_epistemic_std_abs_error",
    "mean_epistemic_std_ev",
    "mean_aleatoric_std_ev",
)


def table(results: list[dict]) -> str:
    head = (
        "| design | val MAE | test MAE | ρ total | ρ epistemic | mean epistemic std (eV) | mean "
        "aleatoric std (eV) | adapters' contribution (eV): all / block | epistemic / contribution "
        "| α (geometric mean over layers' rows, min–max over layers) vs α0 | train s |"
    )
    rows = [head, "|" + "---|" * 11]
    for r in results:
        v, t = r["val"], r["test"]
        alphas = [a["alpha_geomean"] for a in r["alpha"].values()]
        block = [a["alpha_geomean"] for n, a in r["alpha"].items() if ".atom_conv_layers." in n]
        a0 = next(iter(r["alpha"].values()))["alpha0"]
        alpha = f"{min(alphas):.3g}–{max(alphas):.3g}" + (
            f" (block {min(block):.3g}–{max(block):.3g})" if block else ""
        )
        cb = r.get("contribution_block_ev")
        rows.append(
            f"| {r['design']} | {v['mae_ev']:.3f} | {t['mae_ev']:.3f} | "
            f"{t['spearman_std_abs_error']:.3f} | {t['spearman_epistemic_std_abs_error']:.3f} | "
            f"{t['mean_epistemic_std_ev']:.4f} | {t['mean_aleatoric_std_ev']:.3f} | "
            f"{r['contribution_all_ev']:.4f} / {'–' if cb is None else f'{cb:.4f}'} | "
            f"{t['mean_epistemic_std_ev'] / r['contribution_all_ev']:.2f} | {alpha} vs {a0:.3g} | "
            f"{r['train_seconds']:.0f} |"
        )
    return "\n".join(rows) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "names", nargs="*", help=f"designs to run (default: all, in order): {list(DESIGNS)}"
    )
    p.add_argument("--runs", default="/tmp/trunk/design", help="run folders (resumable)")
    args = p.parse_args(argv)
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    unknown = [n for n in args.names if n not in DESIGNS]
    if unknown:
        p.error(f"unknown design(s) {unknown}; choose from {list(DESIGNS)}")
    for name in args.names or DESIGNS:
        source = DESIGNS[name][0]
        if source is not None and not (runs / source / "metrics.json").is_file():
            run_design(source, runs)
        r = run_design(name, runs)
        print(
            f"{name}: test MAE {r['test']['mae_ev']:.3f}, rho "
            f"{r['test']['spearman_std_abs_error']:.3f}, rho epi "
            f"{r['test']['spearman_epistemic_std_abs_error']:.3f}, epi "
            f"{r['test']['mean_epistemic_std_ev']:.4f} eV",
            flush=True,
        )
    done = [
        json.loads((RESULTS / f"{n}.json").read_text())
        for n in DESIGNS
        if (RESULTS / f"{n}.json").is_file()
    ]
    (RESULTS / "table.md").write_text(table(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
