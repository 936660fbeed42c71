"""Large CPU tensors on huge pages: glibc's ``malloc.hugetlb`` tunable, set for a whole process.

PyTorch's CPU allocator asks glibc's ``malloc`` for every tensor and frees it after use, with no
cache of its own. glibc serves a request above its ``mmap`` threshold (at most 32 MB on 64-bit)
with a fresh ``mmap`` and unmaps it on ``free``, so each such tensor's pages are faulted in and
zeroed by the kernel again, 4 KB at a time. A training step of the trunk placement at the recipes'
32 structures makes (edge rows, 64) tensors of about 60 MB: on this project's 2-core machine a
third of an epoch's CPU time was then kernel time (300,000 page faults a second). With the tunable
``glibc.malloc.hugetlb=1`` glibc marks its memory for transparent huge pages (2 MB), 512× fewer
faults: an epoch of ``last_block_cached`` at batch 32 is 19 % shorter, at batch 8 14 %
(``benchmarks/bench_placements.py --batch``; reports/trunk/README.md, "Allocator").

glibc reads tunables once, when the process starts, so :func:`reexec_with_hugepages` starts the
command again (``os.execve``, same interpreter and arguments) with the tunable added to
``GLIBC_TUNABLES``. The ``mofbalora`` command and the long-run drivers call it first thing; library
users set it themselves (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python ...``). It does nothing on
a system without glibc, when the kernel offers no transparent huge pages, when the tunable (or any
``malloc.hugetlb`` value) is already set, or with ``MOFBALORA_HUGEPAGES=0``. Values only change how
memory is mapped: results are bit for bit the same (tests/test_allocator.py).
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb"
#: set to ``0`` to keep the process as started
OPT_OUT = "MOFBALORA_HUGEPAGES"
_THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def hugepages_wanted(environ: dict[str, str] | None = None) -> bool:
    """Whether this process should be restarted with :data:`TUNABLE`: glibc on Linux, transparent
    huge pages offered (``always`` or ``madvise``), the tunable not set yet, no opt-out."""
    env = os.environ if environ is None else environ
    if env.get(OPT_OUT, "1") == "0" or TUNABLE in env.get("GLIBC_TUNABLES", ""):
        return False
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mode = _THP.read_text()
    except OSError:
        return False
    return "[never]" not in mode


def with_hugepages(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` with :data:`TUNABLE` ``=1`` appended to ``GLIBC_TUNABLES`` (kept otherwise)."""
    current = environ.get("GLIBC_TUNABLES", "")
    return {**environ, "GLIBC_TUNABLES": f"{current}:{TUNABLE}=1" if current else f"{TUNABLE}=1"}


def reexec_with_hugepages() -> None:
    """Restart this process with :data:`TUNABLE` set, when :func:`hugepages_wanted`; otherwise
    return. Call it before any work (it replaces the process: nothing after the call runs in the
    old one)."""
    if not hugepages_wanted():
        return
    argv = [sys.executable, *getattr(sys, "orig_argv", [sys.executable, *sys.argv])[1:]]
    env = with_hugepages(dict(os.environ))
    env[OPT_OUT] = "0"  # the restarted process has the tunable: never restart it again
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, argv, env)
    except OSError:  # no interpreter to restart: go on as started
        return
