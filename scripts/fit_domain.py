"""Fit and store a model's applicability domain (``training_domain`` in ``model_config.json`` +
``domain.safetensors``).

    python scripts/fit_domain.py --model default --elements-only   # element counts only (~1 min)
    python scripts/fit_domain.py --model runs/balora   # + embedding reference and threshold

Element counts: for each element, the number of training structures containing it, read from the
atom-site loops of the training CIFs (the first ``--train-limit`` ids of the split's ``train`` part;
the shipped default was trained on the first 6,000 of ``qmof_v1``). Embedding part: the model's
pooled embeddings of at most ``--max-reference`` training structures (standardized; a seeded
subsample is stored) and a threshold at the ``--quantile`` of the validation structures' mean
distance to their ``--k`` nearest reference rows. This needs the structures featurized (through the
cache): about 0.2 s of CPU per structure for CHGNet, so ~13 min for 2,000 training + 1,826
validation structures. ``finetune`` does all of this by itself at the end of training.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from mofbalora.data.qmof import default_qmof_path, load_dataset
    from mofbalora.data.splits import load_split
    from mofbalora.domain import ApplicabilityDomain, cif_elements, count_elements, fit_domain
    from mofbalora.io import atomic_write_bytes
    from mofbalora.model import MODEL_CONFIG, load_model, resolve_model_dir

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model", default="default", help="'default' or a run / model folder (written in place)"
    )
    p.add_argument(
        "--qmof", default=None, help="QMOF folder (default: $MOFBALORA_QMOF or ../shared/data/qmof)"
    )
    p.add_argument("--split", default="qmof_v1")
    p.add_argument(
        "--train-limit",
        type=int,
        default=6000,
        help="the first N training ids (what the model saw)",
    )
    p.add_argument(
        "--val-limit", type=int, default=None, help="the first N validation ids (default: all)"
    )
    p.add_argument(
        "--elements-only", action="store_true", help="store element counts only (no featurization)"
    )
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--quantile", type=float, default=0.95)
    p.add_argument("--max-reference", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    directory = resolve_model_dir(args.model)
    ds = load_dataset(Path(args.qmof) if args.qmof else default_qmof_path())
    split = load_split(args.split)
    known = set(ds.ids)
    train_ids = [i for i in split["train"] if i in known][: args.train_limit]
    val_ids = [i for i in split["val"] if i in known][: args.val_limit]
    source = f"first {len(train_ids)} ids of the train part of {args.split}"
    t0 = time.perf_counter()
    counts = count_elements(cif_elements(ds.cif_paths[ds.index_of(i)]) for i in train_ids)
    print(
        f"element counts of {len(train_ids)} training CIFs: {len(counts)} elements "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    if args.elements_only:
        domain = ApplicabilityDomain(
            element_counts=counts, n_structures=len(train_ids), source=source
        )
    else:
        from mofbalora.train import load_inputs

        model = load_model(directory)
        _, tr_x, _ = load_inputs(model, ds, train_ids, "train set")
        _, va_x, _ = load_inputs(model, ds, val_ids, "val set")
        domain = fit_domain(
            model,
            tr_x,
            va_x,
            k=args.k,
            quantile=args.quantile,
            max_reference=args.max_reference,
            seed=args.seed,
            source=source,
        )
        # from every CIF, not only featurized
        domain.element_counts, domain.n_structures = counts, len(train_ids)
        print(
            f"embedding threshold {domain.threshold:.3f} ({domain.fitted_on}), "
            f"{domain.reference.shape[0]} reference structures"
        )
    domain.save_tensors(directory)
    cfg = json.loads((directory / MODEL_CONFIG).read_text())
    cfg["training_domain"] = domain.to_config()
    atomic_write_bytes(directory / MODEL_CONFIG, json.dumps(cfg, indent=2).encode())
    print(f"wrote training_domain to {directory / MODEL_CONFIG}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
