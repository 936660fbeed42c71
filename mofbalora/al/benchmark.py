"""The simulated QMOF benchmark: one campaign per strategy and seed, resumable (``mofbalora al run``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mofbalora.al.campaign import Campaign, simulated_campaign
from mofbalora.al.config import CampaignConfig, campaign_config
from mofbalora.al.state import STATE_FILE

log = logging.getLogger(__name__)


def run_benchmark(cfg: CampaignConfig | Mapping[str, Any], out: str | Path | None = None, *,
                  strategies: Sequence[str] | None = None, seeds: Sequence[int] | None = None,
                  n_rounds: int | None = None, progress: bool = False, trust_checkpoint: bool = False) -> list[Path]:
    """Run (or resume) one simulated campaign per strategy and seed in ``out/<strategy>/seed_<seed>``
    (default ``benchmark.out``).

    A campaign already in its folder is resumed with its stored configuration. ``trust_checkpoint``: see
    :class:`~mofbalora.al.campaign.Campaign`. Returns the folders.
    """
    cfg = campaign_config(cfg)
    out = Path(out or cfg.benchmark.out)
    names = list(strategies or cfg.benchmark.strategy_changes())
    done = []
    for name in names:
        for seed in (seeds if seeds is not None else cfg.benchmark.seeds):
            state_dir = out / name / f"seed_{seed}"
            scfg = cfg.strategy(name, seed)
            if (state_dir / STATE_FILE).is_file():
                campaign = Campaign(state_dir, progress=progress, trust_checkpoint=trust_checkpoint)
                if campaign.cfg.al != scfg.al or campaign.cfg.model != scfg.model:
                    log.warning("%s: resuming with its stored configuration, which differs from the given one",
                                state_dir)
            else:
                campaign = simulated_campaign(state_dir, scfg, name=name, progress=progress,
                                              trust_checkpoint=trust_checkpoint)
            campaign.run(n_rounds)
            done.append(state_dir)
    return done
