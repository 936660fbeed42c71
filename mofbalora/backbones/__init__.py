"""Backbones behind one interface; each heavy package is imported only when its backbone is asked for."""

from __future__ import annotations

from mofbalora.backbones.base import Backbone, BackboneOutput, FeaturizationError

BACKBONES = ("chgnet", "uma", "moftransformer", "jmp")


def load_backbone(name: str, **options) -> Backbone:
    """Build a backbone by name: ``chgnet`` (default, offline), ``jmp`` (GemNet-OC; checkpoint by path), later ``uma``, ``moftransformer``."""
    if name == "chgnet":
        from mofbalora.backbones.chgnet import CHGNetBackbone

        return CHGNetBackbone(**options)
    if name == "jmp":
        from mofbalora.backbones.jmp import JMPBackbone

        return JMPBackbone(**options)
    if name in BACKBONES:
        raise ValueError(f"backbone {name!r} is not available in this version; available: ['chgnet', 'jmp']")
    raise ValueError(f"unknown backbone {name!r}; choose from {list(BACKBONES)}")


__all__ = ["BACKBONES", "Backbone", "BackboneOutput", "FeaturizationError", "load_backbone"]
