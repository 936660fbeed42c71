"""Tests for mofbalora.allocator: the restart with glibc's huge-page tunable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mofbalora import allocator

PROBE = (
    "import os, torch\n"
    "from mofbalora.allocator import reexec_with_hugepages\n"
    "reexec_with_hugepages()\n"
    "g = torch.Generator().manual_seed(0)\n"
    "x = torch.randn(250_000, 64, generator=g)\n"  # 64 MB: above glibc's mmap threshold
    "y = torch.nn.functional.silu(x @ torch.randn(64, 64, generator=g))\n"
    "print(os.environ.get('GLIBC_TUNABLES', ''))\n"
    "print(y.sum().item(), y.abs().max().item())\n"
)


def _probe(**env: str) -> tuple[str, list[float]]:
    environ = {
        k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", allocator.OPT_OUT)
    }
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return out[0], [float(v) for v in out[1].split()]


def test_tunable_is_appended_and_wanted_only_once():
    assert allocator.with_hugepages({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    env = allocator.with_hugepages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "A": "b"})
    assert env == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1", "A": "b"}
    assert not allocator.hugepages_wanted(env)  # set already: no second restart
    assert not allocator.hugepages_wanted({allocator.OPT_OUT: "0"})


@pytest.mark.skipif(
    not allocator.hugepages_wanted({}), reason="no glibc or no transparent huge pages here"
)
def test_restarted_process_has_the_tunable_and_computes_the_same_bits():
    tunables, result = _probe()
    assert "glibc.malloc.hugetlb=1" in tunables.split(":")
    kept, plain = _probe(**{allocator.OPT_OUT: "0"})
    assert kept == ""  # opted out: started as it was
    assert result == pytest.approx(plain, rel=1e-12, abs=0)
