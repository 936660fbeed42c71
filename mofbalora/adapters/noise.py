"""Counter-based standard normal draws keyed by (seed, structure, pass, layer, row, element).

BaLoRA's per-structure weight noise must not depend on how structures are batched, ordered, split
across processes or placed on devices. So each draw is a pure function of integer words, through the
Threefry-4x32 block cipher (20 rounds; Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
SC 2011; the Random123 reference, whose known-answer vectors the tests check):

* the 128-bit **key** is (structure key: 64 bits, seed: 64 bits);
* the 128-bit **counter** is (block, row, pass, layer): 32 bits each; ``block`` numbers the groups
  of four elements of one row's stream, ``row`` is a row's position inside its structure (0 where
  the scope draws one stream per structure), ``pass`` the training step or sample index, ``layer``
  the adapter's key.

For one key the cipher is a bijection of the counter, and every field goes into the (key, counter)
pair unchanged, so distinct (seed, structure, pass, layer, row, element) give distinct cipher inputs
*by construction*, with no intermediate hash that could collide (the scheme before issue 29 folded
seed, structure, pass and layer into one 32-bit head: 175,296 heads of one evaluation held 4 equal
pairs). Fields are exact within: structure keys of 64 bits (the first 64 bits of a sha256 content
digest, so two distinct structures share one with probability 2⁻⁶⁴), seeds in [0, 2⁶⁴) (negative
ones are taken mod 2⁶⁴), passes, layer keys and rows below 2³², and 2³⁴ elements per row. A cipher
block's four 32-bit words become four uniforms and, by Box–Muller, four normals.

The cipher is elementwise integer arithmetic with no Python loop over structures, identical on
every device. On a CPU it runs in numpy ``uint32`` words (:func:`threefry4x32_uint32`): adds wrap
and shifts are logical, so a mix needs no masks, and a numpy call costs a microsecond where a torch
kernel costs several (a draw of 64 streams × 512 normals: 2.4 ms against 6.3 with torch int64).
Elsewhere it runs on torch int64 tensors holding 32-bit words (:func:`threefry4x32`; nothing above
2⁶³, so nothing overflows). Both give the same words bit for bit, and the same float64 Box–Muller in
torch turns them into normals.

A stream is a (G, 7) int64 tensor of 32-bit words, one row per structure (or structure row):
``(structure_hi, structure_lo, seed_hi, seed_lo, row, pass, layer)``, built by :func:`stream_heads`
and :func:`with_row`; :func:`keyed_normal` draws from it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

_M32 = 0xFFFFFFFF
#: rotation constants of Threefry-4x32 (Random123 ``R_32x4``), one pair per round mod 8
_ROTATIONS = ((10, 26), (11, 21), (13, 27), (23, 5), (6, 20), (17, 11), (25, 10), (18, 20))
#: the key-schedule parity word of Threefish/Threefry for 32-bit words
_PARITY32 = 0x1BD11BDA
ROUNDS = 20
#: columns of a stream tensor
STREAM_WORDS = ("structure_hi", "structure_lo", "seed_hi", "seed_lo", "row", "pass", "layer")
_ROW, _PASS, _LAYER = 4, 5, 6


def _mix(a: torch.Tensor, b: torch.Tensor, r: int) -> None:
    """One Threefry mix, in place: a ← (a + b) mod 2³², b ← rotl32(b, r) ⊕ a (in-place ops: about 6x
    faster than building a new tensor per step)."""
    a.add_(b).bitwise_and_(_M32)
    high = b >> (32 - r)
    b.bitwise_left_shift_(r).bitwise_and_(_M32).bitwise_or_(high).bitwise_xor_(a)


def threefry4x32(key: tuple, counter: tuple, rounds: int = ROUNDS) -> tuple[torch.Tensor, ...]:
    """Threefry-4x32 of ``counter`` under ``key``: four 32-bit words each (int64 tensors or ints in
    [0, 2³²), broadcast together); returns the four output words as int64 tensors in [0, 2³²)."""
    k = [torch.as_tensor(w, dtype=torch.long) for w in key]
    ks = [*k, k[0] ^ k[1] ^ k[2] ^ k[3] ^ _PARITY32]
    c = [torch.as_tensor(w, dtype=torch.long) for w in counter]
    shape = torch.broadcast_shapes(*(t.shape for t in (*k, *c)))
    x = [((c[j] + ks[j]) & _M32).expand(shape).contiguous() for j in range(4)]
    for mixes, s in _round_plan(rounds):
        for a, b, rotation in mixes:
            _mix(x[a], x[b], rotation)
        if s is not None:
            for j in range(4):
                x[j].add_(ks[(s + j) % 5] + (s if j == 3 else 0)).bitwise_and_(_M32)
    return tuple(x)


def _round_plan(rounds: int):
    """Threefry-4x32's schedule: per round, its two (word a, word b, rotation) mixes, then the key
    injection number s after every fourth round (None otherwise)."""
    for r in range(rounds):
        ra, rb = _ROTATIONS[r % 8]
        mixes = ((0, 1, ra), (2, 3, rb)) if r % 2 == 0 else ((0, 3, ra), (2, 1, rb))
        yield mixes, ((r + 1) // 4 if r % 4 == 3 else None)


def _split64(value: int, what: str) -> tuple[int, int]:
    v = int(value)
    if v >= 1 << 64:
        raise ValueError(f"{what} must be below 2**64, got {v}")
    v &= (1 << 64) - 1  # a negative seed: its two's complement
    return v >> 32, v & _M32


def stream_heads(seed: int, words: torch.Tensor, layer_key: int) -> torch.Tensor:
    """(G, 7) streams (module docstring) of ``words`` ((G, 3) int64 in [0, 2³²): structure hi,
    structure lo, pass; :func:`mofbalora.adapters.context.structure_keys` builds them) for one
    seed and one layer."""
    if words.dim() != 2 or words.shape[1] != 3:
        raise ValueError(
            "words must be (G, 3) (structure hi, structure "
            f"lo, pass), got shape {tuple(words.shape)}"
        )
    g = words.shape[0]
    seed_hi, seed_lo = _split64(seed, "the noise seed")
    out = torch.empty(g, len(STREAM_WORDS), dtype=torch.long, device=words.device)
    out[:, 0:2] = words[:, 0:2] & _M32
    out[:, 2], out[:, 3] = seed_hi, seed_lo
    out[:, _ROW] = 0
    out[:, _PASS] = words[:, 2] & _M32
    out[:, _LAYER] = int(layer_key) & _M32
    return out


def with_row(streams: torch.Tensor, row: torch.Tensor | int) -> torch.Tensor:
    """``streams`` with their ``row`` word set to ``row`` (a row's position inside its structure,
    < 2³²)."""
    row = torch.as_tensor(row, dtype=torch.long, device=streams.device)
    if bool((row < 0).any()) or bool((row > _M32).any()):
        raise ValueError(
            f"row positions must lie in [0, 2**32), got {row.min().item()}..{row.max().item()}"
        )
    out = streams.clone()
    out[:, _ROW] = row
    return out


def threefry4x32_uint32(key: tuple, counter: tuple, rounds: int = ROUNDS) -> list[np.ndarray]:
    """:func:`threefry4x32` in numpy ``uint32`` words (arrays or ints, broadcast together): the same
    four output words, as ``uint32`` arrays. uint32 arithmetic wraps mod 2³² and shifts logically,
    so a mix is five in-place ufuncs with no masks (the int64 form needs seven, on words twice as
    wide)."""
    k = [np.asarray(w, dtype=np.uint32) for w in key]
    ks = [*k, k[0] ^ k[1] ^ k[2] ^ k[3] ^ np.uint32(_PARITY32)]
    c = [np.asarray(w, dtype=np.uint32) for w in counter]
    shape = np.broadcast_shapes(*(w.shape for w in (*k, *c)))
    x = [np.broadcast_to(c[j] + ks[j], shape).copy() for j in range(4)]
    high = np.empty(shape, dtype=np.uint32)

    def mix(a: np.ndarray, b: np.ndarray, r: int) -> None:
        np.add(a, b, out=a)
        np.right_shift(b, np.uint32(32 - r), out=high)
        np.left_shift(b, np.uint32(r), out=b)
        np.bitwise_or(b, high, out=b)
        np.bitwise_xor(b, a, out=b)

    for mixes, s in _round_plan(rounds):
        for a, b, rotation in mixes:
            mix(x[a], x[b], rotation)
        if s is not None:
            for j in range(4):
                np.add(x[j], ks[(s + j) % 5] + np.uint32(s if j == 3 else 0), out=x[j])
    return x


#: cipher blocks per numpy pass: the five word arrays of a pass (2.5 MB) stay in the L2/L3 caches
#: (one pass over 4 M blocks took 1.7x the time per block of 64 K-block passes)
_BLOCKS_PER_PASS = 1 << 17


def _cipher_words(heads: torch.Tensor, n_blocks: int) -> tuple[torch.Tensor, ...]:
    """The four (G, n_blocks) output words of the streams ``heads`` (blocks 0..n_blocks-1), as
    tensors on ``heads``' device: numpy ``uint32`` on a CPU, torch int64 elsewhere."""
    if heads.device.type != "cpu":
        block = torch.arange(n_blocks, dtype=torch.long, device=heads.device)[None, :]
        col = [heads[:, j : j + 1] for j in range(len(STREAM_WORDS))]
        return threefry4x32(
            (col[0], col[1], col[2], col[3]), (block, col[_ROW], col[_PASS], col[_LAYER])
        )
    words = heads.numpy().astype(np.uint32)
    out = np.empty((4, words.shape[0], n_blocks), dtype=np.uint32)
    block = np.arange(n_blocks, dtype=np.uint32)[None, :]
    step = max(1, _BLOCKS_PER_PASS // max(n_blocks, 1))
    for g in range(0, words.shape[0], step):
        col = [words[g : g + step, j : j + 1] for j in range(len(STREAM_WORDS))]
        out[:, g : g + step] = threefry4x32_uint32(
            (col[0], col[1], col[2], col[3]), (block, col[_ROW], col[_PASS], col[_LAYER])
        )
    return tuple(torch.from_numpy(w) for w in out)


def keyed_normal(heads: torch.Tensor, n: int, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """(G, n) standard normals; row g depends only on ``heads[g]`` (a stream, :func:`stream_heads`),
    element j on cipher block j // 4 of it."""
    heads = heads.to(device) if device is not None else heads
    if heads.dim() != 2 or heads.shape[1] != len(STREAM_WORDS):
        raise ValueError(
            f"streams must be (G, {len(STREAM_WORDS)}) "
            f"{STREAM_WORDS}, got shape {tuple(heads.shape)}"
        )
    n_blocks = (n + 3) // 4
    if n_blocks > _M32 + 1:
        raise ValueError(f"at most 2**34 normals per stream, asked for {n}")
    w = _cipher_words(heads, n_blocks)
    # uniforms in (0, 1] for the radius (log never sees 0) and [0, 2π) for the angle, in float64
    r1 = torch.sqrt(-2.0 * torch.log((w[0].to(torch.float64) + 1.0) * (1.0 / 4294967296.0)))
    r2 = torch.sqrt(-2.0 * torch.log((w[2].to(torch.float64) + 1.0) * (1.0 / 4294967296.0)))
    a1 = w[1].to(torch.float64) * (2.0 * math.pi / 4294967296.0)
    a2 = w[3].to(torch.float64) * (2.0 * math.pi / 4294967296.0)
    z = torch.stack(
        [r1 * torch.cos(a1), r1 * torch.sin(a1), r2 * torch.cos(a2), r2 * torch.sin(a2)], dim=-1
    )
    return z.reshape(heads.shape[0], 4 * n_blocks)[:, :n].to(dtype)


def digest_words(digest: str) -> tuple[int, int]:
    """Two 32-bit words from a hex content digest: its first 64 bits (16 hex digits), the
    structure key."""
    v = int(digest[:16], 16)
    return v >> 32, v & _M32
