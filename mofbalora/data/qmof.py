"""QMOF band-gap datasets: the official release layout, the packed layout in ../shared/data/qmof,
and any folder of CIFs with a labels CSV.

Rosen et al., Matter 4, 1578 (2021); npj Comput. Mater. 8, 112 (2022). Data licence CC BY 4.0.
Band gaps are PBE values in eV.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mofbalora.io import atomic_directory

QMOF_ID_COLUMN = "qmof_id"
QMOF_BANDGAP_COLUMN = "outputs.pbe.bandgap"
ENV_QMOF = "MOFBALORA_QMOF"
ENV_CACHE = "MOFBALORA_CACHE"


def cache_root() -> Path:
    """Root of mofbalora's on-disk caches (``$MOFBALORA_CACHE`` or ``~/.cache/mofbalora``)."""
    return Path(os.environ.get(ENV_CACHE, Path.home() / ".cache" / "mofbalora"))


def default_qmof_path() -> Path:
    """``$MOFBALORA_QMOF``, else ``../shared/data/qmof`` beside the current or the project
    directory."""
    if os.environ.get(ENV_QMOF):
        return Path(os.environ[ENV_QMOF])
    candidates = [
        Path.cwd() / ".." / "shared" / "data" / "qmof",
        Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "qmof",
    ]
    for c in candidates:
        if c.exists():
            return c.resolve()
    raise FileNotFoundError(
        f"no QMOF data found: set ${ENV_QMOF} or pass a path (looked in "
        f"{[str(c) for c in candidates]})"
    )


def _read_qmof_labels(folder: Path) -> pd.DataFrame:
    csv, js = folder / "qmof.csv", folder / "qmof.json"
    if csv.exists():
        df = pd.read_csv(csv, usecols=lambda c: c in (QMOF_ID_COLUMN, QMOF_BANDGAP_COLUMN))
    elif js.exists():
        records = json.loads(js.read_text())
        df = pd.json_normalize(records)[[QMOF_ID_COLUMN, QMOF_BANDGAP_COLUMN]]
    else:
        raise FileNotFoundError(f"{folder}: neither qmof.csv nor qmof.json found")
    missing = {QMOF_ID_COLUMN, QMOF_BANDGAP_COLUMN} - set(df.columns)
    if missing:
        raise ValueError(f"{folder}: label file lacks columns {sorted(missing)}")
    return df.rename(columns={QMOF_ID_COLUMN: "id", QMOF_BANDGAP_COLUMN: "bandgap_ev"})


def _unpacked_tarball(tarball: Path) -> Path:
    """Extract ``relaxed_structures.tar.xz`` once into the cache (atomically) and return the CIF
    folder."""
    st = tarball.stat()
    key = hashlib.sha1(f"{tarball.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[
        :16
    ]
    target = cache_root() / "qmof-unpacked" / key
    cif_dir = target / "relaxed_structures"
    if cif_dir.is_dir():
        return cif_dir
    with atomic_directory(target) as tmp, tarfile.open(tarball, "r:*") as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4: the standard filter
            tar.extractall(tmp, filter="data")
        else:  # older patch releases (Debian 12's 3.11.2): the same refusal, by hand
            tar.extractall(tmp, members=_plain_members(tar, tarball))
    return cif_dir


def _plain_members(tar: tarfile.TarFile, tarball: Path) -> list[tarfile.TarInfo]:
    """Regular files and folders that stay inside the target; anything else (links, devices,
    absolute or ``..`` paths) is refused, as the ``data`` extraction filter refuses it."""
    members = tar.getmembers()
    for m in members:
        parts = Path(m.name).parts
        if not (m.isfile() or m.isdir()) or Path(m.name).is_absolute() or ".." in parts:
            raise ValueError(f"{tarball}: refusing tar member {m.name!r} (not a plain file inside)")
    return members


@dataclass
class BandGapDataset:
    """Structures (CIF paths, parsed lazily) with PBE band gaps in eV."""

    ids: list[str]
    cif_paths: list[Path]
    bandgaps_ev: np.ndarray
    source: str = ""
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not (len(self.ids) == len(self.cif_paths) == len(self.bandgaps_ev)):
            raise ValueError("ids, cif_paths and bandgaps_ev must have the same length")
        self._index = {i: k for k, i in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def index_of(self, structure_id: str) -> int:
        try:
            return self._index[structure_id]
        except KeyError:
            raise KeyError(f"structure id {structure_id!r} not in dataset {self.source}") from None

    def subset(self, ids: list[str]) -> BandGapDataset:
        idx = [self.index_of(i) for i in ids]
        return BandGapDataset(
            [self.ids[k] for k in idx],
            [self.cif_paths[k] for k in idx],
            self.bandgaps_ev[idx],
            source=self.source,
        )

    def structure(self, structure_id: str, **limits):
        from mofbalora.data.structures import read_structure

        return read_structure(self.cif_paths[self.index_of(structure_id)], **limits)


def load_dataset(
    path: str | Path | None = None,
    *,
    labels_csv: str | Path | None = None,
    id_column: str = "id",
    target_column: str = "bandgap",
) -> BandGapDataset:
    """Load a band-gap dataset from any supported layout.

    - official QMOF release: ``path/qmof.csv`` (or ``qmof.json``) and
      ``path/relaxed_structures/*.cif``;
    - packed: ``path/qmof.csv`` and ``path/relaxed_structures.tar.xz`` (unpacked once into the
      cache);
    - generic: a folder of CIFs plus ``labels_csv`` with ``id_column`` (CIF stem) and
      ``target_column`` (eV).
    """
    folder = Path(path) if path is not None else default_qmof_path()
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder {folder} does not exist")
    if labels_csv is not None:
        df = pd.read_csv(labels_csv)
        for col in (id_column, target_column):
            if col not in df.columns:
                raise ValueError(f"{labels_csv}: no column {col!r}; columns are {list(df.columns)}")
        df = df.rename(columns={id_column: "id", target_column: "bandgap_ev"})
        cif_dir = folder
    else:
        df = _read_qmof_labels(folder)
        if (folder / "relaxed_structures").is_dir():
            cif_dir = folder / "relaxed_structures"
        elif (folder / "relaxed_structures.tar.xz").is_file():
            cif_dir = _unpacked_tarball(folder / "relaxed_structures.tar.xz")
        else:
            raise FileNotFoundError(
                f"{folder}: no relaxed_structures/ folder or relaxed_structures.tar.xz"
            )
    df = df.dropna(subset=["bandgap_ev"])
    ids = [str(i) for i in df["id"]]
    return BandGapDataset(
        ids,
        [cif_dir / f"{i}.cif" for i in ids],
        df["bandgap_ev"].to_numpy(dtype=np.float64),
        source=str(folder),
    )
