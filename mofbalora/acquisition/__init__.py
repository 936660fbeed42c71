"""Acquisition: score candidates by a predictive distribution and pick a batch for DFT.

Below both the screen (which ranks candidate files by a score) and active learning (which picks each
round's batch): :mod:`~mofbalora.acquisition.functions` maps means, stds and samples (eV) to scores,
:mod:`~mofbalora.acquisition.batch` picks a batch, optionally diverse in structure embeddings.
"""

from mofbalora.acquisition.batch import DIVERSITY_RULES, select_batch, standardize_embeddings
from mofbalora.acquisition.functions import (
    ACQUISITIONS,
    GOALS,
    acquisition_scores,
    cost_aware,
    dft_cost,
    window_distance,
)

__all__ = [
    "ACQUISITIONS",
    "DIVERSITY_RULES",
    "GOALS",
    "acquisition_scores",
    "cost_aware",
    "dft_cost",
    "select_batch",
    "standardize_embeddings",
    "window_distance",
]
