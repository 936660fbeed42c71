from __future__ import annotations

import json
import os
import pickle
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


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Tests featurize from scratch into their own cache (as on a fresh machine), shared within
    the session."""
    old = os.environ.get("MOFBALORA_CACHE")
    os.environ["MOFBALORA_CACHE"] = str(tmp_path_factory.mktemp("mofbalora-cache"))
    yield
    if old is None:
        os.environ.pop("MOFBALORA_CACHE", None)
    else:
        os.environ["MOFBALORA_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_split(tmp_path_factory, qmof) -> Path:
    """A split of 16 train / 8 val / 8 test QMOF ids, each drawn from the same part of the
    documented split."""
    from mofbalora.data.splits import load_split, save_split

    full = load_split("qmof_v1")
    small = {"train": full["train"][:16], "val": full["val"][:8], "test": full["test"][:8]}
    return save_split(small, tmp_path_factory.mktemp("split") / "tiny.json", name="tiny")


@pytest.fixture(scope="session")
def tiny_cfg(tiny_split, qmof_path):
    """Run configuration for seconds-long fine-tunes on the tiny split (call with overrides; a pure
    factory, so module fixtures may use it too)."""
    from mofbalora.config import load_config

    def make(*overrides: str) -> dict:
        return load_config(
            None,
            [
                f"data.path={qmof_path}",
                f"data.split={tiny_split}",
                "optim.epochs=2",
                "optim.batch_size=8",
                "run.eval_samples=4",
                "run.threads=1",
                "adapter.n_members=2",
                *overrides,
            ],
        )

    return make


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tiny_split, qmof_path):
    """A BaLoRA model fine-tuned for 2 epochs on the tiny split (a run folder)."""
    from mofbalora.config import load_config
    from mofbalora.train import finetune

    cfg = load_config(
        None,
        [
            f"data.path={qmof_path}",
            f"data.split={tiny_split}",
            "optim.epochs=2",
            "optim.batch_size=8",
            "run.eval_samples=4",
            "run.threads=1",
            "run.eval_test=false",
        ],
    )
    out = tmp_path_factory.mktemp("model") / "run"
    finetune(cfg, out, progress=False)
    return out


TINY_AL = {"initial_labelled": 6, "batch_size": 3, "n_rounds": 2, "n_samples": 4}


@pytest.fixture()
def al_cfg(tiny_cfg):
    """Campaign configuration on the tiny split: 6 labelled, pool of 10, batches of 3, 2 rounds,
    2 epochs."""

    def make(*overrides: str, **al) -> dict:
        cfg = tiny_cfg("data.val_size=4", *overrides)
        from mofbalora.al.config import AL_DEFAULTS

        cfg.update({k: json.loads(json.dumps(v)) for k, v in AL_DEFAULTS.items()})
        cfg["al"].update({**TINY_AL, **al})
        return cfg

    return make


class Payload:
    """A planted pickle: unpickling it runs ``exec``, which writes ``marker`` (what an attacker
    would plant)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


@pytest.fixture()
def payload() -> type[Payload]:
    """The planted-pickle class: ``payload(marker)`` is an object whose unpickling writes
    ``marker``."""
    return Payload


@pytest.fixture()
def marker(tmp_path, payload) -> Path:
    """The payload's marker file; checked first to be live (unpickling the payload does write it),
    so the refusals that assert it was never written are not vacuous."""
    m = tmp_path / "payload-ran"
    pickle.loads(pickle.dumps(payload(m)))
    assert m.read_text() == "ran"
    m.unlink()
    return m
