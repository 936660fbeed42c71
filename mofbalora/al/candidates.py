"""The pool side of a campaign: candidate files and their ids, and the batch files handed to DFT.

A mixin of :class:`~mofbalora.al.campaign.Campaign` (it reads and commits the campaign's ``state``, a
:class:`~mofbalora.al.state.CampaignState`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from mofbalora.dft import Code, write_dft_inputs
from mofbalora.io import atomic_write_bytes

if TYPE_CHECKING:
    from mofbalora.al.state import CampaignState

BATCH_COLUMNS = ("path", "structure_id", "formula", "n_atoms", "bandgap_mean_ev", "bandgap_std_ev", "score",
                 "rank", "status", "error", "round", "acquisition", "relative_dft_cost")
log = logging.getLogger(__name__)


class CandidatePool:
    """Ids and CIF paths of the campaign's structures, candidate files added to the pool, batch files."""

    state: CampaignState

    def known_keys(self) -> set[str]:
        st = self.state
        return set(st.labelled) | set(st.pool) | set(st.val_ids) | set(st.test_ids) | set(st.failed)

    def path_index(self) -> dict[str, str]:
        """Resolved CIF path -> id, for every structure of the campaign (any part, failures included)."""
        st = self.state
        index = {p: k for k, p in st.paths.items()}
        for key in [*st.labelled, *st.pool, *st.val_ids, *st.test_ids]:
            if key not in st.paths:
                index.setdefault(str(self.path_of(key).resolve()), key)
        return index

    def new_key(self, path: str | Path) -> str:
        """An id for a new structure file: its stem, made unique with ``~2``, ``~3``, ..."""
        stem, known = Path(path).stem, self.known_keys() | set(self.state.paths)
        key, n = stem, 1
        while key in known:
            n += 1
            key = f"{stem}~{n}"
        return key

    def add_candidates(self, paths: Sequence[str | Path]) -> list[str]:
        """Add candidate CIFs to the pool (ids: file stems, made unique); files already in the campaign
        are skipped, files that fail featurization recorded in ``failed``. Returns the ids added."""
        index, added = self.path_index(), []
        for path in paths:
            resolved = str(Path(path).resolve())
            if resolved in index:
                log.info("%s is already in the campaign as %s", path, index[resolved])
                continue
            key = self.new_key(path)
            self.state.paths[key] = resolved
            index[resolved] = key
            added.append(key)
        failed = self._featurize(added)
        added = [k for k in added if k not in failed]
        self.state.pool += added
        self.save_state()
        return added

    def write_batch(self, rows: Sequence[dict] | None = None, *, dft_inputs: bool = True, code: Code = "vasp",
                    potcar_dir: str | Path | None = None) -> Path:
        """Write the pending batch as ``batch_NNN.csv`` (ranked-CSV format) and, with ``dft_inputs``, its
        DFT hand-off in ``dft_inputs/batch_NNN``; returns the CSV path."""
        rows = list(self.pending if rows is None else rows)
        if not rows:
            raise ValueError(f"campaign {self.dir} has no pending batch; select one first")
        name = f"batch_{int(rows[0]['round']):03d}"
        csv_path = self.dir / f"{name}.csv"
        atomic_write_bytes(csv_path, pd.DataFrame(rows, columns=list(BATCH_COLUMNS)).to_csv(index=False).encode())
        if dft_inputs:
            write_dft_inputs(csv_path, self.dir / "dft_inputs" / name, code=code, potcar_dir=potcar_dir, overwrite=True)
        return csv_path
