"""Reading QMOF CIFs cold versus from the content-keyed cache, as a ratio from one run.

python benchmarks/bench_data.py [N]       (default N = 1000 test-split CIFs)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from _common import qmof_test_paths


def main(n: int = 1000) -> None:
    os.environ["MOFBALORA_CACHE"] = tempfile.mkdtemp(prefix="bench-cache-")
    from pymatgen.core import Structure

    from mofbalora.data.cache import ContentCache
    from mofbalora.data.structures import read_structure

    paths = qmof_test_paths(n)
    cache = ContentCache(
        "structures/v2", to_plain=Structure.as_dict, from_plain=Structure.from_dict
    )
    t0 = time.perf_counter()
    for p in paths:
        cache.get_or_compute(p, read_structure)  # cold: parse + validate + store
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    for p in paths:
        cache.get_or_compute(p, read_structure)  # warm: hash the file + read the safetensors entry
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for p in paths[:200]:
        read_structure(p)
    parse_only = (time.perf_counter() - t0) / min(200, len(paths))
    print(
        f"{len(paths)} QMOF CIFs: cold {len(paths) / cold:.0f} structures/s, cached "
        f"{len(paths) / warm:.0f} structures/s, ratio cached/cold = {cold / warm:.1f}x "
        f"(parse+validate alone: {parse_only * 1e3:.1f} ms)"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
