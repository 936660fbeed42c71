"""Data-parallel fine-tuning: ``torchrun`` with 2 CPU processes (gloo) against one process, same
global batch."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

from mofbalora.config import dump_config
from mofbalora.parallel.torch_ddp import DistContext, share_of
from mofbalora.train import finetune

# Two processes sum the gradient in two halves (and the KL in two shares) where one process sums it
# at once: the trajectories agree to float32 round-off, a few 1e-7 relative per step. 1e-4 leaves
# room for that round-off to grow over 8 optimiser steps without admitting a wrong scaling (a
# missing world-size factor or a per-process mean changes the loss at the 1e-1 level).
RTOL = 1e-4
# Weights: Adam divides each gradient by its running RMS, so round-off in near-zero gradient
# components becomes visible in the update; after 8 steps the largest difference seen is 2.5e-6 on
# weights of scale 1e-2. 1e-5 absolute is 0.1 % of that scale (a desynchronised noise draw, the bug
# this guards against, gave 2.5e-3).
WEIGHT_ATOL = 1e-5
# The α-probe starts at α0, the KL's minimum, where the KL's gradient vanishes: its gradient is then
# only the small data term, and Adam's division by the running RMS magnifies float32 round-off most
# there (seen: 1.3e-5 after 8 steps on weights of scale 3e-3 to 8e-3, equal loss trajectories to
# 1e-7).
ALPHA_ATOL = 5e-5


def test_shares_cover_a_batch_once_in_order():
    for n in range(0, 12):
        for world in (1, 2, 3, 5):
            shares = [share_of(n, DistContext(rank=r, world_size=world)) for r in range(world)]
            covered = [i for a, b in shares for i in range(a, b)]
            assert covered == list(range(n))
            sizes = [b - a for a, b in shares]
            assert max(sizes) - min(sizes) <= 1


def test_torchrun_two_processes_give_the_one_process_loss_trajectory(tiny_cfg, tmp_path):
    # batch 5 over 16 structures: steps of 5, 5, 5, 1 → shares 3+2 and, in the last step, 1+0 (an
    # empty share)
    cfg = tiny_cfg(
        "model.regime=balora",
        "optim.epochs=2",
        "optim.batch_size=5",
        "optim.warmup_epochs=0",
        "run.eval_samples=2",
    )
    config = tmp_path / "run.yaml"
    dump_config(cfg, config)
    one = tmp_path / "one"
    finetune(cfg, one, progress=False)
    # the subprocesses featurize into the session's cache (inherited through the environment)
    two = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "mofbalora.cli",
        "finetune",
        "--config",
        str(config),
        "--out",
        str(two),
        "--quiet",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    a, b = pd.read_csv(one / "metrics.csv"), pd.read_csv(two / "metrics.csv")
    assert len(a) == len(b) == 2  # only rank 0 wrote, once per epoch
    for col in ("loss", "data_loss", "kl", "val_mae_ev", "lr"):
        np.testing.assert_allclose(b[col], a[col], rtol=RTOL, err_msg=col)
    assert a["kl"].iloc[0] > 0  # the KL term was there to be scaled
    wa = load_file(str(one / "checkpoints" / "last" / "model.safetensors"))
    wb = load_file(str(two / "checkpoints" / "last" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        atol = ALPHA_ATOL if "adapter_alpha" in key else WEIGHT_ATOL
        torch.testing.assert_close(wb[key], wa[key], rtol=1e-3, atol=atol, msg=key)
    # and the trained weights moved (θ_B starts at 0): equality is not "nothing happened"
    assert any(float(v.abs().max()) > 0 for k, v in wa.items() if "adapter_B" in k)
