"""Compact, resumable copies of campaigns (``mofbalora al snapshot``).

A campaign's folder grows by one trainer run folder a round (epoch checkpoints, metrics); to resume
it needs only three things: ``campaign.json``, ``config.yaml`` and the model of its latest trained
round (``rounds/round_NNN/checkpoints/best``; a campaign started from a trained model keeps round
0's too). :func:`snapshot_runs` copies just those, for every campaign below a runs folder, into
another folder laid out the same way, so the copy is itself a runs folder: ``al run`` resumes from
it, ``al report`` reads it. Copying back the other way restores a campaign on a machine that lost
its runs folder (a long benchmark that spans machines or sessions keeps its snapshot in version
control: about 0.5 MB of model a BaLoRA campaign, 2.5 MB a 5-member ensemble).

The gradient-boosting baseline's model is left out: it is a deterministic fit of the labelled set,
which the resumed campaign repeats (its quantile models take about 19 MB a round at full scale).

A copy is taken from one reading of ``campaign.json``: the model copied is the one its history
names, which a running campaign never rewrites once that round's row is committed, so a snapshot of
a live runs folder is consistent. A campaign whose training was under way resumes that round from
its start (the same seed: the same model). A destination campaign that is as far as the source or
further is left alone: a snapshot never moves a campaign back.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from mofbalora.al.state import CONFIG_FILE, STATE_FILE, CampaignState, round_model_dir
from mofbalora.io import atomic_directory


@dataclass(frozen=True)
class SnapshotRow:
    """What :func:`snapshot_runs` did with one campaign."""

    campaign: str  #: its folder, relative to the runs folder
    rounds_trained: int  #: in the source
    copied: bool  #: False: the destination was as far or further
    destination_rounds: int  #: rounds trained in the destination before the call


def _model_rounds(state: CampaignState, config_text: str) -> list[int]:
    """The rounds whose models a resumed campaign reads: the latest trained one, and round 0 when
    the campaign started from a trained model (``al.start_model``); none for the gradient-boosting
    baseline, which the campaign fits again (:meth:`Campaign._refit_gbm`)."""
    config = yaml.safe_load(config_text) or {}
    if not state.history or (config.get("model") or {}).get("regime") == "gbm":
        return []
    rounds = {int(state.history[-1]["round"])}
    if (config.get("al") or {}).get("start_model"):
        rounds.add(0)
    return sorted(rounds)


def snapshot_campaign(state_dir: str | Path, dest: str | Path) -> SnapshotRow:
    """Copy the resumable core of the campaign in ``state_dir`` to ``dest`` (replacing the folder
    atomically), unless ``dest`` holds the same campaign as far or further; see the module."""
    state_dir, dest = Path(state_dir), Path(dest)
    text = (state_dir / STATE_FILE).read_text()
    state = CampaignState.from_json(text, where=state_dir / STATE_FILE)
    config_text = (state_dir / CONFIG_FILE).read_text()
    there = CampaignState.read(dest) if (dest / STATE_FILE).is_file() else None
    have = len(there.history) if there is not None else 0
    row = SnapshotRow(
        campaign=str(state_dir),
        rounds_trained=len(state.history),
        copied=len(state.history) > have,
        destination_rounds=have,
    )
    if not row.copied:
        return row
    if there is not None and there.seed != state.seed:
        raise ValueError(
            f"{dest} holds another campaign (seed {there.seed}, {state_dir} has seed "
            f"{state.seed}): not replaced"
        )
    with atomic_directory(dest, replace=True) as tmp:
        for r in _model_rounds(state, config_text):
            src = round_model_dir(state_dir, r)
            if not src.is_dir():
                raise FileNotFoundError(
                    f"{state_dir}: round {r} is in the history but its model {src} is missing"
                )
            shutil.copytree(src, round_model_dir(tmp, r))
        (tmp / CONFIG_FILE).write_text(config_text)
        (tmp / STATE_FILE).write_text(text)  # the very text the model was chosen from
    return row


def snapshot_runs(runs: str | Path, dest: str | Path) -> list[SnapshotRow]:
    """:func:`snapshot_campaign` of every campaign below ``runs`` (folders holding
    ``campaign.json``) into the same relative folder below ``dest``. FileNotFoundError when
    ``runs`` holds no campaign."""
    runs, dest = Path(runs), Path(dest)
    found = sorted(p.parent for p in runs.rglob(STATE_FILE)) if runs.is_dir() else []
    if not found:
        raise FileNotFoundError(f"no campaign ({STATE_FILE}) below {runs}")
    rows = []
    for state_dir in found:
        rel = state_dir.relative_to(runs)
        row = snapshot_campaign(state_dir, dest / rel)
        rows.append(replace(row, campaign=str(rel)))
    return rows


def format_rows(rows: list[SnapshotRow]) -> str:
    """One line a campaign, then the totals."""
    lines = [
        f"{r.campaign}: "
        + (
            f"{r.rounds_trained} round(s) copied (destination had {r.destination_rounds})"
            if r.copied
            else f"left alone ({r.rounds_trained} round(s) here, {r.destination_rounds} there)"
        )
        for r in rows
    ]
    lines.append(f"{sum(r.copied for r in rows)} of {len(rows)} campaign(s) copied")
    return "\n".join(lines)


__all__ = ["SnapshotRow", "format_rows", "snapshot_campaign", "snapshot_runs"]
