"""The pool side of a campaign: candidate files and their ids, and the batch files handed to DFT.

Ids of new structure files (:meth:`CandidatePool.new_keys`; candidates added to the pool, new CIFs
of a DFT results file): a file's id is its name without the extension (``a/MOF-5.cif`` -> ``MOF-5``)
when no structure of the campaign has that id or an id made from it (``MOF-5~...``) and no other new
file of the same call (one ``add_candidates`` / one results file) has that stem. Otherwise it is the
stem, ``~`` and the first 8 hex digits of the sha256 of the file's bytes (``a/MOF-5.cif`` and
``b/MOF-5.cif`` added together -> e.g. ``MOF-5~3f1c09ab`` and ``MOF-5~9b20e6d4``): distinct for
different contents, and the same whatever the order of the files. Only files with the same stem
*and* the same bytes can still meet; the later ones get ``~2``, ``~3``, ... after that. Ids already
in the campaign never change.

A mixin of :class:`~mofbalora.al.campaign.Campaign` (it reads and commits the campaign's ``state``,
a :class:`~mofbalora.al.state.CampaignState`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from mofbalora.data.cache import file_digest
from mofbalora.data.candidates import distinct_file_ids
from mofbalora.dft import Code, write_dft_inputs
from mofbalora.io import atomic_write_bytes
from mofbalora.scoring import BATCH_COLUMNS as SCORED_BATCH_COLUMNS

if TYPE_CHECKING:
    from mofbalora.al.state import CampaignState

#: the batch file's columns: a view of the scored row (:data:`mofbalora.scoring.BATCH_COLUMNS`)
BATCH_COLUMNS = SCORED_BATCH_COLUMNS
log = logging.getLogger(__name__)


class CandidatePool:
    """Ids and CIF paths of the campaign's structures, candidate files added to the pool, batch
    files."""

    state: CampaignState

    def known_keys(self) -> set[str]:
        st = self.state
        return set(st.labelled) | set(st.pool) | set(st.val_ids) | set(st.test_ids) | set(st.failed)

    def path_index(self) -> dict[str, str]:
        """Resolved CIF path -> id, for every structure of the campaign (any part, failures
        included)."""
        st = self.state
        index = {p: k for k, p in st.paths.items()}
        for key in [*st.labelled, *st.pool, *st.val_ids, *st.test_ids]:
            if key not in st.paths:
                index.setdefault(str(self.path_of(key).resolve()), key)
        return index

    def new_keys(self, paths: Sequence[str | Path], taken: Iterable[str] = ()) -> list[str]:
        """Distinct ids for new structure files, one per path (the rule in the module docstring);
        ``taken``: ids to avoid besides the campaign's (e.g. ids given in the same results file)."""
        taken = self.known_keys() | set(self.state.paths) | set(taken)
        return distinct_file_ids(list(paths), lambda i: file_digest(paths[i]), taken)

    def add_candidates(self, paths: Sequence[str | Path]) -> list[str]:
        """Add candidate CIFs to the pool (ids: :meth:`new_keys`); files already in the campaign are
        skipped, files that fail featurization recorded in ``failed``. Returns the ids added."""
        index, new = self.path_index(), {}
        for path in paths:
            resolved = str(Path(path).resolve())
            if resolved in index:
                log.info("%s is already in the campaign as %s", path, index[resolved])
                continue
            new.setdefault(resolved, path)
        added = self.new_keys(list(new.values()))  # ids from the names given, which may be links
        self.state.paths.update(zip(added, new, strict=True))
        failed = self._featurize(added)
        added = [k for k in added if k not in failed]
        self.state.pool += added
        self.save_state()
        return added

    def write_batch(
        self,
        rows: Sequence[dict] | None = None,
        *,
        dft_inputs: bool = True,
        code: Code = "vasp",
        potcar_dir: str | Path | None = None,
    ) -> Path:
        """Write the pending batch as ``batch_NNN.csv`` (ranked-CSV format) and, with
        ``dft_inputs``, its DFT hand-off in ``dft_inputs/batch_NNN``; returns the CSV path."""
        rows = list(self.pending if rows is None else rows)
        if not rows:
            raise ValueError(f"campaign {self.dir} has no pending batch; select one first")
        name = f"batch_{int(rows[0]['round']):03d}"
        csv_path = self.dir / f"{name}.csv"
        atomic_write_bytes(
            csv_path, pd.DataFrame(rows, columns=list(BATCH_COLUMNS)).to_csv(index=False).encode()
        )
        if dft_inputs:
            write_dft_inputs(
                csv_path,
                self.dir / "dft_inputs" / name,
                code=code,
                potcar_dir=potcar_dir,
                overwrite=True,
            )
        return csv_path
