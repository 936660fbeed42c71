"""Screening: one row per input whatever it holds, clear reasons, atomic resumable output."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mofbalora.cli import main
from mofbalora.screen import screen


@pytest.fixture(scope="module")
def candidates(tmp_path_factory, qmof, sample_cifs):
    """Six real QMOF CIFs plus one of every kind of bad input."""
    d = tmp_path_factory.mktemp("cands")
    for p in sample_cifs[:6]:
        shutil.copy(p, d / p.name)
    good = sample_cifs[0].read_text()
    (d / "truncated.cif").write_text(good[: len(good) // 3])
    lines = good.splitlines()
    rng = np.random.default_rng(0)
    (d / "shuffled.cif").write_text("\n".join(lines[k] for k in rng.permutation(len(lines))))
    (d / "binary.cif").write_bytes(b"\xff\xfe\x00garbage\x80\x81" * 50)
    (d / "nan.cif").write_text(_replace_first_coordinate(good, "nan"))
    (d / "empty.cif").write_text("")
    (d / "dir.cif").mkdir()
    (d / "zero_volume.cif").write_text(_set_cell(good, a=0.0))
    from pymatgen.core import Structure
    from pymatgen.io.cif import CifWriter

    s = Structure.from_file(sample_cifs[0])
    s.make_supercell([6, 6, 6])
    CifWriter(s).write_file(d / "supercell.cif")
    return d


def _replace_first_coordinate(text: str, value: str) -> str:
    out, done = [], False
    for line in text.splitlines():
        parts = line.split()
        if (
            not done
            and len(parts) >= 7
            and parts[0].isalpha()
            and parts[3].replace(".", "").replace("-", "").isdigit()
        ):
            parts[3] = value
            line = "  ".join(parts)
            done = True
        out.append(line)
    return "\n".join(out) + "\n"


def _set_cell(text: str, a: float) -> str:
    return (
        "\n".join(
            f"_cell_length_a   {a}" if line.startswith("_cell_length_a") else line
            for line in text.splitlines()
        )
        + "\n"
    )


def test_every_input_gets_a_row_with_a_specific_reason(tiny_model, candidates, tmp_path):
    out = tmp_path / "ranked.csv"
    table = screen([str(candidates)], model=tiny_model, n_samples=4, out=out, progress=False)
    n_inputs = len(list(candidates.iterdir()))
    assert len(table) == n_inputs
    assert (table["status"] == "ok").sum() == 6
    by_name = {
        Path(p).name: r for p, r in zip(table["path"], table.to_dict("records"), strict=True)
    }
    assert by_name["empty.cif"]["error"] == "empty"
    assert by_name["dir.cif"]["error"] == "unreadable"
    assert by_name["binary.cif"]["error"] == "not_cif"
    assert by_name["truncated.cif"]["error"] == "not_cif"
    assert by_name["shuffled.cif"]["error"] == "not_cif"
    assert by_name["nan.cif"]["error"] == "degenerate_cell"
    assert by_name["zero_volume.cif"]["error"] == "degenerate_cell"
    assert by_name["supercell.cif"]["error"] == "too_many_atoms"
    ok = table[table["status"] == "ok"]
    assert sorted(ok["rank"].astype(int)) == list(range(1, 7))
    assert table.loc[table["status"] == "error", "rank"].isna().all()
    assert ok["bandgap_mean_ev"].between(0, 10).all() and (ok["bandgap_std_ev"] >= 0).all()
    # the model's validation-fitted recalibration gives every screened row a wider, calibrated std
    assert (ok["bandgap_std_calibrated_ev"] > ok["bandgap_std_ev"]).all()
    assert table.loc[table["status"] == "error", "bandgap_std_calibrated_ev"].isna().all()
    # the written file is the same table, and nothing partial is left behind
    assert len(pd.read_csv(out)) == n_inputs
    assert not list(tmp_path.glob("*.partial.jsonl"))
    # the markdown summary: every row counted, errors tallied by reason, the top rows listed
    from mofbalora.screen_report import screen_summary

    text = screen_summary(table, seconds=10.0, top=3)
    assert f"rows: **{n_inputs}**" in text and "ranked: 6" in text and "**1.40 files/s**" in text
    assert "| `not_cif` | 3 |" in text and "| `degenerate_cell` | 2 |" in text
    assert (
        text.count("\n| 1 | ") == 3
        and "## Top 3 by `std`" in text
        and "## How the top 3 changed" in text
    )
    assert "## By the BaLoRA spread alone" in text
    # the earlier raw-std order of the table's own rows: its first row is the largest raw std
    first = table[table["status"] == "ok"].sort_values("bandgap_std_ev").iloc[-1]
    assert f"| 1 | {first['structure_id']} |" in text.split("## How the top 3 changed")[1]
    # a resumed screen's throughput is the last sitting's rows over that sitting's time
    resumed = screen_summary(table, seconds=10.0, computed=5, sittings=3)
    assert (
        "**0.50 files/s**" in resumed
        and "the last of 3 sittings" in resumed
        and "5 of the 14 rows" in resumed
    )


def test_output_formats_and_cli_exit_codes(tiny_model, candidates, tmp_path, capsys):
    bad_only = tmp_path / "bad"
    bad_only.mkdir()
    (bad_only / "empty.cif").write_text("")
    assert (
        main(
            [
                "screen",
                str(bad_only),
                "--model",
                str(tiny_model),
                "--out",
                str(tmp_path / "x.csv"),
                "--quiet",
            ]
        )
        == 1
    )
    assert "no structure could be screened" in capsys.readouterr().err
    rc = main(
        [
            "screen",
            str(candidates / "*.cif"),
            "--model",
            str(tiny_model),
            "--samples",
            "4",
            "--acquisition",
            "ucb",
            "--out",
            str(tmp_path / "r.json"),
            "--quiet",
            "--plot",
            str(tmp_path / "s.png"),
        ]
    )
    assert rc == 0
    assert len(pd.read_json(tmp_path / "r.json")) == len(list(candidates.iterdir()))
    assert (tmp_path / "s.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "failures by reason" in printed and "rank" in printed
    main(
        [
            "screen",
            str(candidates),
            "--model",
            str(tiny_model),
            "--samples",
            "4",
            "--out",
            str(tmp_path / "r.parquet"),
            "--quiet",
        ]
    )
    assert len(pd.read_parquet(tmp_path / "r.parquet")) == len(list(candidates.iterdir()))
    with pytest.raises(ValueError, match="choose from"):
        screen([str(candidates)], model=tiny_model, acquisition="best", out=tmp_path / "y.csv")


def test_acquisitions_rank_consistently(tiny_model, candidates, tmp_path):
    t_mean = screen(
        [str(candidates)],
        model=tiny_model,
        n_samples=8,
        acquisition="mean",
        goal="min",
        out=tmp_path / "m.csv",
        progress=False,
        domain="ignore",
    )
    # the acquisitions rank by the median and the capped robust spread of the draws
    # (mofbalora.physical); domain="ignore" ranks out-of-domain rows among the others
    ok = t_mean[t_mean["status"] == "ok"].sort_values("rank")
    assert np.all(np.diff(ok["bandgap_median_ev"].to_numpy()) >= 0)  # smallest predicted gap first
    t_std = screen(
        [str(candidates)],
        model=tiny_model,
        n_samples=8,
        acquisition="std",
        out=tmp_path / "s.csv",
        progress=False,
        domain="ignore",
    )
    ok = t_std[t_std["status"] == "ok"].sort_values("rank")
    assert np.all(np.diff(ok["bandgap_spread_ev"].to_numpy()) <= 0)
    t_target = screen(
        [str(candidates)],
        model=tiny_model,
        n_samples=8,
        acquisition="target",
        target_ev=(0.5, 1.5),
        out=tmp_path / "t.csv",
        progress=False,
    )
    assert t_target.loc[t_target["status"] == "ok", "score"].between(0, 1).all()


def test_killed_screen_resumes_to_the_same_table(tiny_model, qmof, tmp_path):
    """Kill a screen of 24 QMOF CIFs mid-run (SIGKILL), rerun it, and compare with an
    uninterrupted run."""
    cands = tmp_path / "c"
    cands.mkdir()
    for sid in qmof.ids[:24]:
        shutil.copy(qmof.cif_paths[qmof.index_of(sid)], cands / f"{sid}.cif")
    ref = screen(
        [str(cands)],
        model=tiny_model,
        n_samples=4,
        out=tmp_path / "ref.csv",
        progress=False,
        chunk_size=2,
    )
    out = tmp_path / "killed.csv"
    code = (
        "import sys; from mofbalora.screen import screen; "
        f"screen([{str(cands)!r}], model={str(tiny_model)!r}, n_samples=4, out={str(out)!r}, "
        "progress=False, chunk_size=2, checkpoint_seconds=0)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    partial = out.with_name(out.name + ".partial.jsonl")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.exists() and len(partial.read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the screen finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(partial.read_text().splitlines())
    assert 4 <= n_before < 24
    if out.exists():  # whatever was written is a complete, readable table
        assert len(pd.read_csv(out)) <= 24
    # rows of another screen (here: 8 passes instead of 4) are not mixed in: refused, naming the
    # setting
    with pytest.raises(ValueError, match=r"n_samples: 4 then, 8 now.*--no-resume"):
        screen([str(cands)], model=tiny_model, n_samples=8, out=out, progress=False, chunk_size=2)
    assert len(partial.read_text().splitlines()) == n_before  # and nothing was lost
    resumed = screen(
        [str(cands)], model=tiny_model, n_samples=4, out=out, progress=False, chunk_size=2
    )
    assert resumed.attrs["computed_files"] == 24 - n_before and ref.attrs["computed_files"] == 24
    pd.testing.assert_frame_equal(resumed.reset_index(drop=True), ref.reset_index(drop=True))
    assert not list(tmp_path.glob("*.partial*"))


def test_model_fingerprint_names_the_weights_and_the_calibration(tiny_model):
    import torch

    from mofbalora.model import load_model
    from mofbalora.screen import model_fingerprint

    a, b = load_model(tiny_model), load_model(tiny_model)
    assert model_fingerprint(a) == model_fingerprint(b)
    with torch.no_grad():
        next(p for p in b.head.parameters()).view(-1)[0] += 1e-3
    assert model_fingerprint(a) != model_fingerprint(b)
    a.calibration = {"method": "scale_floor", "std_factor": 2.0, "std_floor_ev": 0.1}
    assert model_fingerprint(a) != model_fingerprint(load_model(tiny_model))


def test_terminal_summary_shows_the_calibrated_std_when_the_model_has_one():
    from mofbalora.screen import summarize

    row = {
        "rank": 1,
        "structure_id": "a",
        "formula": "ZnO",
        "n_atoms": 2,
        "bandgap_mean_ev": 1.0,
        "bandgap_std_ev": 0.1,
        "bandgap_std_calibrated_ev": 0.55,
        "score": 0.1,
        "status": "ok",
        "error": "",
    }
    bad = {
        **row,
        "rank": None,
        "status": "error",
        "error": "empty",
        "bandgap_std_calibrated_ev": None,
    }
    text = summarize(pd.DataFrame([row, bad]))
    assert "calibrated ±" in text and "0.55" in text and "empty: 1" in text
    assert "calibrated ±" not in summarize(
        pd.DataFrame([{**row, "bandgap_std_calibrated_ev": None}])
    )


def test_trunk_pre_pass_in_worker_processes_gives_the_same_table(
    tiny_model, candidates, tmp_path, monkeypatch
):
    """screen(workers=2) runs CHGNet's frozen trunk over the candidates in two spawned processes
    first; the rows (errors included) are those of the one-process screen, and the pre-pass caches
    exactly the structures the screen accepts (not the one over the atom limit)."""
    from mofbalora.data.arrays import ArrayStore
    from mofbalora.data.cache import file_digest
    from mofbalora.data.structures import DEFAULT_MAX_ATOMS
    from mofbalora.model import load_model

    one = screen(
        [str(candidates)],
        model=tiny_model,
        n_samples=4,
        out=tmp_path / "one.csv",
        progress=False,
        checks="off",
    )
    monkeypatch.setenv("MOFBALORA_CACHE", str(tmp_path / "fresh-cache"))
    model = load_model(tiny_model)
    files = sorted(p for p in candidates.iterdir() if p.is_file())
    assert model.backbone.prefill_cache(
        files, workers=2, max_atoms=DEFAULT_MAX_ATOMS, progress=False
    )
    store = ArrayStore(model.backbone.array_namespace())
    cached = {p.name for p in files if store.has(file_digest(p))}
    assert cached == {
        p.name
        for p in files
        if p.name in set(one.loc[one["status"] == "ok", "path"].map(lambda s: Path(s).name))
    }
    monkeypatch.setenv("MOFBALORA_CACHE", str(tmp_path / "fresh-cache-2"))
    two = screen(
        [str(candidates)],
        model=tiny_model,
        n_samples=4,
        out=tmp_path / "two.csv",
        progress=False,
        checks="off",
        workers=2,
    )
    a, b = one.set_index("path").sort_index(), two.set_index("path").sort_index()
    assert (
        a["status"].tolist() == b["status"].tolist()
        and a["error"].fillna("").tolist() == b["error"].fillna("").tolist()
    )
    np.testing.assert_allclose(a["bandgap_mean_ev"], b["bandgap_mean_ev"], atol=1e-6)
    np.testing.assert_allclose(a["bandgap_std_ev"], b["bandgap_std_ev"], atol=1e-6)


def test_inputs_sharing_a_file_name_get_distinct_stable_ids(tmp_path):
    from mofbalora.screen import _key, structure_ids

    for folder, text in [
        ("ASR", "data_a\n"),
        ("FSR", "data_b\n"),
        ("copy", "data_b\n"),
        ("x", "data_c\n"),
    ]:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / ("MOF-5.cif" if folder != "x" else "ZIF-8.cif")).write_text(text)
    paths = [
        tmp_path / "ASR" / "MOF-5.cif",
        tmp_path / "FSR" / "MOF-5.cif",
        tmp_path / "copy" / "MOF-5.cif",
        tmp_path / "x" / "ZIF-8.cif",
        tmp_path / "missing" / "MOF-5.cif",
    ]
    keys = [_key(p) for p in paths]
    ids = structure_ids(paths, keys)
    assert len(set(ids)) == len(ids) == 5
    assert ids[3] == "ZIF-8"  # a unique stem stays as it is
    assert (
        ids[0] == f"MOF-5~{keys[0][:8]}"
        and ids[1] == f"MOF-5~{keys[1][:8]}"
        and ids[2] == ids[1] + "~2"
    )
    assert ids[4].startswith("MOF-5~")
    assert structure_ids(paths, keys) == ids  # stable
    assert structure_ids(paths[:1] + paths[3:4], keys[:1] + keys[3:4]) == ["MOF-5", "ZIF-8"]


def test_summary_counts_csd_redeterminations_as_one_compound():
    from mofbalora.screen_report import _refcode_families

    head = pd.DataFrame(
        {
            "structure_id": [
                "DUNXUH_clean",
                "DUNXUH01_clean",
                "DUNXUH12_clean",
                "IFENOY02_SL",
                "ABEFUL_clean",
            ]
        }
    )
    assert _refcode_families(head) == [
        "3 distinct CSD refcodes (redeterminations share the first six letters); "
        "repeated: DUNXUH ×3.",
        "",
    ]
    assert _refcode_families(pd.DataFrame({"structure_id": ["qmof-866f4f7", "qmof-5e652e3"]})) == []


def test_summary_shows_what_the_balora_spread_alone_would_rank_first():
    from mofbalora.screen_report import epistemic_view

    ok = pd.DataFrame(
        {
            "structure_id": ["noisy", "novel", "plain", "far"],
            "formula": ["ZnO"] * 4,
            "n_atoms": [10] * 4,
            "bandgap_median_ev": [1.0] * 4,
            "rank": [1, 2, 3, 4],
            "epistemic_std_ev": [0.01, 0.09, 0.02, 0.5],
            "aleatoric_std_ev": [2.5, 0.3, 0.2, 0.1],
            "in_domain": pd.array([True, True, True, False], dtype="boolean"),
            "failed_checks": [""] * 4,
            "unseen_elements": [""] * 4,
            "physical_flag": [""] * 4,
        }
    )
    lines = epistemic_view(ok, ok.head(1))
    rows = [
        line
        for line in lines
        if line.startswith("| 1 ") or line.startswith("| 2 ") or line.startswith("| 4 ")
    ]
    assert rows[0].startswith("| 1 | novel |") and rows[1].startswith("| 2 | plain |")
    assert not any("| far |" in line for line in lines)  # out of domain: not a teaching candidate
    assert "0 of its top 1 are in the `std` top 1" in "\n".join(lines)
    assert epistemic_view(ok.drop(columns="epistemic_std_ev"), ok.head(1)) == []


def test_cli_screen_of_a_folder_with_every_bad_input(tiny_model, candidates, tmp_path, capsys):
    """The CLI on a folder holding one of each bad input (and a path that does not exist): one row
    each, the reason of each, the ranked rows first, in rank order, with integer counts."""
    out = tmp_path / "ranked.csv"
    gone = tmp_path / "gone.cif"
    rc = main(
        [
            "screen",
            str(candidates),
            str(gone),
            "--model",
            str(tiny_model),
            "--samples",
            "4",
            "--acquisition",
            "epistemic",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    table = pd.read_csv(out, keep_default_na=False)
    reasons = {Path(p).name: e for p, e in zip(table["path"], table["error"], strict=True)}
    assert reasons == {
        **{p.name: "" for p in candidates.iterdir() if p.name.startswith("qmof-")},
        "truncated.cif": "not_cif",
        "shuffled.cif": "not_cif",
        "binary.cif": "not_cif",
        "nan.cif": "degenerate_cell",
        "empty.cif": "empty",
        "dir.cif": "unreadable",
        "zero_volume.cif": "degenerate_cell",
        "supercell.cif": "too_many_atoms",
        "gone.cif": "unreadable",
    }
    ranks = [r for r in table["rank"] if r != ""]
    # rank order, integers
    assert ranks == [str(k) for k in range(1, 7)] or ranks == list(range(1, 7))
    assert all("." not in str(n) for n in table["n_atoms"])
    printed = capsys.readouterr().out
    assert "ranked by: epistemic" in printed and "± epistemic_std (eV)" in printed
    assert "unreadable: 2" in printed and "not_cif: 3" in printed
    # the same missing path is `unreadable` in `candidates list` too: one vocabulary
    assert main(["candidates", "list", str(gone)]) == 0
    assert f"{gone}\tunreadable" in capsys.readouterr().out
