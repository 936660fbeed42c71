"""The backbone interface: structures → model inputs (cacheable) → per-atom and per-structure
embeddings.

A backbone is a ``torch.nn.Module`` whose pretrained weights stay frozen; adapters are injected into
its linear layers by :func:`mofbalora.adapters.inject_adapters`. A head (``mofbalora.heads``) turns
its embeddings into band gaps. Each concrete backbone lives in its own module and imports its heavy
package lazily, so that ``import mofbalora`` never needs fairchem, moftransformer, ...
"""

from __future__ import annotations

import functools
import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mofbalora.data.content_key import attach_content_digests
from mofbalora.rows import first_match


class FeaturizationError(ValueError):
    """A structure that parsed but could not be turned into a model input (e.g. isolated atoms)."""

    reason = "featurization_failed"


@dataclass
class BackboneOutput:
    """Embeddings of a batch of ``n_structures`` structures.

    ``atom_embedding`` is (n_atoms_total, dim); ``structure_index`` (n_atoms_total,) says which
    structure each row belongs to. ``row_sets`` are the named row sets the forward pass used
    (:mod:`mofbalora.rows`): set name (``atom``, ``edge``, ``bond``, ``angle``, ``token``,
    ``system``, ...) → structure index per row.

    ``shared_embedding`` (n_atoms_one_copy, dim_shared), for a batch of stacked copies (the T draws
    of a prediction: copy t of atom k is row t · n + k): the trailing columns that are the same in
    every copy (frozen features), kept once instead of repeated; the head reads
    ``cat([atom_embedding, shared_embedding repeated], 1)``. None: ``atom_embedding`` is whole.
    """

    atom_embedding: torch.Tensor
    structure_index: torch.Tensor
    n_structures: int
    row_sets: dict[str, torch.Tensor] = field(default_factory=dict)
    shared_embedding: torch.Tensor | None = None


class Backbone(nn.Module, ABC):
    """Common interface of all backbones."""

    #: short name used in configs and adapter files, e.g. ``"chgnet"``
    name: str = ""
    #: width of the per-atom embedding given to the head
    embedding_dim: int = 0
    #: named sets of adapter target patterns (e.g. ``{"readout": [...], "all": [...]}``)
    target_presets: dict[str, list[str]] = {}
    #: adapter types its layers need beyond ``nn.Linear`` (:mod:`mofbalora.adapters.extensions`), by
    #: name: the model enables them before injecting, so backbones never import the adapters
    adapter_extensions: tuple[str, ...] = ()
    #: ``(module-name pattern, row set)`` rules, first match wins: which named row set
    #: (:mod:`mofbalora.rows`) the input rows of each adaptable layer are; forward names the sets
    row_set_rules: list[tuple[str, str]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every backbone's :meth:`featurize` gives each input dict a content key (``digest``): the
        canonical hash of its structure
        (:func:`~mofbalora.data.content_key.structure_content_digest`), so that BaLoRA's draws of a
        structure built in Python do not depend on its position in the list.
        :func:`~mofbalora.featurize.featurize_files` replaces it by the file's digest where there
        is a file."""
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("featurize")
        if (
            own is not None
            and not getattr(own, "__isabstractmethod__", False)
            and not getattr(own, "_attaches_content_digests", False)
        ):

            @functools.wraps(own)
            def featurize(self, structures: list) -> list[Any]:
                return attach_content_digests(structures, own(self, structures))

            featurize._attaches_content_digests = True
            cls.featurize = featurize

    def row_set_for(self, module_name: str) -> str | None:
        """The row set of ``module_name``'s input rows (None for a backbone without rules); an
        adapted layer no rule covers is an error naming it."""
        if not self.row_set_rules:
            return None
        found = first_match(module_name, self.row_set_rules)
        if found is None:
            raise ValueError(
                f"{type(self).__name__}: no row-set rule covers layer {module_name!r}; rules: "
                f"{self.row_set_rules}"
            )
        return found

    @abstractmethod
    def featurize(self, structures: list) -> list[Any]:
        """Turn pymatgen structures into model inputs (the cacheable, frozen part): dicts of
        tensors, arrays and plain values, or objects that :meth:`to_plain` turns into those."""

    def to_plain(self, x: Any) -> Any:
        """One featurized input as plain values (:mod:`mofbalora.data.plain`: nested dicts / lists
        of tensors, arrays, numbers, strings) for the content cache; the default keeps it as it
        is."""
        return x

    def from_plain(self, x: Any) -> Any:
        """Inverse of :meth:`to_plain` (a cache hit → the input :meth:`featurize` would give)."""
        return x

    @abstractmethod
    def featurize_namespace(self) -> str:
        """Cache namespace naming what :meth:`featurize` computes (changes when its output
        changes)."""

    @abstractmethod
    def collate(self, inputs: list[Any]) -> Any:
        """Assemble a batch from featurized inputs."""

    @abstractmethod
    def forward(self, batch: Any) -> BackboneOutput:
        """Embeddings of a collated batch."""

    #: width of :meth:`structure_descriptor` (input of a shared α-network)
    descriptor_dim: int = 0
    #: most atoms per forward pass in evaluation and prediction (None: no limit); a backbone whose
    #: memory grows steeply with the batch (UMA: ~100 edges per atom; JMP: edges, triplets and
    #: quadruplets) sets it; it also caps the stacked copies of one T-sample pass unless
    #: ``max_draw_atoms`` is set
    max_batch_atoms: int | None = None
    #: most atom rows (copies x atoms) in one stacked T-sample pass of prediction, where that pass
    #: costs less memory per atom than a batch of distinct structures (None: ``max_batch_atoms``)
    max_draw_atoms: int | None = None

    def featurize_batch_size(self) -> int:
        """How many structures :func:`~mofbalora.featurize.featurize_files` hands to one
        :meth:`featurize` call."""
        return 8

    def prefill_cache(
        self, paths: list, *, workers: int, max_atoms: int, progress: bool = True
    ) -> bool:
        """Featurize ``paths`` into the cache in ``workers`` processes ahead of a screen, if this
        backbone can (returns whether it did; the screen then reads the cache). Default: it
        cannot."""
        return False

    def structure_descriptor(self, batch: Any) -> torch.Tensor:
        """A cheap, frozen per-structure descriptor (n_structures, descriptor_dim) of a collated
        batch."""
        raise NotImplementedError(
            f"{type(self).__name__} has no structure descriptor (needed by a shared α-network)"
        )

    def identity(self) -> dict[str, str]:
        """Name and a hash of the frozen pretrained weights (recorded in adapter files)."""
        return {"backbone": self.name, "weights_sha256": state_dict_digest(self.base_state_dict())}

    def base_state_dict(self) -> dict[str, torch.Tensor]:
        """The frozen weights only (adapter tensors excluded)."""
        return {
            k: v
            for k, v in self.state_dict().items()
            if "adapter_" not in k and "base_layer" not in k
        }


def atom_capped_batches(inputs: list, batch_size: int, max_atoms: int | None = None) -> list[list]:
    """Consecutive batches of at most ``batch_size`` inputs and (when given) ``max_atoms`` atoms; an
    input larger than ``max_atoms`` gets a batch of its own."""
    batches: list[list] = []
    current: list = []
    atoms = 0
    for x in inputs:
        n = int(x["n_atoms"])
        if current and (
            len(current) >= batch_size or (max_atoms is not None and atoms + n > max_atoms)
        ):
            batches.append(current)
            current, atoms = [], 0
        current.append(x)
        atoms += n
    if current:
        batches.append(current)
    return batches


DEVICES = ("cpu", "cuda", "auto")


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``cpu``, ``cuda`` (``cuda:N``) or ``auto`` (a GPU when there is one) → a torch device."""
    if isinstance(name, torch.device):
        return name
    name = "cpu" if name is None else str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.split(":")[0] not in DEVICES:
        raise ValueError(f"unknown device {name!r}; choose from {list(DEVICES)} (or cuda:N)")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device {name!r} asked for, but this torch ({torch.__version__}) sees no CUDA GPU; "
            "use --device cpu, or install a CUDA build of torch on a GPU machine"
        )
    return torch.device(name)


def to_device(obj: Any, device: torch.device) -> Any:
    """A collated batch on ``device``: tensors, nested dicts / lists / tuples, and objects with
    ``.to`` (CHGNet graphs, fairchem ``AtomicData``). Collate builds batches on the CPU, so on the
    CPU this returns the batch itself (no walk over it on the hot path)."""
    if device.type == "cpu":
        return obj
    if torch.is_tensor(obj):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    to = getattr(obj, "to", None)
    return to(device) if callable(to) else obj


def structure_mean(feats: torch.Tensor, batch: dict) -> torch.Tensor:
    """Per-structure mean of per-atom rows (n_structures, d), detached: the usual frozen
    structure descriptor."""
    total = feats.new_zeros(len(batch["n_atoms"]), feats.shape[1]).index_add(
        0, batch["structure_index"], feats
    )
    return (total / batch["n_atoms"].unsqueeze(1).to(feats.dtype)).detach()


def state_dict_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over names, shapes and bytes of tensors, in sorted name order."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()
