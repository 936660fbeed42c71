"""Value and key checks shared by every configuration dataclass (run sections, adapter, head, data
split, campaign sections): each raises ``ValueError`` naming the key and what it accepts. Nothing
here imports the rest of the package, so the dataclasses of any layer can use it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def check_choice(key: str, value: Any, choices: Iterable) -> None:
    """ValueError ``unknown <key> <value>; choose from [...]`` unless ``value`` is one of
    ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"unknown {key} {value!r}; choose from {choices}")


def check_int(key: str, value: Any, low: int, *, optional: bool = False) -> None:
    """ValueError unless ``value`` is an integer >= ``low`` (or None when ``optional``)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(
            f"{key} must be an integer >= {low}{' or null' if optional else ''}, got {value!r}"
        )


def check_number(key: str, value: Any, low: float, *, optional: bool = False) -> None:
    """ValueError unless ``value`` is a number >= ``low`` (or None when ``optional``)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
        raise ValueError(
            f"{key} must be a number >= {low}{' or null' if optional else ''}, got {value!r}"
        )


def check_probability(key: str, value: Any) -> None:
    """ValueError unless ``value`` is a number in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{key} must be a probability in [0, 1), got {value!r}")


def check_bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {value!r}")


def check_keys(
    data: Mapping, known: Iterable[str], prefix: str = "", what: str = "config key"
) -> None:
    """ValueError ``unknown <what> '<prefix><key>'; choose from [...]`` for the first key of
    ``data`` not in ``known`` (``prefix``: e.g. ``"optim."``, so that the message names the key
    as it is written)."""
    known = sorted(known)
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} {prefix + str(unknown[0])!r}; choose from {known}")


def check_mapping(name: str, value: Any) -> Mapping:
    if not isinstance(value, Mapping):
        raise ValueError(f"config section {name!r} must be a mapping, got {value!r}")
    return value


def field_names(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def strict(
    cls: type[T],
    data: Any,
    prefix: str = "",
    *,
    what: str = "config key",
    exclude: Iterable[str] = (),
) -> T:
    """``cls(**data)`` for a dataclass ``cls``, after refusing a non-mapping and any key that is not
    one of its fields (less ``exclude``), naming the key (``prefix`` + key) and the valid ones."""
    check_mapping(prefix.rstrip(".") or cls.__name__, data)
    check_keys(data, set(field_names(cls)) - set(exclude), prefix, what)
    return cls(**data)
