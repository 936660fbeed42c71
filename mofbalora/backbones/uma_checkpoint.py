"""UMA architecture configurations and randomly initialised checkpoints in fairchem's inference
format.

Real UMA weights (``uma-s-1p1.pt``, ...) come from HuggingFace (``facebook/UMA``, gated) and cannot
be shipped. For tests, benchmarks and dry runs of a pipeline, :func:`write_random_checkpoint` builds
the same architecture (fairchem's ``eSCNMDMoeBackbone``: eSCN message passing with SO(2)
convolutions whose linear maps are mixtures of linear experts, MOLE) from a configuration with
random weights and saves it exactly as fairchem saves an inference checkpoint (a pickled
``MLIPInferenceCheckpoint`` holding ``model_config``, ``model_state_dict``, ``ema_state_dict`` and
``tasks_config``), so it loads through the same function
(``fairchem.core.units.mlip_unit.utils.load_inference_model``) as a released file.
"""

from __future__ import annotations

from pathlib import Path

#: UMA-S (uma-s-1p1) backbone dimensions, from fairchem's released training configuration
#: (configs/uma/training_release/backbone/K4L2.yaml, 32 experts, 6 Å cutoff, 300 neighbours).
UMA_S_DIMS: dict = {
    "sphere_channels": 128,
    "lmax": 2,
    "mmax": 2,
    "num_layers": 4,
    "hidden_channels": 128,
    "edge_channels": 128,
    "num_distance_basis": 64,
    "num_experts": 32,
    "cutoff": 6.0,
    "max_neighbors": 300,
}
#: a UMA-architecture model small enough for unit tests (seconds on one CPU core)
TINY_DIMS: dict = {
    "sphere_channels": 16,
    "lmax": 2,
    "mmax": 2,
    "num_layers": 2,
    "hidden_channels": 16,
    "edge_channels": 16,
    "num_distance_basis": 16,
    "num_experts": 4,
    "cutoff": 4.0,
    "max_neighbors": 300,
}
UMA_TASKS = ("oc20", "omat", "omc", "omol", "odac")
DIM_KEYS = tuple(UMA_S_DIMS)


def uma_model_config(**dims) -> dict:
    """fairchem ``model_config`` of a UMA-architecture HydraModel (MoE backbone + energy/force
    head).

    ``dims`` overrides :data:`UMA_S_DIMS`; unknown keys raise ValueError naming the choices.
    """
    unknown = set(dims) - set(DIM_KEYS)
    if unknown:
        raise ValueError(
            f"unknown UMA dimension(s) {sorted(unknown)}; choose from {list(DIM_KEYS)}"
        )
    d = {**UMA_S_DIMS, **dims}
    backbone = {
        "model": "fairchem.core.models.uma.escn_moe.eSCNMDMoeBackbone",
        "max_num_elements": 100,
        "sphere_channels": d["sphere_channels"],
        "lmax": d["lmax"],
        "mmax": d["mmax"],
        "otf_graph": True,
        "max_neighbors": d["max_neighbors"],
        "cutoff": d["cutoff"],
        "edge_channels": d["edge_channels"],
        "distance_function": "gaussian",
        "num_distance_basis": d["num_distance_basis"],
        "direct_forces": False,
        "regress_forces": True,
        "regress_stress": True,
        "num_layers": d["num_layers"],
        "hidden_channels": d["hidden_channels"],
        "norm_type": "rms_norm_sh",
        "act_type": "gate",
        "ff_type": "spectral",
        "chg_spin_emb_type": "rand_emb",
        "cs_emb_grad": True,
        "dataset_list": list(UMA_TASKS),
        "num_experts": d["num_experts"],
        "moe_dropout": 0.0,
        "use_composition_embedding": True,
        "moe_layer_type": "pytorch",
        "activation_checkpointing": False,
    }
    heads = {
        "energyandforcehead": {
            "module": "fairchem.core.models.uma.escn_moe.DatasetSpecificSingleHeadWrapper",
            "head_cls": "fairchem.core.models.uma.escn_md.MLP_EFS_Head",
            "head_kwargs": {"wrap_property": False},
            "dataset_names": list(UMA_TASKS),
        }
    }
    return {
        "_target_": "fairchem.core.models.base.HydraModel",
        "backbone": backbone,
        "heads": heads,
        "pass_through_head_outputs": True,
        "otf_graph": True,
        "model_id": "mofbalora-random-uma",
    }


def _energy_task(task: str) -> dict:
    return {
        "_target_": "fairchem.core.units.mlip_unit.mlip_unit.Task",
        "name": f"{task}_energy",
        "level": "system",
        "property": "energy",
        "datasets": [task],
        "out_spec": {
            "_target_": "fairchem.core.units.mlip_unit.mlip_unit.OutputSpec",
            "dim": [1],
            "dtype": "float32",
        },
        "normalizer": {
            "_target_": "fairchem.core.modules.normalization.normalizer.Normalizer",
            "mean": 0.0,
            "rmsd": 1.0,
        },
    }


def write_random_checkpoint(path: str | Path, *, seed: int = 0, **dims) -> Path:
    """Build a randomly initialised UMA-architecture model and save it as a fairchem inference
    checkpoint.

    ``dims``: any of :data:`DIM_KEYS` (defaults: UMA-S sizes). Returns ``path``. Needs
    fairchem-core.
    """
    import torch

    try:
        import hydra
        from fairchem.core.units.mlip_unit.api.inference import MLIPInferenceCheckpoint
    except ImportError as exc:
        raise ImportError(
            "the UMA backbone needs fairchem-core: pip install mofbalora[uma]"
        ) from exc
    config = uma_model_config(**dims)
    with torch.random.fork_rng():  # seeded weights, the caller's generator left as it was
        torch.manual_seed(seed)
        model = hydra.utils.instantiate(config)
    ema = torch.optim.swa_utils.AveragedModel(model)
    checkpoint = MLIPInferenceCheckpoint(
        model_config=config,
        model_state_dict=model.state_dict(),
        ema_state_dict=ema.state_dict(),
        tasks_config=[_energy_task(t) for t in UMA_TASKS],
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path
