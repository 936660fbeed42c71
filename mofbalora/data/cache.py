"""An on-disk cache keyed by file content, so repeated epochs and runs do not re-parse or re-convert.

Keys are ``sha256(file bytes)`` plus a namespace naming what was computed (e.g. ``structure`` or
``chgnet-0.3.0/readout``); values are written atomically (temporary file + rename), so an interrupted
run never leaves a half-written entry.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mofbalora.data.qmof import cache_root


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ContentCache:
    """Pickle store under ``root/namespace/ab/abcdef...pkl``."""

    def __init__(self, namespace: str, root: str | Path | None = None) -> None:
        if not namespace or ".." in namespace:
            raise ValueError(f"bad cache namespace {namespace!r}")
        self.namespace = namespace
        self.dir = Path(root or cache_root()) / "content" / namespace

    def _path(self, digest: str) -> Path:
        return self.dir / digest[:2] / f"{digest}.pkl"

    def get(self, digest: str) -> Any | None:
        p = self._path(digest)
        if not p.is_file():
            return None
        try:
            with open(p, "rb") as fh:
                return pickle.load(fh)
        except (EOFError, pickle.UnpicklingError):
            return None  # corrupt entry: recompute

    def put(self, digest: str, value: Any) -> None:
        p = self._path(digest)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_or_compute(self, path: str | Path, compute: Callable[[Path], Any], digest: str | None = None) -> Any:
        digest = digest or file_digest(path)
        value = self.get(digest)
        if value is None:
            value = compute(Path(path))
            self.put(digest, value)
        return value
