"""Named row sets: which structure each row of a layer input belongs to.

In a graph model the rows of a layer's input are atoms, directed edges, bonds, angles, tokens, ...;
a batch holds several structures. A backbone names its row sets while it runs (``with
row_sets(atom=..., edge=...)``: each maps a row to the index of its structure in the batch), and
says which set the input rows of each of its layers belong to
(:meth:`mofbalora.backbones.base.Backbone.row_set_for`). Adapters that share noise per structure
read them here. This module is the neutral meeting point: backbones do not import adapters, adapters
do not import backbones.

Module-name patterns (used for adapter targets and row-set rules) are matched by :func:`matches`.
:func:`frozen_pass` asks adapters to step aside (the pretrained model alone), e.g. while a backbone
caches its frozen activations.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Iterator

import torch

_ROW_SETS: contextvars.ContextVar[dict[str, torch.Tensor]] = contextvars.ContextVar(
    "mofbalora_row_sets",
    default={},  # noqa: B039 (never mutated)
)


_FROZEN: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "mofbalora_frozen_pass", default=False
)


@contextlib.contextmanager
def frozen_pass() -> Iterator[None]:
    """Layers called inside compute the pretrained model only: adapters return their base layer's
    output."""
    token = _FROZEN.set(True)
    try:
        yield
    finally:
        _FROZEN.reset(token)


def in_frozen_pass() -> bool:
    return _FROZEN.get()


def current_row_sets() -> dict[str, torch.Tensor]:
    return _ROW_SETS.get()


@contextlib.contextmanager
def row_sets(**sets: torch.Tensor) -> Iterator[dict[str, torch.Tensor]]:
    """Name row sets for the layers called inside: ``with row_sets(atom=owner_of_each_atom, ...)``.

    Each value is a 1-D integer tensor, the batch structure index of each row. Sets named in an
    outer scope stay visible unless renamed here.
    """
    for name, owner in sets.items():
        if not torch.is_tensor(owner) or owner.dim() != 1 or owner.is_floating_point():
            raise TypeError(
                f"row set {name!r} must be a 1-D integer tensor of structure indices, got "
                f"{type(owner).__name__}{'' if not torch.is_tensor(owner) else tuple(owner.shape)}"
            )
    token = _ROW_SETS.set({**_ROW_SETS.get(), **sets})
    try:
        yield _ROW_SETS.get()
    finally:
        _ROW_SETS.reset(token)


def matches(name: str, pattern: str) -> bool:
    """Exact name, suffix (``name`` ends with ``"." + pattern``; a leading ``*.`` is allowed), or
    ``re:REGEX``."""
    if pattern.startswith("re:"):
        return re.search(pattern[3:], name) is not None
    pattern = pattern.removeprefix("*.")
    return name == pattern or name.endswith("." + pattern)


def first_match(name: str, rules: list[tuple[str, str]]) -> str | None:
    """The value of the first ``(pattern, value)`` rule whose pattern matches ``name``, else
    None."""
    return next((value for pattern, value in rules if matches(name, pattern)), None)


def owners_from_sizes(sizes: list[int] | torch.Tensor) -> torch.Tensor:
    """``[2, 3]`` → ``[0, 0, 1, 1, 1]``: the owner of each row when structures' rows are
    consecutive."""
    sizes = torch.as_tensor(sizes, dtype=torch.long)
    return torch.repeat_interleave(torch.arange(len(sizes)), sizes)
