"""Screening and campaign selection on a real Dask LocalCluster (2 worker processes)."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mofbalora.screen import screen

distributed = pytest.importorskip("distributed")

REPO = Path(__file__).resolve().parents[1]
# workers run torch with 1 thread, this process with 2: same math, different summation order
ATOL_EV = 1e-5


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """2 worker processes with their own feature cache: they featurize everything themselves."""
    old = os.environ["MOFBALORA_CACHE"]
    os.environ["MOFBALORA_CACHE"] = str(tmp_path_factory.mktemp("worker-cache"))
    try:
        from mofbalora.parallel.dask_screen import local_cluster

        c = local_cluster(2)
    finally:
        os.environ["MOFBALORA_CACHE"] = old
    client = distributed.Client(c)
    yield c, client
    client.close()
    c.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory, sample_cifs):
    """Nine real QMOF CIFs, a duplicate under another name, and two bad files."""
    d = tmp_path_factory.mktemp("cands")
    for p in sample_cifs[:9]:
        shutil.copy(p, d / p.name)
    shutil.copy(sample_cifs[0], d / "copy_of_first.cif")
    (d / "empty.cif").write_text("")
    (d / "truncated.cif").write_text(sample_cifs[1].read_text()[:400])
    return d


def _assert_same_table(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got["path"]) == list(want["path"])  # one row per input, in input order
    for col in ("status", "error", "structure_id", "digest"):
        assert list(got[col].fillna("")) == list(want[col].fillna("")), col
    ok = (want["status"] == "ok").to_numpy()
    for col in ("bandgap_mean_ev", "bandgap_std_ev"):
        np.testing.assert_allclose(
            got.loc[ok, col], want.loc[ok, col], atol=ATOL_EV, rtol=0, err_msg=col
        )
    assert list(got["rank"].fillna(0).astype(int)) == list(want["rank"].fillna(0).astype(int))


def test_two_worker_screen_equals_one_process(cluster, files, tiny_model, tmp_path):
    _, client = cluster
    one = screen(
        [str(files)],
        model=tiny_model,
        n_samples=8,
        out=tmp_path / "one.csv",
        chunk_size=2,
        progress=False,
    )
    two = screen(
        [str(files)],
        model=tiny_model,
        n_samples=8,
        out=tmp_path / "two.csv",
        chunk_size=2,
        progress=False,
        dask=client,
    )
    assert (one["status"] == "ok").sum() == 10 and set(
        one.loc[one["status"] == "error", "error"]
    ) >= {"empty"}
    _assert_same_table(two, one)
    # workers are spawned with the malloc setting that keeps them as fast as a plain process
    assert set(client.run(lambda: os.environ.get("MALLOC_MMAP_THRESHOLD_")).values()) == {
        "33554432"
    }
    stats = two.attrs["dask"]
    # both workers did work, not this process
    assert len(stats["pids"]) == 2 and os.getpid() not in stats["pids"]
    assert (
        stats["chunks"] == 6 and len(stats["model_loads"]) == 2
    )  # each worker loaded the model once
    # the written table is the returned one
    _assert_same_table(pd.read_csv(tmp_path / "two.csv"), one)


def test_a_worker_killed_mid_run_loses_and_duplicates_no_row(cluster, qmof, tiny_model, tmp_path):
    _, client = cluster
    from mofbalora.data.splits import load_split

    # not featurized by the workers yet: each chunk takes a while
    ids = load_split("qmof_v1")["test"][100:124]
    d = tmp_path / "cands"
    d.mkdir()
    for i in ids:
        shutil.copy(qmof.cif_paths[qmof.index_of(i)], d / f"{i}.cif")
    out = tmp_path / "ranked.csv"
    partial = out.with_name(out.name + ".partial.jsonl")
    pids = sorted(client.run(os.getpid).values())
    killed: dict = {}

    def kill_one_worker_after_three_rows():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            n = len(partial.read_text().splitlines()) if partial.exists() else 0
            if n >= 3:
                os.kill(pids[0], signal.SIGKILL)
                killed["rows_done"] = n
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_worker_after_three_rows, daemon=True)
    killer.start()
    got = screen(
        [str(d)], model=tiny_model, n_samples=4, out=out, chunk_size=1, progress=False, dask=client
    )
    killer.join(10)
    assert killed and killed["rows_done"] < len(ids)  # the kill happened mid-run
    # that worker process is gone (the nanny started another)
    assert pids[0] not in client.run(os.getpid).values()
    want = screen([str(d)], model=tiny_model, n_samples=4, out=tmp_path / "one.csv", progress=False)
    assert len(got) == len(ids) and got["path"].is_unique
    _assert_same_table(got, want)
    assert not partial.exists()


def test_campaign_selects_the_same_batch_on_the_cluster(cluster, al_cfg, tmp_path):
    from mofbalora.al.campaign import Campaign, simulated_campaign

    c, _ = cluster
    runs = {}
    for name, al in {
        "local": {"pool_prediction": "per_structure"},
        "dask": {"dask": c.scheduler_address},
    }.items():
        simulated_campaign(tmp_path / name, al_cfg(n_rounds=1, **al)).run(n_rounds=1)
        runs[name] = Campaign(tmp_path / name)
    a, b = runs["local"], runs["dask"]
    assert len(a.history) == len(b.history) == 2
    assert a.history[1]["picked"] == b.history[1]["picked"] and len(a.history[1]["picked"]) == 3
    assert a.labelled == b.labelled and a.pool == b.pool


def test_cli_screen_on_a_local_cluster(files, tiny_model, tmp_path, capsys):
    from mofbalora.cli import main

    out = tmp_path / "ranked.csv"
    assert (
        main(
            [
                "screen",
                str(files),
                "--model",
                str(tiny_model),
                "--samples",
                "4",
                "--out",
                str(out),
                "--dask",
                "local:1",
                "--quiet",
            ]
        )
        == 0
    )
    table = pd.read_csv(out)
    assert len(table) == 12 and (table["status"] == "ok").sum() == 10


@pytest.mark.parametrize("spec", ["local:0", "local:x", "nonsense", 3])
def test_bad_cluster_spec_names_the_forms(spec):
    from mofbalora.parallel.dask_screen import connect

    with pytest.raises(ValueError, match="local:"):
        connect(spec)


def test_jobqueue_configs_write_slurm_and_pbs_job_scripts(tmp_path):
    pytest.importorskip("dask_jobqueue")
    import yaml

    from mofbalora.parallel.dask_screen import jobqueue_cluster

    cluster, jobs = jobqueue_cluster(REPO / "workflows" / "dask_slurm.yaml")
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert (
        jobs >= 1
        and "#SBATCH" in script
        and "--cpus-per-task=" in script
        and "distributed.cli.dask_worker" in script
    )
    cfg = yaml.safe_load((REPO / "workflows" / "dask_slurm.yaml").read_text())
    cfg["kind"] = "pbs"
    cfg["cluster"].pop("job_cpu", None)
    (tmp_path / "pbs.yaml").write_text(yaml.safe_dump(cfg))
    cluster, _ = jobqueue_cluster(tmp_path / "pbs.yaml")
    try:
        assert "#PBS" in cluster.job_script()
    finally:
        cluster.close()
    cfg["kind"] = "lsf"
    (tmp_path / "lsf.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match="slurm"):
        jobqueue_cluster(tmp_path / "lsf.yaml")


#: left out of `make test-fast` (trains models, starts clusters or runs notebooks); `make test` runs
#: it
pytestmark = pytest.mark.slow
