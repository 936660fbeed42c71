"""Adapter hyperparameters: the one dataclass of the adapter settings, serialisable to JSON
(recorded beside every adapter checkpoint and in a model's ``model_config.json``) and the
``adapter`` section of a run configuration (:mod:`mofbalora.config`), where ``kind`` is not
written: it is ``model.regime``."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

from mofbalora.adapters.balora import ALPHA_NETWORKS, NOISE_SCOPES
from mofbalora.validation import check_choice, check_int, check_number, check_probability, strict

AdapterKind = Literal["lora", "balora", "mc_dropout", "lora_ensemble"]
ADAPTER_KINDS = ("lora", "balora", "mc_dropout", "lora_ensemble")


@dataclass
class AdapterConfig:
    """What to inject and where.

    ``targets`` / ``exclude`` are module-name patterns: an exact name (``"mlp.0"``), a suffix
    (``"*.mlp_out.layers.1"`` or any name ending in ``".<pattern>"``), or a regular expression
    (``"re:^trunk\\..*"``). ``kind`` is None in a run configuration's ``adapter`` section (the kind
    is ``model.regime``; :meth:`mofbalora.config.RunConfig.model_adapter` fills it in).

    ``b_init_std`` (default 0.0: LoRA's convention, θ_B = 0, so the adapted model starts as the
    pretrained one) > 0 draws every entry of θ_B from N(0, b_init_std²) at injection
    (:meth:`~mofbalora.adapters.lora.LoRALinear.reset_adapter`), for every adapter kind. Why one may
    want it: BaLoRA's noise is on θ_A and reaches the output through θ_B, so with θ_B = 0 the
    epistemic std starts at zero and is only ever as large as training moves θ_B; a non-zero start
    gives the noise a voice from the first step (at the price of a model that no longer starts as
    the pretrained one). A warm start (``model.warm_start``) overwrites the tensors its source
    trained, but the tensors only the new model has (a trunk placement's block adapters) keep their
    initialisation: with ``b_init_std`` > 0 their θ_B is drawn too, and the warm-started model then
    no longer predicts what its source did at the start; leave it at 0 to keep that guarantee.
    """

    kind: AdapterKind | None = "balora"
    # empty: the backbone's preset for its ``adapt`` setting
    targets: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    rank: int = 8
    lora_alpha: float | None = None  # None: = rank (scale 1)
    # BaLoRA
    alpha_network: Literal["probe", "constant", "shared"] = "probe"
    prior_dropout: float = 0.1
    noise_scope: Literal["structure", "row", "rank_shared"] = "row"
    # θ_B's initial entries ~ N(0, b_init_std²); 0: zeros (LoRA's start)
    b_init_std: float = 0.0
    # MC dropout baseline
    mc_dropout: float = 0.1
    # ensemble baseline
    n_members: int = 5

    def __post_init__(self) -> None:
        if self.kind is not None:
            check_choice("adapter kind", self.kind, ADAPTER_KINDS)
        for key in ("targets", "exclude"):
            if not isinstance(getattr(self, key), list):
                raise ValueError(
                    f"adapter.{key} must be a list of module-name "
                    f"patterns, got {getattr(self, key)!r}"
                )
        check_int("adapter.rank", self.rank, 1)
        check_number("adapter.lora_alpha", self.lora_alpha, 0, optional=True)
        check_choice("adapter.alpha_network", self.alpha_network, ALPHA_NETWORKS)
        check_choice("adapter.noise_scope", self.noise_scope, NOISE_SCOPES)
        check_probability("adapter.prior_dropout", self.prior_dropout)
        check_number("adapter.b_init_std", self.b_init_std, 0)
        if not math.isfinite(self.b_init_std):
            raise ValueError(f"adapter.b_init_std must be finite, got {self.b_init_std!r}")
        check_probability("adapter.mc_dropout", self.mc_dropout)
        check_int("adapter.n_members", self.n_members, 2 if self.kind == "lora_ensemble" else 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> AdapterConfig:
        """From a saved mapping (``model_config.json``'s ``adapter``); an unknown key is refused,
        naming it and the valid ones."""
        return strict(cls, data, "adapter.", what="adapter option")
