from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def qmof_path() -> Path:
    from mofbalora.data.qmof import default_qmof_path

    try:
        return default_qmof_path()
    except FileNotFoundError:
        pytest.fail("QMOF data not found: set MOFBALORA_QMOF or place it at ../shared/data/qmof")


@pytest.fixture(scope="session")
def qmof(qmof_path):
    from mofbalora.data.qmof import load_dataset

    return load_dataset(qmof_path)


@pytest.fixture(scope="session")
def sample_cifs(qmof_path) -> list[Path]:
    return sorted((qmof_path / "original_cif_sample").glob("*.cif"))
