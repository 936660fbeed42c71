"""Backbones behind one interface; each heavy package is imported only when its backbone is asked
for."""

from __future__ import annotations

from mofbalora.backbones.base import Backbone, BackboneOutput, FeaturizationError

BACKBONES = ("chgnet", "uma", "moftransformer", "jmp")


def load_backbone(name: str, **options) -> Backbone:
    """Build a backbone by name: ``chgnet`` (default, offline), ``uma`` (fairchem UMA),
    ``moftransformer`` (MOFTransformer / PMTransformer), ``jmp`` (GemNet-OC); the last three load
    a checkpoint from a local path."""
    if name == "chgnet":
        from mofbalora.backbones.chgnet import CHGNetBackbone

        return CHGNetBackbone(**options)
    if name == "uma":
        from mofbalora.backbones.uma import UMABackbone

        return UMABackbone(**options)
    if name == "moftransformer":
        from mofbalora.backbones.moftransformer import MOFTransformerBackbone

        return MOFTransformerBackbone(**options)
    if name == "jmp":
        from mofbalora.backbones.jmp import JMPBackbone

        return JMPBackbone(**options)
    raise ValueError(f"unknown backbone {name!r}; choose from {list(BACKBONES)}")


__all__ = ["BACKBONES", "Backbone", "BackboneOutput", "FeaturizationError", "load_backbone"]
