"""Reading third-party checkpoints: tensors and plain containers only, unless the caller says to
trust the file.

Every backbone that loads a checkpoint from a user's path (UMA, MOFTransformer, JMP) reads it with
``torch.load(weights_only=True)``: tensors, plain containers and the few classes the backbone names
as safe (``allowed``). A file that needs full unpickling (its pickle names other classes or
functions, so reading it can run code) is refused with :class:`UntrustedCheckpointError`, naming the
file and the one switch that allows it, the same for every backbone: ``trust_checkpoint=True`` on
the backbone, i.e. ``--trust-checkpoint`` on every command that builds or loads a model
(``trust_checkpoint=True`` in Python; ``backbone.trust_checkpoint: true`` in a fine-tune
configuration you pass yourself). Only checkpoints you made or whose source you trust should be
loaded that way.

Trust is the caller's, never an artifact's: it is not written into a saved model
(``model_config.json``) or a run's or campaign's ``config.yaml``, and a stored file that asks for it
(:func:`stored_trust_error`) is refused unless the caller passes the switch. Otherwise a model
folder from someone else could name a pickle and switch on its unpickling.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

#: the configuration key of the switch (the backbone constructors' keyword is ``trust_checkpoint``)
TRUST_KEY = "backbone.trust_checkpoint"
#: the command-line flag of the switch
TRUST_FLAG = "--trust-checkpoint"
#: the backbones that read a third-party checkpoint (their constructors take ``trust_checkpoint``)
CHECKPOINT_BACKBONES = ("uma", "moftransformer", "jmp")
#: how to pass the switch, for error messages
HOW_TO_TRUST = (
    f"pass {TRUST_FLAG} (trust_checkpoint=True in Python; in a fine-tune configuration you pass "
    f"yourself: --set {TRUST_KEY}=true)"
)


class UntrustedCheckpointError(ValueError):
    """A checkpoint that holds more than tensors and plain containers, loaded without the trust
    switch; or a stored model / campaign that asks for the switch itself."""


def refuse(path: str | Path, what: str, detail: str) -> UntrustedCheckpointError:
    """The error for an untrusted ``path`` (``what``: e.g. "JMP checkpoint"), with ``detail``
    saying why."""
    return UntrustedCheckpointError(
        f"{what} {str(path)!r} needs full unpickling, which can run code ({detail}); if you made "
        f"the file or trust its source, {HOW_TO_TRUST}"
    )


def stored_trust_error(where: str | Path, checkpoint: Any = None) -> UntrustedCheckpointError:
    """The error for a stored file (``where``: a ``model_config.json`` or a campaign's
    ``config.yaml``) that asks for full unpickling of its backbone checkpoint
    (``backbone.trust_checkpoint: true``): trust is not taken from a file; the caller grants it."""
    named = f" {str(checkpoint)!r}" if checkpoint is not None else ""
    return UntrustedCheckpointError(
        f"{where} asks for full unpickling of its backbone checkpoint{named} ({TRUST_KEY}: true), "
        f"which can run code; a stored model or campaign cannot grant that itself. If you made it "
        f"or trust its source, {HOW_TO_TRUST}"
    )


def stored_trust(options: dict, where: str | Path, trust_checkpoint: bool) -> dict:
    """``options`` (a stored backbone section) without its ``trust_checkpoint`` key; raises
    :func:`stored_trust_error` when that key asks for trust and the caller did not pass
    ``trust_checkpoint`` (a stored ``false`` is dropped: older files hold it)."""
    options = dict(options)
    asked = options.pop("trust_checkpoint", False)
    if asked and not trust_checkpoint:
        raise stored_trust_error(where, options.get("checkpoint"))
    return options


def load_checkpoint(
    path: str | Path,
    *,
    what: str,
    trust: bool = False,
    allowed: Sequence[type] = (),
    pickle_module: Any = None,
) -> Any:
    """``torch.load`` of ``path`` onto the CPU: weights only (plus ``allowed`` classes) unless
    ``trust``.

    ``pickle_module`` (e.g. a lenient unpickler for classes of packages that are not installed) is
    used only with ``trust``. Raises :class:`UntrustedCheckpointError` when the file needs full
    unpickling and ``trust`` is False; nothing from the file has been run by then.
    """
    if trust:
        kwargs = {"pickle_module": pickle_module} if pickle_module is not None else {}
        return torch.load(path, map_location="cpu", weights_only=False, **kwargs)
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message is long advice about weights_only; its first line names the refused global
        reason = next(
            (
                line.strip()
                for line in str(exc).splitlines()
                if "GLOBAL" in line or "Unsupported" in line
            ),
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
        )
        raise refuse(path, what, reason) from None
