"""LoRA / BaLoRA around fairchem's mixture-of-linear-experts layer (``MOLE``, used inside UMA).

A MOLE layer computes, for the rows of system s, ``y = (Σ_e c_se W_e) x + b`` with expert
coefficients c_s set per system from its composition, charge, spin and task. The adapter adds one
low-rank update shared by all experts, ``s · θ_B θ_A x`` (BaLoRA: with θ_A stochastic, as in
``balora.py``), i.e. it adapts the mixed weight of every system by the same low-rank matrix. The
experts stay frozen.

Merging is refused: the mixture weights sum to a constant that depends on the coefficient norm, so
folding the update into the experts is not exact for every norm; the adapter path costs little
anyway. fairchem is imported when :func:`register_mole_adapters` is called (by the UMA backbone),
never before.
"""

from __future__ import annotations

from mofbalora.adapters.balora import BaLoRALinear
from mofbalora.adapters.inject import ADAPTER_FACTORIES, linear_factory, register_adapter_type
from mofbalora.adapters.lora import LoRALinear

_NO_MERGE = "a LoRA update cannot be merged into mixture-of-experts weights"


class MOLELoRALinear(LoRALinear):
    """LoRA (and its MC-dropout / ensemble baselines) around a ``MOLE`` layer."""

    base_types: tuple[type, ...] = ()  # (fairchem's MOLE,) once register_mole_adapters() has run

    def merge(self) -> None:
        raise ValueError(f"{type(self).__name__}: {_NO_MERGE}")


class MOLEBaLoRALinear(BaLoRALinear):
    """BaLoRA around a ``MOLE`` layer."""

    base_types: tuple[type, ...] = ()

    def merge(self) -> None:
        raise ValueError(f"{type(self).__name__}: {_NO_MERGE}")


def register_mole_adapters() -> None:
    """Teach :func:`~mofbalora.adapters.inject_adapters` to wrap fairchem's ``MOLE`` layers.
    Idempotent."""
    from fairchem.core.models.uma.nn.mole import MOLE

    MOLELoRALinear.base_types = MOLEBaLoRALinear.base_types = (MOLE,)
    if MOLE not in ADAPTER_FACTORIES:
        register_adapter_type(MOLE, linear_factory(MOLELoRALinear, MOLEBaLoRALinear))
