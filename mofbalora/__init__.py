"""mofbalora: Bayesian LoRA fine-tuning of atomistic foundation models on MOF band gaps.

Backbones (CHGNet by default) turn crystal structures into embeddings, a band-gap head turns
embeddings into PBE band gaps in eV, and BaLoRA adapters inside the backbone give test-time
uncertainty that drives active learning over candidate CIF structures.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
