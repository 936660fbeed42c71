"""Structures → MOFTransformer inputs through the ``moftransformer`` package's own data preparation.

For each structure the package's ``make_prepared_data`` builds what its pretrained models were
trained on:

- the **atom-based graph**: the cell repeated until every edge is ≥ 8 Å, the 12 nearest neighbours
  of each atom (distances, expanded later on a Gaussian basis), and the groups of *topologically
  unique* atoms (atoms with identical 3-hop connectivity fingerprints; one token per group);
- the **energy grid**: a 30 × 30 × 30 grid of the UFF Lennard-Jones energy of a methane-like probe
  in the cell repeated to ≥ ``min_length`` Å, computed by the package's GRIDAY tool (C++, built from
  the package's sources by ``scripts/install_moftransformer.sh``), digitised into 101 energy bins.

The prepared input is a small picklable dict (about 30 kB for a 100-atom MOF) that the content cache
stores per structure. The package's known limits become :class:`PreparationError` with a ``cause``:

======================  ===========================================================================
``cause``               what happened
======================  ===========================================================================
too_many_atoms          graph supercell has more than ``max_num_atoms`` atoms
too_few_neighbors       fewer than 12 neighbours found for some atom
too_many_unique_atoms   more topologically unique atoms than ``max_num_unique_atoms`` (graph tokens)
cell_too_large          an edge of the energy-grid supercell exceeds ``max_length`` Å
energy_grid_failed      GRIDAY returned an error (its message is included)
unreadable_cif          the package could not read the CIF written for the structure
preparation_failed      anything else raised inside the package's preparation
======================  ===========================================================================
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import pickle
import sys
import tempfile
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mofbalora.backbones.base import FeaturizationError

INSTALL_HINT = (
    "the MOFTransformer backbone needs moftransformer 2.2.0 and the GRIDAY tool: run "
    "`bash scripts/install_moftransformer.sh .venv/bin/python` (it installs "
    "mofbalora[moftransformer] plus `pip install "
    "--no-deps moftransformer==2.2.0`, and builds GRIDAY)"
)
PACKAGE_VERSION = "2.2.0"
CAUSES = (
    "too_many_atoms",
    "too_few_neighbors",
    "too_many_unique_atoms",
    "cell_too_large",
    "energy_grid_failed",
    "unreadable_cif",
    "preparation_failed",
)
#: the package's own log messages for each failure (``make_prepared_data`` logs them and returns
#: False)
_LOG_CAUSES = (
    ("larger than `max_num_atoms`", "too_many_atoms"),
    ("num_nbr is smaller", "too_few_neighbors"),
    ("topologically unique atoms", "too_many_unique_atoms"),
    ("more than max_length", "cell_too_large"),
    ("energy grid failed", "energy_grid_failed"),
    ("reading cif", "unreadable_cif"),
)


class PreparationError(FeaturizationError):
    """A structure the package's data preparation rejects; ``cause`` is one of :data:`CAUSES`."""

    def __init__(self, cause: str, detail: str) -> None:
        if cause not in CAUSES:
            raise ValueError(f"unknown preparation failure {cause!r}; choose from {list(CAUSES)}")
        self.cause = cause
        self.detail = detail
        super().__init__(f"MOFTransformer preparation: {cause}: {detail}")

    def __reduce__(self):
        return (type(self), (self.cause, self.detail))


# -- importing the package -------------------------------------------------------------------------
class _DropPath(nn.Module):
    """Stochastic depth (drop whole residual branches per sample with probability ``drop_prob``)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


def _timm_stand_in() -> dict[str, types.ModuleType]:
    """The two names moftransformer takes from ``timm.models.layers`` (``DropPath``,
    ``trunc_normal_``).

    timm imports torchvision at import time, and the torchvision wheels on PyPI are CUDA builds
    whose operators cannot load beside the CPU torch this project pins, so timm cannot be imported
    here. The package uses ``trunc_normal_`` for initialisation (torch's own
    ``nn.init.trunc_normal_`` has the same signature and distribution) and ``DropPath`` only with a
    drop rate > 0, which its models never set.
    """
    root, models, layers = (
        types.ModuleType(n) for n in ("timm", "timm.models", "timm.models.layers")
    )
    layers.DropPath = _DropPath
    layers.trunc_normal_ = nn.init.trunc_normal_
    root.models, models.layers = models, layers
    return {"timm": root, "timm.models": models, "timm.models.layers": layers}


def _timm_importable() -> bool:
    if importlib.util.find_spec("timm") is None:
        return False
    try:
        importlib.import_module("timm.models.layers")
    # ImportError, or a RuntimeError from a torchvision whose operators do not load
    except Exception:
        return False
    return True


def import_moftransformer() -> types.ModuleType:
    """Import ``moftransformer`` (2.2.0) with the project's torch; an actionable ImportError if
    missing."""
    if "moftransformer" in sys.modules and hasattr(sys.modules["moftransformer"], "modules"):
        return sys.modules["moftransformer"]
    if importlib.util.find_spec("moftransformer") is None:
        raise ImportError(INSTALL_HINT)
    stand_in = {} if _timm_importable() else _timm_stand_in()
    added = {k: v for k, v in stand_in.items() if k not in sys.modules}
    sys.modules.update(added)
    try:
        with warnings.catch_warnings():
            # deprecations of its old dependencies (pkg_resources, timm paths)
            warnings.simplefilter("ignore")
            package = importlib.import_module("moftransformer")
            importlib.import_module("moftransformer.modules.module")
            importlib.import_module("moftransformer.utils.prepare_data")
    except ImportError as exc:
        raise ImportError(
            f"moftransformer is installed but cannot be imported ({exc}); {INSTALL_HINT}"
        ) from exc
    finally:
        # the stand-in is visible to moftransformer's import only
        for name, module in added.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
    if getattr(package, "__version__", None) != PACKAGE_VERSION:
        warnings.warn(
            f"moftransformer {package.__version__} found; the backbone was written for "
            f"{PACKAGE_VERSION}",
            stacklevel=2,
        )
    return package


def package_module(name: str) -> types.ModuleType:
    """A submodule of the package, e.g. ``"utils.prepare_data"`` (attribute access can hit a
    function of the same name that the package's ``__init__`` re-exports)."""
    import_moftransformer()
    return importlib.import_module(f"moftransformer.{name}")


def griday_path() -> Path:
    """The GRIDAY energy-grid executable inside the installed package (ImportError if not built)."""
    prep = package_module("utils.prepare_data")
    path = Path(prep.GRIDAY_PATH)
    if not path.is_file():
        raise ImportError(f"GRIDAY is not built at {path}; {INSTALL_HINT}")
    return path


# -- preparation -----------------------------------------------------------------------------------
class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _cause_of(messages: list[str]) -> tuple[str, str]:
    for message in reversed(messages):
        for needle, cause in _LOG_CAUSES:
            if needle in message:
                return cause, message.split(" ", 1)[-1]
    return "preparation_failed", messages[-1] if messages else "no reason logged"


def prepare_structure(
    structure,
    *,
    max_length: float = 60.0,
    min_length: float = 30.0,
    max_num_unique_atoms: int = 300,
    max_num_atoms: int | None = 3000,
    max_num_nbr: int = 12,
) -> dict[str, Any]:
    """One pymatgen structure → a picklable MOFTransformer input (see the module docstring).

    Keys: ``atom_num`` (int8, supercell atoms), ``nbr_idx`` (int32, atoms × 12), ``nbr_dist``
    (float32 Å), ``uni_idx`` (list of atom-index lists, largest group first), ``uni_count`` (int16),
    ``grid`` (uint8 energy bins 1–102, 30³, in GRIDAY's order), ``grid_cell`` (grid points per
    axis), ``volume`` (energy grid supercell volume / 60³ Å³, as the package normalises it) and
    ``n_atoms`` (atoms of ``structure``).

    Raises:
        PreparationError: the package's preparation rejected the structure (``cause`` says why).
        ImportError: moftransformer or GRIDAY is not installed.
    """
    from pymatgen.io.cif import CifWriter

    griday_path()
    prep = package_module("utils.prepare_data")
    dataset = package_module("datamodules.dataset").Dataset
    # unregistered: no global logging state touched
    log = logging.Logger("moftransformer-preparation")
    collect = _Collect()
    log.addHandler(collect)
    with tempfile.TemporaryDirectory(prefix="mofbalora-moft-") as tmp:
        cif = Path(tmp) / "structure.cif"
        out = Path(tmp) / "prepared"
        try:
            CifWriter(structure).write_file(cif)
        except Exception as exc:
            raise PreparationError(
                "unreadable_cif", f"writing the structure as CIF failed: {exc}"
            ) from None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ok = prep.make_prepared_data(
                    cif,
                    out,
                    logger=log,
                    eg_logger=log,
                    max_length=max_length,
                    min_length=min_length,
                    max_num_unique_atoms=max_num_unique_atoms,
                    max_num_atoms=max_num_atoms,
                    max_num_nbr=max_num_nbr,
                )
        except Exception as exc:
            raise PreparationError("preparation_failed", f"{type(exc).__name__}: {exc}") from None
        if not ok:
            raise PreparationError(*_cause_of(collect.messages))
        # These two pickles are the package's own output format, written a moment ago by
        # make_prepared_data into this call's private temporary folder (mode 0700, removed on exit):
        # no other user can place a file there, and nothing read here is kept except the plain
        # arrays below (which the content cache stores without pickles). Reading them another way
        # would mean re-implementing the package's writer.
        with open(out / "structure.graphdata", "rb") as fh:
            _, atom_num, nbr_idx, nbr_dist, uni_idx, uni_count = pickle.load(fh)
        with open(out / "structure.griddata16", "rb") as fh:
            energies = pickle.load(fh)
        lines = (out / "structure.grid").read_text().splitlines()
    lengths = [float(v) for v in lines[0].split()[1:]]
    angles = [float(v) for v in lines[1].split()[1:]]
    grid_cell = [int(v) for v in lines[2].split()[1:]]
    bins = dataset.make_grid_data(np.asarray(energies, dtype=np.float32))
    return {
        "n_atoms": len(structure),
        "atom_num": np.asarray(atom_num, dtype=np.int8),
        # the package stores int16 indices: exact while max_num_atoms <= 32,767 (checked by the
        # backbone)
        "nbr_idx": np.asarray(nbr_idx, dtype=np.int32).reshape(len(atom_num), -1),
        "nbr_dist": np.asarray(nbr_dist, dtype=np.float32).reshape(len(atom_num), -1),
        "uni_idx": [list(map(int, group)) for group in uni_idx],
        "uni_count": np.asarray(uni_count, dtype=np.int16),
        "grid": bins.astype(np.uint8),
        "grid_cell": grid_cell,
        "volume": float(dataset.calculate_volume(*lengths, *angles)),
    }
