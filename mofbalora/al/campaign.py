"""Active-learning campaigns with their whole state on disk, resumable after a kill at any point.

A campaign alternates three steps; each ends in one atomic write of ``campaign.json`` (temporary
file + ``os.replace``), the only commit record:

``select`` (phase ``"select"`` → ``"label"``)
    Predict the pool with the current model (T stochastic passes), score it with an acquisition
    (:mod:`mofbalora.acquisition`; optionally per relative DFT cost) and pick a batch
    (:func:`mofbalora.acquisition.select_batch`, optionally diverse in the pooled structure
    embeddings).
``label`` (``"label"`` → ``"train"``)
    Add PBE band gaps of the batch: QMOF's hidden labels in a simulated campaign, DFT results in a
    real one (``mofbalora al ingest``).
``train`` (``"train"`` → ``"select"``)
    Retrain adapters and head on the grown labelled set, warm-started from the previous round's
    model; measure the test MAE; append a row to the history.

State folder::

    campaign.json          phase, round, labelled set (id -> PBE gap in eV), pool, pending batch,
                           failures, numpy RNG state (``bit_generator.state``), history
    config.yaml            the resolved configuration (fine-tune sections + ``al``)
    rounds/round_NNN/      the trainer's run folder of round NNN: ``checkpoints/best`` is that
                           round's model (``mofbalora.model.load_model`` reads it),
                           ``checkpoints/last`` lets an interrupted training resume at an epoch
                           boundary
    batch_NNN.csv          real mode: the batch suggested for round NNN, in the ranked-CSV format
    dft_inputs/batch_NNN/  real mode: its DFT hand-off (:func:`mofbalora.dft.write_dft_inputs`)

Every step is a deterministic function of the committed state: seeds derive from the campaign seed
and the round, the one numpy generator used by acquisitions and tie-breaks is restored from the
state, and training checkpoints every epoch. A campaign killed anywhere and resumed
(``Campaign(state_dir).run()``) therefore ends in the same state as an uninterrupted one.

Simulated mode: the labelled set and the pool are drawn from the split's train part, early
stopping uses (a subset of) its val part, the learning curve is measured on (a subset of) its test
part; val and test structures are never in the pool. Real mode: the same initial labelled set,
val and test parts, and a pool of candidate CIFs (``mofbalora al suggest``); or, with
``al.start_model`` (the default of ``al suggest``, :mod:`mofbalora.al.start`), round 0 is that
trained model, copied into ``rounds/round_000``, and the labelled set its own training data.

Configuration: :mod:`mofbalora.al.config`; the real-DFT steps (``suggest``, ``ingest``):
:mod:`mofbalora.al.real`; the QMOF benchmark over strategies and seeds:
:mod:`mofbalora.al.benchmark`; its report: :mod:`mofbalora.al.report`.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mofbalora.acquisition import dft_cost, window_distance
from mofbalora.al.candidates import CandidatePool
from mofbalora.al.config import CampaignConfig, campaign_config
from mofbalora.al.dft_results import check_gap_ev
from mofbalora.al.state import (
    CONFIG_FILE,
    MODES,
    STATE_FILE,
    CampaignState,
    Mode,
    read_campaign_config,
    round_dir,
    round_model_dir,
    write_campaign_config,
)
from mofbalora.data.cache import file_digest
from mofbalora.data.qmof import load_dataset
from mofbalora.domain import ApplicabilityDomain
from mofbalora.evaluate import metrics_from_prediction
from mofbalora.featurize import featurize_files
from mofbalora.gbm import GBMBandGapModel
from mofbalora.io import MODEL_CONFIG, atomic_write_text
from mofbalora.model import load_weights
from mofbalora.scoring import (
    BATCH_COLUMNS,
    InProcessExecutor,
    ScoringConfig,
    annotate,
    prediction_record,
    rank,
    score_files,
    select_rows,
)
from mofbalora.train import Trainer, model_from_config, split_ids, validation_mae

log = logging.getLogger(__name__)

#: a simulated ``random`` round scores its pool with one pass instead of ``al.n_samples`` draws
#: (the picks do not read the draws: :meth:`Campaign.select`)
RANDOM_SKIPS_DRAWS = True

#: a spread-aware batch is "ranked by the predicted gap alone" when what it adds to the score (κ ×
#: the median spread) is below this fraction of the std of the predicted gaps over the pool
NEGLIGIBLE_SPREAD = 0.01
#: a simulated campaign records its pool's this many smallest gaps (the report's recall of the best
#: candidates)
SMALLEST_GAPS = 100
#: points at which :attr:`Campaign.hook` is called: before the commit of a step, and after each
#: epoch
HOOK_POINTS = ("select", "label", "epoch", "train")


# ------------------------------------------------------------------------------------------------
# the campaign
# ------------------------------------------------------------------------------------------------


class Campaign(CandidatePool):
    """An active-learning campaign stored in ``state_dir`` (see the module docstring).

    Open an existing one with ``Campaign(state_dir)``; make a new one with :meth:`create`,
    :func:`simulated_campaign` or :func:`real_campaign`. ``hook(point, campaign)``, if given, is
    called at each of :data:`HOOK_POINTS` (tests raise from it to simulate a kill).

    ``trust_checkpoint``: allow full unpickling of the backbone's third-party checkpoint (the
    caller's decision, for this process; never stored). A campaign folder whose ``config.yaml`` asks
    for it is refused without it (:func:`mofbalora.backbones.checkpoint.stored_trust_error`).
    """

    def __init__(
        self,
        state_dir: str | Path,
        *,
        hook: Callable[[str, Campaign], None] | None = None,
        progress: bool = False,
        trust_checkpoint: bool = False,
        inputs: dict | None = None,
    ) -> None:
        self._setup(state_dir, hook, progress, trust_checkpoint, inputs)
        if not (self.dir / STATE_FILE).is_file():
            raise FileNotFoundError(
                f"no campaign in {self.dir} (no {STATE_FILE}); create one first"
            )
        self.load_state()

    def _setup(
        self,
        state_dir: str | Path,
        hook,
        progress: bool,
        trust_checkpoint: bool,
        inputs: dict | None = None,
    ) -> None:
        self.dir = Path(state_dir)
        self.hook = hook
        self.progress = progress
        self.trust_checkpoint = trust_checkpoint
        self._dataset = None
        self._model = None
        self._initial_state: dict | None = None
        self._loaded_round: int | None = None
        # id -> backbone input; ``inputs`` shares one dict between campaigns of the same backbone
        # features (the benchmark's: its 17,000 structures are read from the cache once per process)
        self._inputs: dict[str, Any] = {} if inputs is None else inputs
        # content digest of each structure's file, hashed once per process
        self._digests: dict[str, str] = {}
        self.cfg = CampaignConfig()

    # -- creation ----------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        state_dir: str | Path,
        cfg: CampaignConfig | Mapping[str, Any],
        *,
        labelled: Sequence[str] | Mapping[str, float],
        pool: Sequence[str],
        val_ids: Sequence[str],
        test_ids: Sequence[str] = (),
        mode: Mode = "simulated",
        paths: Mapping[str, str | Path] | None = None,
        name: str = "",
        rng: np.random.Generator | None = None,
        dataset=None,
        hook: Callable[[str, Campaign], None] | None = None,
        progress: bool = False,
        trust_checkpoint: bool = False,
        inputs: dict | None = None,
    ) -> Campaign:
        """Write a new campaign into ``state_dir`` (round 0, about to train) and return it.

        ``cfg``: a :class:`~mofbalora.al.config.CampaignConfig` (or its document);
        ``trust_checkpoint`` (or ``cfg.backbone.trust_checkpoint``): see :class:`Campaign` (not
        stored).

        ``labelled`` are ids with known PBE gaps (a mapping id -> eV, or dataset ids whose labels
        are read from the dataset); ``pool`` the unlabelled candidates; ``val_ids`` / ``test_ids``
        dataset ids for early stopping and the learning curve. ``paths`` gives the CIF of ids not in
        the dataset. Structures that fail featurization are recorded in ``failed`` and left out.
        Raises ``FileExistsError`` if ``state_dir`` already holds a campaign, ``ValueError`` if the
        parts overlap (a test structure can never be in the pool) or val is empty.
        """
        state_dir = Path(state_dir)
        if (state_dir / STATE_FILE).exists():
            raise FileExistsError(
                f"{state_dir} already holds a campaign; open it with Campaign({str(state_dir)!r})"
            )
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose from {list(MODES)}")
        cfg = campaign_config(cfg)
        trust_checkpoint = trust_checkpoint or cfg.backbone.trust_checkpoint
        parts = {
            "labelled": list(labelled),
            "pool": list(pool),
            "val": list(val_ids),
            "test": list(test_ids),
        }
        for a, b in (
            ("pool", "test"),
            ("pool", "val"),
            ("labelled", "test"),
            ("labelled", "val"),
            ("labelled", "pool"),
        ):
            common = set(parts[a]) & set(parts[b])
            if common:
                raise ValueError(
                    f"{len(common)} structure(s) are in both {a} and {b}, e.g. {sorted(common)[:3]}"
                )
        if not parts["val"]:
            raise ValueError(
                "a campaign needs a non-empty validation part (early stopping of every round)"
            )
        rng = rng if rng is not None else np.random.default_rng(int(cfg.run.seed))
        if not cfg.al.eval_test:
            parts["test"] = []
        obj = cls.__new__(cls)
        obj._setup(state_dir, hook, progress, trust_checkpoint, inputs)
        # what a reopened campaign reads back (config.yaml holds no benchmark section and no trust)
        obj.cfg = CampaignConfig.from_stored(
            cfg.stored(), where=state_dir / CONFIG_FILE, trust_checkpoint=trust_checkpoint
        )
        obj._dataset = dataset
        obj.state = CampaignState.new(
            name=name,
            mode=mode,
            seed=cfg.run.seed,
            rng_state=rng.bit_generator.state,
            paths={str(k): str(Path(v).resolve()) for k, v in (paths or {}).items()},
        )
        ds = obj.dataset()
        everything = parts["labelled"] + parts["pool"] + parts["val"] + parts["test"]
        ok = set(everything) - set(obj._featurize(everything))
        st = obj.state
        gaps = (
            labelled
            if isinstance(labelled, Mapping)
            else {i: float(ds.bandgaps_ev[ds.index_of(i)]) for i in parts["labelled"]}
        )
        st.labelled = {k: float(gaps[k]) for k in parts["labelled"] if k in ok}
        st.initial = list(st.labelled)
        st.pool = [k for k in parts["pool"] if k in ok]
        st.val_ids = [k for k in parts["val"] if k in ok]
        st.test_ids = [k for k in parts["test"] if k in ok]
        if not st.labelled or not st.val_ids:
            raise ValueError(
                f"nothing left to train on after featurization: {len(st.labelled)} labelled, "
                f"{len(st.val_ids)} validation structures"
            )
        st.cost_ref_atoms = float(np.median([obj._inputs[k]["n_atoms"] for k in st.labelled]))
        if mode == "simulated":
            pool_gaps = np.array([ds.bandgaps_ev[ds.index_of(k)] for k in st.pool])
            thr = cfg.al.low_gap_ev
            smallest = np.argsort(pool_gaps, kind="stable")[:SMALLEST_GAPS]
            st.pool_stats = {
                "n": len(st.pool),
                "n_low_gap": int((pool_gaps < thr).sum()),
                "low_gap_fraction": float((pool_gaps < thr).mean()) if len(pool_gaps) else None,
                # the report's recall: how many of the pool's smallest gaps a campaign bought
                "smallest_gap_ids": [st.pool[i] for i in smallest],
                "n_below_0_5_ev": int((pool_gaps < 0.5).sum()),
            }
        state_dir.mkdir(parents=True, exist_ok=True)

        write_campaign_config(state_dir, obj.cfg.stored())
        if cfg.al.start_model:
            # round 0 is that model: commit straight to "select"
            obj._adopt_start_model(cfg.al.start_model)
        obj.save_state()
        log.info(
            "campaign %s: %d labelled, %d in the pool, %d val, %d test, %d failed featurization",
            state_dir,
            len(st.labelled),
            len(st.pool),
            len(st.val_ids),
            len(st.test_ids),
            len(st.failed),
        )
        return obj

    def _adopt_start_model(self, model: str) -> None:
        """Round 0 of a campaign that starts from a trained model (``al.start_model``): copy it into
        ``rounds/round_000/checkpoints/best`` (atomically), record its history row (validation and
        test figures of that model) and move to phase ``select``. Not committed here:
        :meth:`create` commits once."""
        from mofbalora.io import atomic_directory
        from mofbalora.model import resolve_model_dir

        source = resolve_model_dir(model)
        with atomic_directory(self.model_dir(0), replace=True) as tmp:
            for f in source.iterdir():
                if f.is_file() and f.suffix in (".json", ".safetensors"):
                    shutil.copyfile(f, tmp / f.name)
        self._load_round_model(0)
        val_mae = validation_mae(
            self.model(),
            self.inputs_of(self.state.val_ids),
            self._dataset_labels(self.state.val_ids),
        )
        row = self._history_row(val_mae, None)
        row["seconds"] = {"select": 0.0, "train": 0.0, "evaluate": 0.0}
        row["start_model"] = str(model)
        st = self.state
        st.history.append(row)
        st.phase = "select"
        log.info(
            "campaign %s starts from %s: %d labelled (its training data), val MAE %.3f eV",
            self.dir,
            model,
            len(st.labelled),
            val_mae,
        )

    # -- state -------------------------------------------------------------------------------------
    def save_state(self) -> None:
        """Commit the state (atomic: a reader sees the old or the new file, never a mix)."""
        self.state.write(self.dir)

    def load_state(self) -> None:
        self.state = CampaignState.read(self.dir)
        # trust is the caller's: a config.yaml that asks for it is refused unless trust_checkpoint
        # was passed
        self.cfg = CampaignConfig.from_stored(
            read_campaign_config(self.dir),
            where=self.dir / CONFIG_FILE,
            trust_checkpoint=self.trust_checkpoint,
        )
        self._loaded_round = None

    @property
    def mode(self) -> str:
        return self.state.mode

    @property
    def phase(self) -> str:
        return self.state.phase

    @property
    def round(self) -> int:
        return int(self.state.round)

    @property
    def labelled(self) -> dict[str, float]:
        return self.state.labelled

    @property
    def pool(self) -> list[str]:
        return self.state.pool

    @property
    def pending(self) -> list[dict]:
        return self.state.pending

    @property
    def history(self) -> list[dict]:
        return self.state.history

    def model_dir(self, round_: int | None = None) -> Path:
        """Folder of the model trained in round ``round_`` (default: the latest finished round)."""
        r = self._last_trained_round() if round_ is None else round_
        return round_model_dir(self.dir, r)

    # -- lazily built resources --------------------------------------------------------------------
    def dataset(self):
        if self._dataset is None:
            d = self.cfg.data
            self._dataset = load_dataset(
                d.path, labels_csv=d.labels, id_column=d.id_column, target_column=d.target_column
            )
        return self._dataset

    def model(self):
        """The band-gap model (built once per process with the campaign seed, so its fresh adapters
        are the same in every process; torch's global generator is left as it was). ``run.threads``
        sets torch's thread count for the process, as ``finetune`` does."""
        if self._model is None:
            if self.cfg.run.threads:
                torch.set_num_threads(int(self.cfg.run.threads))
            # the gradient-boosting baseline: refitted each round
            if self.cfg.model.regime == "gbm":
                self._model = GBMBandGapModel(self.cfg.backbone.to_dict(), self.cfg.gbm)
                return self._model
            with torch.random.fork_rng():
                torch.manual_seed(self.state.seed)
                self._model = model_from_config(self.cfg)
            self._initial_state = {
                k: v.detach().clone() for k, v in self._model.trained_state().items()
            }
        return self._model

    def path_of(self, key: str) -> Path:
        if key in self.state.paths:
            return Path(self.state.paths[key])
        ds = self.dataset()
        return ds.cif_paths[ds.index_of(key)]

    def _featurize(
        self, keys: Sequence[str], *, paths: Mapping[str, str] | None = None, record: bool = True
    ) -> dict[str, str]:
        """Featurize ``keys`` not yet in memory; return {key: reason} of those that failed (recorded
        in the state's ``failed`` with ``record``). ``paths``: CIFs of keys not (yet) in the
        state."""
        todo = [k for k in dict.fromkeys(keys) if k not in self._inputs]
        if not todo:
            return {}
        files = [Path(paths[k]) if paths and k in paths else self.path_of(k) for k in todo]
        inputs, errors = featurize_files(
            self.model().backbone, files, progress="featurize" if self.progress else False
        )
        failed = {}
        for k, x, err in zip(todo, inputs, errors, strict=True):
            if err is None:
                self._inputs[k] = x
            else:
                failed[k] = f"{err.reason}: {err.message}"
                if record:
                    self.state.failed[k] = failed[k]
        if failed:
            log.warning(
                "%d of %d structures failed featurization and are left out, e.g. %s",
                len(failed),
                len(todo),
                next(iter(failed.items())),
            )
        return failed

    def inputs_of(self, keys: Sequence[str]) -> list:
        """The backbone inputs of ``keys`` (labelled or pool structures, which featurized when they
        joined); ValueError if any no longer does. Nothing is recorded in the state: the error
        stops the step."""
        failed = self._featurize(keys, record=False)
        if failed:
            raise ValueError(
                f"{len(failed)} structure(s) of the campaign no longer featurize, e.g. "
                f"{next(iter(failed.items()))}"
            )
        return [self._inputs[k] for k in keys]

    # -- helpers -----------------------------------------------------------------------------------
    def _hook(self, point: str) -> None:
        if self.hook is not None:
            self.hook(point, self)

    def _seed(self, purpose: str) -> int:
        """A seed for ``purpose`` in the current round: a function of the campaign seed and round
        only."""
        tag = {"train": 1, "select": 2, "test": 3}[purpose]
        return int(np.random.SeedSequence([self.state.seed, self.round, tag]).generate_state(1)[0])

    def _rng(self) -> np.random.Generator:
        gen = np.random.Generator(np.random.PCG64())
        gen.bit_generator.state = self.state.rng_state
        return gen

    def _round_dir(self, round_: int) -> Path:
        return round_dir(self.dir, round_)

    def _last_trained_round(self) -> int:
        if not self.history:
            raise ValueError(f"campaign {self.dir} has no trained model yet")
        return int(self.history[-1]["round"])

    def _load_round_model(self, round_: int) -> None:
        if self._loaded_round != round_:
            if self.cfg.model.regime == "gbm" and not self.model_dir(round_).is_dir():
                self._refit_gbm(round_)
            self._load_model_from(self.model_dir(round_))
            self._loaded_round = round_

    def _refit_gbm(self, round_: int) -> None:
        """Fit the gradient-boosting model of round ``round_`` again when its folder is missing (a
        snapshot leaves it out, :mod:`mofbalora.al.snapshot`): the fit is a deterministic function
        of the labelled set, which is round ``round_``'s while the campaign is about to select."""
        last = self.history[-1] if self.history else {}
        if not (
            self.phase == "select"
            and last.get("round") == round_
            and last.get("n_labelled") == len(self.labelled)
        ):
            raise FileNotFoundError(
                f"campaign {self.dir}: the model of round {round_} ({self.model_dir(round_)}) is "
                f"missing and cannot be fitted again in phase {self.phase!r}"
            )
        self._fit_gbm(round_)

    def _load_model_from(self, directory: Path) -> None:
        """Load a saved round model into :meth:`model` (through io.read_checkpoint, with the base
        check), with its calibration and training domain when the folder has them (a start model's,
        carried on by every round warm-started from it: the domain stays that of the start
        model's training data)."""
        if self.cfg.model.regime == "gbm":
            self._model = GBMBandGapModel.load(
                directory, json.loads((directory / MODEL_CONFIG).read_text())
            )
            return
        model = self.model()
        saved = load_weights(model, directory)
        model.calibration = saved.get("calibration")
        domain = saved.get("training_domain")
        model.training_domain = (
            ApplicabilityDomain.from_config(domain, directory) if domain else None
        )

    def relative_dft_cost(self, n_atoms: Sequence[int]) -> np.ndarray:
        """DFT cost relative to a structure of the initial labelled set's median size (``~
        N^exponent``)."""
        counts = np.append(np.asarray(n_atoms, dtype=float), self.state.cost_ref_atoms)
        cost = dft_cost(n_atoms=counts, exponent=self.cfg.al.cost_exponent)
        return cost[:-1] / cost[-1]

    def _best_ev(self) -> float | None:
        gaps = np.array(list(self.labelled.values()))
        al = self.cfg.al
        if not gaps.size:
            return None
        if al.target_ev is not None:
            return float(gaps[np.argmin(window_distance(gaps, *al.target_ev))])
        return float(gaps.min() if al.goal == "min" else gaps.max())

    def _dataset_labels(self, keys: Sequence[str]):
        ds = self.dataset()
        return torch.tensor([ds.bandgaps_ev[ds.index_of(k)] for k in keys], dtype=torch.float32)

    # -- steps -------------------------------------------------------------------------------------
    def select(self, batch_size: int | None = None) -> list[dict]:
        """Pick the next batch (phase ``select`` → ``label``); returns its rows (ranked-CSV
        columns).

        Idempotent while the batch waits for labels: asked again, returns the pending batch (a
        different ``batch_size`` then raises ``ValueError``).
        """
        if self.phase == "label":
            if batch_size is not None and batch_size != len(self.pending):
                raise ValueError(
                    f"batch {self.round + 1} of {len(self.pending)} structures is already waiting "
                    f"for labels in {self.dir}; ingest its results before asking for {batch_size}"
                )
            return self.pending
        if self.phase != "select":
            raise ValueError(
                f"campaign {self.dir} must finish training round {self.round} before selecting"
            )
        if not self.pool:
            raise ValueError(f"the pool of campaign {self.dir} is empty; add candidates first")

        t0 = time.perf_counter()
        al = self.cfg.al
        k = min(int(batch_size or al.batch_size), len(self.pool))
        keys = list(self.pool)
        cfg = al.scoring(self._seed("select"))
        if self.mode == "simulated" and al.acquisition == "random" and RANDOM_SKIPS_DRAWS:
            # random's picks read no draw (its scores come from the rng; its eligible rows and
            # in-domain order from the noise-free pass's embedding), so a simulated round skips
            # the T draws over the pool: the same picks at ~1/15 of the cost (test_campaign.py)
            cfg = replace(cfg, n_samples=1)
        records = self._score_pool(keys, cfg)
        rng = self._rng()
        cost = self.relative_dft_cost([r["n_atoms"] for r in records])
        # the screen's ranking (robust median and capped spread, checks and domain policies,
        # in-domain first)
        table = rank(
            records, cfg, best_ev=self._best_ev(), rng=rng, cost=cost if al.cost_aware else None
        )
        embeddings = np.array([r["embedding"] for r in records]) if al.diversity != "none" else None
        picks = select_rows(
            table,
            k,
            embeddings=embeddings,
            diversity=al.diversity,
            penalty_radius=al.penalty_radius,
            kcenter_weight=al.kcenter_weight,
            rng=rng,
        )
        if len(picks) < k:
            log.warning(
                "only %d of the %d pool structures can be ranked (the rest are error rows: failed "
                "checks, out of domain, unreadable)",
                len(picks),
                len(records),
            )
        rows = []
        for position, i in enumerate(picks, 1):
            row = {col: _plain(table.iloc[i][col]) for col in BATCH_COLUMNS if col in table.columns}
            row.update(
                path=str(self.path_of(keys[i])),
                structure_id=keys[i],
                rank=position,
                round=self.round + 1,
                acquisition=al.acquisition,
                relative_dft_cost=float(cost[i]),
            )
            rows.append({col: row.get(col, "") for col in BATCH_COLUMNS})
        warning = self._warn_if_spread_negligible(table, picks)
        if self.mode == "real":  # what the score means, beside the batch CSV the user hands to DFT
            atomic_write_text(
                self.dir / f"batch_{self.round + 1:03d}.md",
                self.batch_note(self.round + 1, rows, warning),
            )
        self._hook("select")
        st = self.state
        st.phase, st.pending, st.rng_state = "label", rows, rng.bit_generator.state
        st.select_seconds = time.perf_counter() - t0
        self.save_state()
        return rows

    def _warn_if_spread_negligible(self, table, picks: list[int]) -> str | None:
        """Say so (log and return the warning) when the spread a spread-aware acquisition ranks by
        is negligible next to the differences of the predicted gaps: the batch is then picked by
        the predicted gap alone."""
        al = self.cfg.al
        if (
            al.acquisition
            not in ("lcb", "lcb_epistemic", "ucb", "std", "epistemic", "ei", "target")
            or not picks
        ):
            return None
        ok = table["rank"].notna().to_numpy()
        column = (
            "epistemic_std_ev"
            if al.acquisition in ("epistemic", "lcb_epistemic")
            else "bandgap_spread_ev"
        )
        spread = table.loc[ok, column].to_numpy(float)
        median = table.loc[ok, "bandgap_median_ev"].to_numpy(float)
        kappa = float(al.kappa) if al.acquisition in ("lcb", "lcb_epistemic", "ucb") else 1.0
        ranked_by = kappa * np.median(spread)
        if len(median) > 1 and ranked_by < NEGLIGIBLE_SPREAD * np.std(median):
            message = (
                f"acquisition {al.acquisition!r}: the spreads it ranks by ({column}, median "
                f"{np.median(spread):.2g} eV) are negligible against the spread of the predicted "
                f"gaps ({np.std(median):.2g} eV); this batch is ranked by the predicted gap alone"
            )
            log.warning("%s", message)
            return message
        return None

    def batch_note(self, round_: int, rows: Sequence[dict], warning: str | None) -> str:
        """The text of ``batch_NNN.md``: which model ranked the batch, what its ``score`` column
        means, and the negligible-spread warning when there is one."""
        al, st = self.cfg.al, self.state
        start = f", warm-started from {al.start_model}" if al.start_model else ""
        scores = [float(r["score"]) for r in rows if r.get("score") not in ("", None)]
        lines = [
            f"# Batch {round_:03d} of campaign {self.dir.name}",
            "",
            f"- model: round {round_ - 1} ({len(st.labelled)} labelled structures{start})",
            f"- pool: {len(st.pool)} candidates; {len(rows)} picked",
            f"- `score` ({al.acquisition}{', per relative DFT cost' if al.cost_aware else ''}): "
            f"{score_meaning(al.acquisition, al.kappa, al.goal, al.target_window)}"
            + (" Divided by `relative_dft_cost`." if al.cost_aware else ""),
            "- higher score = sent to DFT first; `rank` 1 is the best; in-domain rows rank before "
            f"out-of-domain ones (domain policy `{al.domain}`)",
        ]
        if scores:
            lines.append(f"- scores of this batch: {max(scores):.3g} (rank 1) to {min(scores):.3g}")
        lines.append("")
        lines.append(
            f"**Warning**: {warning}."
            if warning
            else "The spreads ranked by are not negligible "
            "against the differences of the predicted gaps."
        )
        return "\n".join(lines) + "\n"

    def _score_pool(self, keys: list[str], cfg: ScoringConfig) -> list[dict]:
        """One scored record per pool structure (:func:`mofbalora.scoring.score_chunk`'s form, with
        the pooled embedding): from the in-memory inputs (``batch``) or file by file, here or on
        Dask."""
        al = self.cfg.al
        if not al.per_structure:
            x = self.inputs_of(keys)
            self._load_round_model(self.round)
            model = self.model()
            pred = model.predict_inputs(x, n_samples=cfg.n_samples, seed=cfg.seed)
            records = [
                {
                    "key": key,
                    "path": str(self.path_of(key)),
                    "structure_id": key,
                    **prediction_record(
                        model,
                        pred,
                        j,
                        formula=xi.get("formula"),
                        n_atoms=xi["n_atoms"],
                        digest=xi.get("digest") or "",
                    ),
                }
                for j, (key, xi) in enumerate(zip(keys, x, strict=True))
            ]
            annotate(model, records, cfg, keep_embedding=True)
            return records

        paths = [self.path_of(k) for k in keys]
        for k, p in zip(keys, paths, strict=True):
            if k not in self._digests:
                self._digests[k] = file_digest(p)
        digests = [self._digests[k] for k in keys]
        by_digest: dict[str, dict] = {}
        cfg = replace(cfg, chunk_size=64)
        if al.dask is not None:
            from mofbalora.parallel.dask_screen import DaskExecutor

            executor = DaskExecutor(
                al.dask, str(self.model_dir(self.round)), trust_checkpoint=self.trust_checkpoint
            )
            model = None
        else:
            self._load_round_model(self.round)
            model = self.model()
            executor = InProcessExecutor(model)
        try:
            for _, records in score_files(
                model, paths, digests, keys, cfg, executor, with_embedding=True
            ):
                by_digest.update((r["key"], r) for r in records)
        finally:
            executor.close()
        recs = [{**by_digest[d], "structure_id": k} for k, d in zip(keys, digests, strict=True)]
        bad = [(k, r) for k, r in zip(keys, recs, strict=True) if r["status"] != "ok"]
        if bad:
            raise ValueError(
                f"{len(bad)} pool structure(s) no longer "
                f"featurize, e.g. {bad[0][0]}: {bad[0][1]['error']}"
            )
        return recs

    def add_labels(
        self, labels: Mapping[str, float], paths: Mapping[str, str | Path] | None = None
    ) -> list[str]:
        """Add PBE band gaps (eV) (phase ``select``/``label`` → ``train`` of the next round).

        A NaN gap marks a failed DFT calculation: the structure leaves the pool, counted as spent;
        any other gap must be a number in [0, 10] eV
        (:func:`~mofbalora.al.dft_results.check_gap_ev`, the check of ``al ingest`` too: ValueError
        naming the id otherwise, before anything changes). Ids outside the campaign need a CIF in
        ``paths`` and join as new labelled structures. Labels already in the campaign are skipped;
        pending structures without a label return to the pool. Returns the ids consumed (labelled or
        failed); when there are none nothing is committed. Raises ``ValueError`` for a label
        contradicting an existing one, a val/test id, or an unknown id without a path.

        All or nothing, on disk and in memory: the labels go into a copy of the state, which
        replaces :attr:`state` only once it is committed. A refused call, one that consumes nothing,
        or one interrupted before its commit leaves :attr:`state` as it was (new structures that
        failed featurization are recorded in ``failed`` only along with a commit).
        """
        if self.phase not in ("select", "label"):
            raise ValueError(
                f"campaign {self.dir} is training round {self.round}; finish it (train()) first"
            )
        st = copy.deepcopy(self.state)  # the next state
        reserved = set(st.val_ids) | set(st.test_ids)
        pool = set(st.pool)
        new, failed, unknown, added_paths = [], [], [], {}
        for key, gap in labels.items():
            try:
                gap = check_gap_ev(float(gap))
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"{key!r}: band gap {gap!r} refused: {exc} (NaN = a failed calculation)"
                ) from None
            if key in reserved:
                raise ValueError(
                    f"{key!r} is a validation/test structure of the campaign; it cannot be labelled"
                )
            if key in self.labelled:
                if math.isfinite(gap) and not math.isclose(gap, self.labelled[key], abs_tol=1e-9):
                    raise ValueError(
                        f"{key!r} is already labelled with {self.labelled[key]} eV, got {gap} eV"
                    )
                continue
            if key in st.failed:
                log.warning(
                    "%s: no label added for %s, which failed before (%s)",
                    self.dir,
                    key,
                    st.failed[key],
                )
                continue
            if key not in pool:
                if not paths or key not in paths:
                    unknown.append(key)
                    continue
                added_paths[key] = str(Path(paths[key]).resolve())
            (new if math.isfinite(gap) else failed).append(key)
        if unknown:
            raise ValueError(
                f"{len(unknown)} id(s) are neither in the pool nor given with a CIF path, "
                f"e.g. {unknown[:3]}"
            )
        cached = set(self._inputs)
        if added_paths:
            bad = self._featurize(list(added_paths), paths=added_paths, record=False)
            st.paths.update(added_paths)
            st.failed.update(bad)
            new = [k for k in new if k not in bad]
            failed = [k for k in failed if k not in bad]
        if not new and not failed:
            return []
        done = set(new) | set(failed)
        for key in new:
            st.labelled[key] = float(labels[key])
        for key in failed:
            st.failed[key] = "dft_failed"
        st.acquired += new + failed
        st.round, st.phase, st.pending = self.round + 1, "train", []
        st.round_picked, st.round_failed = new, failed
        st.pool = [k for k in st.pool if k not in done]
        try:
            self._hook("label")
            st.write(self.dir)
        # not committed: forget the new structures' inputs too (their ids may be reused)
        except BaseException:
            for key in set(self._inputs) - cached:
                del self._inputs[key]
            raise
        self.state = st
        return new + failed

    def label_pending(self) -> list[str]:
        """Simulated mode: label the pending batch with the dataset's (hidden) PBE gaps."""
        if self.mode != "simulated":
            raise ValueError(
                f"campaign {self.dir} is a real campaign: its labels come from DFT (al ingest)"
            )
        ds = self.dataset()
        return self.add_labels(
            {
                r["structure_id"]: float(ds.bandgaps_ev[ds.index_of(r["structure_id"])])
                for r in self.pending
            }
        )

    def train(self) -> dict:
        """Train the model of the current round (phase ``train`` → ``select``); returns its history
        row.

        Round 0 starts from fresh adapters (a campaign with ``al.start_model`` never trains round 0:
        it is that model); later rounds from the previous round's best model (``al.warm_start``),
        for at most ``al.round_epochs`` epochs at peak learning rate ``al.round_lr`` with patience
        ``al.round_patience``; with ``al.round_keep_start`` the model a round starts from is its
        epoch 0, so a round never ends worse on validation than it began. Interrupted
        training resumes from the round's last epoch checkpoint. The gradient-boosting baseline
        (``model.regime: gbm``) is refitted on the labelled set each round (deterministic).
        """
        if self.phase != "train":
            raise ValueError(f"campaign {self.dir} has nothing to train (phase {self.phase!r})")

        r, al = self.round, self.cfg.al
        if self.cfg.model.regime == "gbm":
            best_val, best_epoch, seconds = self._fit_gbm(r)
            return self._finish_round(r, best_val, best_epoch, seconds)
        # this round's training: its own seed, and al.round_epochs / al.round_patience after round 0
        epochs = int(al.round_epochs) if r > 0 and al.round_epochs else self.cfg.optim.epochs
        patience = (
            int(al.round_patience) if r > 0 and al.round_patience else self.cfg.optim.patience
        )
        lr = float(al.round_lr) if r > 0 and al.round_lr is not None else self.cfg.optim.lr
        cfg = replace(
            self.cfg,
            run=replace(self.cfg.run, seed=self._seed("train")),
            optim=replace(self.cfg.optim, epochs=epochs, patience=patience, lr=lr),
        )
        model = self.model()
        from_trained = True
        if r > 0 and al.warm_start:
            self._load_model_from(self.model_dir(self._last_trained_round()))  # with the base check
        # a campaign from a trained model restarts from it, never from fresh adapters
        elif al.start_model:
            self._load_model_from(self.model_dir(0))
        else:
            model.load_trained_state(self._initial_state)
            from_trained = False
        self._loaded_round = None
        torch.manual_seed(cfg.run.seed)
        run_dir = self._round_dir(r)
        trainer = Trainer(cfg, run_dir, model=model)
        if not trainer.load_state():
            (run_dir / "metrics.csv").unlink(missing_ok=True)
        keys = list(self.labelled)
        tr_x = self.inputs_of(keys)
        tr_y = torch.tensor([self.labelled[k] for k in keys], dtype=torch.float32)
        va_x, va_y = self.inputs_of(self.state.val_ids), self._dataset_labels(self.state.val_ids)
        trainer.fit(
            tr_x,
            tr_y,
            va_x,
            va_y,
            progress=False,
            on_epoch_end=lambda _: self._hook("epoch"),
            keep_start=from_trained and bool(al.round_keep_start),
        )
        return self._finish_round(
            r, float(trainer.best_val), trainer.best_epoch, trainer.train_seconds
        )

    def _fit_gbm(self, r: int) -> tuple[float, None, float]:
        """Fit the gradient-boosting baseline on the labelled set (deterministic: nothing to resume)
        and save it as round ``r``'s model; (validation MAE, no epoch, seconds)."""
        model = self.model()
        keys = list(self.labelled)
        t0 = time.perf_counter()
        model.fit(self.inputs_of(keys), np.array([self.labelled[k] for k in keys]))
        seconds = time.perf_counter() - t0
        val = model.predict_inputs(self.inputs_of(self.state.val_ids))
        val_mae = float(
            np.abs(val.mean_ev - self._dataset_labels(self.state.val_ids).double().numpy()).mean()
        )
        model.save(
            self.model_dir(r),
            metadata={"round": r, "val_mae_ev": val_mae, "train_seconds": seconds},
        )
        self._loaded_round = None
        return val_mae, None, seconds

    def _finish_round(
        self, r: int, best_val: float, best_epoch: int | None, train_seconds: float
    ) -> dict:
        """Measure round ``r``'s model, append its history row and commit phase ``select``."""
        self._load_round_model(r)
        t0 = time.perf_counter()
        row = self._history_row(best_val, best_epoch)
        row["seconds"] = {
            "select": self.state.select_seconds,
            "train": train_seconds,
            "evaluate": time.perf_counter() - t0,
        }
        self._hook("train")
        self.state.history.append(row)
        st = self.state
        st.phase, st.round_picked, st.round_failed, st.select_seconds = "select", [], [], 0.0
        self.save_state()
        log.info(
            "%s round %d: %d labelled, %d low-gap found of %d acquired, test MAE %s eV",
            self.state.name or self.dir.name,
            r,
            row["n_labelled"],
            row["n_low_gap_found"],
            row["n_acquired"],
            "n/a" if row["test_mae_ev"] is None else f"{row['test_mae_ev']:.3f}",
        )
        return row

    def _history_row(self, best_val: float, best_epoch: int | None) -> dict:
        st, al = self.state, self.cfg.al
        acquired_gaps = [self.labelled[k] for k in st.acquired if k in self.labelled]
        row = {
            "round": self.round,
            "n_labelled": len(self.labelled),
            "n_acquired": len(st.acquired),
            "n_low_gap_found": int(sum(g < al.low_gap_ev for g in acquired_gaps)),
            "relative_dft_cost": float(
                self.relative_dft_cost([x["n_atoms"] for x in self.inputs_of(st.acquired)]).sum()
            )
            if st.acquired
            else 0.0,
            "n_pool": len(self.pool),
            "val_mae_ev": float(best_val),
            "best_epoch": best_epoch,
            "test_mae_ev": None,
            "test_rmse_ev": None,
            "test_spearman_std_abs_error": None,
            "picked": list(st.round_picked),
            "picked_bandgaps_ev": [self.labelled[k] for k in st.round_picked],
            "dft_failed": list(st.round_failed),
        }
        if st.test_ids:
            pred = self.model().predict_inputs(
                self.inputs_of(st.test_ids), n_samples=al.n_samples, seed=self._seed("test")
            )
            m = metrics_from_prediction(
                pred, self._dataset_labels(st.test_ids).double().numpy(), al.n_samples
            )
            for key in ("mae_ev", "rmse_ev", "spearman_std_abs_error"):
                row[f"test_{key}"] = float(m[key]) if math.isfinite(m[key]) else None
        return row

    def step(self) -> bool:
        """Do the next step; ``False`` when the next step needs outside input (real-mode labels)."""
        if self.phase == "train":
            self.train()
        elif self.phase == "select":
            self.select()
        elif self.mode == "simulated":
            self.label_pending()
        else:
            return False
        return True

    def run(self, n_rounds: int | None = None) -> list[dict]:
        """Run (or resume) until round ``n_rounds`` (default ``al.n_rounds``) is trained or the pool
        is empty; round 0 is the initial model. Returns the history."""
        target = self.cfg.al.n_rounds if n_rounds is None else int(n_rounds)
        while not (self.phase == "select" and (self.round >= target or not self.pool)):
            if not self.step():
                break
        return self.history


def score_meaning(
    acquisition: str, kappa: float, goal: str = "min", target: tuple[float, float] | None = None
) -> str:
    """What a batch's ``score`` column means for ``acquisition`` (m: the median predicted gap,
    ``bandgap_median_ev``; s: the capped spread, ``bandgap_spread_ev``; both eV)."""
    k = f"{kappa:g}"
    window = f"[{target[0]:g}, {target[1]:g}] eV" if target else "the window"
    meanings = {
        "lcb": f"κ·s − m with κ = {k}: minus the optimistic (lower-bound) gap m − κ·s, in eV; a "
        "score of −2.13 means the candidate's optimistic gap is 2.13 eV, so the most negative "
        "scores are the least promising",
        "ucb": f"m + κ·s with κ = {k}: the optimistic (upper-bound) gap, in eV",
        "std": "s, the total predictive spread (eV): uncertainty sampling, blind to the gap itself",
        "epistemic": (
            "half the 16-84 % range of the T BaLoRA draws (eV), the model's own uncertainty"
        ),
        "lcb_epistemic": f"κ·s_epi − m with κ = {k}, s_epi the half 16-84 % range of the draws: "
        "minus an optimistic gap that counts only the model's own uncertainty, in eV",
        "target": f"the probability that the gap lies in {window} under N(m, s²)",
        "ei": (
            f"the expected improvement (eV) over the best labelled gap ({goal} goal) under N(m, s²)"
        ),
        "thompson": (
            "one posterior draw of the gap, signed so that higher is better for the goal (eV)"
        ),
        "mean": (
            "−m: greedy, the smallest predicted gap first (eV)"
            if goal == "min"
            else "m: greedy, the largest predicted gap first (eV)"
        ),
        "random": "a uniform random number: no model information (the baseline)",
    }
    return (
        meanings.get(acquisition, f"the {acquisition!r} acquisition score (mofbalora.acquisition)")
        + "."
    )


# ------------------------------------------------------------------------------------------------
# making campaigns
# ------------------------------------------------------------------------------------------------


def initial_draw(cfg: CampaignConfig | Mapping[str, Any], dataset=None):
    """(dataset, split ids, initial labelled ids, rest of the train part, generator) for ``cfg``
    (``dataset``: the one ``cfg.data`` names, already loaded)."""
    cfg = campaign_config(cfg)
    ds, ids = split_ids(cfg)
    ds = dataset if dataset is not None else ds
    rng = np.random.default_rng(int(cfg.run.seed))
    train = list(ids["train"])
    n0 = int(cfg.al.initial_labelled)
    if n0 >= len(train):
        raise ValueError(
            f"al.initial_labelled={n0} leaves no pool in a train part of {len(train)} structures"
        )
    order = rng.permutation(len(train))
    return ds, ids, [train[k] for k in order[:n0]], [train[k] for k in order[n0:]], rng


def simulated_campaign(
    state_dir: str | Path,
    cfg: CampaignConfig | Mapping[str, Any],
    *,
    name: str = "",
    progress: bool = False,
    hook: Callable[[str, Campaign], None] | None = None,
    trust_checkpoint: bool = False,
    inputs: dict | None = None,
    dataset=None,
) -> Campaign:
    """A campaign on a labelled dataset with hidden labels: ``al.initial_labelled`` random
    structures of the split's train part are labelled, the rest is the pool; val and test parts
    stay outside."""
    cfg = campaign_config(cfg)
    ds, ids, labelled, pool, rng = initial_draw(cfg, dataset)
    return Campaign.create(
        state_dir,
        cfg,
        labelled=labelled,
        pool=pool,
        val_ids=ids["val"],
        test_ids=ids["test"],
        mode="simulated",
        name=name,
        rng=rng,
        dataset=ds,
        hook=hook,
        progress=progress,
        trust_checkpoint=trust_checkpoint,
        inputs=inputs,
    )


def _plain(value):
    """A table cell as a plain JSON value (NA → empty, numpy scalars → Python)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    return value.item() if hasattr(value, "item") else value
