"""The campaign's versioned state object (mofbalora.al.state.CampaignState): typed fields, the JSON
format of ``campaign.json`` unchanged, other versions and missing or unknown fields refused by
name."""

from __future__ import annotations

import json

import pytest

from mofbalora.al.state import STATE_FILE, STATE_VERSION, CampaignState

#: a campaign.json as the dict-based state (before the dataclass) wrote it: fields in this order,
#: indent=1
FIELDS = (
    "version",
    "name",
    "mode",
    "seed",
    "round",
    "phase",
    "labelled",
    "initial",
    "acquired",
    "pool",
    "pending",
    "round_picked",
    "round_failed",
    "select_seconds",
    "val_ids",
    "test_ids",
    "paths",
    "failed",
    "rng_state",
    "cost_ref_atoms",
    "pool_stats",
    "history",
)


def _written_before() -> dict:
    values = {
        "version": 1,
        "name": "ucb",
        "mode": "real",
        "seed": 7,
        "round": 2,
        "phase": "label",
        "labelled": {"qmof-1": 1.25, "MOF-5": 0.0},
        "initial": ["qmof-1"],
        "acquired": ["MOF-5", "bad"],
        "pool": ["qmof-2", "MOF-5~2"],
        "pending": [{"structure_id": "qmof-2", "rank": 1, "score": -0.5}],
        "round_picked": ["MOF-5"],
        "round_failed": ["bad"],
        "select_seconds": 1.5,
        "val_ids": ["v1"],
        "test_ids": [],
        "paths": {"MOF-5": "/x/a/MOF-5.cif", "MOF-5~2": "/x/b/MOF-5.cif"},
        "failed": {"bad": "dft_failed"},
        "rng_state": {
            "bit_generator": "PCG64",
            "state": {"state": 2**100 + 3, "inc": 5},
            "has_uint32": 0,
            "uinteger": 0,
        },
        "cost_ref_atoms": 52.0,
        "pool_stats": None,
        "history": [{"round": 0, "n_labelled": 1, "test_mae_ev": None, "picked": []}],
    }
    return {k: values[k] for k in FIELDS}


def test_state_is_typed_and_its_json_round_trips_byte_for_byte(tmp_path):
    data = _written_before()
    text = json.dumps(data, indent=1)
    state = CampaignState.from_json(text)
    assert state.version == STATE_VERSION and state.round == 2 and state.phase == "label"
    assert state.pool == ["qmof-2", "MOF-5~2"] and state.labelled["qmof-1"] == 1.25
    assert state.rng_state["state"]["state"] == 2**100 + 3
    assert state.to_json() == text and json.loads(state.to_json()) == data
    assert CampaignState.from_dict(state.to_dict()) == state

    (tmp_path / STATE_FILE).write_text(text)
    read = CampaignState.read(tmp_path)
    assert read == state
    read.write(tmp_path / "again")
    assert (tmp_path / "again" / STATE_FILE).read_text() == text
    # no temporary file left
    assert not [p for p in (tmp_path / "again").iterdir() if p.name != STATE_FILE]


def test_a_new_state_round_trips(tmp_path):
    state = CampaignState.new(
        name="x", mode="simulated", seed=0, rng_state={}, paths={"a": "/a.cif"}
    )
    assert list(state.to_dict()) == list(FIELDS)
    state.write(tmp_path)
    assert CampaignState.read(tmp_path) == state


@pytest.mark.parametrize("version", [2, 0, None, "1", True])
def test_a_state_of_another_version_is_refused(tmp_path, version):
    (tmp_path / STATE_FILE).write_text(json.dumps({**_written_before(), "version": version}))
    with pytest.raises(
        ValueError, match=rf"{STATE_FILE}: state version {version!r}, this mofbalora reads 1"
    ):
        CampaignState.read(tmp_path)


def test_a_state_without_its_version_is_refused():
    data = _written_before()
    del data["version"]
    with pytest.raises(ValueError, match="state version None, this mofbalora reads 1"):
        CampaignState.from_dict(data)


@pytest.mark.parametrize("missing", ["pool", "rng_state", "history"])
def test_a_state_missing_a_field_is_refused_naming_it(tmp_path, missing):
    (tmp_path / STATE_FILE).write_text(
        json.dumps({k: v for k, v in _written_before().items() if k != missing})
    )
    with pytest.raises(ValueError, match=rf"{STATE_FILE}: campaign state lacks \['{missing}'\]"):
        CampaignState.read(tmp_path)


def test_a_state_with_an_unknown_field_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"campaign state has unknown field\(s\) \['budget'\]"):
        CampaignState.from_json(json.dumps({**_written_before(), "budget": 3}))


@pytest.mark.parametrize("name, value", [("mode", "simulation"), ("phase", "labelling")])
def test_a_state_with_an_unknown_mode_or_phase_is_refused_naming_the_field(name, value):
    with pytest.raises(ValueError, match=rf"field '{name}' is '{value}'"):
        CampaignState.from_dict({**_written_before(), name: value})


def test_a_state_that_is_not_an_object_is_refused():
    with pytest.raises(ValueError, match="a campaign state is a JSON object, got list"):
        CampaignState.from_json("[]")
