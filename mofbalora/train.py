"""Fine-tuning: a resumable trainer that writes a run folder.

Run folder layout::

    config.yaml           resolved configuration
    metrics.csv           one row per epoch (loss, KL, validation MAE, learning rate, seconds)
    checkpoints/best/     model at the lowest validation MAE (model.safetensors + model_config.json)
    checkpoints/last/     model + trainer state (optimiser, scheduler, RNG) after the last epoch
    metrics.json          final figures (validation and test metrics of the best model, timings)

A run can start from a trained model instead of fresh adapters and head (``model.warm_start``,
:mod:`mofbalora.warm_start`), and train parameter groups at their own learning rates
(``optim.lr_scale``, :func:`parameter_group`; a factor 0 freezes a group).

Resuming (``resume=True``) restarts from ``checkpoints/last`` at an epoch boundary; with the same
seed the run ends in the same state as an uninterrupted one (shuffling and noise come from
generators whose states are checkpointed; each step's noise generator is seeded by (seed, step)).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mofbalora.adapters import adapter_layers, kl_terms, seeded_generator, total_kl
from mofbalora.adapters.context import sampling, structure_keys
from mofbalora.backbones.base import atom_capped_batches, resolve_device
from mofbalora.config import (
    PARAM_GROUPS,
    SCHEDULES,
    OptimConfig,
    RunConfig,
    check_choice,
    dump_config,
)
from mofbalora.data.splits import split_dataset
from mofbalora.domain import fit_domain
from mofbalora.evaluate import evaluate_inputs
from mofbalora.featurize import announce_featurization, load_inputs
from mofbalora.gbm import GBMBandGapModel
from mofbalora.io import MODEL_CONFIG, atomic_write_bytes, write_table
from mofbalora.model import BandGapModel, build_model, load_weights
from mofbalora.parallel.torch_ddp import SINGLE, DistContext, init_from_env, share_of, shutdown
from mofbalora.prediction import floor_std, point_prediction
from mofbalora.uq import distribution as D
from mofbalora.uq.recalibration import fit_calibration
from mofbalora.warm_start import warm_start

log = logging.getLogger(__name__)
HUBER_DELTA_EV = 0.5


def model_from_config(cfg: RunConfig | dict) -> BandGapModel:
    """The model a configuration (typed, or a document) describes, with fresh adapters and head."""
    cfg = RunConfig.of(cfg)
    return build_model(
        cfg.model.regime,
        backbone=cfg.backbone.name,
        backbone_options=cfg.backbone.options,
        adapter=cfg.model_adapter(),
        head=cfg.model.head,
        trust_checkpoint=cfg.backbone.trust_checkpoint,
    )


def parameter_group(name: str) -> str:
    """The ``optim.lr_scale`` group (:data:`~mofbalora.config.PARAM_GROUPS`) of a model parameter,
    by its name in ``model.named_parameters()``: ``head``, ``alpha`` (BaLoRA's α-probes and shared
    α-network), ``readout`` (adapters of CHGNet's readout MLP), ``trunk`` (every other adapter) or
    ``backbone`` (the backbone's own weights, trained in the ``full`` regime)."""
    if name.startswith("head."):
        return "head"
    if name.startswith("alpha_network.") or ".adapter_alpha" in name:
        return "alpha"
    if ".adapter_" in name:
        return "readout" if name.startswith("backbone.readout_mlp.") else "trunk"
    return "backbone"


def parameter_groups(model: BandGapModel, lr_scale: dict[str, float]) -> list[dict]:
    """The optimiser's parameter groups: the trainable parameters of each group of
    :data:`PARAM_GROUPS` with its ``lr_scale`` factor (1 when not named). A group at factor 0 is
    frozen (``requires_grad`` off, left out of the optimiser). ValueError when ``lr_scale`` names
    a group the model has no parameter in."""
    members: dict[str, list[nn.Parameter]] = {g: [] for g in PARAM_GROUPS}
    for name, p in model.named_parameters():
        if p.requires_grad:
            members[parameter_group(name)].append(p)
    empty = sorted(g for g in lr_scale if not members[g])
    if empty:
        raise ValueError(
            f"optim.lr_scale names {empty}, but this model trains no parameter there; its groups: "
            f"{[g for g in PARAM_GROUPS if members[g]]}"
        )
    groups = []
    for g in PARAM_GROUPS:
        factor = float(lr_scale.get(g, 1.0))
        if factor == 0:
            for p in members[g]:
                p.requires_grad_(False)
        elif members[g]:
            groups.append({"params": members[g], "name": g, "lr_scale": factor})
    return groups


def split_ids(cfg: RunConfig | dict):
    """(dataset, {"train": ids, "val": ids, "test": ids}) of a configuration's ``data`` section,
    after its size limits (:func:`mofbalora.data.splits.split_dataset`; a random split is seeded
    by ``run.seed``)."""
    cfg = RunConfig.of(cfg)
    return split_dataset(cfg.data, cfg.run.seed)


def data_loss_sum(gap, var, target, likelihood: str, nll_beta: float = 0.0) -> torch.Tensor:
    """Sum over structures of the per-structure loss: squared error (``mse``), absolute error
    (``l1``), Huber with δ = 0.5 eV (``huber``, quadratic below δ, linear above), or a negative
    log-likelihood up to a constant with the head's aleatoric variance ``var`` (eV²): Gaussian
    (``gaussian_nll``) or Laplace (``laplace_nll``, scale b = sqrt(var / 2), so ``var`` stays the
    variance and the reported aleatoric std keeps its meaning; its mean is fitted like an L1 loss
    and its scale is the expected absolute error, E|y − μ| = b).

    ``nll_beta`` (β ∈ [0, 1], the NLLs only) is β-NLL (Seitzer et al., ICLR 2022): each structure's
    NLL is weighted by its own spread to the power β, held constant (no gradient through the
    weight): var^β for the Gaussian, b^β for the Laplace. At β = 0 this is the plain NLL; at β = 1
    the mean's gradient is that of the squared (Gaussian, halved) or absolute (Laplace) error, so
    structures the head calls noisy are no longer fitted less. The scale is still fitted to the
    residuals."""
    if likelihood == "gaussian_nll":
        weight = var.detach() ** nll_beta if nll_beta else 1.0
        return (weight * 0.5 * (torch.log(var) + (target - gap) ** 2 / var)).sum()
    if likelihood == "laplace_nll":
        scale = torch.sqrt(0.5 * var)
        weight = scale.detach() ** nll_beta if nll_beta else 1.0
        return (weight * (torch.log(scale) + (target - gap).abs() / scale)).sum()
    if likelihood == "l1":
        return (target - gap).abs().sum()
    if likelihood == "huber":
        return torch.nn.functional.huber_loss(gap, target, reduction="sum", delta=HUBER_DELTA_EV)
    return ((target - gap) ** 2).sum()


def _lr_factor(o: OptimConfig, step: int, steps_per_epoch: int) -> float:
    total = max(1, o.epochs * steps_per_epoch)
    warm = o.warmup_epochs * steps_per_epoch
    if step < warm:
        return (step + 1) / warm
    if o.schedule == "constant":
        return 1.0
    check_choice("optim.schedule", o.schedule, SCHEDULES)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))


@torch.no_grad()
def validation_mae(
    model: BandGapModel,
    inputs: list,
    targets: torch.Tensor,
    batch_size: int = 128,
    dist: DistContext = SINGLE,
) -> float:
    """MAE (eV) of the posterior-mean prediction (ensemble: mean of the members). In a data-parallel
    run each process predicts its share and the error sums are all-reduced (every process gets
    the same figure)."""
    model.eval()
    start, stop = share_of(len(inputs), dist)
    inputs, targets = inputs[start:stop], targets[start:stop]
    preds = []
    for chunk in atom_capped_batches(inputs, batch_size, model.backbone.max_batch_atoms):
        preds.append(point_prediction(model, model.backbone.collate(chunk)))
    err = (torch.cat(preds).cpu() - targets).abs().sum() if preds else torch.zeros(())
    total = dist.all_reduce_sum(
        torch.stack([err.double(), torch.tensor(float(len(targets)), dtype=torch.float64)])
    )
    return float(total[0] / total[1])


class TrainingObjective(nn.Module):
    """One step's objective on this process's share of a global batch (the whole batch in a plain
    run).

    Returns ``(objective, data-loss sum, KL share)``: ``objective × world_size`` is what this
    process back-propagates, so that DDP's gradient *average* equals the gradient of the one-process
    objective ``mean_B loss + kl_weight × KL / n_train`` (see :mod:`mofbalora.parallel.torch_ddp`).
    """

    def __init__(
        self,
        model: BandGapModel,
        likelihood: str,
        dist: DistContext = SINGLE,
        nll_beta: float = 0.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.likelihood = likelihood
        self.nll_beta = nll_beta
        self.dist = dist
        self.n_kl_layers = sum(1 for _, m in adapter_layers(model) if hasattr(m, "kl_rows"))

    def forward(
        self,
        batch,
        target: torch.Tensor,
        *,
        generator: torch.Generator,
        noise_seed: int,
        keys: torch.Tensor,
        global_size: int,
        kl_weight: float,
        n_train: int,
    ):
        m = self.model
        # an empty share (global batch smaller than the world): still join the collectives
        if batch is None:
            dl_sum = sum(p.sum() for p in m.trainable_parameters()) * 0.0
        else:
            with sampling(
                stochastic=True, generator=generator, noise_seed=noise_seed, structure_keys=keys
            ):
                if m.n_members > 1:
                    dl_sum = sum(
                        data_loss_sum(
                            *self._member(batch, k),
                            target.to(m.device),
                            self.likelihood,
                            self.nll_beta,
                        )
                        for k in range(m.n_members)
                    )
                else:
                    gap, var, _ = m(batch)
                    dl_sum = data_loss_sum(
                        gap, var, target.to(gap.device), self.likelihood, self.nll_beta
                    )
        if m.n_members > 1:  # ensembles carry no KL
            kl = dl_sum.new_zeros(())
        elif not self.dist.enabled:
            kl = total_kl(m)
        # each layer's KL is a mean over its rows: weight this share by its part of the global rows
        else:
            if batch is None:
                kls = rows = dl_sum.new_zeros(self.n_kl_layers)
            else:
                kls, rows = (t.to(dl_sum.device) for t in kl_terms(m))
            kl = (kls * rows / self.dist.all_reduce_sum(rows).clamp_min(1.0)).sum()
        objective = dl_sum / global_size + kl_weight * kl / n_train
        return objective * self.dist.world_size, dl_sum, kl

    def _member(self, batch, k: int):
        with sampling(member=k):
            gap, var, _ = self.model(batch)
        return gap, var


class Trainer:
    """Trains ``model`` (default: the one ``cfg`` describes) on featurized inputs; state saved each
    epoch to ``out/checkpoints/last``. ``cfg``: a :class:`~mofbalora.config.RunConfig` (a
    document is converted)."""

    def __init__(
        self,
        cfg: RunConfig,
        out: str | Path,
        *,
        model: BandGapModel | None = None,
        dist: DistContext = SINGLE,
    ) -> None:
        cfg = RunConfig.of(cfg)
        self.cfg = cfg
        self.out = Path(out)
        self.dist = dist
        if dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.device = dist.device if dist.enabled else resolve_device(cfg.run.device)
        #: what ``model.warm_start`` loaded (:func:`~mofbalora.warm_start.warm_start`'s report);
        #: None without it
        self.warm_started: dict[str, list[str]] | None = None
        if model is None:
            model = model_from_config(cfg)
            if cfg.model.warm_start is not None:  # a model passed in is the caller's to initialise
                self.warm_started = warm_start(model, cfg.model.warm_start)
                log.info(
                    "warm start from %s: %d tensors loaded, %d fresh",
                    cfg.model.warm_start,
                    len(self.warm_started["loaded"]),
                    len(self.warm_started["fresh"]),
                )
        self.model = model.to(self.device)
        groups = parameter_groups(self.model, cfg.optim.lr_scale)
        self.params = self.model.trainable_parameters()
        if not self.params:
            raise ValueError("nothing to train: the model has no trainable parameters")
        self.objective = TrainingObjective(
            self.model, cfg.model.likelihood, dist, float(cfg.model.nll_beta)
        )
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            # unused parameters exist in some regimes (e.g. a frozen, cached trunk in ``full``)
            self.step_objective = DistributedDataParallel(
                self.objective,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        else:
            self.step_objective = self.objective
        self.optimizer = torch.optim.AdamW(
            groups, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay
        )
        seed = int(cfg.run.seed)
        self.seed = seed
        self.shuffle_gen = seeded_generator(seed)
        self.epoch = 0
        self.step = 0
        self.best_val = float("inf")
        self.best_epoch = -1
        self.bad_epochs = 0
        self.train_seconds = 0.0

    # -- state -------------------------------------------------------------------------------------
    def state(self) -> dict:
        """Everything a resume needs, as tensors and plain numbers only (RNG states are uint8
        tensors), so :meth:`load_state` reads it back with ``torch.load(weights_only=True)``."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "shuffle_gen": self.shuffle_gen.get_state(),
            "epoch": int(self.epoch),
            "step": int(self.step),
            "best_val": float(self.best_val),
            "best_epoch": int(self.best_epoch),
            "bad_epochs": int(self.bad_epochs),
            "train_seconds": float(self.train_seconds),
            "torch_rng": torch.get_rng_state(),
        }

    def save_state(self, which: str = "last") -> None:
        if not self.dist.is_main:  # one writer: every process holds the same state
            return
        ckpt = self.out / "checkpoints"
        tmp = ckpt / f".{which}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save(tmp, metadata={"epoch": self.epoch, "val_mae_ev": self.best_val})
        if which == "last":
            torch.save(self.state(), tmp / "trainer_state.pt")
        final, old = ckpt / which, ckpt / f".{which}.old"
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)

    def load_state(self) -> bool:
        ckpt = self.out / "checkpoints"
        src = next(
            (p for p in (ckpt / "last", ckpt / ".last.old") if (p / "trainer_state.pt").is_file()),
            None,
        )
        if src is None:
            return False
        # through io.read_checkpoint: refuses weights of another base model
        load_weights(self.model, src)
        st = torch.load(
            src / "trainer_state.pt", weights_only=True, map_location="cpu"
        )  # no pickled objects
        self.optimizer.load_state_dict(st["optimizer"])
        self.shuffle_gen.set_state(st["shuffle_gen"])
        torch.set_rng_state(st["torch_rng"])
        for k in ("epoch", "step", "best_val", "best_epoch", "bad_epochs", "train_seconds"):
            setattr(self, k, st[k])
        return True

    # -- loop --------------------------------------------------------------------------------------
    def fit(
        self,
        train_inputs: list,
        train_y: torch.Tensor,
        val_inputs: list,
        val_y: torch.Tensor,
        *,
        progress: bool = True,
        stop_after_epochs: int | None = None,
        on_epoch_end: Callable[[Trainer], None] | None = None,
        keep_start: bool = False,
    ) -> dict:
        """Train until ``optim.epochs`` or early stopping. ``stop_after_epochs`` ends this call
        early (as an interruption would) without marking the run finished. ``on_epoch_end(trainer)``
        is called after each epoch, once its checkpoint is written (an exception raised there
        stops training like a kill would). ``keep_start``: the model as it enters (a warm start)
        is epoch 0 of the early stopping: its validation MAE is the one to beat, and it stays the
        best checkpoint (``best_epoch`` 0) when no epoch beats it."""
        o = self.cfg.optim
        n_train, bs = len(train_inputs), int(o.batch_size)
        steps_per_epoch = math.ceil(n_train / bs)
        metrics_csv = self.out / "metrics.csv"
        bar = tqdm(
            total=o.epochs,
            initial=self.epoch,
            desc="finetune",
            unit="epoch",
            disable=not (progress and self.dist.is_main),
        )
        epochs_this_call = 0
        if keep_start and self.epoch == 0 and self.best_epoch < 0:
            self.best_val = validation_mae(self.model, val_inputs, val_y, dist=self.dist)
            self.best_epoch = 0
            self.save_state("best")
            if self.dist.is_main:
                log.info("start model: val MAE %.3f eV (epoch 0, the one to beat)", self.best_val)
        while self.epoch < o.epochs and self.bad_epochs < o.patience:
            if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs:
                break
            t0 = time.perf_counter()
            self.model.train()
            perm = torch.randperm(n_train, generator=self.shuffle_gen)
            kl_w = o.kl_weight * (
                min(1.0, (self.epoch + 1) / o.kl_warmup_epochs) if o.kl_warmup_epochs else 1.0
            )
            sums = np.zeros(3)
            for s in range(0, n_train, bs):
                idx = perm[s : s + bs].tolist()
                # this process's share of the global batch
                start, stop = share_of(len(idx), self.dist)
                mine = idx[start:stop]
                batch = (
                    self.model.backbone.collate([train_inputs[i] for i in mine]) if mine else None
                )
                for group in self.optimizer.param_groups:
                    group["lr"] = (
                        o.lr * group["lr_scale"] * _lr_factor(o, self.step, steps_per_epoch)
                    )
                self.optimizer.zero_grad(set_to_none=True)
                # the step's noise comes from (seed, step) and each structure's key alone: a
                # structure draws the same numbers in any process and in any batch, and a resumed
                # run draws what it would have
                step_seed = int(
                    np.random.SeedSequence([self.seed, 1, self.step]).generate_state(1)[0]
                )
                keys = structure_keys([train_inputs[i].get("digest") for i in mine], 0, mine)
                objective, dl_sum, kl = self.step_objective(
                    batch,
                    train_y[mine],
                    generator=seeded_generator(step_seed),
                    noise_seed=step_seed,
                    keys=keys,
                    global_size=len(idx),
                    kl_weight=kl_w,
                    n_train=n_train,
                )
                objective.backward()
                if o.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.params, o.grad_clip)
                self.optimizer.step()
                self.step += 1
                dl_total, kl_total = self.dist.all_reduce_sum(
                    torch.stack([dl_sum.detach(), kl.detach()])
                ).tolist()
                dl_mean = dl_total / len(idx)
                sums += np.array([dl_mean + kl_w * kl_total / n_train, dl_mean, kl_total]) * len(
                    idx
                )
            self.epoch += 1
            epochs_this_call += 1
            val_mae = validation_mae(self.model, val_inputs, val_y, dist=self.dist)
            seconds = time.perf_counter() - t0
            self.train_seconds += seconds
            row = {
                "epoch": self.epoch,
                "loss": sums[0] / n_train,
                "data_loss": sums[1] / n_train,
                "kl": sums[2] / n_train,
                "val_mae_ev": val_mae,
                "lr": o.lr * _lr_factor(o, self.step - 1, steps_per_epoch),
                "seconds": seconds,
            }
            if self.dist.is_main:
                _append_csv(metrics_csv, row)
            if val_mae < self.best_val:
                self.best_val, self.best_epoch, self.bad_epochs = val_mae, self.epoch, 0
                self.save_state("best")
            else:
                self.bad_epochs += 1
            self.save_state("last")
            # the others wait for the checkpoint: a resume then finds every rank's state
            self.dist.barrier()
            bar.update(1)
            # the loss is data_loss + β·KL/N (N training structures): show the KL's part of it, not
            # the raw KL
            kl_part = kl_w * row["kl"] / n_train
            kl_share = kl_part / row["loss"] if row["loss"] > 0 else 0.0
            bar.set_postfix(
                loss=f"{row['loss']:.3f}",
                data=f"{row['data_loss']:.3f}",
                kl_per_struct=f"{kl_part:.3f}",
                kl_share=f"{kl_share:.0%}",
                val_mae=f"{val_mae:.3f}",
            )
            if self.dist.is_main and epochs_this_call == 1 and kl_share > 0.5:
                log.info(
                    "the KL term β·KL/N is %.1f%% of the loss (β = optim.kl_weight = %g, KL = %.1f "
                    "nats over all adapter weights, N = %d training structures): on a small "
                    "dataset the prior dominates, so the adapters stay near it and the spread "
                    "stays wide; it shrinks as 1/N with more data, or lower β (--set "
                    "optim.kl_weight=...) to weigh the data more",
                    100 * kl_share,
                    kl_w,
                    row["kl"],
                    n_train,
                )
            # no bar (piped log, --quiet): one line per epoch instead
            if self.dist.is_main and bar.disable:
                log.info(
                    "epoch %d/%d: loss %.4f (data %.4f, KL share %.0f%%), val MAE %.3f eV, %.1f s",
                    self.epoch,
                    o.epochs,
                    row["loss"],
                    row["data_loss"],
                    100 * kl_share,
                    val_mae,
                    seconds,
                )
            if on_epoch_end is not None:
                on_epoch_end(self)
        bar.close()
        finished = self.epoch >= o.epochs or self.bad_epochs >= o.patience
        return {
            "finished": finished,
            "epoch": self.epoch,
            "best_epoch": self.best_epoch,
            "best_val_mae_ev": self.best_val,
            "train_seconds": self.train_seconds,
        }


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def _finetune_gbm(cfg: RunConfig, out: Path, *, progress: bool) -> dict:
    """The gradient-boosting baseline (:mod:`mofbalora.gbm`) through the same run folder: fit on the
    train part, recalibrate its quantile std on the validation part, score the test part."""
    if (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / "config.yaml")
    model = GBMBandGapModel(cfg.backbone.to_dict(), cfg.gbm)
    ds, ids = split_ids(cfg)
    announce_featurization(
        model,
        ds,
        {
            p: ids[p]
            for p in ("train", "val", "test")
            if p != "test" or (cfg.run.eval_test and ids["test"])
        },
    )
    tr_ids, tr_x, tr_y = load_inputs(model, ds, ids["train"], "train set" if progress else False)
    va_ids, va_x, va_y = load_inputs(model, ds, ids["val"], "val set" if progress else False)
    t0 = time.perf_counter()
    model.fit(tr_x, tr_y.numpy())
    seconds = time.perf_counter() - t0
    result = {
        "regime": "gbm",
        "n_train": len(tr_x),
        "n_val": len(va_x),
        "train_seconds": seconds,
        "finished": True,
        "trainable_parameters": 0,
    }
    result["val"], val_table = evaluate_inputs(model, va_ids, va_x, va_y.numpy(), n_samples=1)
    best = out / "checkpoints" / "best"
    model.calibration = _scale_floor(val_table, 1)
    model.save(best, metadata={"train_seconds": seconds})
    result["calibration"] = model.calibration
    if cfg.run.eval_test and ids["test"]:
        te_ids, te_x, te_y = load_inputs(model, ds, ids["test"], "test set" if progress else False)
        result["test"], table = evaluate_inputs(model, te_ids, te_x, te_y.numpy(), n_samples=1)
        write_table(table, out / "test_predictions.csv")
    atomic_write_bytes(out / "metrics.json", json.dumps(result, indent=2, default=float).encode())
    return result


def _scale_floor(val_table, n_samples: int, family: str = "gaussian") -> dict | None:
    """``sqrt((a*std)^2 + b^2)`` fitted on validation predictions by maximum likelihood in the
    model's predictive ``family`` (:func:`mofbalora.uq.recalibration.fit_calibration`: ``laplace``
    for a model trained with the Laplace NLL, else Gaussian), the family recorded with it; None
    without a usable std."""
    std = val_table["bandgap_std_ev"].to_numpy(float)
    # two parameters: a handful of points at the very least
    if len(val_table) < 8 or not (std > 0).any():
        return None
    dist = D.make_predictive(family, val_table["bandgap_mean_ev"].to_numpy(float), floor_std(std))
    return fit_calibration(
        dist,
        val_table["bandgap_true_ev"].to_numpy(float),
        n_samples=n_samples,
        fitted_on=f"validation ({len(val_table)} structures)",
    )


def _fit_calibration(trainer: Trainer, out: Path, val_table, n_samples: int) -> dict | None:
    """Fit ``sqrt((a*std)^2 + b^2)`` on the validation predictions of a stochastic model and store
    it in the best checkpoint (screen / evaluate then report calibrated stds); None for
    deterministic regimes."""
    trainer.model.calibration = _scale_floor(
        val_table, n_samples, D.family_of_likelihood(trainer.cfg.model.likelihood)
    )
    if trainer.model.calibration is None:
        return None
    best = out / "checkpoints" / "best"
    metadata = json.loads((best / MODEL_CONFIG).read_text()).get("metadata", {})
    trainer.model.save(best, metadata=metadata)
    return trainer.model.calibration


def _fit_training_domain(
    trainer: Trainer, out: Path, tr_x: list, va_x: list, cfg: RunConfig
) -> dict:
    """Store the training set's element counts and embedding reference (threshold from validation)
    in the best checkpoint, for the screen's applicability domain (:mod:`mofbalora.domain`)."""
    split = cfg.data.split
    trainer.model.training_domain = fit_domain(
        trainer.model,
        tr_x,
        va_x,
        seed=int(cfg.run.seed),
        source=f"training split of {split}" if split else "training set",
    )
    best = out / "checkpoints" / "best"
    metadata = json.loads((best / MODEL_CONFIG).read_text()).get("metadata", {})
    trainer.model.save(best, metadata=metadata)
    return {
        k: v for k, v in trainer.model.training_domain.to_config().items() if k != "element_counts"
    }


def finetune(
    cfg: RunConfig | dict,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after_epochs: int | None = None,
    dist: DistContext | None = None,
    trust_checkpoint: bool = False,
) -> dict:
    """Fine-tune per ``cfg`` (a :class:`~mofbalora.config.RunConfig`, or a document) into run folder
    ``out``; returns the final metrics (also in metrics.json).

    ``trust_checkpoint``: allow full unpickling of the backbone's third-party checkpoint (as
    ``backbone.trust_checkpoint: true`` in ``cfg`` does); never written into the run folder, so
    ``evaluate`` / ``screen`` of the run need it again. Under ``torchrun --nproc_per_node N`` (or
    with ``dist``) the run is data-parallel: see :mod:`mofbalora.parallel.torch_ddp`. Only rank 0
    writes; the other ranks return the training summary.
    """
    cfg = RunConfig.of(cfg)
    if trust_checkpoint:
        cfg = replace(cfg, backbone=replace(cfg.backbone, trust_checkpoint=True))
    own_group = dist is None
    dist = init_from_env(device=cfg.run.device) if dist is None else dist
    try:
        return _finetune(
            cfg,
            Path(out),
            resume=resume,
            progress=progress and dist.is_main,
            stop_after_epochs=stop_after_epochs,
            dist=dist,
        )
    finally:
        if own_group:
            shutdown(dist)


def _finetune(
    cfg: RunConfig,
    out: Path,
    *,
    resume: bool,
    progress: bool,
    stop_after_epochs: int | None,
    dist: DistContext,
) -> dict:
    torch.manual_seed(int(cfg.run.seed))
    if cfg.run.threads:
        torch.set_num_threads(int(cfg.run.threads))
    if cfg.model.regime == "gbm":
        return _finetune_gbm(cfg, out, progress=progress)
    if out.exists() and (out / "checkpoints" / "last").exists() and not resume:
        raise FileExistsError(
            f"run folder {out} already holds a run; pass --resume to continue it or choose --out"
        )
    dist.barrier()  # every rank has checked the folder before rank 0 writes into it
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, out / "config.yaml")
    trainer = Trainer(cfg, out, dist=dist)
    resumed = trainer.load_state() if resume else False
    if resume and not resumed:
        log.info("nothing to resume in %s: starting from scratch", out)
    if dist.is_main and not resumed and (out / "metrics.csv").exists():
        (out / "metrics.csv").unlink()
    ds, ids = split_ids(cfg)
    if dist.is_main:
        announce_featurization(
            trainer.model,
            ds,
            {
                p: ids[p]
                for p in ("train", "val", "test")
                if p != "test" or (cfg.run.eval_test and ids["test"])
            },
        )
    # featurize (into the shared cache) one share per rank, then every rank reads all of it
    if dist.enabled:
        for part in ("train", "val"):
            start, stop = share_of(len(ids[part]), dist)
            load_inputs(trainer.model, ds, ids[part][start:stop], False)
        dist.barrier()
    tr_ids, tr_x, tr_y = load_inputs(
        trainer.model, ds, ids["train"], "train set" if progress else False
    )
    va_ids, va_x, va_y = load_inputs(
        trainer.model, ds, ids["val"], "val set" if progress else False
    )
    if not tr_x or not va_x:
        raise ValueError(f"empty training ({len(tr_x)}) or validation ({len(va_x)}) set")
    summary = trainer.fit(
        tr_x, tr_y, va_x, va_y, progress=progress, stop_after_epochs=stop_after_epochs
    )
    if not summary["finished"] or not dist.is_main:
        return summary
    # final figures with the best model
    load_weights(trainer.model, out / "checkpoints" / "best")
    n_samples = int(cfg.run.eval_samples)
    result = {
        "regime": cfg.model.regime,
        "n_train": len(tr_x),
        "n_val": len(va_x),
        **summary,
        "trainable_parameters": sum(p.numel() for p in trainer.params),
    }
    result["val"], val_table = evaluate_inputs(
        trainer.model, va_ids, va_x, va_y.numpy(), n_samples=n_samples
    )
    result["calibration"] = _fit_calibration(trainer, out, val_table, n_samples)
    result["training_domain"] = _fit_training_domain(trainer, out, tr_x, va_x, cfg)
    if cfg.run.eval_test and ids["test"]:
        log.info(
            "test split: featurizing and predicting %d structures (T = %d)",
            len(ids["test"]),
            n_samples,
        )
        te_ids, te_x, te_y = load_inputs(
            trainer.model, ds, ids["test"], "test set" if progress else False
        )
        t0 = time.perf_counter()
        result["test"], table = evaluate_inputs(
            trainer.model, te_ids, te_x, te_y.numpy(), n_samples=n_samples
        )
        result["test"]["inference_seconds_per_structure"] = (time.perf_counter() - t0) / max(
            1, len(te_x)
        )
        write_table(table, out / "test_predictions.csv")
    atomic_write_bytes(out / "metrics.json", json.dumps(result, indent=2, default=float).encode())
    return result
