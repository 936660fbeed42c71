from __future__ import annotations

import pandas as pd
import yaml

from mofbalora.cli import main


def test_two_setting_sweep_runs_resumes_and_tabulates(tmp_path, tiny_split, qmof_path):
    base = tmp_path / "base.yaml"
    base.write_text(
        yaml.safe_dump(
            {
                "data": {"path": str(qmof_path), "split": str(tiny_split)},
                "optim": {"epochs": 1, "batch_size": 8},
                "run": {"eval_samples": 4, "threads": 1},
            }
        )
    )
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "base": "base.yaml",
                "seeds": [0, 1],
                "settings": {"balora": {}, "lora_r4": {"model.regime": "lora", "adapter.rank": 4}},
            }
        )
    )
    out = tmp_path / "out"
    assert main(["sweep", "--config", str(sweep), "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out / "sweep.csv")
    assert sorted(table["setting"]) == ["balora", "lora_r4"]
    assert (table["seeds"] == 2).all()
    assert table.set_index("setting").loc["lora_r4", "regime"] == "lora"
    md = (out / "sweep.md").read_text()
    assert "| balora |" in md and "| lora_r4 |" in md
    # rerunning skips finished runs (their metrics files are untouched)
    stamp = (out / "balora" / "seed0" / "metrics.json").stat().st_mtime_ns
    assert main(["sweep", "--config", str(sweep), "--out", str(out), "--quiet"]) == 0
    assert (out / "balora" / "seed0" / "metrics.json").stat().st_mtime_ns == stamp
