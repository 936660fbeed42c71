"""A campaign's committed state: ``campaign.json`` (versioned) and ``config.yaml`` in the state
folder.

:class:`CampaignState` is the whole record a campaign resumes from: a dataclass with one typed
attribute per field (the campaign reads ``state.pool``), its version and its checks in one place. On
disk it is one JSON object with the fields in declaration order (:meth:`CampaignState.to_json`,
written atomically through :func:`mofbalora.io.atomic_write_json`). Reading a file of another
version, or one that lacks a field or has a field this version does not know, raises ``ValueError``
naming the file and the version or the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from mofbalora.io import atomic_write_json, read_yaml, write_yaml

STATE_FILE = "campaign.json"
CONFIG_FILE = "config.yaml"
STATE_VERSION = 1


def round_dir(state_dir: str | Path, round_: int) -> Path:
    """The trainer's run folder of round ``round_`` in a campaign folder."""
    return Path(state_dir) / "rounds" / f"round_{round_:03d}"


def round_model_dir(state_dir: str | Path, round_: int) -> Path:
    """The model of round ``round_`` in a campaign folder (``mofbalora.model.load_model`` reads
    it)."""
    return round_dir(state_dir, round_) / "checkpoints" / "best"


Mode = Literal["simulated", "real"]
Phase = Literal["train", "select", "label"]
MODES: tuple[Mode, ...] = ("simulated", "real")
PHASES: tuple[Phase, ...] = ("train", "select", "label")


@dataclass(kw_only=True)
class CampaignState:
    """The committed state of a campaign (a JSON object, version :data:`STATE_VERSION`).

    The attributes are the JSON fields, in the order they are written.
    """

    version: int = STATE_VERSION
    name: str
    mode: Mode
    seed: int
    round: int
    phase: Phase
    labelled: dict[str, float]  #: id -> PBE gap (eV)
    initial: list[str]  #: the initial labelled ids
    acquired: list[str]  #: ids bought (labelled or failed), in order
    pool: list[str]
    pending: list[dict[str, Any]]  #: the selected batch's rows (ranked-CSV columns)
    round_picked: list[str]  #: this round's new labels
    round_failed: list[str]  #: this round's failed DFT calculations
    select_seconds: float
    val_ids: list[str]
    test_ids: list[str]
    paths: dict[str, str]  #: id -> resolved CIF of structures outside the dataset
    failed: dict[str, str]  #: id -> reason
    rng_state: dict[str, Any]  #: numpy ``bit_generator.state``
    cost_ref_atoms: float | None  #: atoms of a structure of relative DFT cost 1
    pool_stats: dict[str, Any] | None  #: simulated: the pool's low-gap base rate
    history: list[dict[str, Any]]  #: one row per trained round

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def new(
        cls, *, name: str, mode: Mode, seed: int, rng_state: dict, paths: dict[str, str]
    ) -> CampaignState:
        """Round 0, about to train, nothing labelled yet."""
        return cls(
            name=name,
            mode=mode,
            seed=int(seed),
            round=0,
            phase="train",
            labelled={},
            initial=[],
            acquired=[],
            pool=[],
            pending=[],
            round_picked=[],
            round_failed=[],
            select_seconds=0.0,
            val_ids=[],
            test_ids=[],
            paths=dict(paths),
            failed={},
            rng_state=rng_state,
            cost_ref_atoms=None,
            pool_stats=None,
            history=[],
        )

    # -- the JSON form -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON object (field order as declared; values shared with the state, not copied)."""
        return {name: getattr(self, name) for name in self.field_names()}

    @classmethod
    def from_dict(cls, data: Any, *, where: str | Path = "campaign state") -> CampaignState:
        """The state of a JSON object; ValueError naming ``where`` and the version, a missing field
        or an unknown field."""
        if not isinstance(data, dict):
            raise ValueError(
                f"{where}: a campaign state is a JSON object, got {type(data).__name__}"
            )
        version = data.get("version")
        if isinstance(version, bool) or version != STATE_VERSION:  # JSON true == 1 in Python
            raise ValueError(
                f"{where}: state version {data.get('version')!r}, "
                f"this mofbalora reads {STATE_VERSION}"
            )
        names = cls.field_names()
        missing = [k for k in names if k not in data]
        if missing:
            raise ValueError(f"{where}: campaign state lacks {missing}")
        unknown = [k for k in data if k not in names]
        if unknown:
            raise ValueError(
                f"{where}: campaign state has unknown field(s) {unknown} (version {STATE_VERSION} "
                f"fields: {list(names)})"
            )
        if data["mode"] not in MODES:
            raise ValueError(f"{where}: field 'mode' is {data['mode']!r}, not one of {list(MODES)}")
        if data["phase"] not in PHASES:
            raise ValueError(
                f"{where}: field 'phase' is {data['phase']!r}, not one of {list(PHASES)}"
            )
        return cls(**data)

    def to_json(self) -> str:
        """The text of ``campaign.json``."""
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str | bytes, *, where: str | Path = "campaign state") -> CampaignState:
        """The state of ``campaign.json``'s text (see :meth:`from_dict`)."""
        return cls.from_dict(json.loads(text), where=where)

    # -- the state folder --------------------------------------------------------------------------
    @classmethod
    def read(cls, state_dir: str | Path) -> CampaignState:
        """The state in ``state_dir``; ValueError for another version, a missing or an unknown
        field."""
        path = Path(state_dir) / STATE_FILE
        return cls.from_json(path.read_text(), where=path)

    def write(self, state_dir: str | Path) -> None:
        """Commit (atomic: a reader sees the old or the new file, never a mix)."""
        state_dir = Path(state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(state_dir / STATE_FILE, self.to_dict(), indent=1)


def has_campaign(state_dir: str | Path) -> bool:
    return (Path(state_dir) / STATE_FILE).is_file()


def read_campaign_config(state_dir: str | Path) -> dict[str, Any]:
    """The configuration document in ``state_dir`` (``config.yaml``)."""
    return read_yaml(Path(state_dir) / CONFIG_FILE, what="campaign configuration")


def write_campaign_config(state_dir: str | Path, document: dict[str, Any]) -> None:
    """Write the configuration document (atomically); it never holds trust (see
    :meth:`mofbalora.al.config.CampaignConfig.stored`)."""
    write_yaml(Path(state_dir) / CONFIG_FILE, document)
