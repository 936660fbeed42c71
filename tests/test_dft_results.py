"""DFT results ingestion (mofbalora.al.dft_results): only an empty cell is a failed calculation; any
other unreadable or unphysical gap is an error naming the row, and a bad file changes nothing."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mofbalora.al.campaign import Campaign
from mofbalora.al.dft_results import DFTResultsError, parse_gap_ev
from mofbalora.al.real import ingest
from mofbalora.cli import main


@pytest.mark.parametrize(
    "raw, expected", [("1.23", 1.23), (" 0 ", 0.0), ("2e-1", 0.2), (".5", 0.5), ("+3.", 3.0)]
)
def test_decimal_gaps_parse(raw, expected):
    assert parse_gap_ev(raw) == pytest.approx(expected)


def test_only_an_empty_cell_is_a_failed_calculation():
    assert math.isnan(parse_gap_ev("")) and math.isnan(parse_gap_ev("  "))


@pytest.mark.parametrize(
    "raw, why",
    [
        ("1,23", "not a number"),
        ("n/a", "not a number"),
        ("NA", "not a number"),
        ("1_000", "not a number"),
        ("-0.5", "negative"),
        ("inf", "not a finite number"),
        ("nan", "not a finite number"),
        ("1e999", "not a finite number"),
    ],
)
def test_unreadable_or_unphysical_gaps_are_refused(raw, why):
    with pytest.raises(ValueError, match=why):
        parse_gap_ev(raw)


@pytest.mark.parametrize("raw", ["1230", "10.5", "1e4"])
def test_implausible_gaps_are_refused_with_a_units_hint(raw):
    with pytest.raises(ValueError, match=r"above 10 eV.*meV"):
        parse_gap_ev(raw)
    assert parse_gap_ev("10") == 10.0 and parse_gap_ev("6.45") == pytest.approx(6.45)


def test_ingestion_and_add_labels_share_one_check():
    import mofbalora.al.campaign as campaign_module
    from mofbalora.al.dft_results import MAX_PLAUSIBLE_GAP_EV, check_gap_ev

    assert campaign_module.check_gap_ev is check_gap_ev and MAX_PLAUSIBLE_GAP_EV == 10.0
    assert math.isnan(check_gap_ev(math.nan))


@pytest.fixture(scope="module")
def campaign(tmp_path_factory, qmof_path, tiny_split, tiny_cfg):
    """A real campaign after ``al suggest``: a batch of 2 pending structures (ids and CIF paths)."""
    from mofbalora.al.config import AL_DEFAULTS
    from mofbalora.data.qmof import load_dataset
    from mofbalora.data.splits import load_split

    root = tmp_path_factory.mktemp("dft-results")
    cfg = tiny_cfg("data.val_size=4")
    cfg.update({k: json.loads(json.dumps(v)) for k, v in AL_DEFAULTS.items()})
    cfg["al"].update({"initial_labelled": 6, "batch_size": 2, "n_rounds": 2, "n_samples": 4})
    (root / "al.yaml").write_text(yaml.safe_dump(cfg))
    ds = load_dataset(qmof_path)
    candidates = [str(ds.cif_paths[ds.index_of(i)]) for i in load_split(tiny_split)["train"]]
    state = root / "campaign"
    assert (
        main(
            [
                "al",
                "suggest",
                "--state",
                str(state),
                "--candidates",
                *candidates,
                "--config",
                str(root / "al.yaml"),
                "--no-dft-inputs",
                "--quiet",
            ]
        )
        == 0
    )
    return state


def _snapshot(state: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(state)): p.read_bytes() for p in sorted(state.rglob("*")) if p.is_file()
    }


def _write(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([["structure_id", "path", "bandgap_ev"], *rows])
    return path


@pytest.mark.parametrize("bad", ["1,23", "n/a", "-0.5", "inf"])
def test_a_bad_gap_names_its_row_and_changes_nothing(campaign, tmp_path, bad):
    batch = pd.read_csv(campaign / "batch_001.csv")
    first, second = batch["structure_id"]
    results = _write(tmp_path / "results.csv", [[first, "", "1.5"], [second, "", bad]])
    before = _snapshot(campaign)
    with pytest.raises(DFTResultsError) as info:
        ingest(campaign, results)
    message = str(info.value)
    assert str(results) in message and f"line 3 ({second})" in message and repr(bad) in message
    assert "1 bad row(s), nothing ingested" in message and first not in message
    assert _snapshot(campaign) == before
    assert Campaign(campaign).pending and not set(batch["structure_id"]) & set(
        Campaign(campaign).labelled
    )


def test_an_unquoted_decimal_comma_is_refused_as_an_extra_field(campaign, tmp_path):
    batch = pd.read_csv(campaign / "batch_001.csv")
    results = tmp_path / "results.csv"
    results.write_text(f"structure_id,path,bandgap_ev\n{batch['structure_id'][0]},,1,23\n")
    before = _snapshot(campaign)
    assert main(["al", "ingest", "--state", str(campaign), str(results), "--quiet"]) == 2
    with pytest.raises(
        DFTResultsError, match=r"line 2 .*4 fields for 3 columns .*'23'.*decimal comma"
    ):
        ingest(campaign, results)
    assert _snapshot(campaign) == before


def test_every_bad_row_is_listed_at_once(campaign, tmp_path):
    batch = pd.read_csv(campaign / "batch_001.csv")
    first, second = batch["structure_id"]
    results = _write(
        tmp_path / "results.csv",
        [[first, "", "n/a"], [second, "", "-1"], ["nowhere", "", "1.0"], [first, "", "2.0"]],
    )
    with pytest.raises(DFTResultsError) as info:
        ingest(campaign, results)
    problems = info.value.problems
    assert len(problems) == 3
    assert problems[0].startswith(f"line 2 ({first})") and "'n/a' is not a number" in problems[0]
    assert problems[1].startswith(f"line 3 ({second})") and "negative" in problems[1]
    assert problems[2].startswith("line 4 (nowhere)") and "not in the campaign" in problems[2]


def test_an_empty_cell_is_a_failed_calculation_and_a_valid_file_ingests(campaign, tmp_path_factory):
    import shutil

    state = tmp_path_factory.mktemp("ingest") / "campaign"
    shutil.copytree(campaign, state)
    batch = pd.read_csv(state / "batch_001.csv")
    first, second = batch["structure_id"]
    results = _write(state.parent / "results.csv", [[first, "", "1.25"], [second, "", ""]])
    row = ingest(state, results)
    c = Campaign(state)
    assert c.labelled[first] == 1.25 and c.state.failed[second] == "dft_failed"
    assert second not in c.labelled and not {first, second} & set(c.pool)
    assert row["round"] == 1 and c.history[-1]["dft_failed"] == [second]


def test_add_labels_refuses_unphysical_gaps(campaign):
    c = Campaign(campaign)
    key = c.pending[0]["structure_id"]
    for gap, why in (
        (-0.5, "negative"),
        (math.inf, "not a finite"),
        (1230.0, "meV"),
        ("1,23", "could not convert"),
        (None, "float"),
    ):
        with pytest.raises(ValueError, match=f"{key!r}: band gap .* refused: .*{why}"):
            c.add_labels({key: gap})
    assert key in c.pool and key not in c.labelled


def test_a_gap_in_mev_in_a_results_file_is_refused_naming_its_row(campaign, tmp_path_factory):
    import shutil

    state = tmp_path_factory.mktemp("mev") / "campaign"
    shutil.copytree(campaign, state)
    batch = pd.read_csv(state / "batch_001.csv")
    first, second = batch["structure_id"]
    results = _write(state.parent / "results.csv", [[first, "", "1.25"], [second, "", "1230"]])
    with pytest.raises(
        DFTResultsError, match=rf"line 3 \({second}\): bandgap_ev 1230 eV is above 10 eV.*meV"
    ):
        ingest(state, results)
    assert first not in Campaign(state).labelled


# -- ids of new structures: the same file name in two folders --------------------------------------
def _same_name_in_two_folders(campaign: Path, root: Path) -> list[Path]:
    """Two different structures, both named MOF-5.cif (copies of the pending batch's CIFs)."""
    batch = pd.read_csv(campaign / "batch_001.csv")
    files = []
    for folder, source in zip(("a", "b"), batch["path"], strict=True):
        (root / folder).mkdir(parents=True)
        files.append(root / folder / "MOF-5.cif")
        files[-1].write_bytes(Path(source).read_bytes())
    return files


def _digest_id(cif: Path) -> str:
    import hashlib

    return f"MOF-5~{hashlib.sha256(cif.read_bytes()).hexdigest()[:8]}"


def test_same_named_cifs_of_one_results_file_get_distinct_stable_ids(campaign, tmp_path):
    import shutil

    from mofbalora.al.dft_results import read_dft_results

    a, b = _same_name_in_two_folders(campaign, tmp_path)
    state = tmp_path / "campaign"
    shutil.copytree(campaign, state)
    c = Campaign(state)
    results = _write(
        tmp_path / "results.csv", [["", "a/MOF-5.cif", "1.5"], ["", "b/MOF-5.cif", "2.5"]]
    )
    labels, paths = read_dft_results(results, c)
    assert labels == {_digest_id(a): 1.5, _digest_id(b): 2.5}
    assert {k: Path(p).resolve() for k, p in paths.items()} == {_digest_id(a): a, _digest_id(b): b}
    # the ids do not depend on the order of the rows
    reordered = _write(tmp_path / "reordered.csv", [["", str(b), "2.5"], ["", str(a), "1.5"]])
    assert read_dft_results(reordered, c) == (
        dict(reversed(labels.items())),
        {_digest_id(b): str(b), _digest_id(a): str(a)},
    )
    # the same file on two rows is still one structure given twice
    twice = _write(tmp_path / "twice.csv", [["", str(a), "1.5"], ["", "a/MOF-5.cif", "1.5"]])
    with pytest.raises(DFTResultsError, match=r"line 3 .*appears twice \(first on line 2\)"):
        read_dft_results(twice, c)
    # ingested, both join the campaign under those ids
    assert sorted(c.add_labels(labels, paths)) == sorted(labels)
    again = Campaign(state)
    assert {k: again.labelled[k] for k in labels} == labels
    assert {Path(again.state.paths[k]) for k in labels} == {a, b}


def test_same_named_candidates_get_the_same_ids_in_any_order(campaign, tmp_path):
    import shutil

    a, b = _same_name_in_two_folders(campaign, tmp_path)
    ids = []
    for name, order in (("ab", [a, b]), ("ba", [b, a])):
        shutil.copytree(campaign, tmp_path / name)
        c = Campaign(tmp_path / name)
        added = c.add_candidates(order)
        assert len(set(added)) == 2 and set(added) <= set(Campaign(tmp_path / name).pool)
        ids.append({Path(c.state.paths[k]): k for k in added})
    assert ids[0] == ids[1] == {a: _digest_id(a), b: _digest_id(b)}
    # a later file of that name that is not yet in the campaign gets a digest id as well
    c = Campaign(tmp_path / "ab")
    (tmp_path / "c").mkdir()
    # the same bytes as a: ~2 after the digest
    (tmp_path / "c" / "MOF-5.cif").write_bytes(a.read_bytes())
    assert c.add_candidates([tmp_path / "c" / "MOF-5.cif"]) == [f"{_digest_id(a)}~2"]


# -- a label call that is refused or interrupted leaves the state in memory as it was --------------
class _Killed(Exception):
    pass


def _broken_cif(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "broken.cif").write_bytes(b"\xff\xfe\x00garbage\x80\x81" * 50)
    return root / "broken.cif"


def test_a_label_call_that_consumes_nothing_leaves_the_state_as_it_was(campaign, tmp_path):
    import copy

    from mofbalora.al.state import CampaignState

    c = Campaign(campaign)
    before = copy.deepcopy(c.state)
    # it fails featurization
    assert c.add_labels({"ghost": 1.5}, {"ghost": _broken_cif(tmp_path)}) == []
    assert c.state == before == CampaignState.read(campaign)
    assert "ghost" not in c.state.paths and "ghost" not in c.state.failed


@pytest.mark.parametrize("where", ["hook", "write"])
def test_an_interrupted_label_call_leaves_the_state_in_memory_as_it_was(
    campaign, tmp_path, monkeypatch, where
):
    import copy

    from mofbalora.al.state import CampaignState

    a, _ = _same_name_in_two_folders(campaign, tmp_path / "new")
    c = Campaign(campaign)

    def kill(*args):
        raise _Killed(where)

    if where == "hook":  # a kill just before the commit
        c.hook = lambda point, _: kill() if point == "label" else None
    else:  # the commit itself fails
        monkeypatch.setattr(CampaignState, "write", kill)
    before, on_disk = copy.deepcopy(c.state), _snapshot(campaign)
    pending = c.pending[0]["structure_id"]
    with pytest.raises(_Killed):
        c.add_labels(
            {pending: 1.0, "new": 2.0, "ghost": 3.0}, {"new": a, "ghost": _broken_cif(tmp_path)}
        )
    assert c.state == before and _snapshot(campaign) == on_disk
    assert "new" not in c._inputs  # not committed: its id may name another file next time
    monkeypatch.undo()
    assert c.state == CampaignState.read(campaign)


def test_a_structure_that_no_longer_featurizes_stops_the_step_and_records_nothing(
    campaign, tmp_path
):
    import copy

    a, _ = _same_name_in_two_folders(campaign, tmp_path / "pool")
    c = Campaign(campaign)
    (key,) = c.add_candidates([a])
    before = copy.deepcopy(c.state)
    # the file changed on disk after it joined
    a.write_bytes(_broken_cif(tmp_path / "junk").read_bytes())
    c._inputs.pop(key, None)
    with pytest.raises(ValueError, match="no longer featurize"):
        c.inputs_of([key])
    assert c.state == before and key not in c.state.failed
