"""A campaign's committed state: ``campaign.json`` (versioned) and ``config.yaml`` in the state folder.

:class:`CampaignState` is the whole record a campaign resumes from; it stays a plain JSON mapping (the
campaign reads ``state["pool"]``), with its fields, its version and its checks in one place. Reading a
file of another version, or one that lacks a field, raises ``ValueError`` naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from mofbalora.config import dump_config
from mofbalora.io import atomic_write_json

STATE_FILE = "campaign.json"
CONFIG_FILE = "config.yaml"
STATE_VERSION = 1


class CampaignState(dict):
    """The committed state of a campaign (a JSON object, version :data:`STATE_VERSION`).

    Fields: ``name``, ``mode`` (simulated | real), ``seed``, ``round``, ``phase`` (train | select | label),
    ``labelled`` (id -> PBE gap, eV), ``initial`` (the initial labelled ids), ``acquired`` (ids bought, in
    order), ``pool``, ``pending`` (the selected batch's rows), ``round_picked`` / ``round_failed`` (this
    round's labels), ``select_seconds``, ``val_ids``, ``test_ids``, ``paths`` (id -> CIF of structures outside
    the dataset), ``failed`` (id -> reason), ``rng_state`` (numpy ``bit_generator.state``), ``cost_ref_atoms``
    (atoms of a relative DFT cost of 1), ``pool_stats`` (simulated: the pool's low-gap base rate), ``history``
    (one row per trained round).
    """

    FIELDS = ("version", "name", "mode", "seed", "round", "phase", "labelled", "initial", "acquired", "pool",
              "pending", "round_picked", "round_failed", "select_seconds", "val_ids", "test_ids", "paths",
              "failed", "rng_state", "cost_ref_atoms", "pool_stats", "history")

    @classmethod
    def new(cls, *, name: str, mode: str, seed: int, rng_state: dict, paths: dict[str, str]) -> CampaignState:
        """Round 0, about to train, nothing labelled yet."""
        return cls(version=STATE_VERSION, name=name, mode=mode, seed=int(seed), round=0, phase="train",
                   labelled={}, initial=[], acquired=[], pool=[], pending=[], round_picked=[], round_failed=[],
                   select_seconds=0.0, val_ids=[], test_ids=[], paths=dict(paths), failed={}, rng_state=rng_state,
                   cost_ref_atoms=None, pool_stats=None, history=[])

    @classmethod
    def read(cls, state_dir: str | Path) -> CampaignState:
        """The state in ``state_dir``; ValueError for another version or a missing field."""
        path = Path(state_dir) / STATE_FILE
        state = cls(json.loads(path.read_text()))
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{path}: state version {state.get('version')!r}, this mofbalora reads {STATE_VERSION}")
        missing = [k for k in cls.FIELDS if k not in state]
        if missing:
            raise ValueError(f"{path}: campaign state lacks {missing}")
        return state

    def write(self, state_dir: str | Path) -> None:
        """Commit (atomic: a reader sees the old or the new file, never a mix)."""
        state_dir = Path(state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(state_dir / STATE_FILE, self, indent=1)


def has_campaign(state_dir: str | Path) -> bool:
    return (Path(state_dir) / STATE_FILE).is_file()


def read_campaign_config(state_dir: str | Path) -> dict[str, Any]:
    return yaml.safe_load((Path(state_dir) / CONFIG_FILE).read_text())


def write_campaign_config(state_dir: str | Path, cfg: dict) -> None:
    dump_config(cfg, Path(state_dir) / CONFIG_FILE)
