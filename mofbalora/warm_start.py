"""Warm start: a model that adapts more of the backbone, starting from a trained model that adapted
less.

The case it is for (issue 26): BaLoRA in CHGNet's last atom convolution
(``backbone.adapt=last_block_cached``) fine-tuned for a few epochs from a trained readout model
(``adapt=readout``, the shipped default) instead of trained from scratch. The readout model's
trained tensors (its head, its readout adapters, its α-network) are a subset of the trunk model's,
under the same names; the trunk model's own tensors (the block's adapters) keep their
initialisation, θ_B = 0 (the default ``adapter.b_init_std = 0``), so the warm-started model starts
as the source model: its block is the pretrained block, whose output is the cached readout input the
source was trained on (to the precision of the cut, float16 by default). With ``b_init_std`` > 0 the
block's θ_B is drawn and the start differs from the source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mofbalora.io import MODEL_CONFIG, MODEL_FILE, read_checkpoint
from mofbalora.model import resolve_model_dir


def warm_start(model: Any, source: str | Path) -> dict[str, list[str]]:
    """Copy every tensor a saved model (the folder ``source``: a run folder's ``checkpoints/best``
    or a model folder) trained into ``model`` (a :class:`~mofbalora.model.BandGapModel`), bit for
    bit; returns ``{"loaded": names, "fresh": names}`` (``fresh``: the tensors only ``model`` has,
    left as initialised).

    Refused with a ValueError naming what differs: another base backbone (its weights hash), another
    regime, or a source tensor that ``model`` lacks or holds in another shape (another head, feature
    set or adapter rank). The source's calibration and training domain are not carried over: they
    describe the source's predictions, and are fitted again after the fine-tune.

    Used by :class:`mofbalora.train.Trainer` when ``model.warm_start`` is set (a model the caller
    passes in is the caller's to initialise: call this on it first). ``source`` may be ``"default"``
    (the shipped model), a run folder, or a model folder
    (:func:`mofbalora.model.resolve_model_dir`)."""
    directory = resolve_model_dir(source)
    config, tensors = read_checkpoint(
        directory,
        weights_file=MODEL_FILE,
        config_file=MODEL_CONFIG,
        what="model",
        base=model.base_identity,
    )
    if config.get("regime") != model.regime:
        raise ValueError(
            f"warm start from {directory}: its regime is {config.get('regime')!r}, the model's "
            f"{model.regime!r}"
        )
    own = model.trained_state()
    missing = sorted(set(tensors) - set(own))
    if missing:
        raise ValueError(
            f"warm start from {directory}: the model has no tensor {missing[:5]} (source backbone "
            f"{config.get('backbone')}, head {config.get('head')}); warm starts go from fewer "
            "adapted layers to more, with the same head"
        )
    shapes = [
        f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in tensors.items()
        if v.shape != own[k].shape
    ]
    if shapes:
        raise ValueError(
            f"warm start from {directory}: tensors of another shape (source vs model): {shapes[:5]}"
        )
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    for name, value in tensors.items():
        target = params.get(name, buffers.get(name))
        if target is None:
            raise ValueError(
                f"warm start from {directory}: {name!r} is not a parameter or buffer of the model"
            )
        target.data.copy_(value.to(target.dtype))
    return {"loaded": sorted(tensors), "fresh": sorted(set(own) - set(tensors))}
