"""Campaign configuration: the fine-tune sections (:mod:`mofbalora.config`) plus ``al`` and
``benchmark``, one dataclass each with the defaults, checked once when built (and again when a
strategy changes them).

:class:`CampaignConfig` is the typed form (a :class:`~mofbalora.config.RunConfig` with the two
sections more); :func:`load_campaign_config` returns the checked document, :meth:`CampaignConfig.of`
builds the typed configuration from one. The acquisition defaults (``kappa``, ``n_samples``,
``goal``) are those of :class:`mofbalora.scoring.ScoringConfig`, their one home."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from mofbalora.acquisition import ACQUISITIONS, DIVERSITY_RULES, GOALS
from mofbalora.checks import CHECK_POLICIES
from mofbalora.config import RUN_SECTIONS, RunConfig, defaults, merge_config, plain_section
from mofbalora.domain import DOMAIN_POLICIES
from mofbalora.scoring import ScoringConfig
from mofbalora.validation import check_choice, check_int, check_number

POOL_PREDICTIONS = ("batch", "per_structure")


@dataclass
class ALSection:
    acquisition: str = "lcb"  # mofbalora.acquisition.ACQUISITIONS
    kappa: float = ScoringConfig.kappa  # exploration weight of ucb / lcb (units of std)
    goal: Literal["min", "max"] = ScoringConfig.goal  # min: hunt small gaps
    target_ev: list[float] | None = None  # [lo, hi] band-gap window (eV) instead of a goal
    diversity: Literal["none", "kcenter", "penalty"] = "none"  # on pooled structure embeddings
    kcenter_weight: float = 1.0
    penalty_radius: float | None = None
    # rank by score per relative DFT cost (~ n_atoms^cost_exponent)
    cost_aware: bool = False
    cost_exponent: float = 3.0
    initial_labelled: int = 500
    batch_size: int = 100
    n_rounds: int = 10
    round_epochs: int | None = None  # epochs of the warm-started rounds 1.. (None: optim.epochs)
    # early-stopping patience of rounds 1.. on validation (None: optim.patience)
    round_patience: int | None = None
    warm_start: bool = True  # False: every round restarts from the same fresh adapters
    # a round started from a trained model keeps that model when none of its epochs beats it on
    # validation (the start is epoch 0 of the round's early stopping); False: the round's best epoch
    # even where it is worse than the start
    round_keep_start: bool = True
    round_lr: float | None = None  # peak learning rate of the rounds 1.. (None: optim.lr)
    n_samples: int = ScoringConfig.n_samples  # T stochastic passes per prediction
    low_gap_ev: float = 1.0  # a "discovery": PBE gap below this (eV)
    eval_test: bool = True  # measure the test MAE after every round
    # how the pool is predicted at each selection: "batch" (in memory, one generator for the whole
    # pool) or "per_structure" (each structure's passes seeded by (seed, content digest): the draws
    # of `mofbalora screen`, independent of how the pool is split)
    pool_prediction: Literal["batch", "per_structure"] = "batch"
    # a Dask cluster for the pool prediction (implies per_structure): local:N, tcp://host:8786 or
    # jobqueue:CONFIG.yaml
    dask: str | None = None
    # MOF chemistry checks on the pool (mofbalora.checks; the ranking is the screen's,
    # mofbalora.scoring.rank): "off" by default here because a simulated campaign's pool is QMOF's
    # DFT-relaxed structures; a real campaign on experimental candidates should ask for "flag" (or
    # "exclude")
    checks: Literal["off", "flag", "exclude"] = "off"
    # out-of-domain candidates: ranked after every in-domain one (the screen's default), excluded,
    # or ignored
    domain: Literal["rank-separately", "exclude", "ignore"] = ScoringConfig.domain
    # a real campaign's round 0: a trained model ("default", a run folder or a model folder) whose
    # own training data is the labelled set (mofbalora.al.start; `al suggest --model`); None: round
    # 0 trains fresh adapters
    start_model: str | None = None

    def __post_init__(self) -> None:
        check_choice("al.acquisition", self.acquisition, sorted(ACQUISITIONS))
        check_choice("al.diversity", self.diversity, sorted(DIVERSITY_RULES))
        check_choice("al.goal", self.goal, sorted(GOALS))
        check_choice("al.pool_prediction", self.pool_prediction, POOL_PREDICTIONS)
        check_choice("al.checks", self.checks, list(CHECK_POLICIES))
        check_choice("al.domain", self.domain, list(DOMAIN_POLICIES))
        for key, low in (
            ("initial_labelled", 1),
            ("batch_size", 1),
            ("n_rounds", 0),
            ("n_samples", 1),
        ):
            check_int(f"al.{key}", getattr(self, key), low)
        check_int("al.round_epochs", self.round_epochs, 1, optional=True)
        check_int("al.round_patience", self.round_patience, 1, optional=True)
        check_number("al.round_lr", self.round_lr, 0, optional=True)
        for key in ("kappa", "kcenter_weight", "cost_exponent"):
            check_number(f"al.{key}", getattr(self, key), 0)
        check_number("al.penalty_radius", self.penalty_radius, 0, optional=True)
        if self.start_model is not None and not (
            isinstance(self.start_model, str) and self.start_model.strip()
        ):
            raise ValueError(
                f"al.start_model must be 'default', a run folder or a model folder, or null; "
                f"got {self.start_model!r}"
            )
        if self.target_ev is not None and (
            not isinstance(self.target_ev, (list, tuple)) or len(self.target_ev) != 2
        ):
            raise ValueError(
                f"al.target_ev must be null or a [lo, hi] window in eV, got {self.target_ev!r}"
            )

    @property
    def per_structure(self) -> bool:
        """Whether the pool is predicted structure by structure (``per_structure``, or on Dask)."""
        return self.dask is not None or self.pool_prediction == "per_structure"

    @property
    def target_window(self) -> tuple[float, float] | None:
        return tuple(self.target_ev) if self.target_ev is not None else None

    def scoring(self, seed: int) -> ScoringConfig:
        """The :class:`~mofbalora.scoring.ScoringConfig` a selection ranks the pool with (the
        screen's ranking: robust median and capped spread, checks and domain policies, in-domain
        rows first)."""
        return ScoringConfig(
            n_samples=self.n_samples,
            acquisition=self.acquisition,
            kappa=self.kappa,
            target_ev=self.target_window,
            goal=self.goal,
            seed=seed,
            checks=self.checks,
            domain=self.domain,
            repeats_top=0,
        )


@dataclass
class BenchmarkSection:
    out: str = "runs/al_qmof"
    # report folder rewritten after every round of the benchmark (None: none)
    report: str | None = None
    # folder that keeps a compact, resumable copy of every campaign, refreshed after every round
    # (mofbalora.al.snapshot; None: none)
    snapshot: str | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    # name -> {"section.key": value}; None: STRATEGIES
    strategies: dict[str, dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        for seed in self.seeds:
            check_int("benchmark.seeds[]", seed, 0)
        if self.strategies is not None and not isinstance(self.strategies, Mapping):
            raise ValueError(
                f"benchmark.strategies must be a mapping name -> changes, got {self.strategies!r}"
            )

    def strategy_changes(self) -> dict[str, dict[str, Any]]:
        """name -> {"section.key": value} of the strategies to run (:data:`STRATEGIES` unless
        set)."""
        return dict(self.strategies or STRATEGIES)


@dataclass
class CampaignConfig(RunConfig):
    """A campaign's configuration: the fine-tune sections plus ``al`` and ``benchmark``."""

    SECTIONS: ClassVar = {
        **RUN_SECTIONS,
        "al": plain_section(ALSection, "al"),
        "benchmark": plain_section(BenchmarkSection, "benchmark"),
    }

    al: ALSection = field(default_factory=ALSection)
    benchmark: BenchmarkSection = field(default_factory=BenchmarkSection)

    def stored(self) -> dict[str, Any]:
        """The document a campaign folder keeps (``config.yaml``): everything but ``benchmark``."""
        return {k: v for k, v in self.to_dict().items() if k != "benchmark"}

    def strategy(self, strategy: str, seed: int) -> CampaignConfig:
        """The configuration of one benchmark campaign: this one with the strategy's changes and
        ``run.seed``."""
        known = self.benchmark.strategy_changes()
        if strategy not in known:
            raise ValueError(f"unknown strategy {strategy!r}; choose from {sorted(known)}")
        return self.with_changes({**known[strategy], "run.seed": int(seed)})


#: the campaign sections' defaults (``{"al": {...}, "benchmark": {...}}``)
AL_DEFAULTS: dict[str, dict[str, Any]] = {
    "al": asdict(ALSection()),
    "benchmark": asdict(BenchmarkSection()),
}

#: The benchmark's strategies. "UCB" for small gaps is the lower confidence bound (``lcb``):
#: optimism about a small gap means trusting ``mean - kappa * std``.
STRATEGIES: dict[str, dict[str, Any]] = {
    "random": {"model.regime": "balora", "al.acquisition": "random"},
    "greedy_mean": {"model.regime": "balora", "al.acquisition": "mean"},
    "balora_lcb": {"model.regime": "balora", "al.acquisition": "lcb"},
    "balora_lcb_epistemic": {"model.regime": "balora", "al.acquisition": "lcb_epistemic"},
    "balora_std": {"model.regime": "balora", "al.acquisition": "std"},
    "ensemble_lcb": {"model.regime": "lora_ensemble", "al.acquisition": "lcb"},
    "gbm_lcb": {"model.regime": "gbm", "al.acquisition": "lcb"},
}


def default_config() -> dict:
    """Fine-tune defaults (:func:`mofbalora.config.defaults`) plus :data:`AL_DEFAULTS`, as a
    document."""
    return {**defaults(), **copy.deepcopy(AL_DEFAULTS)}


def campaign_config(cfg: CampaignConfig | Mapping[str, Any]) -> CampaignConfig:
    """``cfg`` (a document, or already typed) as a :class:`CampaignConfig` (ValueError naming a bad
    key or value)."""
    return CampaignConfig.of(cfg)


def load_campaign_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> dict:
    """A YAML campaign configuration (fine-tune sections, ``al``, ``benchmark``) over the defaults,
    then ``section.key=value`` overrides: the checked document (unknown keys and bad values raise
    ``ValueError``). :func:`campaign_config` makes it typed."""
    return merge_config(
        default_config(), path, overrides, config_type=CampaignConfig, what="campaign configuration"
    )


def strategy_config(
    cfg: CampaignConfig | Mapping[str, Any], strategy: str, seed: int
) -> CampaignConfig:
    """The configuration of one benchmark campaign: ``cfg`` with the strategy's changes and
    ``run.seed``."""
    return campaign_config(cfg).strategy(strategy, seed)
