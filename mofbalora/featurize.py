"""Structure files → backbone inputs, through the content-keyed cache, with a per-file error policy.

This is the one path from CIF files to model inputs used by fine-tuning, evaluation, screening and
active learning: each file is hashed, looked up in the cache under the backbone's featurization
namespace, and only missing entries are parsed and featurized (in batches). A bad file never stops
the batch: it yields a :class:`FileError` with a specific reason (``on_error="skip"``) or raises.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mofbalora.backbones.base import Backbone, FeaturizationError
from mofbalora.data.arrays import ArrayStore
from mofbalora.data.cache import ContentCache, file_digest
from mofbalora.data.structures import DEFAULT_MAX_ATOMS, OnError, StructureError, read_structure

log = logging.getLogger(__name__)


class _ArrayCache:
    """A backbone's inputs as plain arrays (:class:`ArrayStore`) for backbones that say how
    (``array_namespaces``, ``to_arrays``, ``from_arrays``); the same get/put as
    :class:`ContentCache`. An input may span several namespaces (e.g. activations + the cut of
    one block); all must hold it."""

    def __init__(self, backbone: Backbone) -> None:
        self.backbone = backbone
        self.stores = [(ArrayStore(ns), names) for ns, names in backbone.array_namespaces().items()]

    def get(self, digest: str) -> dict | None:
        arrays: dict = {}
        for k, (store, names) in enumerate(self.stores):
            got = store.get(
                digest, [*names, "digest", "formula"] if k == 0 else list(names), on_use=k > 0
            )
            if got is None:
                return None
            arrays.update(got)
        x = self.backbone.from_arrays(arrays)
        # np.ascontiguousarray in ArrayStore.put stores a 0-d string as shape (1,): take the
        # element, not str(array)
        x["digest"], x["formula"] = digest, str(np.asarray(arrays["formula"]).reshape(-1)[0])
        return x

    def put(self, digest: str, x: dict) -> None:
        arrays = self.backbone.to_arrays(x)
        for k, (store, names) in enumerate(self.stores):
            extra = (
                {"digest": np.array(digest), "formula": np.array(x["formula"])} if k == 0 else {}
            )
            store.put(digest, {**{n: arrays[n] for n in names}, **extra})


def _cache_for(backbone: Backbone) -> ContentCache | _ArrayCache:
    namespace = getattr(backbone, "array_namespace", lambda: None)()
    if namespace:
        return _ArrayCache(backbone)
    return ContentCache(
        backbone.featurize_namespace(), to_plain=backbone.to_plain, from_plain=backbone.from_plain
    )


@dataclass
class FileError:
    """Why one input file was not featurized."""

    path: str
    reason: str
    message: str


def featurize_files(
    backbone: Backbone,
    paths: Sequence[str | Path],
    *,
    use_cache: bool = True,
    batch_size: int | None = None,
    on_error: OnError = "skip",
    max_atoms: int = DEFAULT_MAX_ATOMS,
    progress: bool | str = True,
    digests: Sequence[str | None] | None = None,
    parsed: dict[int, Any] | None = None,
) -> tuple[list[Any | None], list[FileError | None]]:
    """Featurize ``paths`` with ``backbone``; returns (inputs, errors), aligned with ``paths``.

    Exactly one of ``inputs[k]`` and ``errors[k]`` is not None. Each featurized input also carries
    ``"digest"`` (sha256 of the file) and ``"formula"``. ``digests`` (aligned with ``paths``) passes
    content digests the caller already computed, so files are not read twice. ``batch_size``:
    structures per :meth:`~mofbalora.backbones.base.Backbone.featurize` call (default: the
    backbone's choice). ``parsed``: when given, every structure parsed here (cache misses) is put in
    it under its position, so the caller (the screen's chemistry checks) need not parse the file
    again.
    """
    if on_error not in ("skip", "raise"):
        raise ValueError(f"unknown on_error {on_error!r}; choose from ['raise', 'skip']")
    cache = _cache_for(backbone) if use_cache else None
    batch_size = backbone.featurize_batch_size() if batch_size is None else batch_size
    inputs: list[Any | None] = [None] * len(paths)
    errors: list[FileError | None] = [None] * len(paths)
    pending: list[tuple[int, str, Any]] = []

    def fail(k: int, reason: str, message: str) -> None:
        if on_error == "raise":
            raise (
                StructureError(reason, paths[k], message)
                if reason != "featurization_failed"
                else FeaturizationError(f"{paths[k]}: {message}")
            )
        errors[k] = FileError(str(paths[k]), reason, message)

    def flush() -> None:
        if not pending:
            return
        try:
            feats = backbone.featurize([s for _, _, s in pending])
        except FeaturizationError:
            feats = []
            for k, _digest, s in pending:  # isolate the bad one(s)
                try:
                    feats.extend(backbone.featurize([s]))
                except FeaturizationError as exc:
                    feats.append(None)
                    fail(k, "featurization_failed", str(exc))
        for (k, digest, s), f in zip(pending, feats, strict=True):
            if f is None:
                continue
            f["digest"] = digest
            f["formula"] = s.composition.reduced_formula
            if cache is not None:
                cache.put(digest, f)
                if isinstance(cache, _ArrayCache):  # the very input a later cache hit gives
                    f = cache.get(digest) or f
            inputs[k] = f
        pending.clear()

    bar = tqdm(
        total=len(paths),
        desc=progress if isinstance(progress, str) else "featurize",
        disable=not progress,
        unit="cif",
        leave=False,
    )
    for k, path in enumerate(paths):
        bar.update(1)
        try:
            digest = digests[k] if digests is not None and digests[k] else file_digest(path)
        except (OSError, IsADirectoryError) as exc:
            fail(k, "unreadable", f"{type(exc).__name__}: {exc}")
            continue
        if cache is not None:
            hit = cache.get(digest)
            if hit is not None:
                inputs[k] = hit
                continue
        try:
            structure = read_structure(path, max_atoms=max_atoms)
        except StructureError as exc:
            fail(k, exc.reason, exc.detail or str(exc))
            continue
        pending.append((k, digest, structure))
        if parsed is not None:
            parsed[k] = structure
        if len(pending) >= batch_size:
            flush()
    flush()
    bar.close()
    return inputs, errors


def load_inputs(model, ds, ids: list[str], desc: str | bool):
    """(kept ids, featurized inputs, band gaps in eV as a float32 tensor) of dataset ``ids`` for
    ``model``'s backbone; files that fail featurization are dropped with a warning."""
    paths = [ds.cif_paths[ds.index_of(i)] for i in ids]
    inputs, errors = featurize_files(model.backbone, paths, progress=desc)
    keep = [k for k, e in enumerate(errors) if e is None]
    if len(keep) < len(ids):
        log.warning(
            "%s: %d of %d structures failed featurization and are left out",
            desc,
            len(ids) - len(keep),
            len(ids),
        )
    return (
        [ids[k] for k in keep],
        [inputs[k] for k in keep],
        torch.tensor(ds.bandgaps_ev[[ds.index_of(ids[k]) for k in keep]], dtype=torch.float32),
    )


#: rough CPU seconds to featurize one QMOF structure that is not cached (parse, CHGNet graph, frozen
#: trunk)
FEATURIZE_SECONDS_PER_STRUCTURE = 0.25


def announce_featurization(model, ds, parts: dict[str, list[str]]) -> dict[str, tuple[int, int]]:
    """Log, before any featurization, how many structures each part (train / val / test) holds, how
    many the cache already has (by file content digest), and a rough time for the rest; returns
    ``{part: (n, cached)}``."""
    cache = _cache_for(model.backbone)

    def cached(digest: str) -> bool:
        if hasattr(cache, "stores"):
            return all(
                store.has(digest) for store, _ in cache.stores if isinstance(store, ArrayStore)
            )
        return cache._path(digest).exists()

    counts: dict[str, tuple[int, int]] = {}
    for part, ids in parts.items():
        hits = 0
        for i in ids:
            try:
                hits += cached(file_digest(ds.cif_paths[ds.index_of(i)]))
            except (OSError, ValueError):
                pass  # unreadable: load_inputs reports it
        counts[part] = (len(ids), hits)
    todo = sum(n - c for n, c in counts.values())
    log.info(
        "will featurize %s: %d to compute, about %.0f s on one CPU core (rough; data.*_size or "
        "--limit / --test-size make a run smaller)",
        ", ".join(f"{part} {n} ({c} cached)" for part, (n, c) in counts.items()),
        todo,
        todo * FEATURIZE_SECONDS_PER_STRUCTURE,
    )
    return counts
