"""An on-disk cache keyed by file content, so repeated epochs and runs do not re-parse or
re-convert.

Keys are ``sha256(file bytes)`` plus a namespace naming what was computed (e.g. ``structure`` or
``jmp/graphs-cutoff19-kqmof-rule/v2``). Each value is one safetensors file of plain values
(:mod:`mofbalora.data.plain`: tensors and arrays as tensors, the rest as a JSON tree; no pickles),
so a shared cache folder (cluster scratch, Dask workers on a shared filesystem) cannot plant code:
an entry that does not parse is logged with its path and treated as a miss, recomputed and
overwritten. Values are written atomically (temporary file + rename), so an interrupted run never
leaves a half-written entry. A value holding anything but plain values is refused with a TypeError
naming the offending part.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mofbalora.data import plain
from mofbalora.data.qmof import cache_root
from mofbalora.io import atomic_write_bytes

log = logging.getLogger(__name__)
#: file suffix of an entry (entries of the earlier pickle format, ``.pkl``, are never read)
SUFFIX = ".safetensors"


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _identity(value: Any) -> Any:
    return value


class ContentCache:
    """Plain-value store under ``root/content/namespace/ab/<digest>.safetensors``.

    ``to_plain`` / ``from_plain`` convert a value to plain values and back (a backbone whose inputs
    hold richer objects, such as CHGNet's graphs, passes its own); by default values must already be
    plain.
    """

    def __init__(
        self,
        namespace: str,
        root: str | Path | None = None,
        *,
        to_plain: Callable[[Any], Any] = _identity,
        from_plain: Callable[[Any], Any] = _identity,
    ) -> None:
        if not namespace or ".." in namespace or namespace.startswith("/"):
            raise ValueError(f"bad cache namespace {namespace!r}")
        self.namespace = namespace
        self.dir = Path(root or cache_root()) / "content" / namespace
        self.to_plain, self.from_plain = to_plain, from_plain

    def _path(self, digest: str) -> Path:
        if not digest or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"bad content digest {digest!r}: expected lowercase hex (sha256)")
        return self.dir / digest[:2] / f"{digest}{SUFFIX}"

    def get(self, digest: str) -> Any | None:
        """The stored value, or None when absent or unreadable (logged with the file's path)."""
        p = self._path(digest)
        if not p.is_file():
            return None
        try:
            value = plain.load(p)
        except plain.PlainFormatError as exc:
            log.warning("ignoring unreadable cache entry (recomputed): %s", exc)
            return None
        try:
            return self.from_plain(value)
        # plain, but not what this namespace stores
        except (KeyError, TypeError, ValueError) as exc:
            log.warning(
                "ignoring cache entry %s of an unexpected shape (recomputed): %s: %s",
                p,
                type(exc).__name__,
                exc,
            )
            return None

    def put(self, digest: str, value: Any) -> None:
        """Store ``value`` (TypeError, before anything is written, if it is not plain after
        ``to_plain``)."""
        p = self._path(digest)
        data = plain.dumps(self.to_plain(value))
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(p, data)

    def get_or_compute(
        self, path: str | Path, compute: Callable[[Path], Any], digest: str | None = None
    ) -> Any:
        digest = digest or file_digest(path)
        value = self.get(digest)
        if value is None:
            value = compute(Path(path))
            self.put(digest, value)
        return value
