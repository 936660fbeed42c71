"""Nothing executable in what the toolkit reads back: planted pickles in the content cache and in
third-party checkpoints are refused without running, and the trust switch lets a legitimate one
load."""

from __future__ import annotations

import pickle
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from mofbalora.backbones.checkpoint import UntrustedCheckpointError
from mofbalora.data import plain
from mofbalora.data.cache import ContentCache


# ------------------------------------------------------------------------------------------------
# the content cache
# ------------------------------------------------------------------------------------------------
def test_plain_values_round_trip_exactly_and_anything_else_is_refused(tmp_path, payload):
    base = np.arange(12, dtype=np.int64).reshape(3, 4)
    value = {
        "z": np.array([6, 8], dtype=np.int16),
        "pos": torch.randn(2, 3, dtype=torch.float64),
        "graphs": {
            "main": {"s": base[:, 0], "t": base[:, 1], "empty": np.zeros((0, 3), np.float32)}
        },
        "uni_idx": [[0, 1], [2]],
        "pair": (1, "a"),
        "n_atoms": 2,
        "volume": 1.5,
        "scale": np.float32(0.5),
        "digest": "ab12",
        "none": None,
        "flag": True,
        "mask": np.array([True, False]),
    }
    path = tmp_path / "v.safetensors"
    path.write_bytes(plain.dumps(value))
    back = plain.load(path)
    assert back.keys() == value.keys()
    assert back["z"].dtype == np.int16 and np.array_equal(back["z"], value["z"])
    assert torch.equal(back["pos"], value["pos"])
    assert np.array_equal(back["graphs"]["main"]["t"], base[:, 1]) and back["graphs"]["main"][
        "empty"
    ].shape == (0, 3)
    assert back["uni_idx"] == [[0, 1], [2]] and back["pair"] == (1, "a")
    assert (
        type(back["scale"]) is np.float32
        and type(back["n_atoms"]) is int
        and type(back["flag"]) is bool
    )
    assert (back["volume"], back["digest"], back["none"]) == (1.5, "ab12", None)
    for bad, where in [
        ({"x": payload(tmp_path / "m")}, r"value\['x'\]: .*Payload cannot be stored"),
        ({"x": np.array(["a", "b"])}, "dtype <U1 cannot be stored"),
        ({"x": np.array([1, None], dtype=object)}, "dtype object"),
        ({1: 2}, "dict keys must be str"),
    ]:
        with pytest.raises(TypeError, match=where):
            plain.dumps(bad)


def test_a_pickle_planted_as_a_cache_entry_is_a_miss_and_never_runs(
    tmp_path, marker, caplog, payload
):
    cache = ContentCache("test/plain", root=tmp_path)
    digest = "ab" + "0" * 62
    entry = cache._path(digest)
    entry.parent.mkdir(parents=True)
    entry.write_bytes(pickle.dumps(payload(marker)))
    # the earlier format's name too
    entry.with_suffix(".pkl").write_bytes(pickle.dumps(payload(marker)))
    with caplog.at_level("WARNING"):
        assert cache.get(digest) is None
    assert str(entry) in caplog.text and "not a safetensors file" in caplog.text
    value = cache.get_or_compute(
        tmp_path / "any.cif", lambda _p: {"x": np.arange(3)}, digest=digest
    )
    assert np.array_equal(value["x"], np.arange(3))
    # recomputed and overwritten, atomically
    assert np.array_equal(cache.get(digest)["x"], np.arange(3))
    assert not marker.exists()
    assert not list(entry.parent.glob(".tmp-*"))


def test_a_safetensors_entry_with_a_bad_tree_is_a_miss(tmp_path):
    from safetensors.torch import save

    cache = ContentCache("test/plain", root=tmp_path)
    digest = "cd" + "1" * 62
    entry = cache._path(digest)
    entry.parent.mkdir(parents=True)
    for meta in (
        {"format": "other/1", "tree": "1"},
        {"format": plain.FORMAT, "tree": '{"tensor": "9"}'},
        {"format": plain.FORMAT, "tree": '{"exec": "x"}'},
        {"format": plain.FORMAT, "tree": "{"},
    ):
        entry.write_bytes(save({"0": torch.zeros(1)}, metadata=meta))
        assert cache.get(digest) is None, meta


def test_featurize_recomputes_over_a_planted_pickle(
    sample_cifs, tmp_path, marker, monkeypatch, payload
):
    """CHGNet's uncached placements keep a CrystalGraph per input: cached as its tensors (to_plain),
    and a planted entry under a real CIF's digest is recomputed, giving the same graph as a fresh
    featurization."""
    from mofbalora.backbones import load_backbone
    from mofbalora.data.cache import file_digest
    from mofbalora.featurize import _cache_for, featurize_files

    monkeypatch.setenv("MOFBALORA_CACHE", str(tmp_path / "cache"))
    chgnet = load_backbone("chgnet", adapt="all")
    cif = sample_cifs[0]
    cache = _cache_for(chgnet)
    entry = cache._path(file_digest(cif))
    entry.parent.mkdir(parents=True)
    entry.write_bytes(pickle.dumps(payload(marker)))
    (first,), (err,) = featurize_files(chgnet, [cif], progress=False)
    assert err is None and not marker.exists()
    # now a real entry: read back from the cache
    (hit,), _ = featurize_files(chgnet, [cif], progress=False)
    assert type(hit["graph"]).__name__ == "CrystalGraph"
    for k, v in first["graph"].to_dict().items():
        got = getattr(hit["graph"], k)
        assert torch.equal(got, v) if torch.is_tensor(v) else got == v, k


# ------------------------------------------------------------------------------------------------
# third-party checkpoints
# ------------------------------------------------------------------------------------------------
def _tiny_jmp(**kw):
    from mofbalora.backbones.jmp import JMPBackbone

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return JMPBackbone(size="tiny", cutoff=5.0, max_neighbors=8, **kw)


def test_jmp_checkpoint_with_a_payload_is_refused(tmp_path, marker, payload):
    path = tmp_path / "jmp-evil.pt"
    torch.save(
        {"state_dict": _tiny_jmp(seed=1).state_dict(), "hyper_parameters": payload(marker)}, path
    )
    with pytest.raises(
        UntrustedCheckpointError, match=r"JMP checkpoint .*jmp-evil\.pt.*trust_checkpoint=true"
    ):
        _tiny_jmp(checkpoint=str(path))
    assert not marker.exists()


def test_uma_checkpoint_with_a_payload_is_refused(tmp_path, marker, payload):
    pytest.importorskip("fairchem.core", reason="the UMA backbone needs fairchem-core")
    from mofbalora.backbones.uma import load_uma_backbone

    path = tmp_path / "uma-evil.pt"
    torch.save({"model_config": payload(marker)}, path)
    with pytest.raises(
        UntrustedCheckpointError, match=r"UMA checkpoint .*uma-evil\.pt.*trust_checkpoint=true"
    ):
        load_uma_backbone(path)
    assert not marker.exists()


def test_uma_config_naming_code_outside_fairchem_is_refused_and_a_real_one_loads(tmp_path, marker):
    """A weights-only UMA file can still name any callable for hydra to build: only fairchem's are
    taken without the switch. fairchem's own format loads with and without it."""
    pytest.importorskip("fairchem.core", reason="the UMA backbone needs fairchem-core")
    from fairchem.core.units.mlip_unit.api.inference import MLIPInferenceCheckpoint

    from mofbalora.backbones.uma import load_uma_backbone, read_uma_checkpoint
    from mofbalora.backbones.uma_checkpoint import TINY_DIMS, write_random_checkpoint

    path = tmp_path / "uma-hydra.pt"
    code = f"open({str(marker)!r}, 'w').write('ran')"
    torch.save(
        MLIPInferenceCheckpoint(
            model_config={"_target_": "builtins.exec", "_args_": [code]},
            model_state_dict={},
            ema_state_dict={},
            tasks_config=[],
        ),
        path,
    )
    with pytest.raises(
        UntrustedCheckpointError,
        match=r"names code outside fairchem: model_config\._target_='builtins",
    ):
        load_uma_backbone(path)
    assert not marker.exists()

    tiny = write_random_checkpoint(tmp_path / "uma-tiny.pt", seed=3, **TINY_DIMS)
    safe, trusted = read_uma_checkpoint(tiny), read_uma_checkpoint(tiny, trust=True)
    assert safe.model_config == trusted.model_config
    assert safe.ema_state_dict.keys() == trusted.ema_state_dict.keys()


def test_moftransformer_checkpoint_with_a_payload_is_refused_and_a_trusted_one_loads(
    tmp_path, marker, payload
):
    from mofbalora.backbones.moftransformer import read_checkpoint

    state = {"token_type_embeddings.weight": torch.zeros(3, 16)}
    path = tmp_path / "moft-evil.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": {"config": payload(marker)}}, path)
    with pytest.raises(
        UntrustedCheckpointError,
        match=r"MOFTransformer checkpoint .*moft-evil\.ckpt.*trust_checkpoint=true",
    ):
        read_checkpoint(path)
    assert not marker.exists()

    # a legitimate checkpoint holding a non-tensor object (here a SimpleNamespace of training
    # options)
    path = tmp_path / "moft-options.ckpt"
    torch.save(
        {
            "state_dict": state,
            "hyper_parameters": {"config": {"num_heads": 2}},
            "options": types.SimpleNamespace(lr=1e-4),
        },
        path,
    )
    with pytest.raises(UntrustedCheckpointError, match="SimpleNamespace"):
        read_checkpoint(path)
    arch, loaded = read_checkpoint(path, trust=True)
    assert (
        arch["num_heads"] == 2
        and arch["hid_dim"] == 16
        and torch.equal(
            loaded["token_type_embeddings.weight"], state["token_type_embeddings.weight"]
        )
    )


def test_trust_switch_is_one_keyword_for_every_checkpoint_backbone():
    import inspect

    from mofbalora.backbones.jmp import JMPBackbone
    from mofbalora.backbones.moftransformer import MOFTransformerBackbone
    from mofbalora.backbones.uma import UMABackbone

    for cls in (JMPBackbone, UMABackbone, MOFTransformerBackbone):
        param = inspect.signature(cls.__init__).parameters["trust_checkpoint"]
        assert param.default is False, cls


def test_trainer_state_reads_back_with_weights_only(tiny_model):
    state = torch.load(
        Path(tiny_model) / "checkpoints" / "last" / "trainer_state.pt", weights_only=True
    )
    assert {"optimizer", "shuffle_gen", "torch_rng", "epoch"} <= set(state)
