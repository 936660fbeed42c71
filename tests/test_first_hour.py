"""A user's first hour (issue 30): arguments checked before any work in the CLI's words, small runs,
quiet progress, the DFT hand-off's wording and INCAR, the notebook from any folder."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from mofbalora.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")) if folder.exists() else []


def _refused(argv: list[str], capsys, folder: Path) -> str:
    """Run the CLI expecting a refusal (exit 2, argparse's or ours); return stderr, checking
    nothing was written."""
    before = _files(folder)
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse
        rc = exc.code
    assert rc == 2
    assert _files(folder) == before, "a refused command wrote files"
    return capsys.readouterr().err


# -- 3. arguments checked before any work ----------------------------------------------------------
@pytest.mark.parametrize("samples", ["0", "-3"])
def test_evaluate_refuses_too_few_samples_before_loading(samples, tmp_path, capsys):
    err = _refused(
        ["evaluate", "--samples", samples, "--out", str(tmp_path / "r.json")], capsys, tmp_path
    )
    assert f"--samples: expected a positive integer, got {samples}" in err


def test_evaluate_warns_that_one_sample_gives_no_spread(tmp_path, capsys, caplog):
    # refused for its --out; the warning about T = 1 comes first, before anything loads
    err = _refused(
        ["evaluate", "--samples", "1", "--out", str(tmp_path / "r.csv")], capsys, tmp_path
    )
    assert "give a .json file" in err
    assert "--samples 1: one pass gives a stochastic model" in caplog.text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "no/such/run"], "--model no/such/run: no model found at 'no/such/run'"),
        (["--limit", "0"], "--limit/--test-size: expected a positive integer, got 0"),
        (["--out", "{tmp}/r.csv"], "give a .json file"),
    ],
)
def test_evaluate_checks_its_paths_and_limits_first(argv, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert message in _refused(["evaluate", *argv], capsys, tmp_path)


def test_dft_inputs_refusals_use_the_cli_words(tmp_path, capsys):
    out = tmp_path / "dft"
    err = _refused(["dft-inputs", str(tmp_path / "none.csv"), "--out", str(out)], capsys, tmp_path)
    assert "none.csv: no such file" in err
    err = _refused(
        ["dft-inputs", str(tmp_path / "none.csv"), "--top", "-1", "--out", str(out)],
        capsys,
        tmp_path,
    )
    assert "--top: expected a positive integer, got -1" in err
    ranked = tmp_path / "ranked.csv"
    ranked.write_text(
        "path,structure_id,formula,n_atoms,bandgap_mean_ev,bandgap_std_ev,score,rank,status\n"
    )
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    err = _refused(["dft-inputs", str(ranked), "--out", str(out)], capsys, tmp_path)
    assert "give --overwrite" in err or "no rows with status 'ok'" in err
    assert "overwrite=True" not in err


def test_dft_library_says_overwrite_true_and_the_cli_says_overwrite(tmp_path, capsys, sample_cifs):
    from mofbalora.dft import write_dft_inputs

    ranked = tmp_path / "ranked.csv"
    ranked.write_text(
        "path,structure_id,formula,n_atoms,bandgap_mean_ev,bandgap_std_ev,score,rank,status\n"
        f"{sample_cifs[0]},a,X,1,1.0,0.1,0.1,1,ok\n"
    )
    out = tmp_path / "dft"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="pass overwrite=True") as info:
        write_dft_inputs(ranked, out)
    assert "--overwrite" not in str(info.value)
    err = _refused(["dft-inputs", str(ranked), "--out", str(out)], capsys, tmp_path)
    assert "give --overwrite to replace" in err and "overwrite=True" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], "--epochs: expected a positive integer, got 0"),
        (["--limit", "-1"], "--limit: expected a positive integer, got -1"),
        (["--test-size", "-2"], "--test-size: expected an integer >= 0, got -2"),
        (["--threads", "0"], "--threads: expected a positive integer, got 0"),
    ],
)
def test_finetune_refuses_bad_numbers_before_any_work(argv, message, tmp_path, capsys):
    assert message in _refused(
        ["finetune", "--out", str(tmp_path / "run"), *argv], capsys, tmp_path
    )


def test_al_refuses_missing_inputs_before_loading(tmp_path, capsys):
    err = _refused(
        ["al", "ingest", "--state", str(tmp_path / "camp"), str(tmp_path / "res.csv")],
        capsys,
        tmp_path,
    )
    assert "res.csv: no such file" in err
    err = _refused(["al", "run", "--rounds", "0"], capsys, tmp_path)
    assert "--rounds: expected a positive integer, got 0" in err
    err = _refused(
        ["al", "suggest", "--state", str(tmp_path / "c"), "--potcar-dir", str(tmp_path / "p")],
        capsys,
        tmp_path,
    )
    assert "--potcar-dir" in err and "no such folder" in err


# -- 4. small runs ---------------------------------------------------------------------------------
def test_data_info_samples_by_default_and_says_so(qmof_path, capsys):
    assert main(["data", "info", str(qmof_path), "--sample", "3", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "random sample of 3 parsed structures" in out and "--all parses every structure" in out
    with pytest.raises(ValueError, match="--all or --limit"):
        from mofbalora.commands.data import _info

        _info(argparse.Namespace(all=True, limit=3))
    from mofbalora.data.info import DEFAULT_SAMPLE, dataset_info

    assert DEFAULT_SAMPLE < 18_000  # not the whole of QMOF
    info = dataset_info(qmof_path, sample=4, seed=1, progress=False)
    assert info["n_parsed"] == 4 and info["parsed"] == "sample"


def test_small_run_flags_are_named_in_help_and_readme(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    finetune_help, evaluate_help = (
        sub.choices["finetune"].format_help(),
        sub.choices["evaluate"].format_help(),
    )
    for flag in ("--limit", "--test-size", "--train-size", "--val-size"):
        assert flag in finetune_help
    assert "--limit" in evaluate_help and "--test-size" in evaluate_help
    readme = (ROOT / "README.md").read_text()
    assert "--limit" in readme and "--test-size" in readme


def test_finetune_limit_and_test_size_become_the_data_sizes():
    from mofbalora.commands.finetune import resolve

    args = build_parser().parse_args(
        ["finetune", "--out", "x", "--limit", "20", "--test-size", "0"]
    )
    cfg = resolve(args)
    assert (cfg.data.train_size, cfg.data.val_size) == (20, 20) and cfg.run.eval_test is False
    args = build_parser().parse_args(
        ["finetune", "--out", "x", "--limit", "20", "--test-size", "5"]
    )
    assert resolve(args).data.test_size == 5 and resolve(args).data.train_size == 20


# -- 5. progress -----------------------------------------------------------------------------------
def _leaves(parser: argparse.ArgumentParser, name: str = "mofbalora"):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield name, parser
    for action in subs:
        for child_name, child in action.choices.items():
            yield from _leaves(child, f"{name} {child_name}")


def test_every_command_has_quiet():
    leaves = list(_leaves(build_parser()))
    assert len(leaves) > 10
    assert [n for n, p in leaves if "--quiet" not in p._option_string_actions] == []


def test_no_progress_bars_when_stderr_is_not_a_terminal(capsys, monkeypatch):
    from tqdm.auto import tqdm

    seen = {}

    def run(args):
        bar = tqdm(total=3, desc="stage", disable=False)  # a library that asks for a bar
        seen["disabled"] = bar.disable
        bar.close()
        return 0

    monkeypatch.setattr("mofbalora.commands.candidates._list", run)
    parser = build_parser
    monkeypatch.setattr("mofbalora.cli.build_parser", lambda: _with_func(parser(), run))
    assert main(["candidates", "list", "x"]) == 0  # pytest's stderr is not a terminal
    assert seen["disabled"] is True
    assert "stage" not in capsys.readouterr().err


def _with_func(parser: argparse.ArgumentParser, func):
    for name, leaf in _leaves(parser):
        if name == "mofbalora candidates list":
            leaf.set_defaults(func=func)
    return parser


# -- 6. smaller items ------------------------------------------------------------------------------
def test_incar_says_gga_pe_as_the_docs_do(tmp_path, sample_cifs):
    from mofbalora.dft import write_dft_inputs

    ranked = tmp_path / "ranked.csv"
    ranked.write_text(
        "path,structure_id,formula,n_atoms,bandgap_mean_ev,bandgap_std_ev,score,rank,status,checks,"
        "in_domain,bandgap_std_calibrated_ev\n"
        f"{sample_cifs[0]},a,X,50,1.0,0.1,0.1,1,ok,ok,True,0.3\n"
    )
    manifest = write_dft_inputs(ranked, tmp_path / "dft")
    incar = (manifest.parent / "0001_a" / "INCAR").read_text()
    assert "GGA = PE\n" in incar and "Pe" not in incar
    assert "GGA = PE" in (manifest.parent / "0001_a" / "INCAR.static").read_text()
    assert "`GGA = PE`" in (ROOT / "docs" / "dft_handoff.md").read_text()
    import pandas as pd

    from mofbalora.scoring import MANIFEST_PREDICTION_COLUMNS

    table = pd.read_csv(manifest, keep_default_na=False)
    # the columns that explain the choice
    assert set(MANIFEST_PREDICTION_COLUMNS) <= set(table.columns)
    row = table.iloc[0]
    assert (
        row["checks"] == "ok"
        and str(row["in_domain"]) == "True"
        and float(row["bandgap_std_calibrated_ev"]) == 0.3
    )
    assert row["failed_checks"] == ""  # absent from this ranked CSV: empty, not an error


def test_dft_inputs_prints_the_count_once(tmp_path, sample_cifs, capsys):
    ranked = tmp_path / "ranked.csv"
    ranked.write_text(
        "path,structure_id,formula,n_atoms,bandgap_mean_ev,bandgap_std_ev,score,rank,status\n"
        f"{sample_cifs[0]},a,X,50,1.0,0.1,0.1,1,ok\n"
    )
    assert main(["dft-inputs", str(ranked), "--out", str(tmp_path / "dft")]) == 0
    captured = capsys.readouterr()
    assert (captured.out + captured.err).count("input folder(s)") == 1


def test_uncertainty_notebook_finds_its_recipe_from_any_folder(tmp_path, monkeypatch):
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / "uncertainty_comparison.ipynb", as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOFBALORA_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("MOFBALORA_NOTEBOOK_OUT", str(tmp_path / "out"))
    namespace: dict = {}
    exec(compile(first.source, "notebook cell 1", "exec"), namespace)
    assert (
        namespace["RECIPE"].is_file()
        and namespace["RECIPE"] == ROOT / "workflows" / "finetune_chgnet.yaml"
    )
    assert Path(namespace["OVERRIDES"][0].split("=", 1)[1]).is_file()
    assert os.getcwd() == str(tmp_path)
    assert json.loads(Path(namespace["OVERRIDES"][0].split("=", 1)[1]).read_text())
