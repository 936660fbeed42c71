"""The simulated QMOF benchmark: one campaign per strategy and seed, resumable (``mofbalora al run``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from mofbalora.al.campaign import Campaign, simulated_campaign
from mofbalora.al.config import strategies_of, strategy_config
from mofbalora.al.state import STATE_FILE

log = logging.getLogger(__name__)


def run_benchmark(cfg: dict, out: str | Path | None = None, *, strategies: Sequence[str] | None = None,
                  seeds: Sequence[int] | None = None, n_rounds: int | None = None,
                  progress: bool = False) -> list[Path]:
    """Run (or resume) one simulated campaign per strategy and seed in ``out/<strategy>/seed_<seed>``.

    A campaign already in its folder is resumed with its stored configuration. Returns the folders.
    """
    out = Path(out or cfg["benchmark"]["out"])
    names = list(strategies or strategies_of(cfg))
    done = []
    for name in names:
        for seed in (seeds if seeds is not None else cfg["benchmark"]["seeds"]):
            state_dir = out / name / f"seed_{seed}"
            scfg = strategy_config(cfg, name, seed)
            if (state_dir / STATE_FILE).is_file():
                campaign = Campaign(state_dir, progress=progress)
                if campaign.cfg["al"] != scfg["al"] or campaign.cfg["model"] != scfg["model"]:
                    log.warning("%s: resuming with its stored configuration, which differs from the given one",
                                state_dir)
            else:
                campaign = simulated_campaign(state_dir, scfg, name=name, progress=progress)
            campaign.run(n_rounds)
            done.append(state_dir)
    return done
