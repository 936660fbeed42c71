"""Tests for the DFT hand-off (mofbalora.dft and ``mofbalora dft-inputs``)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mofbalora.cli import main
from mofbalora.dft import QMOF_INCAR, QMOF_POTCARS, qmof_magmom, write_dft_inputs

QMOF_SAMPLE = Path("/work/shared/data/qmof/original_cif_sample")
# (structure_id, rank, status): unsorted ranks, one error row. Rank 4 is beyond --top 3.
ROWS = [
    ("qmof-0003ae4", 3, "ok"),  # Li MOF, 32 atoms: closed shell, Li (not Li_sv)
    ("synthetic-zno", 2, "ok"),  # hand-made 5 x 10 x 20 A orthorhombic cell, 2 atoms
    ("broken", None, "error"),
    ("qmof-0000295", 1, "ok"),  # Cu MOF, 50 atoms: spin-polarised
    ("qmof-000741d", 4, "ok"),  # Sc MOF: Sc_sv
]
TOP = 3


def _synthetic_structure():
    from pymatgen.core import Lattice, Structure

    return Structure(
        Lattice.orthorhombic(5.0, 10.0, 20.0), ["Zn", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


def _write_ranked_csv(root: Path, rows=ROWS) -> Path:
    cifs = root / "cifs"
    cifs.mkdir(parents=True, exist_ok=True)
    records = []
    for i, (sid, rank, status) in enumerate(rows):
        cif = cifs / f"{sid}.cif"
        if sid == "synthetic-zno":
            _synthetic_structure().to(filename=str(cif))
        elif sid.startswith("qmof-"):
            shutil.copy(QMOF_SAMPLE / f"{sid}.cif", cif)
        records.append(
            {
                "path": f"cifs/{sid}.cif",  # relative to the CSV's folder
                "structure_id": sid,
                "formula": f"F{i}",
                "n_atoms": 10 + i,
                "bandgap_mean_ev": 1.5 + i,
                "bandgap_std_ev": 0.1 * (i + 1),
                "score": 0.9 - 0.1 * i,
                "rank": rank,
                "status": status,
                "error": "" if status == "ok" else "not_cif",
            }
        )
    path = root / "ranked.csv"
    pd.DataFrame(records).to_csv(path, index=False)
    return path


def _expected_ok(rows=ROWS, top=TOP):
    ok = sorted((r for r in rows if r[2] == "ok"), key=lambda r: r[1])
    return ok[:top]


def _hide_potcar_config(mp: pytest.MonkeyPatch) -> None:
    """Make the tests independent of a POTCAR directory configured on this machine."""
    from pymatgen.core import SETTINGS

    mp.delitem(SETTINGS, "PMG_VASP_PSP_DIR", raising=False)
    mp.delenv("PMG_VASP_PSP_DIR", raising=False)


@pytest.fixture(autouse=True)
def _no_ambient_potcars(monkeypatch):
    _hide_potcar_config(monkeypatch)


@pytest.fixture(scope="module")
def vasp_out(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("dft_vasp")
    ranked = _write_ranked_csv(root)
    with pytest.MonkeyPatch.context() as mp:
        _hide_potcar_config(mp)
        manifest = write_dft_inputs(ranked, root / "out", top=TOP)
    return ranked, manifest


def _incar(path: Path) -> dict:
    from pymatgen.io.vasp.inputs import Incar

    return dict(Incar.from_file(path))


def _folder(manifest: Path, sid: str) -> Path:
    (match,) = [p for p in manifest.parent.iterdir() if p.is_dir() and p.name.endswith("_" + sid)]
    return match


def test_folders_in_rank_order_top_k_only(vasp_out):
    _, manifest = vasp_out
    folders = sorted(p.name for p in manifest.parent.iterdir() if p.is_dir())
    assert folders == [f"{rank:04d}_{sid}" for sid, rank, _ in _expected_ok()]
    assert (manifest.parent / "run_quacc.py").is_file()
    assert not list(manifest.parent.parent.glob(".out.*"))  # temp dir renamed, nothing left over


def test_incar_has_qmof_settings(vasp_out):
    _, manifest = vasp_out
    for folder in (p for p in manifest.parent.iterdir() if p.is_dir()):
        incar = _incar(folder / "INCAR")
        assert incar["ENCUT"] == 520
        assert incar["IVDW"] == 12
        assert incar["ISMEAR"] == 0
        assert incar["SIGMA"] == pytest.approx(0.01)
        assert str(incar["GGA"]).upper() == "PE"
        assert incar["ISIF"] == 3 and incar["EDIFFG"] == pytest.approx(-0.03)
        static = _incar(folder / "INCAR.static")
        assert static["NSW"] == 0 and "IBRION" not in static and "EDIFFG" not in static
        assert static["ENCUT"] == 520 and static["IVDW"] == 12 and static["LCHARG"] is True


def test_spin_and_magmoms(vasp_out):
    from pymatgen.io.vasp.inputs import Poscar

    _, manifest = vasp_out
    cu = _folder(manifest, "qmof-0000295")
    incar = _incar(cu / "INCAR")
    species = [s.specie.symbol for s in Poscar.from_file(cu / "POSCAR").structure]
    assert incar["ISPIN"] == 2
    assert incar["MAGMOM"] == [5.0 if el == "Cu" else 0.0 for el in species]
    li = _incar(_folder(manifest, "qmof-0003ae4") / "INCAR")
    assert li["ISPIN"] == 1 and "MAGMOM" not in li
    assert qmof_magmom("Zn") == 0 and qmof_magmom("Cd") == 0 and qmof_magmom("Fe") == 5
    assert qmof_magmom("Eu") == 7 and qmof_magmom("Lu") == 5 and qmof_magmom("O") == 0


def _hand_kmesh(abc: tuple[float, float, float], n_atoms: int, kppa: float = 1000) -> list[int]:
    """The documented rule: perfect-cube density nudged by 1 %, divisions ~ 1 / length."""
    if abs(round(kppa ** (1 / 3)) ** 3 - kppa) < 1:
        kppa *= 1.01
    m = (kppa / n_atoms * abc[0] * abc[1] * abc[2]) ** (1 / 3)
    return [max(1, math.floor(m / length)) for length in abc]


def test_kpoints_match_documented_rule(vasp_out):
    from pymatgen.io.vasp.inputs import Kpoints

    _, manifest = vasp_out
    kp = Kpoints.from_file(_folder(manifest, "synthetic-zno") / "KPOINTS")
    # 1010 / 2 atoms * 5*10*20 A^3 = 505000 -> m = 79.63; 79.63/5, /10, /20 -> 15, 7, 3 (odd: Gamma)
    assert _hand_kmesh((5.0, 10.0, 20.0), 2) == [15, 7, 3]
    assert [int(n) for n in kp.kpts[0]] == [15, 7, 3]
    assert kp.style.name == "Gamma"


def test_kpoints_even_mesh_is_monkhorst_pack():
    from pymatgen.core import Lattice, Structure

    from mofbalora.dft import qmof_kpoints

    coords = [[0.1 * i, (0.37 * i) % 1, (0.61 * i + 0.05) % 1] for i in range(10)]
    structure = Structure(Lattice.cubic(10.0), ["H"] * 10, coords)
    kp = qmof_kpoints(structure)
    # 1010 / 10 * 1000 = 101000 -> m = 46.57 -> 4, 4, 4: all even -> Monkhorst-Pack
    assert [int(n) for n in kp.kpts[0]] == _hand_kmesh((10.0, 10.0, 10.0), 10) == [4, 4, 4]
    assert kp.style.name == "Monkhorst"


def test_potcar_spec_lists_exactly_the_elements(vasp_out):
    from pymatgen.io.vasp.inputs import Poscar

    _, manifest = vasp_out
    for folder in (p for p in manifest.parent.iterdir() if p.is_dir()):
        spec = (folder / "POTCAR.spec").read_text().split()
        poscar = Poscar.from_file(folder / "POSCAR")
        assert [s.split("_")[0] for s in spec] == poscar.site_symbols  # POSCAR order, no repeats
        assert set(poscar.site_symbols) == {el.symbol for el in poscar.structure.composition}
        assert spec == [QMOF_POTCARS[el] for el in poscar.site_symbols]
        assert not (folder / "POTCAR").exists()
        assert "POTCAR.spec" in (folder / "README.txt").read_text()
    spec = (_folder(manifest, "qmof-0003ae4") / "POTCAR.spec").read_text().split()
    assert "Li" in spec and "Li_sv" not in spec  # QMOF's choice


def test_manifest_rows_match_ranked_csv(vasp_out):
    ranked, manifest = vasp_out
    df = pd.read_csv(manifest)
    src = pd.read_csv(ranked).set_index("structure_id")
    expected = _expected_ok()
    assert df["structure_id"].tolist() == [sid for sid, _, _ in expected]
    assert df["rank"].tolist() == [rank for _, rank, _ in expected]
    for _, row in df.iterrows():
        ref = src.loc[row["structure_id"]]
        for col in ("formula", "n_atoms", "bandgap_mean_ev", "bandgap_std_ev", "score"):
            assert row[col] == ref[col], col
        assert row["folder"] == f"{row['rank']:04d}_{row['structure_id']}"
        assert (manifest.parent / row["folder"]).is_dir()
        assert Path(row["source_path"]).name == f"{row['structure_id']}.cif"


def test_ase_mode_writes_readable_files(tmp_path):
    from ase.io import read

    ranked = _write_ranked_csv(tmp_path)
    manifest = write_dft_inputs(ranked, tmp_path / "ase_out", top=2, code="ase")
    df = pd.read_csv(manifest)
    assert df["rank"].tolist() == [1, 2]
    cu = manifest.parent / df.loc[0, "folder"]
    atoms = read(cu / "structure.extxyz")
    assert len(atoms) == 50
    assert {
        s
        for s, m in zip(
            atoms.get_chemical_symbols(), atoms.get_initial_magnetic_moments(), strict=True
        )
        if m
    } == {"Cu"}
    settings = json.loads((cu / "calculator.json").read_text())
    kwargs = settings["ase_vasp_kwargs"]
    assert kwargs["encut"] == 520 and kwargs["ivdw"] == 12 and kwargs["xc"] == "pbe"
    assert kwargs["ismear"] == 0 and kwargs["sigma"] == 0.01 and kwargs["ispin"] == 2
    assert kwargs["kpts"] == [int(n) for n in df.loc[0, "kpoints"].split("x")]
    assert settings["static_updates"]["nsw"] == 0
    assert not (cu / "INCAR").exists()


def test_no_ok_rows_raises(tmp_path):
    rows = [("broken", None, "error"), ("qmof-0003ae4", 1, "error")]
    ranked = _write_ranked_csv(tmp_path, rows)
    with pytest.raises(ValueError, match="no rows with status 'ok'"):
        write_dft_inputs(ranked, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_arguments_raise(tmp_path):
    ranked = _write_ranked_csv(tmp_path)
    with pytest.raises(ValueError, match="unknown code 'cp2k'"):
        write_dft_inputs(ranked, tmp_path / "out", code="cp2k")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="top must be a positive integer"):
        write_dft_inputs(ranked, tmp_path / "out", top=0)
    pd.read_csv(ranked).drop(columns=["score"]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['score'\]"):
        write_dft_inputs(tmp_path / "bad.csv", tmp_path / "out")


def _fake_potcars(root: Path, symbols: list[str]) -> Path:
    sub = root / "POT_GGA_PAW_PBE_54"
    sub.mkdir(parents=True)
    for sym in symbols:
        (sub / f"POTCAR.{sym}").write_text(
            f"  PAW_PBE {sym} 01Jan2000\n 1.0\n parameters from PSCTR are:\n"
            f"   VRHFIN ={sym}: fake\n   TITEL  = PAW_PBE {sym} 01Jan2000\n"
            "   POMASS =    1.000; ZVAL   =    1.000    mass and valenz\n"
            "   ENMAX  =  400.000; ENMIN  =  300.000 eV\n   END of PSCTR-controll parameters\n"
            "  0.1 0.2 0.3 0.4\n End of Dataset\n"
        )
    return root


def test_potcar_written_when_configured(tmp_path):
    ranked = _write_ranked_csv(tmp_path, [("synthetic-zno", 1, "ok")])
    with pytest.raises(FileNotFoundError, match="POT_GGA_PAW_PBE_54"):
        write_dft_inputs(ranked, tmp_path / "out", potcar_dir=tmp_path)
    psp = _fake_potcars(tmp_path / "psp", ["Zn"])  # O missing
    with pytest.raises(FileNotFoundError):
        write_dft_inputs(ranked, tmp_path / "out", potcar_dir=psp)
    assert not (tmp_path / "out").exists()  # nothing half-written
    _fake_potcars(tmp_path / "psp2", ["Zn", "O"])
    manifest = write_dft_inputs(ranked, tmp_path / "out", potcar_dir=tmp_path / "psp2")
    potcar = (manifest.parent / "0001_synthetic-zno" / "POTCAR").read_text()
    assert [line.split()[3] for line in potcar.splitlines() if "TITEL" in line] == ["Zn", "O"]


def test_configured_pmg_psp_dir_is_used(tmp_path, monkeypatch):
    ranked = _write_ranked_csv(tmp_path, [("synthetic-zno", 1, "ok")])
    monkeypatch.setenv("PMG_VASP_PSP_DIR", str(tmp_path))  # no PBE.54 set there: spec only
    manifest = write_dft_inputs(ranked, tmp_path / "out1")
    assert not (manifest.parent / "0001_synthetic-zno" / "POTCAR").exists()
    monkeypatch.setenv("PMG_VASP_PSP_DIR", str(_fake_potcars(tmp_path / "psp", ["Zn", "O"])))
    manifest = write_dft_inputs(ranked, tmp_path / "out2")
    assert (manifest.parent / "0001_synthetic-zno" / "POTCAR").is_file()
    assert (
        "written by pymatgen" in (manifest.parent / "0001_synthetic-zno" / "README.txt").read_text()
    )


def test_cli_runs_and_respects_overwrite(tmp_path, capsys):
    ranked = _write_ranked_csv(tmp_path)
    out = tmp_path / "cli_out"
    argv = ["dft-inputs", str(ranked), "--top", "2", "--out", str(out)]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "0001_qmof-0000295",
        "0002_synthetic-zno",
    ]
    assert main(argv) == 2  # refuses to clobber
    assert "not empty" in capsys.readouterr().err
    assert main([*argv[:-3], "1", "--out", str(out), "--overwrite", "--code", "ase"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["0001_qmof-0000295"]
    assert (out / "0001_qmof-0000295" / "structure.extxyz").is_file()


def test_run_quacc_script(vasp_out, tmp_path):
    _, manifest = vasp_out
    work = tmp_path / "handoff"
    shutil.copytree(manifest.parent, work)
    script = work / "run_quacc.py"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # Without quacc: a clear message and exit status 2.
    res = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60
    )
    assert res.returncode == 2 and "quacc is needed" in res.stderr
    # With a stand-in quacc exposing qmof_relax_job: every folder is run and summarised.
    pkg = tmp_path / "fake" / "quacc" / "recipes" / "vasp"
    pkg.mkdir(parents=True)
    for init in (pkg.parent.parent, pkg.parent, pkg):
        (init / "__init__.py").write_text("")
    (pkg / "qmof.py").write_text(
        "def qmof_relax_job(atoms, relax_cell=True, run_prerelax=True):\n"
        "    return {'output': {'bandgap': 0.1 * len(atoms)}, "
        "'results': {'energy': -1.0}, 'dir_name': 'd'}\n"
    )
    env["PYTHONPATH"] = str(tmp_path / "fake")
    res = subprocess.run(
        [sys.executable, str(script), "--ranks", "1", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    out = pd.read_csv(work / "quacc_results.csv")
    assert out["rank"].tolist() == [1, 2]
    assert out["dft_bandgap_ev"].tolist() == pytest.approx([5.0, 0.2])  # 50 and 2 atoms


def test_qmof_incar_is_documented_constant():
    assert QMOF_INCAR["ENCUT"] == 520 and QMOF_INCAR["IVDW"] == 12 and QMOF_INCAR["GGA"] == "PE"
