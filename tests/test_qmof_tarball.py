"""Unpacking QMOF's relaxed_structures.tar.xz refuses members that would land outside the cache,
also on Python patch releases without tarfile's ``data`` filter."""

from __future__ import annotations

import io
import tarfile

import pytest

from mofbalora.data.qmof import _plain_members


def _tarball(path, members):
    with tarfile.open(path, "w:xz") as tar:
        for name, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = b"data_x\n"
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type = tarfile.SYMTYPE
                info.linkname = "/etc/passwd"
                tar.addfile(info)
    return path


def test_plain_members_pass_and_escapes_are_refused(tmp_path):
    good = _tarball(tmp_path / "good.tar.xz", [("relaxed_structures/a.cif", "file")])
    with tarfile.open(good) as tar:
        assert [m.name for m in _plain_members(tar, good)] == ["relaxed_structures/a.cif"]
    for name, kind in [
        ("../escape.cif", "file"),
        ("/abs.cif", "file"),
        ("relaxed_structures/link.cif", "link"),
    ]:
        bad = _tarball(tmp_path / f"bad{len(name)}.tar.xz", [(name, kind)])
        with tarfile.open(bad) as tar, pytest.raises(ValueError, match="refusing tar member"):
            _plain_members(tar, bad)
