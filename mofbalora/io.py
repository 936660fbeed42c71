"""The lowest layer: atomic file writes and the one checkpoint format (safetensors + a JSON config).

Every file this package writes for another run to read (model checkpoints, configs, campaign state,
screen tables, splits, cache entries, reports) goes through :func:`atomic_write_bytes` or
:func:`atomic_path`: the data goes to a temporary file in the target's folder, which then replaces
the target with ``os.replace``. A reader sees the old or the new file, never a half-written one, and
a crash leaves at most a ``.tmp-*`` file behind. Nothing here imports the rest of the package.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FILE_MODE = 0o644  # mkstemp makes files private; written files get the usual rights
#: a saved model folder: its weights and its config (``mofbalora.model``; the gbm baseline writes
#: the config too)
MODEL_FILE = "model.safetensors"
MODEL_CONFIG = "model_config.json"
#: table formats :func:`write_table` writes, by file extension
TABLE_FORMATS = {".csv", ".parquet", ".json"}


@contextmanager
def atomic_path(path: str | Path, *, suffix: str = "") -> Iterator[Path]:
    """A temporary path next to ``path`` to write into; on a clean exit it replaces ``path``
    atomically.

    For writers that want a file name (``DataFrame.to_parquet``, ``np.save``). ``suffix`` keeps the
    extension for writers that look at it. On an exception the temporary file is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file + rename); the folder must exist."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any, **kwargs) -> Path:
    """:func:`atomic_write_bytes` of ``json.dumps(obj, **kwargs)``."""
    return atomic_write_bytes(path, json.dumps(obj, **kwargs).encode())


@contextmanager
def atomic_directory(target: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """A temporary folder next to ``target`` to fill; on a clean exit it becomes ``target``
    (``os.replace``).

    Content-keyed folders (cache entries, an unpacked archive) are the same whoever writes them, so
    when another process created ``target`` in the meantime its copy is kept; ``replace=True``
    removes an existing ``target`` first. The temporary folder is removed in every case.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        yield tmp
        if replace and target.exists():
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:  # lost a race with another writer of the same content: theirs is as good
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_table(df, path: str | Path) -> Path:
    """Write a pandas DataFrame as CSV / parquet / JSON records by extension, atomically; ValueError
    naming the extension and the formats for any other."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise ValueError(
            f"unknown output format {suffix!r} for {path}; choose from {sorted(TABLE_FORMATS)}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=suffix) as tmp:
        if suffix == ".csv":
            df.to_csv(tmp, index=False)
        elif suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_json(tmp, orient="records", indent=1)
    return path


# -- checkpoints -----------------------------------------------------------------------------------
class BaseModelMismatchError(ValueError):
    """The weights were trained on another base model."""


def check_base_identity(saved: dict, given: dict, where: str | Path) -> None:
    """Raise :class:`BaseModelMismatchError` naming what differs when the saved base identity
    (backbone name, sha256 of its frozen weights) is not the one of the base the weights are
    loaded onto."""
    if saved != given:
        diff = {
            k: (saved.get(k), given.get(k))
            for k in sorted(set(saved) | set(given))
            if saved.get(k) != given.get(k)
        }
        raise BaseModelMismatchError(
            f"weights in {where} were trained on another base model: "
            f"(saved, installed) differ in {diff}"
        )


def save_checkpoint(
    directory: str | Path, tensors: dict, config: dict, *, weights_file: str, config_file: str
) -> Path:
    """Write a checkpoint: ``tensors`` (name -> torch tensor) as safetensors and ``config`` (plain
    JSON, which names the base model) next to it, each atomically; the weights first, so a config
    always has its weights."""
    from safetensors.torch import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(
        directory / weights_file,
        save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}),
    )
    atomic_write_json(directory / config_file, config, indent=2)
    return directory


def read_checkpoint(
    directory: str | Path,
    *,
    weights_file: str,
    config_file: str,
    what: str = "checkpoint",
    base: dict | None = None,
) -> tuple[dict, dict]:
    """(config, tensors) of a checkpoint written by :func:`save_checkpoint`; FileNotFoundError
    naming the folder when it holds no ``config_file``.

    ``base``: the identity of the base the weights are about to be loaded onto; when given, the
    config's ``base`` must equal it (:func:`check_base_identity`, checked before the tensors are
    read). Every read of a saved model's weights passes it.
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    cfg_path = directory / config_file
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{directory}: no {config_file}; is this a {what} folder?")
    config = json.loads(cfg_path.read_text())
    if base is not None:
        check_base_identity(config.get("base") or {}, base, directory)
    return config, load_file(str(directory / weights_file))


# -- YAML ------------------------------------------------------------------------------------------
def read_yaml(path: str | Path, *, what: str = "YAML file") -> dict:
    """The mapping in the YAML file at ``path`` (an empty file: ``{}``), read with
    ``yaml.safe_load``: the one way the package reads YAML (run and campaign configurations, sweeps,
    cluster files). ValueError naming the file when it holds anything but a mapping."""
    import yaml

    path = Path(path)
    data = yaml.safe_load(path.read_text())
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a {what} must be a mapping, got {type(data).__name__}")
    return data


def write_yaml(path: str | Path, data: dict) -> Path:
    """``data`` as block YAML (keys in their order), written atomically."""
    import yaml

    return atomic_write_bytes(path, yaml.safe_dump(data, sort_keys=False).encode())
