"""Real campaigns: the pool is candidate CIFs and the labels come from DFT.

``mofbalora al suggest`` (:func:`suggest`) writes the next batch and its DFT inputs; ``mofbalora al
ingest`` (:func:`ingest`) reads the results (:mod:`mofbalora.al.dft_results`, every row checked
before anything changes) and retrains."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mofbalora.al.campaign import Campaign, initial_draw
from mofbalora.al.config import CampaignConfig, campaign_config, load_campaign_config
from mofbalora.al.dft_results import read_dft_results
from mofbalora.al.start import start_model_document
from mofbalora.al.state import STATE_FILE
from mofbalora.config import merge_config
from mofbalora.data.candidates import expand_candidates
from mofbalora.dft import Code
from mofbalora.train import split_ids

log = logging.getLogger(__name__)


def real_campaign(
    state_dir: str | Path,
    cfg: CampaignConfig | Mapping[str, Any],
    candidates: Sequence[str | Path] = (),
    *,
    progress: bool = False,
    trust_checkpoint: bool = False,
) -> Campaign:
    """A campaign whose pool is candidate CIFs, labelled by DFT.

    With ``al.start_model`` (:mod:`mofbalora.al.start`) round 0 is that trained model and the
    labelled set is its own training data (the train part of ``data``); otherwise round 0 trains
    fresh adapters on the same initial labelled set as a simulated campaign. Either way the
    val/test parts are the split's."""
    cfg = campaign_config(cfg)
    if cfg.al.start_model:
        ds, ids = split_ids(cfg)
        c = Campaign.create(
            state_dir,
            cfg,
            labelled=ids["train"],
            pool=[],
            val_ids=ids["val"],
            test_ids=ids["test"],
            mode="real",
            rng=np.random.default_rng(int(cfg.run.seed)),
            dataset=ds,
            progress=progress,
            trust_checkpoint=trust_checkpoint,
        )
        if candidates:
            c.add_candidates(candidates)
        return c
    ds, ids, labelled, _, rng = initial_draw(cfg)
    c = Campaign.create(
        state_dir,
        cfg,
        labelled=labelled,
        pool=[],
        val_ids=ids["val"],
        test_ids=ids["test"],
        mode="real",
        rng=rng,
        dataset=ds,
        progress=progress,
        trust_checkpoint=trust_checkpoint,
    )
    if candidates:
        c.add_candidates(candidates)
    return c


def campaign_document(
    config: str | Path | None = None, overrides: Sequence[str] = (), model: str | Path | None = None
) -> dict:
    """The checked configuration document of a new real campaign.

    Without ``config``, or with ``model``: the campaign starts from ``model`` (default
    ``"default"``, the shipped model; :func:`mofbalora.al.start.start_model_document`), with
    ``config`` and the ``section.key=value`` ``overrides`` over its recipe. With ``config`` alone:
    that configuration over the defaults (round 0 then trains fresh adapters on
    ``al.initial_labelled`` structures of the split, unless it sets ``al.start_model``)."""
    if config is not None and model is None:
        return load_campaign_config(config, overrides)
    return merge_config(
        start_model_document(model or "default"),
        config,
        overrides,
        config_type=CampaignConfig,
        what="campaign configuration",
    )


def suggest(
    state_dir: str | Path,
    candidates: Sequence[str | Path] = (),
    batch_size: int | None = None,
    *,
    cfg: CampaignConfig | Mapping[str, Any] | None = None,
    dft_inputs: bool = True,
    code: Code = "vasp",
    potcar_dir: str | Path | None = None,
    progress: bool = False,
    trust_checkpoint: bool = False,
) -> Path:
    """Write the next batch for DFT (``batch_NNN.csv``, its ``batch_NNN.md`` saying what the score
    means, and its ``dft_inputs/``); returns the CSV path.

    Creates a real campaign in ``state_dir`` from ``cfg`` if there is none (default: from the
    shipped model, :func:`campaign_document`); adds ``candidates`` (files, folders, glob patterns)
    to the pool; finishes a pending training first. ``trust_checkpoint``: see
    :class:`~mofbalora.al.campaign.Campaign`.
    """
    paths = expand_candidates(candidates) if candidates else []
    if (Path(state_dir) / STATE_FILE).is_file():
        campaign = Campaign(state_dir, progress=progress, trust_checkpoint=trust_checkpoint)
        if cfg is not None:
            log.warning(
                "%s holds a campaign: its stored configuration is used, the given one ignored",
                state_dir,
            )
        if paths:
            campaign.add_candidates(paths)
    else:
        campaign = real_campaign(
            state_dir,
            cfg if cfg is not None else campaign_document(),
            paths,
            progress=progress,
            trust_checkpoint=trust_checkpoint,
        )
    if campaign.phase == "train":
        campaign.train()
    rows = campaign.select(batch_size)
    return campaign.write_batch(rows, dft_inputs=dft_inputs, code=code, potcar_dir=potcar_dir)


def ingest(
    state_dir: str | Path,
    results_csv: str | Path,
    *,
    progress: bool = False,
    trust_checkpoint: bool = False,
) -> dict:
    """Add DFT band gaps from ``results_csv`` (see
    :func:`~mofbalora.al.dft_results.read_dft_results`) and retrain warm-started; returns the new
    history row. The whole file is checked first: a bad row raises
    :class:`~mofbalora.al.dft_results.DFTResultsError` and leaves the campaign as it was. Safe to
    repeat after an interruption: labels already added are skipped and an interrupted training is
    finished. ``trust_checkpoint``: see :class:`~mofbalora.al.campaign.Campaign`."""
    campaign = Campaign(state_dir, progress=progress, trust_checkpoint=trust_checkpoint)
    labels, paths = read_dft_results(results_csv, campaign)  # before anything changes
    if campaign.phase == "train":
        campaign.train()
    if campaign.add_labels(labels, paths):
        return campaign.train()
    log.info("%s: no new labels in %s", state_dir, results_csv)
    return campaign.history[-1]
