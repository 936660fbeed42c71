"""Plain values ⇄ one safetensors file: tensors and arrays as tensors, the rest as JSON. No pickles.

What can be stored is exactly what backbones' featurized inputs are made of: nested ``dict`` (with
``str`` keys), ``list`` and ``tuple`` of torch tensors, numpy arrays (numeric or bool), numpy
scalars, ``int``, ``float``, ``bool``, ``str`` and ``None``. Anything else (a class instance, an
object array, a string array) is refused with a :class:`TypeError` naming where it sits, so a
backbone that caches richer objects must turn them into plain values first
(:meth:`mofbalora.backbones.base.Backbone.to_plain`).

The file holds every tensor under a numbered name and, in the safetensors metadata, a JSON tree that
says where each goes: a JSON scalar is itself; an object is a tagged node (``{"dict": {...}}``,
``{"list": [...]}``, ``{"tuple": [...]}``, ``{"tensor": "3"}``, ``{"ndarray": "3"}``,
``{"npscalar": "3"}``). Reading parses the header and tensors only: nothing in the file can name a
Python callable, so a planted file can at worst fail to parse (:class:`PlainFormatError`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: the format tag written in every file's metadata; a file with another tag is refused
FORMAT = "mofbalora-plain/1"
_TAGS = ("dict", "list", "tuple", "tensor", "ndarray", "npscalar")


class PlainFormatError(ValueError):
    """A file that is not a readable plain-values file (not safetensors, wrong format tag, bad
    tree)."""


def _tensor_of_array(a: np.ndarray, where: str) -> torch.Tensor:
    if a.dtype.kind not in "biufc":
        raise TypeError(
            f"{where}: numpy array of dtype {a.dtype} cannot be stored; only numeric and bool "
            "arrays are (store strings as str or a list of str)"
        )
    if a.dtype.kind == "c":
        raise TypeError(f"{where}: complex arrays ({a.dtype}) cannot be stored as safetensors")
    # a copy: safetensors refuses tensors that share memory (views of one array), and mmap arrays
    # are read-only
    return torch.from_numpy(np.array(a, copy=True, order="C"))


def encode(value: Any) -> tuple[dict[str, torch.Tensor], str]:
    """(tensors by name, JSON tree) of ``value``; raises TypeError naming the first unsupported
    part."""
    tensors: dict[str, torch.Tensor] = {}

    def add(t: torch.Tensor) -> str:
        name = str(len(tensors))
        tensors[name] = t
        return name

    def walk(v: Any, where: str) -> Any:
        if isinstance(v, np.generic):  # before float: np.float64 is a float subclass, kept as numpy
            if isinstance(v, (np.str_, np.bytes_, np.void, np.object_)):
                raise TypeError(
                    f"{where}: numpy {type(v).__name__} scalars cannot be stored; use str"
                )
            return {"npscalar": add(_tensor_of_array(np.asarray(v), where))}
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if torch.is_tensor(v):
            if v.is_complex():
                raise TypeError(
                    f"{where}: complex tensors ({v.dtype}) cannot be stored as safetensors"
                )
            return {"tensor": add(v.detach().cpu().clone().contiguous())}
        if isinstance(v, np.ndarray):
            return {"ndarray": add(_tensor_of_array(v, where))}
        if isinstance(v, dict):
            bad = [k for k in v if not isinstance(k, str)]
            if bad:
                raise TypeError(
                    f"{where}: dict keys must be str, got {bad[0]!r} ({type(bad[0]).__name__})"
                )
            return {"dict": {k: walk(x, f"{where}[{k!r}]") for k, x in v.items()}}
        if isinstance(v, (list, tuple)):
            tag = "list" if isinstance(v, list) else "tuple"
            return {tag: [walk(x, f"{where}[{i}]") for i, x in enumerate(v)]}
        raise TypeError(
            f"{where}: {type(v).__module__}.{type(v).__qualname__} cannot be stored; plain values "
            "are dict (str keys), list, tuple, torch tensors, numpy arrays and scalars, int, "
            "float, bool, str and None"
        )

    tree = walk(value, "value")
    return tensors, json.dumps(tree, separators=(",", ":"))


def decode(tensors: dict[str, torch.Tensor], tree_json: str) -> Any:
    """The value :func:`encode` was given; raises :class:`PlainFormatError` on any inconsistency."""
    try:
        tree = json.loads(tree_json)
    except json.JSONDecodeError as exc:
        raise PlainFormatError(f"metadata tree is not JSON: {exc}") from None
    used: set[str] = set()

    def leaf(name: Any) -> torch.Tensor:
        if not isinstance(name, str) or name not in tensors or name in used:
            raise PlainFormatError(
                f"tree names tensor {name!r}, which the file does not hold (or names twice)"
            )
        used.add(name)
        return tensors[name]

    def walk(node: Any) -> Any:
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if (
            isinstance(node, list)
            or not isinstance(node, dict)
            or len(node) != 1
            or next(iter(node)) not in _TAGS
        ):
            raise PlainFormatError(
                f"bad tree node {str(node)[:80]!r}: expected a JSON scalar or one of the "
                f"tags {list(_TAGS)}"
            )
        tag, body = next(iter(node.items()))
        if tag == "dict":
            if not isinstance(body, dict):
                raise PlainFormatError("a 'dict' node must hold an object")
            return {k: walk(x) for k, x in body.items()}
        if tag in ("list", "tuple"):
            if not isinstance(body, list):
                raise PlainFormatError(f"a {tag!r} node must hold an array")
            items = [walk(x) for x in body]
            return items if tag == "list" else tuple(items)
        t = leaf(body)
        if tag == "tensor":
            return t
        a = t.numpy()
        return a[()] if tag == "npscalar" else a

    value = walk(tree)
    if used != set(tensors):
        raise PlainFormatError(
            f"file holds {len(set(tensors) - used)} tensor(s) the tree does not place"
        )
    return value


def dumps(value: Any) -> bytes:
    """``value`` as the bytes of one safetensors file (see the module docstring)."""
    from safetensors.torch import save

    tensors, tree = encode(value)
    return save(tensors, metadata={"format": FORMAT, "tree": tree})


def load(path: str | Path) -> Any:
    """Read a file written from :func:`dumps`; :class:`PlainFormatError` names the file if it
    does not parse."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except Exception as exc:  # safetensors raises its own (Rust) error type for any bad header
        raise PlainFormatError(
            f"{path}: not a safetensors file ({type(exc).__name__}: {exc})"
        ) from None
    if meta.get("format") != FORMAT:
        raise PlainFormatError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    try:
        return decode(tensors, meta.get("tree", ""))
    except PlainFormatError as exc:
        raise PlainFormatError(f"{path}: {exc}") from None
