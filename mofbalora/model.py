"""The band-gap model: backbone (frozen, with adapters) + head, prediction with T stochastic passes,
and self-contained save/load (adapter + head tensors in safetensors, a JSON config naming the base).

Regimes: ``balora``, ``lora``, ``mc_dropout``, ``lora_ensemble`` (adapters), ``head_only`` (no
adapters) and ``full`` (every backbone weight reachable from the adapted region is trained).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mofbalora.adapters import AdapterConfig, adapter_state_dict, inject_adapters, sampling
from mofbalora.adapters.balora import BaLoRALinear, SharedAlphaNetwork
from mofbalora.adapters.extensions import enable_adapter_extensions
from mofbalora.backbones import Backbone, load_backbone
from mofbalora.backbones.base import resolve_device, to_device
from mofbalora.backbones.checkpoint import CHECKPOINT_BACKBONES, stored_trust
from mofbalora.domain import ApplicabilityDomain
from mofbalora.gbm import GBMBandGapModel
from mofbalora.heads import BandGapHead, HeadConfig
from mofbalora.io import (
    MODEL_CONFIG,
    MODEL_FILE,
    check_base_identity,
    read_checkpoint,
    save_checkpoint,
)
from mofbalora.prediction import Prediction, predict_inputs, recalibrate, weights_fingerprint
from mofbalora.scoring import PredictsStructures

REGIMES = ("balora", "lora", "mc_dropout", "lora_ensemble", "head_only", "full")
STOCHASTIC_REGIMES = ("balora", "mc_dropout")
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "pretrained" / "default"


class BandGapModel(nn.Module, PredictsStructures):
    """Backbone (frozen, with adapters) + head; ``predict`` (one call from structures to a table) is
    :meth:`mofbalora.scoring.PredictsStructures.predict`."""

    def __init__(
        self,
        backbone: Backbone,
        head: BandGapHead,
        regime: str,
        adapter: AdapterConfig | None = None,
        backbone_options: dict | None = None,
    ) -> None:
        super().__init__()
        if regime not in REGIMES:
            raise ValueError(f"unknown regime {regime!r}; choose from {list(REGIMES)}")
        self.backbone = backbone
        self.head = head
        self.regime = regime
        self.adapter_config = adapter
        self.backbone_options = backbone_options or {}
        #: std recalibration fitted on the validation split after training (``finetune`` sets it):
        #: ``{"method": "scale_floor", "std_factor": a, "std_floor_ev": b, ...}``; None if not
        #: fitted
        self.calibration: dict | None = None
        #: what the model was trained on (element counts, embedding reference), for the screen's
        #: applicability domain (:mod:`mofbalora.domain`); None if not recorded
        self.training_domain = None
        self.base_identity = backbone.identity()  # before adapters change the module tree
        if regime in ("head_only", "full"):
            # ``full``: every backbone weight is trainable; with a cached trunk (CHGNet
            # ``adapt="readout"``) only the weights after the cache receive gradients, so use
            # ``adapt="all"`` for true full FT
            for p in backbone.parameters():
                p.requires_grad_(regime == "full")
        else:
            if adapter is None:
                raise ValueError(f"regime {regime!r} needs an adapter config")
            enable_adapter_extensions(backbone.adapter_extensions)
            inject_adapters(backbone, adapter, row_set_for=backbone.row_set_for)
        self.alpha_network = None
        if adapter is not None and regime == "balora" and adapter.alpha_network == "shared":
            layers = [m for m in backbone.modules() if isinstance(m, BaLoRALinear)]
            self.alpha_network = SharedAlphaNetwork(layers, backbone.descriptor_dim)

    @property
    def n_members(self) -> int:
        return self.adapter_config.n_members if self.regime == "lora_ensemble" else 1

    @property
    def is_stochastic(self) -> bool:
        return self.regime in STOCHASTIC_REGIMES

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (``model.to(device)`` moves it; batches follow)."""
        return next(self.parameters()).device

    def forward(self, batch: Any):
        """(gap_ev (B,), aleatoric variance (B,) or None, pooled embedding (B, p)) of a collated
        batch."""
        batch = to_device(batch, self.device)
        with sampling(kl_scope=object()):  # adapters called twice in this forward add up their KL
            if self.alpha_network is not None:
                logits = self.alpha_network(self.backbone.structure_descriptor(batch))
                with sampling(shared_alpha_logits=logits):
                    out = self.backbone(batch)
            else:
                out = self.backbone(batch)
        return self.head(
            out.atom_embedding, out.structure_index, out.n_structures, out.shared_embedding
        )

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # -- prediction --------------------------------------------------------------------------------
    def predict_inputs(
        self,
        inputs: list,
        *,
        n_samples: int = 32,
        seed: int | None = 0,
        batch_size: int = 64,
        max_rows: int = 8192,
    ) -> Prediction:
        """Predict featurized inputs: :func:`mofbalora.prediction.predict_inputs` (T stochastic
        passes, an ensemble's members, or one pass)."""
        return predict_inputs(
            self, inputs, n_samples=n_samples, seed=seed, batch_size=batch_size, max_rows=max_rows
        )

    # -- persistence -------------------------------------------------------------------------------
    def trained_state(self) -> dict[str, torch.Tensor]:
        """Everything training changed: adapters and head (and the backbone in the ``full``
        regime)."""
        state = {f"head.{k}": v.detach().clone() for k, v in self.head.state_dict().items()}
        if self.alpha_network is not None:
            state.update(
                {
                    f"alpha_network.{k}": v.detach().clone()
                    for k, v in self.alpha_network.state_dict().items()
                }
            )
        if self.regime == "full":
            state.update(
                {f"backbone.{k}": v.detach().clone() for k, v in self.backbone.state_dict().items()}
            )
        else:
            state.update({f"backbone.{k}": v for k, v in adapter_state_dict(self.backbone).items()})
        return state

    def load_trained_state(self, state: dict[str, torch.Tensor]) -> None:
        head = {k[5:]: v for k, v in state.items() if k.startswith("head.")}
        self.head.load_state_dict(head)
        if self.alpha_network is not None:
            self.alpha_network.load_state_dict(
                {k[14:]: v for k, v in state.items() if k.startswith("alpha_network.")}
            )
        bb = {k[9:]: v for k, v in state.items() if k.startswith("backbone.")}
        missing, unexpected = self.backbone.load_state_dict(bb, strict=False)
        expected = (
            set(self.backbone.state_dict())
            if self.regime == "full"
            else set(adapter_state_dict(self.backbone))
        )
        if unexpected or (expected - set(bb)):
            raise ValueError(
                f"saved model does not fit: missing {sorted(expected - set(bb))[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}"
            )

    def calibrated_std(self, std_ev: np.ndarray) -> np.ndarray | None:
        """``sqrt((a*std)^2 + b^2)`` with the validation-fitted :attr:`calibration` (eV); None
        without one."""
        return recalibrate(self.calibration, std_ev)

    def fingerprint(self) -> str:
        """sha256 (hex, first 16) of the weights (frozen and trained) and the calibration."""
        return weights_fingerprint(sorted(self.state_dict().items()), self.calibration)

    def config_dict(self) -> dict:
        return {
            "regime": self.regime,
            "backbone": {
                "name": self.backbone_options.get("name", "chgnet"),
                **{k: v for k, v in self.backbone_options.items() if k != "name"},
            },
            "adapter": self.adapter_config.to_dict() if self.adapter_config else None,
            "head": self.head.config.to_dict(),
            "base": self.base_identity,
            "calibration": self.calibration,
            **(
                {"training_domain": self.training_domain.to_config()}
                if self.training_domain is not None
                else {}
            ),
        }

    def save(self, directory: str | Path, metadata: dict | None = None) -> Path:
        """Write ``model.safetensors`` + ``model_config.json``
        (:func:`mofbalora.io.save_checkpoint`) and the training domain's tensors; the config
        last, so a folder with a config is complete."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.training_domain is not None:
            self.training_domain.save_tensors(directory)
        return save_checkpoint(
            directory,
            self.trained_state(),
            {**self.config_dict(), "metadata": metadata or {}},
            weights_file=MODEL_FILE,
            config_file=MODEL_CONFIG,
        )


def build_model(
    regime: str,
    *,
    backbone: str = "chgnet",
    backbone_options: dict | None = None,
    adapter: AdapterConfig | None = None,
    head: HeadConfig | None = None,
    trust_checkpoint: bool = False,
) -> BandGapModel:
    """A model with fresh adapters and head: backbone ``backbone`` built with ``backbone_options``,
    the ``adapter`` settings (``kind`` = ``regime``; empty targets: the backbone's preset) and the
    ``head``'s.

    ``trust_checkpoint``: allow full unpickling of the third-party checkpoint the options name
    (:mod:`mofbalora.backbones.checkpoint`); the caller's decision, a keyword only: it is not one of
    the ``backbone_options`` (which the model keeps and saves)."""
    options = dict(backbone_options or {})
    if "trust_checkpoint" in options:
        raise ValueError(
            "trust_checkpoint is not a backbone option a model keeps: pass build_model(..., "
            "trust_checkpoint=True)"
        )
    trust = (
        {"trust_checkpoint": True} if trust_checkpoint and backbone in CHECKPOINT_BACKBONES else {}
    )
    bb = load_backbone(backbone, **options, **trust)
    # a copy: the caller's config keeps its empty targets
    if adapter is not None and not adapter.targets:
        adapter = replace(
            adapter,
            targets=list(
                bb.target_presets.get(getattr(bb, "adapt", options.get("adapt", "readout")), [])
            ),
        )
    return BandGapModel(
        bb,
        BandGapHead(bb.embedding_dim, head),
        regime,
        adapter,
        backbone_options={"name": backbone, **options},
    )


def resolve_model_dir(model: str | Path) -> Path:
    """``"default"`` → the shipped model; a run folder → its ``best`` checkpoint; else the folder
    itself."""
    if str(model) == "default":
        return DEFAULT_MODEL_DIR
    path = Path(model)
    for cand in (path, path / "checkpoints" / "best"):
        if (cand / MODEL_CONFIG).is_file():
            return cand
    raise FileNotFoundError(
        f"no model found at {model!r}: expected 'default', a run folder, or a folder "
        f"holding {MODEL_CONFIG}"
    )


def load_weights(model: BandGapModel, directory: str | Path) -> dict:
    """Load the trained weights saved in ``directory`` into ``model`` (read through
    :func:`mofbalora.io.read_checkpoint`, which first refuses weights trained on another base
    model); returns the folder's ``model_config.json``."""
    cfg, tensors = read_checkpoint(
        directory,
        weights_file=MODEL_FILE,
        config_file=MODEL_CONFIG,
        what="model",
        base=model.base_identity,
    )
    model.load_trained_state(tensors)
    return cfg


def load_model(
    model: str | Path = "default",
    device: str | torch.device = "cpu",
    *,
    trust_checkpoint: bool = False,
) -> BandGapModel:
    """Load a saved model (offline) onto ``device`` (cpu | cuda | auto); refuses weights trained on
    a different base backbone.

    ``trust_checkpoint``: allow full unpickling of the third-party backbone checkpoint the folder
    names (UMA, MOFTransformer, JMP); only for files from a source you trust. It is never read from
    the folder: one whose ``model_config.json`` asks for it (``backbone.trust_checkpoint: true``) is
    refused unless the caller passes it, before anything is unpickled
    (:class:`~mofbalora.backbones.checkpoint.UntrustedCheckpointError`)."""
    directory = resolve_model_dir(model)
    where = directory / MODEL_CONFIG
    cfg = json.loads(where.read_text())
    bopts = stored_trust(cfg["backbone"], where, trust_checkpoint)
    if cfg["regime"] == "gbm":  # the gradient-boosting baseline (mofbalora.gbm imports this module)
        gbm = GBMBandGapModel.load(directory, {**cfg, "backbone": bopts})
        check_base_identity(cfg["base"], gbm.backbone.identity(), directory)
        return gbm
    name = bopts.pop("name")
    adapter = AdapterConfig.from_dict(cfg["adapter"]) if cfg.get("adapter") else None
    m = build_model(
        cfg["regime"],
        backbone=name,
        backbone_options=bopts,
        adapter=adapter,
        head=HeadConfig.from_dict(cfg["head"]),
        trust_checkpoint=trust_checkpoint,
    )
    load_weights(m, directory)
    m.calibration = cfg.get("calibration")
    if cfg.get("training_domain"):
        m.training_domain = ApplicabilityDomain.from_config(cfg["training_domain"], directory)
    m.eval()
    return m.to(resolve_device(device))
