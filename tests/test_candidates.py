"""Tests for mofbalora.data.candidates and the ``mofbalora candidates`` command."""

from __future__ import annotations

import csv
import tarfile
from pathlib import Path

import pytest

from mofbalora.data.candidates import (
    COREMOF_SUBSETS,
    MANIFEST_NAME,
    coremof_entries,
    expand_candidates,
    export_coremof,
)
from mofbalora.data.structures import read_structure

CoRE_MOF = pytest.importorskip("CoRE_MOF", reason="the core-mof package is not installed")


def _touch(path: Path, text: str = "data_x\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _manifest(folder: Path) -> list[dict[str, str]]:
    with open(folder / MANIFEST_NAME, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- expand_candidates


@pytest.fixture()
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    _touch(tmp_path / "lib" / "b.cif")
    _touch(tmp_path / "lib" / "a.cif")
    _touch(tmp_path / "lib" / "deep" / "er" / "c.CIF")
    _touch(tmp_path / "lib" / "deep" / "notes.txt")
    _touch(tmp_path / "lib" / "folder.cif" / "inside.cif")  # a directory named like a CIF
    _touch(tmp_path / "one.cif")
    _touch(tmp_path / "two.cif")
    _touch(tmp_path / "plain.txt")
    return tmp_path


def test_expand_directory_recursive_sorted(tree: Path) -> None:
    assert expand_candidates(["lib"]) == [
        Path("lib/a.cif"),
        Path("lib/b.cif"),
        Path("lib/deep/er/c.CIF"),
        Path("lib/folder.cif"),
    ]
    assert expand_candidates([tree / "lib" / "deep"]) == [tree / "lib" / "deep" / "er" / "c.CIF"]


def test_expand_file_glob_missing_order_and_dedup(tree: Path) -> None:
    got = expand_candidates(
        [
            "two.cif",
            "*.cif",
            "plain.txt",
            "nowhere/*.cif",
            "missing.cif",
            "lib/*",
            "lib/a.cif",
            "./one.cif",
        ]
    )
    assert got == [
        Path("two.cif"),  # given first, keeps its place
        Path("one.cif"),  # from the glob (two.cif already listed)
        Path("plain.txt"),  # an explicit file is kept whatever its suffix
        Path("nowhere/*.cif"),  # a glob matching nothing stays as an entry
        Path("missing.cif"),  # so does a missing file
        Path("lib/a.cif"),  # glob matches, sorted; matched folders are expanded
        Path("lib/b.cif"),
        Path("lib/deep/er/c.CIF"),
        Path("lib/folder.cif"),  # a folder named like a CIF is an entry, not descended
    ]
    assert expand_candidates(["**/*.CIF"]) == [Path("lib/deep/er/c.CIF")]
    assert expand_candidates([]) == []


def test_expand_lists_a_directory_named_cif_as_an_entry(tree: Path) -> None:
    """A folder named like a CIF is almost always a mistake: it becomes one entry (an error row)."""
    assert expand_candidates(["lib/folder.cif"]) == [Path("lib/folder.cif")]


def test_expand_rejects_single_string() -> None:
    with pytest.raises(TypeError, match="list"):
        expand_candidates("lib")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- CoRE MOF export


def test_coremof_entries_disorder_flag() -> None:
    asr = coremof_entries("2019-ASR")
    assert len(asr) == 12020
    flags = {row["disordered"] for row in asr}
    assert flags == {"yes", "no"}
    assert all(row["filename"] and "" not in row for row in asr[:10])
    assert {row["disordered"] for row in coremof_entries("2014")} == {""}


def test_export_first_five(tmp_path: Path) -> None:
    out = tmp_path / "coremof"
    paths = export_coremof("2019-ASR", out, limit=5)
    assert len(paths) == 5
    names = [p.stem for p in paths]
    assert names == sorted(names)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*(p.name for p in paths), MANIFEST_NAME]
    )
    for path in paths:
        # Readable CIFs: they parse. Content checks may still reject some (the first entry by name
        # is flagged DISORDER in the csv and holds alternative positions 0.44 Å apart), so relax
        # them here.
        structure = read_structure(path, min_distance_a=0, max_atoms=100_000)
        assert len(structure) > 0

    rows = _manifest(out)
    assert [r["name"] for r in rows] == names
    assert [out / r["path"] for r in rows] == paths
    assert {r["subset"] for r in rows} == {"2019-ASR"}
    assert {r["disordered"] for r in rows} <= {"yes", "no"}
    assert {"LCD", "PLD", "All_Metals", "DISORDER"} <= set(rows[0])

    # Byte for byte as archived (CRLF line ends and all).
    with tarfile.open(Path(CoRE_MOF.__file__).parent / "data" / "2019-ASR.tar.xz", "r|xz") as tar:
        for member in tar:
            if member.name.rsplit("/", 1)[-1] == paths[0].name:
                fh = tar.extractfile(member)
                assert fh is not None and fh.read() == paths[0].read_bytes()
                break
        else:
            pytest.fail(f"{paths[0].name} not found in the archive")


def test_export_seed_and_disorder_filter(tmp_path: Path) -> None:
    a = export_coremof("2014", tmp_path / "a", limit=3, seed=7)
    b = export_coremof("2014", tmp_path / "b", limit=3, seed=7)
    assert [p.name for p in a] == [p.name for p in b]
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]

    clean = export_coremof("2019-FSR", tmp_path / "clean", limit=4, include_disordered=False)
    assert len(clean) == 4
    assert {r["disordered"] for r in _manifest(tmp_path / "clean")} == {"no"}
    flagged = {r["filename"] for r in coremof_entries("2019-FSR") if r["disordered"] == "yes"}
    assert not {p.stem for p in clean} & flagged
    for path in clean:
        read_structure(path)  # these four pass every default check


def test_export_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2019-ASR"):
        export_coremof("2019", tmp_path)  # type: ignore[arg-type]
    for limit in (0, -3, 2.5):
        with pytest.raises(ValueError, match="limit"):
            export_coremof("2014", tmp_path, limit=limit)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed"):
        export_coremof("2014", tmp_path, limit=1, seed="x")  # type: ignore[arg-type]
    assert COREMOF_SUBSETS == ("2019-ASR", "2019-FSR", "2014")


# --------------------------------------------------------------------------- CLI


def test_cli_coremof_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mofbalora.cli import main

    out = tmp_path / "cands"
    assert (
        main(["candidates", "coremof", "--set", "2019-ASR", "--limit", "2", "--out", str(out)]) == 0
    )
    assert "wrote 2 " in capsys.readouterr().out
    assert len(list(out.glob("*.cif"))) == 2 and (out / MANIFEST_NAME).is_file()

    assert main(["candidates", "list", str(out), str(tmp_path / "gone.cif")]) == 0
    printed = capsys.readouterr().out
    # the screen's reason for a missing path: one vocabulary
    assert "gone.cif\tunreadable" in printed
    assert "3 candidate(s), 1 unreadable (no such file)" in printed

    with pytest.raises(SystemExit):
        main(["candidates", "coremof", "--set", "2020", "--out", str(out)])
