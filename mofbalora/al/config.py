"""Campaign configuration: the fine-tune sections (:mod:`mofbalora.config`) plus ``al`` and ``benchmark``,
one dataclass each with the defaults, checked once at load (and again when a strategy changes them)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mofbalora.acquisition import ACQUISITIONS, DIVERSITY_RULES, GOALS
from mofbalora.config import (
    SECTIONS,
    check_choice,
    check_int,
    check_number,
    deep_update,
    defaults,
    dotted,
    merge_config,
    section_defaults,
    validate,
)

POOL_PREDICTIONS = ("batch", "per_structure")


@dataclass
class ALSection:
    acquisition: str = "lcb"          # mofbalora.acquisition.ACQUISITIONS
    kappa: float = 2.0                # exploration weight of ucb / lcb (units of std)
    goal: Literal["min", "max"] = "min"  # min: hunt small gaps
    target_ev: list[float] | None = None  # [lo, hi] band-gap window (eV) instead of a goal
    diversity: Literal["none", "kcenter", "penalty"] = "none"  # on pooled structure embeddings
    kcenter_weight: float = 1.0
    penalty_radius: float | None = None
    cost_aware: bool = False          # rank by score per relative DFT cost (~ n_atoms^cost_exponent)
    cost_exponent: float = 3.0
    initial_labelled: int = 500
    batch_size: int = 100
    n_rounds: int = 10
    round_epochs: int | None = None   # epochs of the warm-started rounds 1.. (None: optim.epochs)
    warm_start: bool = True           # False: every round restarts from the same fresh adapters
    n_samples: int = 32               # T stochastic passes per prediction
    low_gap_ev: float = 1.0           # a "discovery": PBE gap below this (eV)
    eval_test: bool = True            # measure the test MAE after every round
    # how the pool is predicted at each selection: "batch" (in memory, one generator for the whole pool)
    # or "per_structure" (each structure's passes seeded by (seed, content digest): the draws of
    # `mofbalora screen`, independent of how the pool is split)
    pool_prediction: Literal["batch", "per_structure"] = "batch"
    # a Dask cluster for the pool prediction (implies per_structure): local:N, tcp://host:8786 or
    # jobqueue:CONFIG.yaml
    dask: str | None = None

    def __post_init__(self) -> None:
        check_choice("al.acquisition", self.acquisition, sorted(ACQUISITIONS))
        check_choice("al.diversity", self.diversity, sorted(DIVERSITY_RULES))
        check_choice("al.goal", self.goal, sorted(GOALS))
        check_choice("al.pool_prediction", self.pool_prediction, POOL_PREDICTIONS)
        for key, low in (("initial_labelled", 1), ("batch_size", 1), ("n_rounds", 0), ("n_samples", 1)):
            check_int(f"al.{key}", getattr(self, key), low)
        check_int("al.round_epochs", self.round_epochs, 1, optional=True)
        for key in ("kappa", "kcenter_weight", "cost_exponent"):
            check_number(f"al.{key}", getattr(self, key), 0)
        check_number("al.penalty_radius", self.penalty_radius, 0, optional=True)
        if self.target_ev is not None and (not isinstance(self.target_ev, (list, tuple)) or len(self.target_ev) != 2):
            raise ValueError(f"al.target_ev must be null or a [lo, hi] window in eV, got {self.target_ev!r}")


@dataclass
class BenchmarkSection:
    out: str = "runs/al_qmof"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    strategies: dict[str, dict[str, Any]] | None = None  # name -> {"section.key": value}; None: STRATEGIES

    def __post_init__(self) -> None:
        for seed in self.seeds:
            check_int("benchmark.seeds[]", seed, 0)
        if self.strategies is not None and not isinstance(self.strategies, Mapping):
            raise ValueError(f"benchmark.strategies must be a mapping name -> changes, got {self.strategies!r}")


AL_SECTIONS: dict[str, type] = {"al": ALSection, "benchmark": BenchmarkSection}
CAMPAIGN_SECTIONS: dict[str, type] = {**SECTIONS, **AL_SECTIONS}
#: the campaign sections' defaults (``{"al": {...}, "benchmark": {...}}``)
AL_DEFAULTS: dict[str, dict[str, Any]] = section_defaults(AL_SECTIONS)

#: The benchmark's strategies. "UCB" for small gaps is the lower confidence bound (``lcb``): optimism
#: about a small gap means trusting ``mean - kappa * std``.
STRATEGIES: dict[str, dict[str, Any]] = {
    "random": {"model.regime": "balora", "al.acquisition": "random"},
    "greedy_mean": {"model.regime": "balora", "al.acquisition": "mean"},
    "balora_std": {"model.regime": "balora", "al.acquisition": "std"},
    "balora_lcb": {"model.regime": "balora", "al.acquisition": "lcb"},
    "ensemble_lcb": {"model.regime": "lora_ensemble", "al.acquisition": "lcb"},
}


def default_config() -> dict:
    """Fine-tune defaults (:func:`mofbalora.config.defaults`) plus :data:`AL_DEFAULTS`."""
    return {**defaults(), **copy.deepcopy(AL_DEFAULTS)}


def validate_campaign_config(cfg: Mapping[str, Any]) -> None:
    """Check every section present in a campaign configuration (ValueError naming the key and the choices)."""
    validate(cfg, CAMPAIGN_SECTIONS)


def load_campaign_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> dict:
    """A YAML campaign configuration (fine-tune sections, ``al``, ``benchmark``) over the defaults, then
    ``section.key=value`` overrides; unknown keys and bad values raise ``ValueError``."""
    return merge_config(default_config(), path, overrides, sections=CAMPAIGN_SECTIONS,
                        what="campaign configuration")


def apply_dotted(cfg: dict, changes: Mapping[str, Any]) -> dict:
    """A copy of ``cfg`` with ``{"section.key": value}`` changes (keys validated)."""
    out = copy.deepcopy(cfg)
    for key, value in changes.items():
        deep_update(out, dotted({key: value}))
    return out


def strategies_of(cfg: dict) -> dict[str, dict[str, Any]]:
    return dict(cfg.get("benchmark", {}).get("strategies") or STRATEGIES)


def strategy_config(cfg: dict, strategy: str, seed: int) -> dict:
    """The configuration of one benchmark campaign: ``cfg`` with the strategy's changes and ``run.seed``."""
    known = strategies_of(cfg)
    if strategy not in known:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {sorted(known)}")
    out = apply_dotted(cfg, {**known[strategy], "run.seed": int(seed)})
    validate_campaign_config(out)
    return out
