"""The simulated QMOF benchmark: one campaign per strategy and seed, resumable (``mofbalora al
run``).

The campaigns advance together, round by round (every campaign's round 0, then every campaign's
round 1, ...), so that an interrupted run has comparable curves for every strategy so far; each step
of each campaign is committed atomically in its own folder (:mod:`mofbalora.al.campaign`), so the
same command resumes after a kill at any point. Campaigns of the same backbone features share one
in-memory copy of the structures' inputs (read from the cache once per process). With a report
folder (``report=``; ``mofbalora al run`` passes ``--report`` or ``benchmark.report``) the report
(:func:`mofbalora.al.report.write_report`) is rewritten after every round of all campaigns."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mofbalora.al.campaign import Campaign, simulated_campaign
from mofbalora.al.config import CampaignConfig, campaign_config
from mofbalora.al.snapshot import snapshot_campaign
from mofbalora.al.state import STATE_FILE

log = logging.getLogger(__name__)


def run_benchmark(
    cfg: CampaignConfig | Mapping[str, Any],
    out: str | Path | None = None,
    *,
    strategies: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    n_rounds: int | None = None,
    report: str | Path | None = None,
    snapshot: str | Path | None = None,
    progress: bool = False,
    trust_checkpoint: bool = False,
    hook: Callable[[str, Campaign], None] | None = None,
) -> list[Path]:
    """Run (or resume) one simulated campaign per strategy and seed in
    ``out/<strategy>/seed_<seed>`` (default ``benchmark.out``), round by round across campaigns, up
    to round ``n_rounds`` (default ``al.n_rounds``).

    A campaign already in its folder is resumed with its stored configuration. ``report`` (a folder;
    None: no report; the CLI passes ``benchmark.report``) is rewritten after each round of all
    campaigns. ``snapshot`` (a folder; None: none; the CLI passes ``--snapshot`` or
    ``benchmark.snapshot``) receives a compact, resumable copy of each campaign as soon as it
    finishes a round (:mod:`mofbalora.al.snapshot`). ``trust_checkpoint`` and ``hook``: see
    :class:`~mofbalora.al.campaign.Campaign`. Returns the folders.
    """
    cfg = campaign_config(cfg)
    out = Path(out or cfg.benchmark.out)
    names = list(strategies or cfg.benchmark.strategy_changes())
    seeds = list(seeds if seeds is not None else cfg.benchmark.seeds)
    target = cfg.al.n_rounds if n_rounds is None else int(n_rounds)
    shared: dict[str, dict] = {}  # backbone features -> id -> input, shared by the campaigns
    datasets: dict[str, Any] = {}
    campaigns: dict[Path, Campaign] = {}

    def open_campaign(name: str, seed: int) -> Campaign:
        state_dir = out / name / f"seed_{seed}"
        if state_dir in campaigns:
            return campaigns[state_dir]
        scfg = cfg.strategy(name, seed)
        inputs = shared.setdefault(json.dumps(scfg.backbone.to_dict(), sort_keys=True), {})
        if (state_dir / STATE_FILE).is_file():
            c = Campaign(
                state_dir,
                progress=progress,
                trust_checkpoint=trust_checkpoint,
                hook=hook,
                inputs=inputs,
            )
            if c.cfg.al != scfg.al or c.cfg.model != scfg.model:
                log.warning(
                    "%s: resuming with its stored configuration, which differs from the given one",
                    state_dir,
                )
        else:
            data_key = json.dumps(scfg.data.__dict__, sort_keys=True, default=str)
            c = simulated_campaign(
                state_dir,
                scfg,
                name=name,
                progress=progress,
                hook=hook,
                trust_checkpoint=trust_checkpoint,
                inputs=inputs,
                dataset=datasets.get(data_key),
            )
            datasets.setdefault(data_key, c.dataset())
        campaigns[state_dir] = c
        return c

    for r in range(target + 1):
        for name in names:
            for seed in seeds:
                c = open_campaign(name, seed)
                t0 = time.perf_counter()
                before = len(c.history)
                c.run(r)
                if len(c.history) > before:
                    if snapshot is not None:  # at once: a stop mid-round keeps this campaign's
                        snapshot_campaign(c.dir, Path(snapshot) / c.dir.relative_to(out))
                    log.info(
                        "%s seed %d: round %d done in %.0f s",
                        name,
                        seed,
                        c.history[-1]["round"],
                        time.perf_counter() - t0,
                    )
        if report is not None:
            from mofbalora.al.report import write_report

            write_report(out, report)
    return list(campaigns)
