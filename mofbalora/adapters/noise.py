"""Counter-based standard normal draws keyed by (seed, structure, pass, layer, element).

BaLoRA's per-structure weight noise must not depend on how structures are batched, ordered, split
across processes or placed on devices. So each draw is a pure function of integer words: a 32-bit
integer hash (Wellons' ``lowbias32``, two rounds) of the seed, the structure key (two 32-bit words from
its content digest), the pass (training step or sample index), the layer key and the element's counter,
turned into a uniform and then into a normal by Box–Muller. Everything is elementwise torch integer
arithmetic (no Python loop over structures), with products kept below 2^63 so nothing overflows.
"""

from __future__ import annotations

import math

import torch

_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x · c) mod 2^32 for x in [0, 2^32), split so that no int64 product overflows."""
    return ((((x * (c >> 16)) & 0xFFFF) << 16) + x * (c & 0xFFFF)) & _M32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """Wellons' lowbias32 integer hash (a bijection of [0, 2^32))."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def absorb(h: torch.Tensor, word: torch.Tensor | int) -> torch.Tensor:
    """Fold one more 32-bit word into a running hash."""
    return mix32((h + 0x9E3779B9) & _M32 ^ (torch.as_tensor(word, dtype=torch.long) & _M32))


def stream_heads(seed: int, words: torch.Tensor, layer_key: int) -> torch.Tensor:
    """One 32-bit stream head per row of ``words`` ((G, k) int64, each in [0, 2^32)): (G,)."""
    h = torch.full((words.shape[0],), int(seed) & _M32, dtype=torch.long, device=words.device)
    h = absorb(h, int(seed) >> 32 & _M32)
    for j in range(words.shape[1]):
        h = absorb(h, words[:, j])
    return absorb(h, int(layer_key) & _M32)


def keyed_normal(heads: torch.Tensor, n: int, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """(G, n) standard normals; row g depends only on ``heads[g]`` (see :func:`stream_heads`)."""
    heads = heads.to(device) if device is not None else heads
    half = (n + 1) // 2
    counter = torch.arange(half, dtype=torch.long, device=heads.device)
    base = heads[:, None]
    u1 = absorb(absorb(base, 2 * counter), heads[:, None] >> 7)
    u2 = absorb(absorb(base, 2 * counter + 1), heads[:, None] >> 11)
    # uniforms in (0, 1]: (k + 1) / 2^32 in float64 so that log never sees 0
    f1 = (u1.to(torch.float64) + 1.0) * (1.0 / 4294967296.0)
    f2 = u2.to(torch.float64) * (2.0 * math.pi / 4294967296.0)
    r = torch.sqrt(-2.0 * torch.log(f1))
    z = torch.cat([r * torch.cos(f2), r * torch.sin(f2)], dim=1)[:, :n]
    return z.to(dtype)


def digest_words(digest: str) -> tuple[int, int]:
    """Two 32-bit words from a hex content digest (its first 16 hex digits)."""
    v = int(digest[:16], 16)
    return v >> 32, v & _M32
