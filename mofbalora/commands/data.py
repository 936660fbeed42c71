"""``mofbalora data``: inspect datasets and pre-compute the backbone cache."""

from __future__ import annotations

import argparse

from mofbalora.commands import positive_int, show_progress
from mofbalora.data.info import DEFAULT_SAMPLE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect datasets, build caches")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    info = dsub.add_parser(
        "info", help="structure count, band-gap and atom-count statistics, failures by reason"
    )
    info.add_argument(
        "path",
        nargs="?",
        default=None,
        help="dataset folder (default: $MOFBALORA_QMOF or ../shared/data/qmof)",
    )
    info.add_argument("--labels", default=None, help="labels CSV for a plain folder of CIFs")
    info.add_argument("--id-column", default="id")
    info.add_argument("--target-column", default="bandgap")
    info.add_argument(
        "--sample",
        type=positive_int,
        default=DEFAULT_SAMPLE,
        metavar="N",
        help=f"parse a random sample of N structures (default {DEFAULT_SAMPLE}, seeded; all labels "
        "are always read)",
    )
    info.add_argument(
        "--all",
        action="store_true",
        help="parse every structure (QMOF: about 6 minutes on one core)",
    )
    info.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        metavar="N",
        help="parse the first N structures instead of a sample",
    )
    info.add_argument("--seed", type=int, default=0, help="seed of the sample")
    info.set_defaults(func=_info)

    cache = dsub.add_parser(
        "cache", help="featurize a dataset split into the backbone cache (resumable)"
    )
    cache.add_argument("path", nargs="?", default=None)
    cache.add_argument("--backbone", default="chgnet")
    cache.add_argument(
        "--adapt", default="readout", help="adapter placement (decides what is cached)"
    )
    cache.add_argument("--split", default="qmof_v1")
    cache.add_argument("--order", default="test,val,train", help="which split parts, in this order")
    cache.add_argument("--limit", type=int, default=None, help="at most N structures per part")
    cache.add_argument("--threads", type=int, default=None)
    cache.set_defaults(func=_cache)

    trunk = dsub.add_parser(
        "trunk-cache",
        help="the one-off frozen CHGNet trunk pass over a split, in parallel "
        "processes, resumable: every layer's per-atom output and the last block's inputs",
    )
    trunk.add_argument(
        "path",
        nargs="?",
        default=None,
        help="dataset folder (default: $MOFBALORA_QMOF or ../shared/data/qmof)",
    )
    trunk.add_argument("--split", default="qmof_v1")
    trunk.add_argument("--order", default="test,val,train", help="which split parts, in this order")
    trunk.add_argument("--limit", type=int, default=None, help="at most N structures per part")
    trunk.add_argument("--workers", type=int, default=2, help="processes (one thread each)")
    trunk.add_argument(
        "--no-cut",
        action="store_true",
        help="skip the last block's inputs (about 0.8 MB per structure)",
    )
    trunk.set_defaults(func=_trunk_cache)


def _info(args: argparse.Namespace) -> int:
    from mofbalora.data.info import dataset_info, format_info

    if args.all and args.limit is not None:
        raise ValueError("data info: give --all or --limit N, not both")
    info = dataset_info(
        args.path,
        labels_csv=args.labels,
        id_column=args.id_column,
        target_column=args.target_column,
        limit=args.limit,
        sample=None if args.all else args.sample,
        seed=args.seed,
        progress=show_progress(args),
    )
    print(format_info(info))
    return 0


def _cache(args: argparse.Namespace) -> int:
    import torch

    from mofbalora.backbones import load_backbone
    from mofbalora.data.qmof import load_dataset
    from mofbalora.data.splits import load_split
    from mofbalora.featurize import featurize_files

    if args.threads:
        torch.set_num_threads(args.threads)
    ds = load_dataset(args.path)
    split = load_split(args.split)
    backbone = load_backbone(args.backbone, adapt=args.adapt)
    for part in args.order.split(","):
        ids = split[part][: args.limit]
        paths = [ds.cif_paths[ds.index_of(i)] for i in ids]
        _, errors = featurize_files(
            backbone, paths, progress=f"cache {part}" if show_progress(args) else False
        )
        n_err = sum(e is not None for e in errors)
        print(f"{part}: {len(ids) - n_err} cached, {n_err} failed")
    return 0


def _trunk_cache(args: argparse.Namespace) -> int:
    import time

    from mofbalora.backbones.chgnet import build_trunk_cache
    from mofbalora.data.qmof import load_dataset
    from mofbalora.data.splits import load_split

    ds = load_dataset(args.path)
    split = load_split(args.split)
    for part in args.order.split(","):
        if part not in split:
            raise SystemExit(f"unknown split part {part!r}; choose from {sorted(split)}")
        ids = split[part][: args.limit]
        start = time.perf_counter()
        tally = build_trunk_cache(
            [ds.cif_paths[ds.index_of(i)] for i in ids],
            workers=args.workers,
            cut=not args.no_cut,
            progress=f"trunk {part}" if show_progress(args) else False,
        )
        print(
            f"{part}: {len(ids)} structures in {time.perf_counter() - start:.0f} s: {tally}",
            flush=True,
        )
    return 0
