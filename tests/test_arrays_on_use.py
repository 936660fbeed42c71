"""The array store's read-on-use handles: equal arrays, nothing held open (the cut of 14,609
training structures would pass the open-file and mapping limits if memory-mapped)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from mofbalora.data.arrays import ArrayStore, OnUseArray


def test_on_use_arrays_equal_the_stored_ones_and_hold_nothing_open(tmp_path):
    store = ArrayStore("test/cut", root=tmp_path)
    feas = np.arange(24, dtype=np.float16).reshape(6, 4)
    graph = np.arange(10, dtype=np.int32).reshape(5, 2)
    store.put("ab" * 32, {"cut_bond_feas": feas, "cut_atom_graph": graph})
    fds = len(os.listdir("/proc/self/fd"))
    handles = [store.get("ab" * 32, on_use=True) for _ in range(200)]
    assert len(os.listdir("/proc/self/fd")) == fds  # nothing held open
    assert store.get("cd" * 32, on_use=True) is None  # absent entry: a miss
    x = handles[0]
    assert isinstance(x["cut_bond_feas"], OnUseArray)
    assert len(x["cut_atom_graph"]) == 5 and x["cut_bond_feas"].shape == (6, 4)
    assert np.asarray(x["cut_bond_feas"]).dtype == np.float16
    assert np.array_equal(np.asarray(x["cut_bond_feas"]), feas)
    assert np.array_equal(np.asarray(x["cut_bond_feas"], dtype=np.float32), feas.astype(np.float32))
    assert np.array_equal(
        np.concatenate([np.asarray(x["cut_atom_graph"])] * 2), np.tile(graph, (2, 1))
    )
    assert isinstance(store.get("ab" * 32)["cut_bond_feas"], np.ndarray)  # default: in memory


def test_a_corrupt_file_reads_as_a_miss(tmp_path):
    store = ArrayStore("test/cut", root=tmp_path)
    store.put("ab" * 32, {"cut_bond_feas": np.ones((2, 2), dtype=np.float16)})
    (store.dir / "ab" / ("ab" * 32) / "cut_bond_feas.npy").write_bytes(b"not an npy file")
    assert store.get("ab" * 32, on_use=True) is None
    assert store.get("ab" * 32) is None


def test_object_arrays_are_refused(tmp_path):
    path = tmp_path / "obj.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="object arrays"):
        OnUseArray(path)
