"""A content-keyed store of plain arrays: ``root/arrays/namespace/ab/<digest>/<name>.npy``.

Nothing executable is read back: every entry is a folder of ``.npy`` files loaded with
``allow_pickle=False`` (optionally memory-mapped), so a shared cache folder (cluster scratch, Dask
workers) cannot plant code. An entry is written into a temporary folder and renamed into place, so
an interrupted writer never leaves half an entry; a folder whose files do not load is treated as
missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mofbalora.data.qmof import cache_root
from mofbalora.io import atomic_directory


class ArrayStore:
    """Arrays keyed by a content digest under ``namespace`` (e.g. ``chgnet-0.3.0/trunk/v1``)."""

    def __init__(self, namespace: str, root: str | Path | None = None) -> None:
        if not namespace or ".." in namespace or namespace.startswith("/"):
            raise ValueError(f"bad array-store namespace {namespace!r}")
        self.namespace = namespace
        self.dir = Path(root or cache_root()) / "arrays" / namespace

    def _path(self, digest: str) -> Path:
        if not digest or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"bad content digest {digest!r}: expected lowercase hex (sha256)")
        return self.dir / digest[:2] / digest

    def has(self, digest: str) -> bool:
        return self._path(digest).is_dir()

    def get(
        self, digest: str, names: list[str] | None = None, *, mmap: bool = False
    ) -> dict[str, np.ndarray] | None:
        """The entry's arrays (all, or ``names``), or None when absent or unreadable."""
        p = self._path(digest)
        if not p.is_dir():
            return None
        files = [p / f"{n}.npy" for n in names] if names is not None else sorted(p.glob("*.npy"))
        try:
            return {
                f.stem: np.load(f, allow_pickle=False, mmap_mode="r" if mmap else None)
                for f in files
            }
        except (OSError, ValueError, EOFError):
            return None  # missing or corrupt file (or an object array): recompute

    def put(self, digest: str, arrays: dict[str, np.ndarray]) -> None:
        target = self._path(digest)
        for name, a in arrays.items():
            if not name.isidentifier():
                raise ValueError(f"bad array name {name!r}")
            if np.asarray(a).dtype == object:
                raise TypeError(
                    f"array {name!r} has dtype object; only plain numeric arrays are stored"
                )
        with atomic_directory(target, replace=True) as tmp:
            for name, a in arrays.items():
                np.save(tmp / f"{name}.npy", np.ascontiguousarray(a), allow_pickle=False)
