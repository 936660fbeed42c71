"""Adapter types for layers of optional packages (fairchem's ``MOLE`` and ``SO3_Linear``), by name.

A backbone names the extensions its layers need (``Backbone.adapter_extensions``, e.g. UMA:
``("mole", "so3")``) without importing the adapters; whoever injects adapters into it (the model,
:func:`~mofbalora.adapters.io.load_adapter`) enables them first. Enabling imports the optional
package.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from mofbalora.adapters.mole import register_mole_adapters
from mofbalora.adapters.so3 import register_so3_adapters

ADAPTER_EXTENSIONS: dict[str, Callable[[], None]] = {
    "mole": register_mole_adapters,
    "so3": register_so3_adapters,
}


def enable_adapter_extensions(names: Iterable[str]) -> None:
    """Register the adapter types of the named extensions (idempotent); ValueError naming an
    unknown one."""
    for name in names:
        if name not in ADAPTER_EXTENSIONS:
            raise ValueError(
                f"unknown adapter extension {name!r}; choose from {sorted(ADAPTER_EXTENSIONS)}"
            )
        ADAPTER_EXTENSIONS[name]()
