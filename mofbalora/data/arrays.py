"""A content-keyed store of plain arrays: ``root/arrays/namespace/ab/<digest>/<name>.npy``.

Nothing executable is read back: every entry is a folder of ``.npy`` files loaded with
``allow_pickle=False`` (or read on use: :class:`OnUseArray`), so a shared cache folder (cluster
scratch, Dask workers) cannot plant code. An entry is written into a temporary folder and renamed
into place, so an interrupted writer never leaves half an entry; a folder whose files do not load
is treated as missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mofbalora.data.qmof import cache_root
from mofbalora.io import atomic_directory


class OnUseArray:
    """A stored ``.npy`` array read whole from its file each time it is used (``np.asarray``).

    For entries too many to hold at once: the cut of CHGNet's last block is ~1.1 MB per structure,
    16 GB for the 14,609 training structures of QMOF, so a training run cannot keep it in memory,
    and memory-mapping it does not scale either: each ``np.memmap`` holds a file descriptor and a
    mapping while it lives, and 4 arrays per structure pass both the usual 20,000 open files per
    process and Linux's 65,530 mappings (an open that fails then reads as a cache miss). Only the
    header is read here (shape and dtype); nothing stays open.
    """

    __slots__ = ("path", "shape", "dtype")

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f"{path}: .npy format version {version} is not read on use")
        if dtype.hasobject:
            raise ValueError(f"{path}: object arrays are never read")
        self.path, self.shape, self.dtype = path, shape, dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        a = np.load(self.path, allow_pickle=False)
        return a if dtype is None else a.astype(dtype, copy=False)


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
        self, digest: str, names: list[str] | None = None, *, on_use: bool = False
    ) -> dict[str, np.ndarray | OnUseArray] | None:
        """The entry's arrays (all, or ``names``), or None when absent or unreadable.

        ``on_use=True`` gives :class:`OnUseArray` handles (headers checked now, data read whenever
        ``np.asarray`` asks) instead of arrays in memory."""
        p = self._path(digest)
        if not p.is_dir():
            return None
        files = [p / f"{n}.npy" for n in names] if names is not None else sorted(p.glob("*.npy"))
        try:
            if on_use:
                return {f.stem: OnUseArray(f) for f in files}
            return {f.stem: np.load(f, allow_pickle=False) for f in files}
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
