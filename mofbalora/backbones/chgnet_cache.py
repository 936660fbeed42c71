"""The one-off frozen-trunk pass over a dataset, in parallel processes, resumable.

Each structure runs through CHGNet's frozen trunk once; what it leaves in the array store
(:class:`~mofbalora.data.arrays.ArrayStore`, plain ``.npy``, keyed by the CIF's sha256):

- ``chgnet-0.3.0/activations/v1``: the readout input (float32) and every layer's per-atom output
  (float16): what readout adapters and all-layer heads train from (the same entry
  ``featurize_files`` writes and reads in readout mode);
- ``chgnet-0.3.0/cut-last-block/v1`` (``cut=True``): the inputs of the last atom convolution, so
  that adapters in that block train from the cache instead of recomputing the trunk every step.

A structure already in the store is skipped, so an interrupted pass resumes where it stopped. Each
worker process uses one thread; ``workers`` processes run side by side.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mofbalora.backbones.base import FeaturizationError
from mofbalora.data.arrays import ArrayStore
from mofbalora.data.cache import file_digest
from mofbalora.data.structures import StructureError, read_structure

#: array-store namespaces of the last block's inputs, by the dtype they are kept in
CUT_NAMESPACES = {"float16": "cut-last-block/v1", "float32": "cut-last-block-float32/v1"}
_WORKER: dict = {}


def _stores(backbone):
    return ArrayStore(backbone.array_namespace()), ArrayStore(
        f"{backbone.name}/{CUT_NAMESPACES['float16']}"
    )


def _init_worker(backbone_class: type, model_name: str, cache_root: str | None) -> None:
    """A worker process of its own: one torch thread, the caller's cache folder, one backbone."""
    torch.set_num_threads(1)
    if cache_root:
        os.environ["MOFBALORA_CACHE"] = cache_root
    _WORKER["backbone"] = backbone_class(adapt="readout", model_name=model_name)


def cache_one(
    backbone, path: str | Path, *, cut: bool = True, max_atoms: int | None = None
) -> str | None:
    """Put one file's trunk activations (and the cut) into the store; the failure reason, or None.
    ``max_atoms``: larger structures are not cached (reason ``too_many_atoms``; default:
    read_structure's)."""
    acts_store, cut_store = _stores(backbone)
    try:
        digest = file_digest(path)
    except OSError:
        return "unreadable"
    if acts_store.has(digest) and (not cut or cut_store.has(digest)):
        return None
    try:
        structure = (
            read_structure(path) if max_atoms is None else read_structure(path, max_atoms=max_atoms)
        )
        acts = backbone.trunk_activations([backbone._graph(structure)], cut=cut)[0]
    except StructureError as exc:
        return exc.reason
    except FeaturizationError:
        return "featurization_failed"
    if cut:
        cut_store.put(
            digest, {k: v for k, v in acts.items() if k.startswith("cut_") and k != "cut_atom_feas"}
        )
    acts_store.put(
        digest,
        {
            **{k: v for k, v in acts.items() if not k.startswith("cut_")},
            "digest": np.array(digest),
            "formula": np.array(structure.composition.reduced_formula),
        },
    )
    return None


def _work(paths: list[str], cut: bool, max_atoms: int | None = None) -> list[str | None]:
    return [cache_one(_WORKER["backbone"], p, cut=cut, max_atoms=max_atoms) for p in paths]


def run_trunk_pass(
    paths: Sequence[str | Path],
    *,
    backbone_class: type,
    workers: int = 2,
    cut: bool = True,
    chunk: int = 16,
    model_name: str = "0.3.0",
    progress: bool | str = True,
    max_atoms: int | None = None,
) -> dict[str, int]:
    """Run the frozen trunk of ``backbone_class`` (CHGNet's, through
    :func:`mofbalora.backbones.chgnet.build_trunk_cache`) over ``paths`` in ``workers`` processes;
    returns a tally by outcome (``ok`` or the failure reason)."""
    paths = [str(p) for p in paths]
    tally: dict[str, int] = {}
    bar = tqdm(
        total=len(paths),
        desc=progress if isinstance(progress, str) else "trunk cache",
        disable=not progress,
        unit="cif",
        smoothing=0.05,
    )
    chunks = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("spawn"),
        initializer=_init_worker,
        initargs=(backbone_class, model_name, os.environ.get("MOFBALORA_CACHE")),
    ) as pool:
        futures = {pool.submit(_work, c, cut, max_atoms): len(c) for c in chunks}
        for fut in as_completed(futures):
            for reason in fut.result():
                key = reason or "ok"
                tally[key] = tally.get(key, 0) + 1
            bar.update(futures[fut])
    bar.close()
    return tally
