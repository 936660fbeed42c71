"""A real campaign that starts from a trained model: ``mofbalora al suggest --candidates DIR``
(``--model``, default the shipped one).

The campaign's round 0 *is* that model (copied into ``rounds/round_000/checkpoints/best``; nothing
is trained before the first batch). Its labelled set is the model's own training data (the ``data``
section of its recipe: the train part of the split it was trained on) plus every DFT label ingested
since; its validation and test parts are the recipe's; its pool is the user's candidates. Each later
round fine-tunes the previous round's model on the grown labelled set (``al.round_epochs`` epochs,
early stopping on validation).

:func:`start_model_document` gives the campaign configuration of such a model: its recipe (the run
folder's ``config.yaml``, or the workflow its ``model_config.json`` names as ``metadata.recipe``)
over the defaults, then the model's own architecture (backbone, regime, adapters, head) from
``model_config.json``, which always wins (the weights must fit it)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from mofbalora.adapters import AdapterConfig
from mofbalora.al.config import default_config
from mofbalora.config import ALEATORIC_LIKELIHOODS, deep_update
from mofbalora.io import MODEL_CONFIG, read_yaml
from mofbalora.model import resolve_model_dir

log = logging.getLogger(__name__)

#: where a shipped model's ``metadata.recipe`` (a path relative to the repository) is looked for
REPOSITORY = Path(__file__).resolve().parents[2]
#: warm-started epochs of each round after the start model's (``al.round_epochs`` of such a
#: campaign)
START_ROUND_EPOCHS = 5
_TRAINING_SPLIT = "training split of "


def _recipe(directory: Path, model_config: dict) -> Path | None:
    """The configuration the model was trained with: a run folder's ``config.yaml``, else the
    workflow named by ``metadata.recipe`` when it exists (in the repository or the working
    folder), else None."""
    if (
        directory.parent.name == "checkpoints"
        and (directory.parent.parent / "config.yaml").is_file()
    ):
        return directory.parent.parent / "config.yaml"
    recipe = (model_config.get("metadata") or {}).get("recipe")
    if recipe:
        for base in (REPOSITORY, Path.cwd()):
            if (base / recipe).is_file():
                return base / recipe
    return None


def start_model_document(model: str | Path = "default") -> dict[str, Any]:
    """The campaign document (fine-tune sections + ``al`` + ``benchmark``, unchecked) of a campaign
    starting from ``model`` (``"default"``, a run folder or a model folder): its recipe, its
    architecture, and ``al.start_model``. ValueError when the model is a gradient-boosting run or
    its training data cannot be told (no recipe and no ``training_domain.source`` naming a
    split)."""
    directory = resolve_model_dir(model)
    mc = json.loads((directory / MODEL_CONFIG).read_text())
    if mc.get("regime") == "gbm":
        raise ValueError(
            f"--model {model}: a gradient-boosting run cannot start a campaign (it is not "
            "fine-tuned warm); choose a BaLoRA model, e.g. 'default'"
        )
    doc = default_config()
    recipe = _recipe(directory, mc)
    if recipe is not None:
        stored = read_yaml(recipe, what="model recipe")
        deep_update(
            doc, {k: v for k, v in stored.items() if k in doc and k not in ("al", "benchmark")}
        )
    else:
        source = str((mc.get("training_domain") or {}).get("source", ""))
        if not source.startswith(_TRAINING_SPLIT):
            raise ValueError(
                f"--model {model}: cannot tell which structures it was trained on (no run "
                f"config.yaml, no metadata.recipe, training_domain.source {source!r}); start a "
                "campaign from its run folder, or pass --config with its data section"
            )
        doc["data"]["split"] = source[len(_TRAINING_SPLIT) :]
    # the architecture is the model's own, whatever the recipe says
    head = mc["head"]
    m = doc["model"]
    m.update(
        regime=mc["regime"],
        head_hidden=head["hidden_dim"],
        pooling=head["pooling"],
        head_atom_mlp=head.get("atom_mlp", 0),
    )
    if "warm_start" in m:
        m["warm_start"] = None  # the campaign loads its round models itself
    if head.get("aleatoric") and m["likelihood"] not in ALEATORIC_LIKELIHOODS:
        family = (mc.get("calibration") or {}).get("family", "gaussian")
        m["likelihood"] = "laplace_nll" if family == "laplace" else "gaussian_nll"
    elif not head.get("aleatoric") and m["likelihood"] in ALEATORIC_LIKELIHOODS:
        m["likelihood"] = "mse"
    doc["backbone"] = dict(mc["backbone"])
    if mc.get("adapter"):
        # read as the model loads it: options newer than the model take their defaults
        adapter = AdapterConfig.from_dict(mc["adapter"]).to_dict()
        doc["adapter"] = {k: v for k, v in adapter.items() if k != "kind"}
    doc["al"]["start_model"] = str(model) if str(model) == "default" else str(directory.resolve())
    doc["al"]["round_epochs"] = START_ROUND_EPOCHS
    return doc
