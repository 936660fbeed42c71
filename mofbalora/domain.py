"""Applicability domain: how far a structure is from what the model was trained on.

Two tests, both stored with the model (``model_config.json`` key ``training_domain``, plus
``domain.safetensors`` for the embedding part; no pickles):

1. **Elements.** ``element_counts``: for each element, how many training structures contain it. A
   structure with an element no training structure had (``unseen_elements``) is out of domain: the
   model has never seen that atom type in a band-gap context.
2. **Embedding distance.** The model's pooled structure embedding (``Prediction.embedding``) is
   standardized with the training set's per-dimension mean and std; ``domain_distance`` is the mean
   Euclidean distance to the ``k`` (5) nearest of a seeded subsample (at most 2,000) of the
   standardized training embeddings. The threshold is the 95th percentile of the same distance over
   the validation split, so 5 % of in-distribution structures fall outside by construction;
   ``in_domain`` is False above it.

``in_domain`` = no unseen element and (distance <= threshold, or no embedding reference stored). A
model without any ``training_domain`` gives ``in_domain`` = NA (unknown), which the screen ranks as
in domain. How the screen treats out-of-domain rows is :data:`DOMAIN_POLICIES` (see
:func:`mofbalora.screen.rank_rows`).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from mofbalora.io import atomic_write_bytes

DomainPolicy = Literal["rank-separately", "exclude", "ignore"]
DOMAIN_POLICIES: tuple[str, ...] = ("rank-separately", "exclude", "ignore")
#: out-of-domain rows are ranked after every in-domain row (each group by its own score)
DEFAULT_DOMAIN_POLICY: DomainPolicy = "rank-separately"
#: the ``error`` reason of a row excluded by ``domain="exclude"``
OUT_OF_DOMAIN_REASON = "out_of_domain"
DOMAIN_FILE = "domain.safetensors"
_SYMBOL = re.compile(r"[A-Z][a-z]?")


def domain_policy(policy: str) -> DomainPolicy:
    """``policy`` validated (rank-separately | exclude | ignore)."""
    if policy not in DOMAIN_POLICIES:
        raise ValueError(f"unknown domain policy {policy!r}; choose from {list(DOMAIN_POLICIES)}")
    return policy  # type: ignore[return-value]


@dataclass
class ApplicabilityDomain:
    """A model's training domain: element counts, and optionally a standardized embedding
    reference."""

    element_counts: dict[str, int]
    n_structures: int
    source: str = ""
    k: int = 5
    center: np.ndarray | None = None  # (p,) training embedding mean
    scale: np.ndarray | None = None  # (p,) training embedding std (floored)
    reference: np.ndarray | None = None  # (m, p) standardized training embeddings (subsample)
    threshold: float | None = None  # distance above which a structure is out of domain
    threshold_quantile: float | None = None
    fitted_on: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def has_embedding(self) -> bool:
        return self.reference is not None and self.threshold is not None

    # -- tests -----------------------------------------------------------------------------------
    def unseen_elements(self, elements: Iterable[str]) -> list[str]:
        """Elements of a structure that no training structure contains (sorted)."""
        return sorted({e for e in elements if self.element_counts.get(e, 0) == 0})

    def distances(self, embeddings: np.ndarray, batch: int = 256) -> np.ndarray:
        """Mean distance (standardized units) of each embedding (n, p) to its k nearest reference
        rows."""
        if not self.has_embedding:
            raise ValueError(
                "this training domain has no embedding "
                "reference (fit it with scripts/fit_domain.py)"
            )
        x = (np.asarray(embeddings, dtype=np.float64) - self.center) / self.scale
        return _knn_mean_distance(x, self.reference, self.k, batch)

    def assess(
        self, elements: Sequence[Iterable[str]], embeddings: np.ndarray | None
    ) -> list[dict]:
        """Per structure: ``unseen_elements`` ("a;b"), ``domain_distance`` (NaN without a reference)
        and ``in_domain`` (bool)."""
        dist = (
            self.distances(embeddings)
            if self.has_embedding and embeddings is not None
            else np.full(len(elements), np.nan)
        )
        out = []
        for els, d in zip(elements, dist, strict=True):
            unseen = self.unseen_elements(els)
            far = bool(np.isfinite(d) and d > self.threshold)
            out.append(
                {
                    "unseen_elements": ";".join(unseen),
                    "domain_distance": float(d),
                    "in_domain": not unseen and not far,
                }
            )
        return out

    # -- persistence -----------------------------------------------------------------------------
    def to_config(self) -> dict:
        """The JSON part (``model_config.json`` key ``training_domain``)."""
        cfg = {
            "element_counts": dict(sorted(self.element_counts.items())),
            "n_structures": self.n_structures,
            "source": self.source,
        }
        if self.has_embedding:
            cfg["embedding"] = {
                "k": self.k,
                "threshold": self.threshold,
                "threshold_quantile": self.threshold_quantile,
                "n_reference": int(self.reference.shape[0]),
                "fitted_on": self.fitted_on,
                "file": DOMAIN_FILE,
            }
        return {**cfg, **self.extra}

    def save_tensors(self, directory: str | Path) -> Path | None:
        """Write ``domain.safetensors`` (center, scale, reference) atomically; None without an
        embedding part."""
        if not self.has_embedding:
            return None
        from safetensors.numpy import save

        path = Path(directory) / DOMAIN_FILE
        atomic_write_bytes(
            path,
            save(
                {
                    "center": self.center.astype(np.float32),
                    "scale": self.scale.astype(np.float32),
                    "reference": self.reference.astype(np.float32),
                }
            ),
        )
        return path

    @classmethod
    def from_config(cls, cfg: dict, directory: str | Path | None = None) -> ApplicabilityDomain:
        """Rebuild from the JSON part and, when it names one, ``domain.safetensors`` in
        ``directory``."""
        known = {"element_counts", "n_structures", "source", "embedding"}
        dom = cls(
            element_counts={str(k): int(v) for k, v in cfg["element_counts"].items()},
            n_structures=int(cfg.get("n_structures", 0)),
            source=str(cfg.get("source", "")),
            extra={k: v for k, v in cfg.items() if k not in known},
        )
        emb = cfg.get("embedding")
        if emb and directory is not None:
            path = Path(directory) / emb.get("file", DOMAIN_FILE)
            if not path.is_file():
                raise FileNotFoundError(
                    f"model_config.json names a domain file {path} that does not exist"
                )
            from safetensors.numpy import load_file

            t = load_file(str(path))
            dom.center, dom.scale = t["center"].astype(np.float64), t["scale"].astype(np.float64)
            dom.reference = t["reference"].astype(np.float64)
            dom.k, dom.threshold = int(emb["k"]), float(emb["threshold"])
            dom.threshold_quantile, dom.fitted_on = (
                emb.get("threshold_quantile"),
                emb.get("fitted_on", ""),
            )
        return dom


def load_domain(directory: str | Path) -> ApplicabilityDomain | None:
    """The training domain stored with the model in ``directory`` (None if the model has none)."""
    cfg = json.loads((Path(directory) / "model_config.json").read_text()).get("training_domain")
    return ApplicabilityDomain.from_config(cfg, directory) if cfg else None


def _knn_mean_distance(x: np.ndarray, ref: np.ndarray, k: int, batch: int) -> np.ndarray:
    k = max(1, min(int(k), ref.shape[0]))
    out = np.empty(x.shape[0])
    ref_sq = (ref**2).sum(1)
    for start in range(0, x.shape[0], batch):
        xb = x[start : start + batch]
        d2 = np.maximum((xb**2).sum(1)[:, None] + ref_sq[None, :] - 2 * xb @ ref.T, 0.0)
        nearest = np.partition(d2, k - 1, axis=1)[:, :k]
        out[start : start + batch] = np.sqrt(nearest).mean(1)
    return out


# -- fitting ---------------------------------------------------------------------------------------
def elements_of_formula(formula: str) -> list[str]:
    """Element symbols of a formula string (``"Cu2(CO2)4"`` -> ``["C", "Cu", "O"]``)."""
    from pymatgen.core import Composition

    return sorted(str(e) for e in Composition(formula).elements)


def cif_elements(path: str | Path) -> list[str]:
    """Element symbols of a CIF's atom sites, read from the atom-site loop only (no structure is
    built)."""
    from pymatgen.io.cif import CifFile

    from mofbalora.data.structures import atom_site_block, read_cif_text

    found = atom_site_block(CifFile.from_str(read_cif_text(Path(path))))
    if found is None:
        raise ValueError(f"{path}: no data block with _atom_site_ items")
    data = found[1].data
    symbols = data.get("_atom_site_type_symbol", data.get("_atom_site_label"))
    if not isinstance(symbols, list):
        symbols = [symbols]
    return sorted({m.group(0) for s in symbols if (m := _SYMBOL.match(str(s).strip()))})


def count_elements(element_sets: Iterable[Iterable[str]]) -> dict[str, int]:
    """For each element, the number of structures (element sets) containing it."""
    counts: Counter[str] = Counter()
    n = 0
    for els in element_sets:
        counts.update(set(els))
        n += 1
    return dict(sorted(counts.items()))


def fit_embedding_domain(
    train_embeddings: np.ndarray,
    val_embeddings: np.ndarray,
    *,
    k: int = 5,
    quantile: float = 0.95,
    max_reference: int = 2000,
    seed: int = 0,
) -> dict:
    """Standardization, reference subsample and validation-quantile threshold (the keyword arguments
    of :class:`ApplicabilityDomain`'s embedding part)."""
    train = np.asarray(train_embeddings, dtype=np.float64)
    val = np.asarray(val_embeddings, dtype=np.float64)
    if (
        train.ndim != 2
        or val.ndim != 2
        or train.shape[1] != val.shape[1]
        or len(train) < 2
        or len(val) < 1
    ):
        raise ValueError(
            "need (n>=2, p) training and (n>=1, p) validation "
            f"embeddings, got {train.shape}, {val.shape}"
        )
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile!r}")
    center = train.mean(0)
    std = train.std(0)
    scale = np.where(std > 1e-8 * max(float(std.max()), 1e-12), std, 1.0)
    keep = np.random.default_rng(seed).permutation(len(train))[:max_reference]
    reference = (train[np.sort(keep)] - center) / scale
    val_dist = _knn_mean_distance((val - center) / scale, reference, k, 256)
    return {
        "center": center,
        "scale": scale,
        "reference": reference,
        "k": int(k),
        "threshold": float(np.quantile(val_dist, quantile)),
        "threshold_quantile": float(quantile),
        "fitted_on": f"validation ({len(val)} structures), {quantile:.0%} quantile",
    }


def fit_domain(
    model,
    train_inputs: list,
    val_inputs: list,
    *,
    k: int = 5,
    quantile: float = 0.95,
    max_reference: int = 2000,
    seed: int = 0,
    source: str = "",
) -> ApplicabilityDomain:
    """The full domain of ``model`` from featurized training and validation inputs (each with
    ``formula``): element counts over all training inputs, embeddings of at most
    ``max_reference`` of them."""
    counts = count_elements(elements_of_formula(x["formula"]) for x in train_inputs)
    keep = np.sort(np.random.default_rng(seed).permutation(len(train_inputs))[:max_reference])
    train_emb = model.predict_inputs(
        [train_inputs[i] for i in keep], n_samples=1, seed=seed
    ).embedding
    val_emb = model.predict_inputs(val_inputs, n_samples=1, seed=seed).embedding
    emb = fit_embedding_domain(
        train_emb, val_emb, k=k, quantile=quantile, max_reference=max_reference, seed=seed
    )
    return ApplicabilityDomain(
        element_counts=counts, n_structures=len(train_inputs), source=source, **emb
    )
