#!/usr/bin/env bash
# Regenerates every committed report (CPU, 2 cores; about 1.5 h with a warm trunk cache).
# QMOF from $MOFBALORA_QMOF or ../shared/data/qmof. Cite Rosen et al. 2021, 2022 (CC BY 4.0).
set -euo pipefail
cd "$(dirname "$0")/.."
B=.venv/bin
export OMP_NUM_THREADS=1

# 0. frozen CHGNet trunk, once per structure (resumable): test part, 600 val, 6,000 train
$B/mofbalora data cache --order test --threads 2
$B/mofbalora data cache --order val --limit 600 --threads 2
$B/mofbalora data cache --order train --limit 6000 --threads 2

# 1. the shipped default and its baselines (issue 4, 5): same recipe, one flag apart
$B/mofbalora finetune --config workflows/finetune_chgnet.yaml --out runs/default --threads 1
$B/mofbalora finetune --config workflows/finetune_chgnet.yaml --adapter lora-ensemble --out runs/lora_ensemble --threads 1
$B/mofbalora finetune --config workflows/finetune_chgnet.yaml --adapter mc-dropout --out runs/mc-dropout --threads 1
$B/mofbalora finetune --config workflows/finetune_chgnet.yaml --adapter lora --out runs/lora --threads 1
$B/mofbalora finetune --config workflows/finetune_chgnet.yaml --adapter head-only --out runs/head-only --threads 1
$B/python scripts/publish_default.py runs/default

# 2. uncertainty comparison (issue 5)
$B/mofbalora compare runs/default runs/lora_ensemble runs/mc-dropout runs/lora runs/head-only --samples 1,2,4,8,16,32,64 \
    --out reports/uncertainty

# 3. adapter placement (issue 4): readout (cached trunk) versus the last convolution block + readout
for a in readout last_block; do
  $B/mofbalora finetune --config workflows/finetune_chgnet.yaml --set backbone.adapt=$a --set data.train_size=300 \
      --set data.val_size=100 --set data.test_size=300 --set run.eval_samples=16 --epochs 10 --out runs/layers_$a
done

# 4. ablations (issue 12)
$B/mofbalora sweep --config workflows/sweep_ablations.yaml --out runs/sweep --seeds 0 \
    --set data.train_size=2000 --set optim.epochs=20
$B/mofbalora sweep --config workflows/sweep_ablations.yaml --out runs/sweep --seeds 1,2 \
    --set data.train_size=2000 --set optim.epochs=20 --only default lora alpha_constant
cp runs/sweep/sweep.md runs/sweep/sweep.csv reports/ablations/

# 5. active-learning benchmark (issue 7), reduced budget: see reports/active_learning/report.md
$B/mofbalora al run --config workflows/al_qmof.yaml --out runs/al_qmof --seed 0 --seed 1 --seed 2 --rounds 5 \
    --set data.train_size=3000 --set data.test_size=600 --set al.round_epochs=8 --set optim.epochs=20 --set optim.lr=0.01
$B/mofbalora al report --runs runs/al_qmof --out reports/active_learning

# 6. real-world screen (issue 6) and benchmarks
$B/python benchmarks/screen_coremof.py 1000 runs/screen_coremof
for b in benchmarks/bench_*.py; do $B/python "$b"; done
