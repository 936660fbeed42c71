"""MOFTransformer / PMTransformer (Kang et al., Nat. Mach. Intell. 5, 309 (2023)) as a band-gap
backbone.

The model is the ``moftransformer`` package's own ``Module``: a CGCNN graph embedding of the
topologically unique atoms (up to ``max_graph_len`` tokens) and a 3-D patch embedding of the energy
grid (216 patches of 5³ points), joined with class, volume and token-type embeddings and fed through
a 12-layer, 768-wide transformer. Weights come from a local checkpoint in the package's Lightning
format (a dict whose ``"state_dict"`` holds the module's tensors; ``"hyper_parameters" → "config"``
its architecture), e.g. the pretrained ``pmtransformer.ckpt`` or ``moftransformer.ckpt`` that
``moftransformer download pretrain_model`` fetches. Pre-training and task heads in the checkpoint
are dropped.

What the head sees: the package's pooled class-token feature (``cls_feats`` = tanh(W · h_CLS + b),
the input of its own regression head), **one row per structure**, with ``structure_index =
arange(n)``. The band-gap head's mean+max pooling of that single row is the row itself (doubled).

Adapters (``adapt``): ``"blocks"`` (default) puts them on the attention (``attn.qkv``,
``attn.proj``) and MLP (``mlp.fc1``, ``mlp.fc2``) linear layers of every transformer block;
``"attention"`` and ``"mlp"`` on one kind only. The rows of these layers are tokens (structures ×
tokens); the row set ``token`` maps them to their structure so BaLoRA draws one noise sample per
structure.

Determinism: the package picks a random atom of each topologically unique group and shuffles the
graph tokens at every call (a training-time augmentation). Here each group is represented by its
first atom and the token order is kept, so a structure's features do not change between calls (the
attention has no positional encoding on graph tokens, so the order does not matter anyway). The
frozen base always runs in eval mode (no dropout; CGCNN batch norms use their stored statistics).
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from mofbalora.backbones.base import Backbone, BackboneOutput, FeaturizationError
from mofbalora.backbones.checkpoint import load_checkpoint
from mofbalora.backbones.moftransformer_prep import (
    PACKAGE_VERSION,
    package_module,
    prepare_structure,
)
from mofbalora.rows import row_sets

Adapt = Literal["blocks", "attention", "mlp"]
_BLOCK = r"model\.transformer\.blocks\.\d+\."
PRESETS = {
    "blocks": [rf"re:^{_BLOCK}(attn\.(qkv|proj)|mlp\.(fc1|fc2))$"],
    "attention": [rf"re:^{_BLOCK}attn\.(qkv|proj)$"],
    "mlp": [rf"re:^{_BLOCK}mlp\.(fc1|fc2)$"],
}
#: configuration keys that fix the architecture (the rest of the package's config is about training)
ARCHITECTURE_KEYS = (
    "hid_dim",
    "num_layers",
    "num_heads",
    "mlp_ratio",
    "img_size",
    "patch_size",
    "in_chans",
    "max_graph_len",
    "max_grid_len",
    "atom_fea_len",
    "nbr_fea_len",
)
MAX_INT16_ATOMS = 32_767
_KEEP = 64  # prepared inputs kept for a retry after a failure in the same batch


def read_checkpoint(
    path: str | Path, *, trust: bool = False
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(architecture settings, state_dict) of a MOFTransformer / PMTransformer Lightning checkpoint.

    Loads with ``weights_only=True`` (tensors, plain containers and sacred's read-only containers
    only); ``trust=True`` allows any pickled object, for checkpoints you made or trust (otherwise
    such a file is refused with :class:`~mofbalora.backbones.checkpoint.UntrustedCheckpointError`).
    Architecture settings come from the checkpoint's ``hyper_parameters["config"]``; keys it lacks
    are read off the tensor shapes where they fix them.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"MOFTransformer checkpoint {str(path)!r} not found; get the pretrained weights "
            "with `moftransformer download pretrain_model` (see README) and give its path"
        )
    ckpt = load_checkpoint(
        path, what="MOFTransformer checkpoint", trust=trust, allowed=_config_containers()
    )
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ValueError(
            f"{str(path)!r} is not a MOFTransformer checkpoint: expected a dict with a 'state_dict'"
        )
    state = ckpt["state_dict"]
    hparams = ckpt.get("hyper_parameters") or {}
    config = dict(hparams.get("config") or {}) if isinstance(hparams, dict) else {}
    arch = {k: config[k] for k in ARCHITECTURE_KEYS if k in config}
    for k, v in architecture_from_state(state).items():
        arch.setdefault(k, v)
    return arch, state


def _config_containers() -> list[type]:
    """sacred's read-only dict/list, in which the package's training runs hand over (and save) their
    config (they pickle as a call of the class on a plain dict/list, so they load safely)."""
    try:
        from sacred.config.custom_containers import ReadOnlyDict, ReadOnlyList
    except ImportError:  # pragma: no cover - sacred comes with the extra
        return []
    return [ReadOnlyDict, ReadOnlyList]


def architecture_from_state(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Architecture settings implied by tensor shapes (``num_heads`` and ``max_graph_len`` are
    not)."""
    arch: dict[str, Any] = {}
    if "token_type_embeddings.weight" in state:
        arch["hid_dim"] = int(state["token_type_embeddings.weight"].shape[1])
    blocks = {int(k.split(".")[2]) for k in state if k.startswith("transformer.blocks.")}
    if blocks:
        arch["num_layers"] = max(blocks) + 1
    if "transformer.blocks.0.mlp.fc1.weight" in state and "hid_dim" in arch:
        arch["mlp_ratio"] = state["transformer.blocks.0.mlp.fc1.weight"].shape[0] / arch["hid_dim"]
    if "graph_embeddings.embedding.weight" in state:
        atom = int(state["graph_embeddings.embedding.weight"].shape[1])
        arch["atom_fea_len"] = atom
        if "graph_embeddings.convs.0.fc_full.weight" in state:
            arch["nbr_fea_len"] = (
                int(state["graph_embeddings.convs.0.fc_full.weight"].shape[1]) - 2 * atom
            )
    if "transformer.pos_embed" in state and "transformer.patch_embed.proj.1.weight" in state:
        per_side = round((state["transformer.pos_embed"].shape[1] - 1) ** (1 / 3))
        # one channel
        patch = round(state["transformer.patch_embed.proj.1.weight"].shape[1] ** (1 / 3))
        arch.update(patch_size=patch, img_size=patch * per_side, in_chans=1)
    return arch


def _content_key(structure) -> str:
    from pymatgen.io.cif import CifWriter

    return hashlib.sha256(str(CifWriter(structure)).encode()).hexdigest()


class MOFTransformerBackbone(Backbone):
    name = "moftransformer"
    target_presets = PRESETS
    #: the adapted transformer layers act on tokens (structures × tokens)
    row_set_rules = [(r"re:\.blocks\.\d+\.", "token")]

    def __init__(
        self,
        checkpoint: str | None = None,
        adapt: Adapt = "blocks",
        *,
        max_batch: int = 8,
        trust_checkpoint: bool = False,
        max_length: float = 60.0,
        min_length: float = 30.0,
        max_num_unique_atoms: int = 300,
        max_num_atoms: int = 3000,
    ) -> None:
        """``checkpoint``: path of a MOFTransformer / PMTransformer checkpoint; None builds the
        package's default architecture with random weights (seeded, so reproducible: for tests and
        timing only). ``max_batch``: structures per transformer pass (bounds memory when T samples
        are stacked). ``trust_checkpoint``: allow full unpickling of ``checkpoint``
        (:mod:`mofbalora.backbones.checkpoint`). The preparation limits are the package's
        (``max_num_atoms`` counts atoms of the graph supercell)."""
        super().__init__()
        if adapt not in PRESETS:
            raise ValueError(
                f"unknown MOFTransformer adapter placement {adapt!r}; choose from {sorted(PRESETS)}"
            )
        if int(max_batch) < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if not 0 < int(max_num_atoms) <= MAX_INT16_ATOMS:
            raise ValueError(
                f"max_num_atoms must be in [1, {MAX_INT16_ATOMS}] (the package stores int16 "
                f"neighbour indices), got {max_num_atoms}"
            )
        self.adapt = adapt
        self.checkpoint = checkpoint
        self.max_batch = int(max_batch)
        self.limits = {
            "max_length": float(max_length),
            "min_length": float(min_length),
            "max_num_unique_atoms": int(max_num_unique_atoms),
            "max_num_atoms": int(max_num_atoms),
        }
        if checkpoint is None:
            warnings.warn(
                "MOFTransformer with random weights (checkpoint=None): for tests and timing only; "
                "give the path of a pretrained checkpoint (backbone.checkpoint=PATH)",
                stacklevel=2,
            )
        arch, state = (
            read_checkpoint(checkpoint, trust=trust_checkpoint)
            if checkpoint is not None
            else ({}, None)
        )
        # the package's defaults (those of the pretrained models)
        config = dict(package_module("config").config())
        config.update(
            arch,
            load_path="",
            test_only=False,
            visualize=False,
            # no pre-training or task heads
            loss_names={k: 0 for k in config["loss_names"]},
        )
        self.config = {k: config[k] for k in ARCHITECTURE_KEYS}
        with warnings.catch_warnings(), torch.random.fork_rng():
            warnings.simplefilter("ignore")
            torch.manual_seed(0)
            self.model = package_module("modules.module").Module(config)
        self.dropped_keys: list[str] = []
        self._kept: dict[str, dict[str, Any]] = {}
        if state is not None:
            self._load(state, checkpoint)
        # keep the graph-token order (see the module docstring)
        self.model.graph_embeddings.vis = True
        for p in self.parameters():
            p.requires_grad_(False)
        self.embedding_dim = int(self.config["hid_dim"])
        self.descriptor_dim = int(self.config["atom_fea_len"])
        self.n_graph_tokens = int(self.config["max_graph_len"]) + 1  # + class token
        # + grid class and volume tokens
        self.n_grid_tokens = self.model.transformer.patch_embed.num_patches + 2
        self.train(False)

    def _load(self, state: dict[str, torch.Tensor], checkpoint: str) -> None:
        own = self.model.state_dict()
        missing = sorted(set(own) - set(state))
        if missing:
            raise ValueError(
                f"checkpoint {checkpoint!r} lacks {len(missing)} weights of the MOFTransformer "
                f"model, e.g. {missing[:5]}"
            )
        try:
            self.model.load_state_dict({k: state[k] for k in own}, strict=True)
        except RuntimeError as exc:
            raise ValueError(
                f"checkpoint {checkpoint!r} does not fit the architecture {self.config}: {exc}"
            ) from None
        self.dropped_keys = sorted(set(state) - set(own))  # pre-training / task heads

    def train(self, mode: bool = True) -> MOFTransformerBackbone:
        super().train(mode)
        for m in self.model.modules():  # frozen pretrained layers behave as at inference
            if isinstance(m, (nn.Dropout, nn.modules.batchnorm._BatchNorm)):
                m.train(False)
        return self

    @property
    def n_tokens(self) -> int:
        """Sequence length of the transformer (graph tokens + grid tokens), the same for every
        structure."""
        return self.n_graph_tokens + self.n_grid_tokens

    # -- structure -> input ------------------------------------------------------------------------
    def featurize_namespace(self) -> str:
        lim = self.limits
        return (
            f"moftransformer-{PACKAGE_VERSION}/prepared-v1/len{lim['min_length']:g}-{lim['max_length']:g}"
            f"-uniq{lim['max_num_unique_atoms']}-atoms{lim['max_num_atoms']}"
        )

    def featurize(self, structures: list) -> list[dict[str, Any]]:
        """The package's graph + energy-grid preparation per structure (independent of the weights).

        When one structure of a batch fails, the inputs already prepared are kept (keyed by the
        structure's content) for the one-by-one retry that
        :func:`mofbalora.featurize.featurize_files` then makes."""
        done: list[tuple[Any, dict[str, Any]]] = []
        try:
            for s in structures:
                kept = self._kept.pop(_content_key(s), None) if self._kept else None
                done.append((s, kept if kept is not None else prepare_structure(s, **self.limits)))
        except FeaturizationError:
            self._kept = {_content_key(s): x for s, x in done[-_KEEP:]}
            raise
        return [x for _, x in done]

    def collate(self, inputs: list[dict[str, Any]]) -> dict:
        n = len(inputs)
        return {
            "inputs": list(inputs),
            "structure_index": torch.arange(n),
            "n_atoms": torch.tensor([x["n_atoms"] for x in inputs], dtype=torch.long),
        }

    def package_batch(self, inputs: list[dict[str, Any]]) -> dict:
        """The package's batch (its ``Dataset.collate``) for prepared inputs."""
        dataset = package_module("datamodules.dataset").Dataset
        items = []
        with warnings.catch_warnings():
            # numpy 2 on the package's Gaussian expansion
            warnings.simplefilter("ignore", DeprecationWarning)
            items.extend(self._package_item(k, x, dataset) for k, x in enumerate(inputs))
        return dataset.collate(items, img_size=self.config["img_size"])

    def _package_item(self, k: int, x: dict[str, Any], dataset) -> dict[str, Any]:
        return {
            "cif_id": str(k),
            "atom_num": torch.from_numpy(x["atom_num"].astype(np.int64)),
            # a fresh tensor: the package's collate shifts neighbour indices in place
            "nbr_idx": torch.from_numpy(x["nbr_idx"].astype(np.int64)),
            "nbr_fea": dataset.get_gaussian_distance(
                torch.from_numpy(x["nbr_dist"]), num_step=self.config["nbr_fea_len"], dmax=8
            ),
            # first atom of each group: deterministic
            "uni_idx": [[group[0]] for group in x["uni_idx"]],
            "uni_count": x["uni_count"],
            "grid_data": torch.from_numpy(x["grid"].astype(np.float32)),
            "cell": list(x["grid_cell"]),
            "volume": x["volume"],
        }

    # -- batch -> embeddings -----------------------------------------------------------------------
    def structure_descriptor(self, batch: dict) -> torch.Tensor:
        """Mean over the graph supercell's atoms of the frozen atom-type embedding (n,
        atom_fea_len)."""
        rows = []
        for x in batch["inputs"]:
            z = torch.from_numpy(x["atom_num"].astype(np.int64))
            rows.append(self.model.graph_embeddings.embedding(z).mean(0))
        return torch.stack(rows).detach()

    def forward(self, batch: dict) -> BackboneOutput:
        inputs = batch["inputs"]
        feats = []
        for start in range(0, len(inputs), self.max_batch):
            part = inputs[start : start + self.max_batch]
            b = len(part)
            local = torch.arange(start, start + b)  # structure indices in the whole batch
            # rows of the adapted layers: tokens (b × n_tokens) of this part's structures
            with row_sets(token=local.repeat_interleave(self.n_tokens), system=local):
                out = self.model.infer(self.package_batch(part))
            feats.append(out["cls_feats"])
        emb = torch.cat(feats)
        index = torch.arange(len(inputs))
        return BackboneOutput(emb, index, len(inputs), {"system": index})
