"""Issue 26, off-domain: does BaLoRA's epistemic spread grow with the domain distance on the CoRE
MOF rows that the shipped model calls out of domain (reports/coremof)?

    MOFBALORA_QMOF=/work/shared/data/qmof OMP_NUM_THREADS=1 nice -n 5 \\
        .venv/bin/python reports/trunk/full/offdomain.py [--seeds 0] [--files 500] [--limit 300]

What it does:

1. draws ``--files`` CIFs (a seeded sample) from each CoRE MOF 2019 set of reports/coremof
   (``--sets``; the ``core-mof`` package, :func:`mofbalora.data.candidates.export_coremof`) and
   featurizes them once (with a trunk model's backbone when one has finished, so the cut of the
   last block is cached with the activations; ~0.3 s per structure);
2. scores the domain as reports/coremof did: the shipped model's applicability domain
   (:mod:`mofbalora.domain`; ``domain_distance`` = mean distance to the 5 nearest standardized
   training embeddings; out of domain above the 95th percentile of validation's);
3. keeps up to ``--limit`` out-of-domain rows and ``--in-domain`` in-domain rows for contrast
   (seeded) and predicts them, T = ``--samples`` draws, with the shipped model, each finished
   ``trunk_balora`` run of ``--seeds`` in ``--runs`` (run.py's folders) and its warm-start source
   ``readout_balora``;
4. reports per model: Spearman(epistemic std, shipped domain distance) on the out-of-domain rows
   and on all kept rows, the same against the model's own domain distance, the mean epistemic std
   in and out of domain, and the mean epistemic std per distance quintile.

Writes ``<out>/offdomain.md`` and ``<out>/offdomain.csv`` (one row per structure and model);
featurization and predictions are cached in ``<out>/work`` (a rerun only predicts new models).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _driver():
    spec = importlib.util.spec_from_file_location("trunk_full_run", HERE / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("trunk_full_run", module)
    spec.loader.exec_module(module)
    return module


def models_to_compare(runs: Path, seeds: list[int], settings) -> list[tuple[str, str]]:
    """(label, model folder or "default") of the shipped model and every finished run of the
    trunk recipe and its warm-start source."""
    driver = _driver()
    out = [("shipped default (readout)", "default")]
    for seed in seeds:
        for recipe in ("readout_balora", "trunk_balora"):
            folder = runs / driver.run_name(recipe, seed, settings)
            if (folder / "metrics.json").is_file():
                out.append((f"{recipe} s{seed}", str(folder)))
    return out


def sample_files(out: Path, sets: list[str], files: int) -> list[Path]:
    from mofbalora.data.candidates import export_coremof

    paths: list[Path] = []
    for subset in sets:
        folder = out / "cifs" / subset
        if not (folder / "manifest.csv").is_file():
            export_coremof(subset, folder, limit=files, seed=0)
        paths += sorted(folder.glob("*.cif"))
    return paths


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    ok = np.isfinite(a) & np.isfinite(b)
    return float(spearmanr(a[ok], b[ok])[0]) if ok.sum() > 2 else float("nan")


def quintile_table(distance: np.ndarray, values: dict[str, np.ndarray]) -> list[str]:
    edges = np.quantile(distance, np.linspace(0, 1, 6))
    which = np.clip(np.searchsorted(edges, distance, side="right") - 1, 0, 4)
    names = list(values)
    lines = [
        "| shipped domain distance | n | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for q in range(5):
        mask = which == q
        cells = [f"{values[n][mask].mean():.3g}" if mask.any() else "–" for n in names]
        lines.append(
            f"| {edges[q]:.2f}–{edges[q + 1]:.2f} | {int(mask.sum())} | " + " | ".join(cells) + " |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    import pandas as pd
    import torch

    from mofbalora.domain import elements_of_formula
    from mofbalora.featurize import featurize_files
    from mofbalora.model import load_model

    driver = _driver()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default=str(driver.ROOT / "runs" / "trunk_full"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--sets", default="2019-ASR,2019-FSR")
    p.add_argument("--files", type=int, default=500, help="CIFs drawn per set")
    p.add_argument("--limit", type=int, default=300, help="out-of-domain rows kept")
    p.add_argument("--in-domain", type=int, default=150, help="in-domain rows kept for contrast")
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--run-options",
        default="",
        help="run.py options that named the run folders (e.g. '--limit-train 200 --limit-val "
        "50 --limit-test 50 --epochs 1' for a smoke run)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    settings, _ = driver.settings_from_args(args.run_options.split() + ["--runs", args.runs])
    models = models_to_compare(settings.runs, args.seeds, settings)
    t0 = time.perf_counter()

    # 1. featurize the sample once, with a trunk backbone if there is one (it caches both parts)
    paths = sample_files(work, args.sets.split(","), args.files)
    shipped = load_model("default")
    trunk = [folder for label, folder in models if label.startswith("trunk_")]
    featurizer = load_model(trunk[0]) if trunk else shipped
    _, errors = featurize_files(featurizer.backbone, paths, progress=False)
    paths = [path for path, e in zip(paths, errors, strict=True) if e is None]
    # the shipped model's own inputs (cache hits when a trunk backbone featurized them)
    inputs = featurize_files(shipped.backbone, paths, on_error="raise", progress=False)[0]
    featurize_s = time.perf_counter() - t0

    # 2. the shipped model's domain (as in reports/coremof)
    pred = shipped.predict_inputs(inputs, n_samples=1, seed=0)
    domain = shipped.training_domain.assess(
        [elements_of_formula(x["formula"]) for x in inputs], pred.embedding
    )
    distance = np.array([d["domain_distance"] for d in domain])
    inside = np.array([d["in_domain"] for d in domain], dtype=bool)

    # 3. the rows kept
    rng = np.random.default_rng(0)
    ood = rng.permutation(np.flatnonzero(~inside))[: args.limit]
    ind = rng.permutation(np.flatnonzero(inside))[: args.in_domain]
    chosen = np.sort(np.concatenate([ood, ind]))
    names = [paths[k].stem for k in chosen]
    rows = pd.DataFrame(
        {"structure": names, "domain_distance": distance[chosen], "in_domain": inside[chosen]}
    )

    # 4. predictions, cached per model
    epistemic: dict[str, np.ndarray] = {}
    summary = []
    for label, folder in models:
        cache = work / f"pred-{label.replace(' ', '_').replace('(', '').replace(')', '')}.json"
        key = {"model": folder, "structures": names, "samples": args.samples}
        if cache.is_file() and json.loads(cache.read_text())["key"] == key:
            got = json.loads(cache.read_text())
        else:
            model = shipped if folder == "default" else load_model(folder)
            t1 = time.perf_counter()
            x = featurize_files(
                model.backbone, [paths[k] for k in chosen], on_error="raise", progress=False
            )[0]
            pr = model.predict_inputs(x, n_samples=args.samples, seed=0)
            own = (
                model.training_domain.distances(pr.embedding).tolist()
                if model.training_domain is not None and model.training_domain.has_embedding
                else [float("nan")] * len(x)
            )
            got = {
                "key": key,
                "epistemic_std_ev": pr.epistemic_std_ev.tolist(),
                "aleatoric_std_ev": None
                if pr.aleatoric_std_ev is None
                else pr.aleatoric_std_ev.tolist(),
                "own_distance": own,
                "seconds": time.perf_counter() - t1,
            }
            cache.write_text(json.dumps(got))
        epi = np.array(got["epistemic_std_ev"])
        own = np.array(got["own_distance"], dtype=float)
        epistemic[label] = epi
        rows[f"epistemic_std_ev:{label}"] = epi
        d = rows["domain_distance"].to_numpy()
        o = ~rows["in_domain"].to_numpy()
        summary.append(
            f"| {label} | {spearman(epi[o], d[o]):.3f} | {spearman(epi, d):.3f} | "
            f"{spearman(epi[o], own[o]):.3f} | {epi[~o].mean() if (~o).any() else float('nan'):.3g}"
            f" | {epi[o].mean() if o.any() else float('nan'):.3g} | {got['seconds']:.0f} |"
        )

    rows.to_csv(out / "offdomain.csv", index=False)
    n_ood, n_in = int((~rows["in_domain"]).sum()), int(rows["in_domain"].sum())
    lines = [
        "# Off-domain: BaLoRA's epistemic spread against the domain distance (CoRE MOF)",
        "",
        f"{len(paths)} CoRE MOF CIFs featurized ({args.files} drawn per set of {args.sets}, "
        f"seed 0; {len(errors) - len(paths)} failed), {int((~inside).sum())} out of the shipped "
        f"model's domain ({(~inside).mean():.1%}); kept {n_ood} out-of-domain and {n_in} "
        f"in-domain rows; T = {args.samples}. Featurization {featurize_s:.0f} s.",
        "",
        "| model | ρ(epistemic, distance), out-of-domain rows | ρ, all kept rows | "
        "ρ(epistemic, own domain distance), out-of-domain | mean epistemic std in domain (eV) | "
        "out of domain (eV) | predict s |",
        "|---|---|---|---|---|---|---|",
        *summary,
        "",
        "Mean epistemic std (eV) per quintile of the shipped domain distance over the kept rows:",
        "",
        *quintile_table(rows["domain_distance"].to_numpy(), epistemic),
        "",
        f"Regenerate: `python reports/trunk/full/offdomain.py {shlex.join(argv or sys.argv[1:])}`.",
    ]
    (out / "offdomain.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
