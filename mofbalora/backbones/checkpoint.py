"""Reading third-party checkpoints: tensors and plain containers only, unless the user says to trust the file.

Every backbone that loads a checkpoint from a user's path (UMA, MOFTransformer, JMP) reads it with
``torch.load(weights_only=True)``: tensors, plain containers and the few classes the backbone names as
safe (``allowed``). A file that needs full unpickling (its pickle names other classes or functions, so
reading it can run code) is refused with :class:`UntrustedCheckpointError`, naming the file and the one
switch that allows it, the same for every backbone: ``trust_checkpoint=True`` on the backbone, i.e.
``--set backbone.trust_checkpoint=true`` on the command line or ``backbone: {trust_checkpoint: true}`` in a
workflow file. Only checkpoints you made or whose source you trust should be loaded that way.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

#: the configuration key of the switch (the backbone constructors' keyword is ``trust_checkpoint``)
TRUST_KEY = "backbone.trust_checkpoint"


class UntrustedCheckpointError(ValueError):
    """A checkpoint that holds more than tensors and plain containers, loaded without the trust switch."""


def refuse(path: str | Path, what: str, detail: str) -> UntrustedCheckpointError:
    """The error for an untrusted ``path`` (``what``: e.g. "JMP checkpoint"), with ``detail`` saying why."""
    return UntrustedCheckpointError(
        f"{what} {str(path)!r} needs full unpickling, which can run code ({detail}); if you made the file or "
        f"trust its source, pass trust_checkpoint=True (--set {TRUST_KEY}=true)")


def load_checkpoint(path: str | Path, *, what: str, trust: bool = False, allowed: Sequence[type] = (),
                    pickle_module: Any = None) -> Any:
    """``torch.load`` of ``path`` onto the CPU: weights only (plus ``allowed`` classes) unless ``trust``.

    ``pickle_module`` (e.g. a lenient unpickler for classes of packages that are not installed) is used
    only with ``trust``. Raises :class:`UntrustedCheckpointError` when the file needs full unpickling and
    ``trust`` is False; nothing from the file has been run by then.
    """
    if trust:
        kwargs = {"pickle_module": pickle_module} if pickle_module is not None else {}
        return torch.load(path, map_location="cpu", weights_only=False, **kwargs)
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message is long advice about weights_only; its first line names the refused global
        reason = next((line.strip() for line in str(exc).splitlines() if "GLOBAL" in line or "Unsupported" in line),
                      str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise refuse(path, what, reason) from None
