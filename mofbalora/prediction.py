"""The one prediction layer: T stochastic passes, ensemble members, and what a spread means.

Everything that turns a model's forward passes into band gaps with an uncertainty lives here, and
every caller (evaluate, compare, screen, the campaign, fine-tuning's validation) goes through it:

* :func:`predict_inputs` runs the passes: a stochastic model (BaLoRA, MC dropout) draws
  ``n_samples`` passes, stacked so that T copies of a batch share one forward; an ensemble runs each
  member; a deterministic model runs once;
* :class:`Prediction` holds the result (eV) and combines the spreads: the total std is
  ``sqrt(epistemic² + aleatoric²)`` (:func:`total_std`), the epistemic part the spread of the draws
  and the aleatoric part the model's predicted noise (a ``gaussian_nll`` or ``laplace_nll`` head),
  averaged over the draws;
* :data:`MIN_STD_EV` floors a std before anything divides by it (:func:`floor_std`), and
  :func:`calibrated_std` applies a model's validation-fitted recalibration to the floored std;
* :meth:`Prediction.predictive` states the prediction as a distribution in its family (Gaussian,
  Laplace, or the mixture over the T draws; :mod:`mofbalora.uq.distribution`), recalibrated by a
  model's calibration, and :meth:`Prediction.intervals` gives its central 68 % / 95 % intervals;
* :meth:`Prediction.to_record` / :meth:`Prediction.from_records` carry a prediction through JSON
  records (the screen's rows, Dask workers, the campaign's pool) without losing its aleatoric part.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from mofbalora.adapters import sampling, seeded_generator
from mofbalora.adapters.context import structure_keys
from mofbalora.backbones.base import atom_capped_batches
from mofbalora.uq.distribution import (
    Predictive,
    family_of_calibration,
    make_predictive,
    predictive_intervals,
)
from mofbalora.uq.recalibration import apply_std_scale_floor, calibrated_predictive

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

#: smallest std (eV) a prediction is scored or recalibrated with: a structure whose every draw
#: saturated at a 0 eV gap has a std of exactly 0, which must not void a model's uncertainty metrics
MIN_STD_EV = 1e-6


def total_std(epistemic, aleatoric=None):
    """``sqrt(epistemic² + aleatoric²)`` (either numpy arrays or torch tensors); ``aleatoric``
    None: none."""
    if aleatoric is None:
        aleatoric = 0.0
    total = epistemic**2 + aleatoric**2
    return total.sqrt() if isinstance(total, torch.Tensor) else np.sqrt(total)


def floor_std(std_ev: np.ndarray) -> np.ndarray:
    """``std_ev`` with every value below :data:`MIN_STD_EV` raised to it."""
    return np.maximum(std_ev, MIN_STD_EV)


def recalibrate(calibration: dict | None, std_ev: np.ndarray) -> np.ndarray | None:
    """``sqrt((a·σ)² + b²)`` with a fitted ``{"std_factor": a, "std_floor_ev": b, ...}`` (eV);
    None without one."""
    if not calibration:
        return None
    return apply_std_scale_floor(std_ev, calibration["std_factor"], calibration["std_floor_ev"])


def calibrated_std(model: Any, std_ev: np.ndarray) -> np.ndarray | None:
    """The model's recalibrated std (``sqrt((a·σ)² + b²)`` on the floored ``std_ev``, eV); None when
    the model has no fitted calibration."""
    return model.calibrated_std(floor_std(np.asarray(std_ev, dtype=float)))


@dataclass
class Prediction:
    """Per-structure predictions in eV. ``samples_ev`` is (n, T) (T = members for an ensemble)."""

    mean_ev: np.ndarray
    std_ev: np.ndarray
    samples_ev: np.ndarray
    epistemic_std_ev: np.ndarray
    aleatoric_std_ev: np.ndarray | None
    embedding: np.ndarray

    def __len__(self) -> int:
        return len(self.mean_ev)

    def subsample(self, n_samples: int) -> Prediction:
        """The prediction of the first ``n_samples`` columns of :attr:`samples_ev` (mean and spread
        of those draws, ddof = 1 as in :func:`predict_inputs`, so the T-curve of
        :mod:`mofbalora.compare` does not change definition at its last point; the aleatoric part
        stays the average over all draws). All columns: ``self``.
        """
        total = self.samples_ev.shape[1]
        if not 1 <= n_samples <= total:
            raise ValueError(
                f"n_samples must be in [1, {total}] (the columns of samples_ev), got {n_samples}"
            )
        if n_samples == total:
            return self
        draws = self.samples_ev[:, :n_samples]
        epistemic = draws.std(1, ddof=1) if n_samples > 1 else np.zeros(len(draws))
        return replace(
            self,
            mean_ev=draws.mean(1),
            std_ev=total_std(epistemic, self.aleatoric_std_ev),
            samples_ev=draws,
            epistemic_std_ev=epistemic,
        )

    def take(self, index: Sequence[int]) -> Prediction:
        """The prediction of the structures ``index`` (positions, in that order)."""
        index = np.asarray(index, dtype=np.int64)
        alea = None if self.aleatoric_std_ev is None else self.aleatoric_std_ev[index]
        return Prediction(
            self.mean_ev[index],
            self.std_ev[index],
            self.samples_ev[index],
            self.epistemic_std_ev[index],
            alea,
            self.embedding[index],
        )

    def predictive(self, calibration: dict | None = None, family: str | None = None) -> Predictive:
        """The predictive distribution (:mod:`mofbalora.uq.distribution`) in ``family`` (default:
        the one ``calibration`` was fitted in; none: ``"gaussian"``), with ``calibration`` (a
        model's :attr:`~mofbalora.model.BandGapModel.calibration`) applied when given. ``gaussian``
        / ``laplace`` use the mean and the total std (floored at :data:`MIN_STD_EV`); ``mixture``
        the draws with the aleatoric std as each draw's kernel (a ValueError without an aleatoric
        head)."""
        fam = family or family_of_calibration(calibration)
        dist = make_predictive(
            fam,
            self.mean_ev,
            floor_std(self.std_ev),
            samples_ev=self.samples_ev,
            aleatoric_std_ev=self.aleatoric_std_ev,
            kernel=(calibration or {}).get("kernel", "laplace"),
        )
        return calibrated_predictive(dist, calibration)

    def intervals(
        self, calibration: dict | None = None, family: str | None = None
    ) -> dict[str, np.ndarray]:
        """``bandgap_lo68_ev``, ``bandgap_hi68_ev``, ``bandgap_lo95_ev``, ``bandgap_hi95_ev`` (eV)
        of the calibrated predictive (:func:`mofbalora.uq.distribution.predictive_intervals`;
        lower bounds >= 0)."""
        return predictive_intervals(
            self.mean_ev,
            floor_std(self.std_ev),
            calibration,
            samples_ev=self.samples_ev,
            aleatoric_std_ev=self.aleatoric_std_ev,
            family=family,
        )

    def table(self, ids: Sequence[str], y_true: np.ndarray) -> pd.DataFrame:
        """One row per structure: id, true and predicted gap, std, absolute error (and the two parts
        of the std when the model has an aleatoric head)."""
        table = pd.DataFrame(
            {
                "id": ids,
                "bandgap_true_ev": y_true,
                "bandgap_mean_ev": self.mean_ev,
                "bandgap_std_ev": self.std_ev,
                "abs_error_ev": np.abs(self.mean_ev - y_true),
            }
        )
        if self.aleatoric_std_ev is not None:
            table["epistemic_std_ev"] = self.epistemic_std_ev
            table["aleatoric_std_ev"] = self.aleatoric_std_ev
        return table

    def to_record(self, j: int) -> dict:
        """Structure ``j`` as plain JSON values (the screen's per-file record fields)."""
        rec = {
            "bandgap_mean_ev": float(self.mean_ev[j]),
            "bandgap_std_ev": float(self.std_ev[j]),
            "samples_ev": self.samples_ev[j].tolist(),
            "epistemic_std_ev": float(self.epistemic_std_ev[j]),
        }
        if self.aleatoric_std_ev is not None:
            rec["aleatoric_std_ev"] = float(self.aleatoric_std_ev[j])
        return rec

    @classmethod
    def from_records(cls, records: Sequence[dict]) -> Prediction:
        """The prediction back from :meth:`to_record` records (with an ``embedding`` each). Records
        written before they carried ``epistemic_std_ev`` get the (ddof = 1) spread of their
        draws."""
        samples = np.array([r["samples_ev"] for r in records], dtype=np.float64)
        epistemic = (
            np.array([r["epistemic_std_ev"] for r in records], dtype=np.float64)
            if all("epistemic_std_ev" in r for r in records)
            else samples.std(1, ddof=1)
        )
        aleatoric = (
            np.array([r["aleatoric_std_ev"] for r in records], dtype=np.float64)
            if records and all("aleatoric_std_ev" in r for r in records)
            else None
        )
        return cls(
            np.array([r["bandgap_mean_ev"] for r in records]),
            np.array([r["bandgap_std_ev"] for r in records]),
            samples,
            epistemic,
            aleatoric,
            np.array([r["embedding"] for r in records], dtype=np.float32),
        )


@torch.no_grad()
def predict_inputs(
    model: Any,
    inputs: list,
    *,
    n_samples: int = 32,
    seed: int | None = 0,
    batch_size: int = 64,
    max_rows: int = 8192,
) -> Prediction:
    """Predict featurized inputs with a :class:`~mofbalora.model.BandGapModel`.

    Stochastic regimes draw ``n_samples`` passes (batched: the T copies of a batch are stacked, each
    copy its own set of structures), an ensemble runs each member; deterministic regimes give std 0
    (or the aleatoric std). BaLoRA's draw t of a structure is keyed by (``seed``, the structure's
    content digest, t), so a structure gets the same samples alone or in any batch (MC-dropout masks
    come from a generator seeded by ``seed`` and do depend on the batch). The std over samples uses
    T − 1 (ddof = 1). ``max_rows``: most atom rows in one stacked pass: the T draws of a chunk run
    a few structures at a time with all their copies stacked (:func:`draw_groups`), so that the
    frozen work of a structure is done once for its draws (the all-layer head's frozen columns, the
    readout's first layer, the cut block's pre-activations); a structure whose T copies exceed it
    splits them. 8,192 is measured: on the all-layer default at T = 32, 13.4 ms per structure with
    it, 13.5 with 16,384 and 15.0 with 32,768 (1 CPU thread, 150 QMOF structures); the draws do not
    change.
    """
    model.eval()
    gen = seeded_generator(seed)
    noise_seed = int(torch.randint(0, 2**31 - 1, ())) if seed is None else int(seed)
    position = 0
    means, samples, alea, embs = [], [], [], []
    cap = model.backbone.max_batch_atoms
    draw_cap = getattr(model.backbone, "max_draw_atoms", None) or cap
    if draw_cap is not None:
        max_rows = min(max_rows, draw_cap)
    for chunk in atom_capped_batches(inputs, batch_size, cap):
        b = len(chunk)
        digests = [x.get("digest") if isinstance(x, dict) else None for x in chunk]
        fallback = list(range(position, position + b))
        position += b
        with sampling(stochastic=False, member=0 if model.n_members > 1 else None):
            gap, var, pooled = model(model.backbone.collate(chunk))
        embs.append(pooled)
        if model.regime == "lora_ensemble":
            draw, var_draw = member_passes(model, model.backbone.collate(chunk))
        elif model.is_stochastic:
            draw, var_draw = _stacked_passes(
                model,
                chunk,
                digests,
                fallback,
                n_samples,
                max_rows,
                gen,
                noise_seed,
                var is not None,
            )
        else:
            draw, var_draw = gap.unsqueeze(1), (var.unsqueeze(1) if var is not None else None)
        samples.append(draw)
        # the posterior-mean pass is the point prediction of deterministic regimes; stochastic ones
        # use the sample mean (a Monte Carlo estimate of the predictive mean)
        means.append(draw.mean(1) if draw.shape[1] > 1 else gap)
        alea.append(var_draw.mean(1) if var_draw is not None else None)
    samples_t = torch.cat(samples).cpu()
    epi = samples_t.std(1, unbiased=True) if samples_t.shape[1] > 1 else torch.zeros(len(inputs))
    alea_std = torch.cat(alea).sqrt().cpu() if alea and alea[0] is not None else None
    total = total_std(epi, alea_std)
    return Prediction(
        torch.cat(means).cpu().numpy().astype(np.float64),
        total.numpy().astype(np.float64),
        samples_t.numpy().astype(np.float64),
        epi.numpy().astype(np.float64),
        None if alea_std is None else alea_std.numpy().astype(np.float64),
        torch.cat(embs).cpu().numpy(),
    )


def member_passes(model: Any, batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, K) gaps and aleatoric variances (None without an aleatoric head) of the K ensemble
    members on a collated batch, each member's noise-free pass."""
    draws, dvars = [], []
    for k in range(model.n_members):
        with sampling(stochastic=False, member=k):
            g, v, _ = model(batch)
        draws.append(g)
        dvars.append(v)
    return torch.stack(draws, 1), (torch.stack(dvars, 1) if dvars[0] is not None else None)


def point_prediction(model: Any, batch: Any) -> torch.Tensor:
    """(B,) gaps of the posterior-mean (noise-free) pass on a collated batch; an ensemble's
    member mean."""
    if model.n_members > 1:
        return member_passes(model, batch)[0].mean(1)
    with sampling(stochastic=False):
        return model(batch)[0]


def draw_groups(sizes: Sequence[int], n_samples: int, max_rows: int) -> list[tuple[int, int]]:
    """Consecutive runs ``(start, stop)`` of structures (atom counts ``sizes``) whose
    ``n_samples`` stacked copies fit in ``max_rows`` atom rows (at least one structure each): all
    the draws of a few structures in one pass, so that a backbone that keeps one copy of repeated
    inputs (:meth:`~mofbalora.backbones.chgnet.CHGNetBackbone.collate`) does their frozen work
    once for all draws."""
    groups, start, rows = [], 0, 0
    for k, n in enumerate(sizes):
        if k > start and (rows + n) * n_samples > max_rows:
            groups.append((start, k))
            start, rows = k, 0
        rows += n
    if start < len(sizes):
        groups.append((start, len(sizes)))
    return groups


def _stacked_passes(
    model: Any,
    chunk: list,
    digests: list,
    fallback: list[int],
    n_samples: int,
    max_rows: int,
    gen: torch.Generator,
    noise_seed: int,
    with_var: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, T) gaps and aleatoric variances of T stochastic passes: the chunk's structures in
    :func:`draw_groups`, each group's copies stacked in as few forwards as ``max_rows`` atom rows
    allow (a structure's draws are keyed by its content and pass, so the grouping does not change
    them)."""
    sizes = [x["n_atoms"] for x in chunk]
    draws, dvars = [], []
    for lo, hi in draw_groups(sizes, n_samples, max_rows):
        group, b = chunk[lo:hi], hi - lo
        per = max(1, min(n_samples, max_rows // max(sum(sizes[lo:hi]), 1)))
        parts, vparts = [], []
        for t0 in range(0, n_samples, per):
            t = min(per, n_samples - t0)
            passes = [t0 + j for j in range(t) for _ in range(b)]
            keys = structure_keys(digests[lo:hi] * t, passes, fallback[lo:hi] * t)
            with sampling(
                stochastic=True, generator=gen, noise_seed=noise_seed, structure_keys=keys
            ):
                g, v, _ = model(model.backbone.collate(group * t))
            parts.append(g.view(t, b).T)
            vparts.append(v.view(t, b).T if v is not None else None)
        draws.append(torch.cat(parts, 1))
        dvars.append(torch.cat(vparts, 1) if with_var else None)
    return torch.cat(draws), (torch.cat(dvars) if with_var else None)


def weights_fingerprint(named_arrays: Iterable[tuple[str, Any]], calibration: dict | None) -> str:
    """sha256 (hex, first 16) over named arrays (tensors or numpy) and a calibration dict."""
    h = hashlib.sha256()
    for name, value in named_arrays:
        h.update(name.encode())
        if hasattr(value, "detach"):
            value = value.detach().cpu().contiguous().numpy()
        h.update(
            np.ascontiguousarray(value).tobytes() if isinstance(value, np.ndarray) else bytes(value)
        )
    h.update(json.dumps(calibration, sort_keys=True).encode())
    return h.hexdigest()[:16]
