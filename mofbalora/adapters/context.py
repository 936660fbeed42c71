"""The sampling context: whether adapters draw noise, from which seed, and which structure each row
is.

Adapters read this context at forward time. Which rows belong to which structure comes from the
named row sets of :mod:`mofbalora.rows` (a backbone names them; each adapter knows its set). Which
numbers a structure draws comes from ``noise_seed`` and the structure's key (``structure_keys``: per
structure of the batch, 32-bit words: the first 64 bits of its content digest and the pass index),
through the counter-based generator of :mod:`mofbalora.adapters.noise`. A structure therefore draws
the same noise alone, in any batch, in any order, in any process and on any device.

The content digest is the file's sha256 where the structure came from a file, else the canonical
hash of its lattice, species and coordinates that every backbone's ``featurize`` attaches
(:mod:`mofbalora.data.content_key`), so
``model.predict_inputs(model.backbone.featurize(structures))`` does not depend on the order of
``structures`` either. Only an input with no digest at all (a hand-built dict) is keyed by its
position (``fallback``).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch

from mofbalora.adapters.noise import digest_words
from mofbalora.rows import row_sets


@dataclass(frozen=True)
class SamplingState:
    #: draw noise (True), use the posterior mean (False), or follow ``module.training`` (None)
    stochastic: bool | None = None
    #: generator for MC-dropout masks (and for a BaLoRA noise seed when ``noise_seed`` is None)
    generator: torch.Generator | None = None
    #: which member of an adapter ensemble is active
    member: int | None = None
    #: α logits from a shared α-network: (n_structures, n_shared_layers), column = layer's
    #: ``shared_alpha_index``
    shared_alpha_logits: torch.Tensor | None = None
    #: seed of the counter-based BaLoRA draws (None: one is drawn from ``generator`` or torch's
    #: global RNG)
    noise_seed: int | None = None
    #: (n_structures, k) int64 words in [0, 2^32) naming each structure of the batch (and its pass);
    #: None: the structure's index in the batch
    structure_keys: torch.Tensor | None = None
    #: a fresh object per model forward: adapters called more than once inside it add up their KL
    kl_scope: object | None = None


_STATE: contextvars.ContextVar[SamplingState] = contextvars.ContextVar(
    "mofbalora_sampling",
    default=SamplingState(),  # noqa: B039 (never mutated)
)


def current() -> SamplingState:
    return _STATE.get()


@contextlib.contextmanager
def sampling(**changes) -> Iterator[SamplingState]:
    """Temporarily change the sampling state, e.g. ``with sampling(stochastic=True,
    noise_seed=7): ...``."""
    unknown = set(changes) - set(SamplingState.__dataclass_fields__)
    if unknown:
        raise TypeError(
            f"unknown sampling option(s) {sorted(unknown)}; choose from "
            f"{sorted(SamplingState.__dataclass_fields__)}"
        )
    token = _STATE.set(replace(_STATE.get(), **changes))
    try:
        yield _STATE.get()
    finally:
        _STATE.reset(token)


def seeded_generator(
    seed: int | None, device: torch.device | str = "cpu"
) -> torch.Generator | None:
    if seed is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def draw(kind: str, shape: tuple[int, ...], *, device, dtype=None) -> torch.Tensor:
    """``randn`` / ``rand`` of ``shape`` from the context's generator, placed on ``device``.

    A seeded generator lives on the CPU: the numbers are drawn there and moved, so the same seed
    gives the same draws on a CPU and on a GPU. Without a generator, the device's own global RNG is
    used.
    """
    fn = {"randn": torch.randn, "rand": torch.rand}[kind]
    gen = current().generator
    if gen is None:
        return fn(shape, device=device, dtype=dtype)
    return fn(shape, generator=gen, device=gen.device, dtype=dtype).to(device)


def structure_keys(
    digests: list[str | None], pass_index: int | list[int] = 0, fallback: list[int] | None = None
) -> torch.Tensor:
    """(n, 3) key words per structure: two words of its content digest (its first 64 bits) and the
    pass (sample index, or 0). A structure without a digest is keyed by ``fallback[k]`` (e.g. its
    index in the data set; default k) under the structure word ``0xFFFFFFFF``."""
    passes = [pass_index] * len(digests) if isinstance(pass_index, int) else list(pass_index)
    fallback = list(range(len(digests))) if fallback is None else list(fallback)
    rows = []
    for d, t, f in zip(digests, passes, fallback, strict=True):
        hi, lo = digest_words(d) if d else (0xFFFFFFFF, int(f) & 0xFFFFFFFF)
        rows.append((hi, lo, int(t) & 0xFFFFFFFF))
    return torch.tensor(rows, dtype=torch.long).reshape(len(rows), 3)


def sample_forward(
    module: torch.nn.Module,
    x: torch.Tensor,
    n_samples: int,
    *,
    seed: int | None = None,
    owner: torch.Tensor | None = None,
    row_set: str = "row",
    max_rows: int = 2_000_000,
) -> torch.Tensor:
    """T stochastic passes of ``module`` on ``x`` (rows × features), batched: returns (T,
    *out_shape).

    ``owner`` (rows,) gives the structure of each row (default: every row its own structure); it is
    named ``row_set`` for the module's adapters. The T copies of ``x`` are stacked into one batch
    (in chunks of at most ``max_rows`` rows); copy t of structure g is keyed (g, t), so draws are
    independent across samples, shared within a structure, and the same ``seed`` reproduces them
    however the copies are chunked.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    n = x.shape[0]
    groups = owner if owner is not None else torch.arange(n)
    n_groups = int(groups.max()) + 1 if n else 0
    per_chunk = max(1, max_rows // max(n, 1))
    if seed is None:
        seed = int(torch.randint(0, 2**31 - 1, ()))
    outs = []
    for start in range(0, n_samples, per_chunk):
        t = min(per_chunk, n_samples - start)
        xt = x.repeat(t, *([1] * (x.dim() - 1)))
        gt = (groups.unsqueeze(0) + n_groups * torch.arange(t).unsqueeze(1)).reshape(-1)
        keys = torch.stack(
            [
                torch.zeros(t * n_groups, dtype=torch.long),
                torch.arange(n_groups).repeat(t),
                torch.arange(start, start + t).repeat_interleave(n_groups),
            ],
            1,
        )
        with (
            sampling(stochastic=True, noise_seed=seed, structure_keys=keys),
            row_sets(**{row_set: gt}),
        ):
            out = module(xt)
        outs.append(out.reshape(t, n, *out.shape[1:]))
    return torch.cat(outs)
