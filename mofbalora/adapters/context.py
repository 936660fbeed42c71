"""The sampling context: whether adapters draw noise, with which generator, and which rows share a draw.

Adapters read this context at forward time, so a backbone never needs to know about them. A backbone
(or the model wrapper) says which rows belong to which structure by *row count*: ``row_groups`` maps
the number of rows of a layer input (atoms, directed edges, angles, ...) to the structure index of
each row. A BaLoRA layer with ``noise_scope="structure"`` draws one rank-space ε per structure and shares
it across that structure's rows; with no matching entry every row is its own group (the right thing
for a plain MLP whose rows are structures).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import torch


@dataclass(frozen=True)
class SamplingState:
    #: draw noise (True), use the posterior mean (False), or follow ``module.training`` (None)
    stochastic: bool | None = None
    generator: torch.Generator | None = None
    row_groups: dict[int, torch.Tensor] = field(default_factory=dict)
    #: which member of an adapter ensemble is active
    member: int | None = None
    #: α logits from a shared α-network: (n_structures, n_shared_layers), column = layer's ``shared_alpha_index``
    shared_alpha_logits: torch.Tensor | None = None
    #: ``(offset, total)``: the batch's structures are structures ``offset …`` of a global batch of ``total``
    #: (data-parallel training). Structure-scope BaLoRA draws the noise of all ``total`` structures and keeps
    #: its own rows, so every process draws the same numbers as one process holding the whole batch.
    structure_window: tuple[int, int] | None = None


_STATE: contextvars.ContextVar[SamplingState] = contextvars.ContextVar("mofbalora_sampling", default=SamplingState())  # noqa: B039 (never mutated)


def current() -> SamplingState:
    return _STATE.get()


@contextlib.contextmanager
def sampling(**changes) -> Iterator[SamplingState]:
    """Temporarily change the sampling state, e.g. ``with sampling(stochastic=True, generator=g): ...``."""
    unknown = set(changes) - set(SamplingState.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown sampling option(s) {sorted(unknown)}; choose from {sorted(SamplingState.__dataclass_fields__)}")
    token = _STATE.set(replace(_STATE.get(), **changes))
    try:
        yield _STATE.get()
    finally:
        _STATE.reset(token)


def seeded_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator | None:
    if seed is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def groups_for(n_rows: int, device: torch.device) -> tuple[torch.Tensor, int] | None:
    """Structure index of ``n_rows`` rows from the context, and the number of groups; None if unknown."""
    idx = current().row_groups.get(int(n_rows))
    if idx is None:
        return None
    idx = idx.to(device)
    return idx, int(idx.max().item()) + 1 if idx.numel() else 0


def draw(kind: str, shape: tuple[int, ...], *, device, dtype=None) -> torch.Tensor:
    """``randn`` / ``rand`` of ``shape`` from the context's generator, placed on ``device``.

    A seeded generator lives on the CPU: the numbers are drawn there and moved, so the same seed gives the
    same draws on a CPU and on a GPU. Without a generator, the device's own global RNG is used.
    """
    fn = {"randn": torch.randn, "rand": torch.rand}[kind]
    gen = current().generator
    if gen is None:
        return fn(shape, device=device, dtype=dtype)
    return fn(shape, generator=gen, device=gen.device, dtype=dtype).to(device)


def group_noise(n_groups: int, shape: tuple[int, ...], *, device, dtype) -> torch.Tensor:
    """Standard normal draws ``(n_groups, *shape)``, one per structure, from the context's generator.

    Inside ``sampling(structure_window=(offset, total))`` the draws of all ``total`` structures of the
    global batch are made and rows ``offset … offset + n_groups`` kept: the numbers one process holding the
    whole batch would have drawn for these structures (data-parallel training).
    """
    window = current().structure_window
    if window is None:
        return draw("randn", (n_groups, *shape), device=device, dtype=dtype)
    offset, total = window
    if offset + n_groups > total:
        raise ValueError(f"structure window {window} cannot hold {n_groups} structures at offset {offset}")
    return draw("randn", (total, *shape), device=device, dtype=dtype)[offset:offset + n_groups]


def sample_forward(module: torch.nn.Module, x: torch.Tensor, n_samples: int, *, seed: int | None = None,
                   row_groups: torch.Tensor | None = None, max_rows: int = 2_000_000) -> torch.Tensor:
    """T stochastic passes of ``module`` on ``x`` (rows × features), batched: returns (T, *out_shape).

    The T copies of ``x`` are stacked into one batch (in chunks of at most ``max_rows`` rows); copy t of
    group g becomes group ``t * n_groups + g``, so draws are independent across samples and shared within a
    group. The same ``seed`` reproduces the same draws.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    n = x.shape[0]
    groups = row_groups if row_groups is not None else torch.arange(n)
    n_groups = int(groups.max()) + 1 if n else 0
    per_chunk = max(1, max_rows // max(n, 1))
    gen = seeded_generator(seed, x.device)
    outs = []
    for start in range(0, n_samples, per_chunk):
        t = min(per_chunk, n_samples - start)
        xt = x.repeat(t, *([1] * (x.dim() - 1)))
        gt = (groups.unsqueeze(0) + n_groups * torch.arange(t).unsqueeze(1)).reshape(-1)
        with sampling(stochastic=True, generator=gen, row_groups={xt.shape[0]: gt}):
            out = module(xt)
        outs.append(out.reshape(t, n, *out.shape[1:]))
    return torch.cat(outs)
