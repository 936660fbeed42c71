"""Deterministic train/validation/test splits, saved as id lists.

The project's documented QMOF split (``qmof_split_v1``: 80/10/10, seed 42, over the sorted ids of
the 18,261 labelled structures) ships as ``mofbalora/splits/qmof_v1.json``; every experiment in the
project uses its test set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mofbalora.data.qmof import load_dataset
from mofbalora.io import atomic_write_json
from mofbalora.validation import check_choice, check_int

SPLIT_NAMES = ("train", "val", "test")
SHIPPED_SPLITS = {"qmof_v1": Path(__file__).resolve().parent.parent / "splits" / "qmof_v1.json"}


def random_split(
    ids: list[str], fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 42
) -> dict[str, list[str]]:
    """Split ``ids`` into train/val/test; independent of the input order (ids are sorted first)."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(
            f"fractions must be three non-negative numbers summing to 1, got {fractions}"
        )
    unique = sorted(set(ids))
    if len(unique) != len(ids):
        raise ValueError(f"ids contain {len(ids) - len(unique)} duplicates")
    perm = np.random.default_rng(seed).permutation(len(unique))
    n_train = int(round(fractions[0] * len(unique)))
    n_val = int(round(fractions[1] * len(unique)))
    shuffled = [unique[k] for k in perm]
    return {
        "train": shuffled[:n_train],
        "val": shuffled[n_train : n_train + n_val],
        "test": shuffled[n_train + n_val :],
    }


def save_split(split: dict[str, list[str]], path: str | Path, **meta) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, **{k: split[k] for k in SPLIT_NAMES}}
    return atomic_write_json(path, payload, indent=0)


def load_split(name_or_path: str | Path) -> dict[str, list[str]]:
    """Load a split by shipped name (see :data:`SHIPPED_SPLITS`) or from a JSON path."""
    path = SHIPPED_SPLITS.get(str(name_or_path), Path(name_or_path))
    if not path.is_file():
        raise FileNotFoundError(
            f"split {name_or_path!r} not found; shipped: {sorted(SHIPPED_SPLITS)} or a JSON path"
        )
    data = json.loads(path.read_text())
    missing = [k for k in SPLIT_NAMES if k not in data]
    if missing:
        raise ValueError(f"{path}: split lacks {missing}")
    return {k: list(data[k]) for k in SPLIT_NAMES}


@dataclass
class DataConfig:
    """Which dataset and which split: the ``data`` section of a run configuration
    (:mod:`mofbalora.config`)."""

    # dataset folder (None: $MOFBALORA_QMOF or ../shared/data/qmof)
    path: str | None = None
    labels: str | None = None  # labels CSV for a plain folder of CIFs
    id_column: str = "id"
    target_column: str = "bandgap"
    split: str = "qmof_v1"  # shipped split name or a JSON path
    train_size: int | None = None  # first N ids of the split's train part (None: all)
    val_size: int | None = None
    test_size: int | None = None

    def __post_init__(self) -> None:
        for part in SPLIT_NAMES:
            check_int(f"data.{part}_size", getattr(self, f"{part}_size"), 1, optional=True)

    def size(self, part: str) -> int | None:
        """The size limit of ``part`` (train | val | test)."""
        check_choice("split part", part, SPLIT_NAMES)
        return getattr(self, f"{part}_size")


def split_dataset(data: DataConfig, seed: int = 0):
    """(dataset, {"train": ids, "val": ids, "test": ids}) of a run configuration's ``data`` section,
    after its size limits (a labels CSV with the default split name gets a random 80/10/10 split
    with ``seed``, the run seed)."""
    ds = load_dataset(
        data.path,
        labels_csv=data.labels,
        id_column=data.id_column,
        target_column=data.target_column,
    )
    if data.labels is not None and data.split == "qmof_v1":
        split = random_split(ds.ids, seed=seed)
    else:
        split = load_split(data.split)
    known = set(ds.ids)
    out = {}
    for part in SPLIT_NAMES:
        ids = [i for i in split[part] if i in known]
        limit = data.size(part)
        out[part] = ids[:limit] if limit else ids
    return ds, out
