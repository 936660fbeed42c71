"""Screening on a Dask cluster: chunks of files go to workers, each worker loads the model once.

The client (the ``mofbalora screen`` process) keeps the only copy of the output: records stream back
as chunks finish and go into the same incremental ``.partial.jsonl`` and atomic table as a local
run. What makes the table equal to a one-process run is in :func:`mofbalora.scoring.score_chunk`:
each structure's stochastic passes are keyed by (seed, content digest), not by its chunk or worker.
A worker lost mid-run costs nothing but time: Dask reschedules its tasks on the other workers, and a
chunk that reports twice is written once (rows are keyed by content digest).

Workers need the candidate files and the model folder at the same paths (a shared file system, as on
any HPC cluster); the model folder is small (adapters + head) and written once by the client when
the model is an in-memory object. Each Dask thread runs one chunk with one torch thread: start
workers with ``--nthreads`` = cores (or ``local:N`` with N = cores).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mofbalora.io import read_yaml
from mofbalora.model import MODEL_FILE, load_model, resolve_model_dir
from mofbalora.scoring import Predictor, ScoringConfig, score_chunk

CLUSTER_FORMS = (
    "'local:N', a scheduler address such as 'tcp://host:8786', "
    "'jobqueue:CONFIG.yaml' or a distributed.Client"
)
JOBQUEUE_KINDS = ("slurm", "pbs")
#: Environment of spawned worker processes. Dask's nanny sets ``MALLOC_TRIM_THRESHOLD_``, which
#: (glibc) also freezes malloc's mmap threshold at 128 kB: every tensor allocation then maps fresh
#: pages, and CHGNet's memory-bound ops (index_select, cat, silu) ran 1.7x slower than in a plain
#: process (measured: 12.7 s vs 7.5 s for 24 QMOF structures). A 32 MB mmap threshold restores
#: plain-process speed. Remote workers: export the same variable before ``dask worker`` starts
#: (workflows/dask_slurm.yaml does).
WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": 33554432}


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            "screening on a Dask cluster needs dask.distributed: pip install mofbalora[dist]"
        ) from exc
    return distributed


def jobqueue_cluster(config_path: str | Path):
    """A dask-jobqueue cluster (SLURM or PBS) from a YAML file with ``kind``, ``jobs`` and
    ``cluster`` (keyword arguments of ``SLURMCluster`` / ``PBSCluster``); not yet scaled.
    Example: workflows/dask_slurm.yaml."""
    try:
        import dask_jobqueue
    except ImportError as exc:
        raise ImportError(
            "SLURM / PBS workers need dask-jobqueue: pip install mofbalora[dist]"
        ) from exc
    path = Path(config_path)
    if not path.is_file():
        raise FileNotFoundError(f"jobqueue configuration {path} not found")
    cfg = read_yaml(path, what="jobqueue configuration")
    kind = str(cfg.get("kind", "")).lower()
    if kind not in JOBQUEUE_KINDS:
        raise ValueError(
            f"{path}: unknown jobqueue kind {cfg.get('kind')!r}; choose from {list(JOBQUEUE_KINDS)}"
        )
    cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[kind]
    return cls(**(cfg.get("cluster") or {})), int(cfg.get("jobs", 1))


def local_cluster(n_workers: int):
    """A LocalCluster of ``n_workers`` single-threaded worker processes, spawned with
    :data:`WORKER_ENV`."""
    import dask

    distributed = _import_distributed()
    env = {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_ENV.items()}
    with dask.config.set(env):
        return distributed.LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
        )


def connect(spec) -> tuple[Any, Any]:
    """(client, cluster this call started or None) for ``spec``: see :data:`CLUSTER_FORMS`."""
    distributed = _import_distributed()
    if isinstance(spec, distributed.Client):
        return spec, None
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"unknown Dask cluster {spec!r}; give {CLUSTER_FORMS}")
    if spec.startswith("local:"):
        try:
            n = int(spec.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(
                f"bad local cluster {spec!r}: give the number of worker processes, e.g. 'local:2'"
            )
        cluster = local_cluster(n)
        return distributed.Client(cluster), cluster
    if spec.startswith("jobqueue:"):
        cluster, jobs = jobqueue_cluster(spec.split(":", 1)[1])
        cluster.scale(jobs=jobs)
        client = distributed.Client(cluster)
        client.wait_for_workers(1)
        return client, cluster
    if "://" in spec or ":" in spec:
        return distributed.Client(spec, timeout="60s"), None
    raise ValueError(f"unknown Dask cluster {spec!r}; give {CLUSTER_FORMS}")


# -- worker side -----------------------------------------------------------------------------------
_MODELS: dict[tuple, Any] = {}
_LOCK = threading.Lock()


def _worker_model(model_dir: str, trust_checkpoint: bool = False):
    """The model of ``model_dir``, loaded once per worker process (reloaded if its weights file
    changed), with the caller's trust decision (:func:`mofbalora.model.load_model`: a folder that
    asks for trust is refused on the worker too unless the caller passed ``trust_checkpoint``)."""
    import torch

    stamp = (model_dir, os.stat(Path(model_dir) / MODEL_FILE).st_mtime_ns, bool(trust_checkpoint))
    with _LOCK:
        if stamp in _MODELS:
            return _MODELS[stamp], 0.0
        t0 = time.perf_counter()
        torch.set_num_threads(1)  # one Dask thread = one core
        model = load_model(model_dir, trust_checkpoint=trust_checkpoint)
        _MODELS.clear()  # a new model (e.g. the next campaign round) replaces the old one
        _MODELS[stamp] = model
        return model, time.perf_counter() - t0


def predict_chunk(
    model_dir: str,
    paths: Sequence[str],
    keys: Sequence[str],
    ids: Sequence[str] | None,
    cfg: dict,
    *,
    with_embedding: bool = False,
    batched: bool = True,
    trust_checkpoint: bool = False,
) -> dict:
    """Run on a worker: records of one chunk (:func:`mofbalora.scoring.score_chunk` with the
    :class:`~mofbalora.scoring.ScoringConfig` fields ``cfg``), and what it cost (model load,
    compute, size). ``trust_checkpoint``: the caller's decision, carried to the worker's
    :func:`~mofbalora.model.load_model`."""
    model, load_s = _worker_model(model_dir, trust_checkpoint)
    t0 = time.perf_counter()
    records = score_chunk(
        model,
        list(paths),
        list(keys),
        None if ids is None else list(ids),
        ScoringConfig(**cfg),
        with_embedding=with_embedding,
        batched=batched,
    )
    return {
        "records": records,
        "pid": os.getpid(),
        "model_load_seconds": load_s,
        "compute_seconds": time.perf_counter() - t0,
        "result_bytes": len(json.dumps(records)),
    }


# -- client side -----------------------------------------------------------------------------------
def model_dir_for_workers(model, scratch: str | Path | None) -> str:
    """An absolute model folder the workers can load: a run folder as given, ``default`` resolved,
    an in-memory model saved once to ``scratch``."""
    if isinstance(model, Predictor):
        if scratch is None:
            raise ValueError(
                "an in-memory model needs a scratch folder to be shared with Dask workers"
            )
        model.save(Path(scratch))
        return str(Path(scratch).resolve())
    return str(Path(resolve_model_dir(model)).resolve())


class DaskExecutor:
    """Maps :func:`predict_chunk` over chunks of files on a Dask cluster, yielding results as they
    finish (the Dask form of :class:`mofbalora.scoring.LocalExecutor`). ``trust_checkpoint``: the
    caller's trust decision, passed to every worker's model load (never read from the model
    folder)."""

    def __init__(
        self, cluster, model, *, scratch: str | Path | None = None, trust_checkpoint: bool = False
    ) -> None:
        self.trust_checkpoint = bool(trust_checkpoint)
        self.client, self._cluster = connect(cluster)
        # an in-memory model is written to ``scratch`` for the workers and removed again by
        # :meth:`close`
        self._scratch = (
            Path(scratch) if isinstance(model, Predictor) and scratch is not None else None
        )
        try:
            self.model_dir = model_dir_for_workers(model, scratch)
        except BaseException:
            self.close()
            raise
        self.stats: dict[str, Any] = {
            "workers": len(self.client.scheduler_info().get("workers", {})),
            "chunks": 0,
            "model_loads": [],
            "compute_seconds": 0.0,
            "result_bytes": 0,
            "pids": [],
        }
        self._pending: list = []

    def map(
        self,
        chunks: Sequence[Sequence[int]],
        paths: Sequence,
        keys: Sequence[str],
        ids: Sequence[str] | None,
        cfg: ScoringConfig,
        *,
        with_embedding: bool = False,
        batched: bool = True,
    ) -> Iterator[tuple[list[int], list[dict]]]:
        distributed = _import_distributed()
        futures = {}
        for chunk in chunks:
            fut = self.client.submit(
                predict_chunk,
                self.model_dir,
                [str(paths[k]) for k in chunk],
                [keys[k] for k in chunk],
                None if ids is None else [ids[k] for k in chunk],
                cfg.to_dict(),
                with_embedding=with_embedding,
                batched=batched,
                trust_checkpoint=self.trust_checkpoint,
                pure=False,
            )
            futures[fut] = list(chunk)
        self._pending = list(futures)
        for fut in distributed.as_completed(futures):
            result = fut.result()
            chunk = futures.pop(fut)
            s = self.stats
            s["chunks"] += 1
            s["compute_seconds"] += result["compute_seconds"]
            s["result_bytes"] += result["result_bytes"]
            if result["model_load_seconds"] > 0:
                s["model_loads"].append(result["model_load_seconds"])
            if result["pid"] not in s["pids"]:
                s["pids"].append(result["pid"])
            yield chunk, result["records"]
        self._pending = []

    def close(self) -> None:
        for fut in self._pending:
            fut.cancel()
        self._pending = []
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
        if self._cluster is not None:  # we started it: stop it
            self.client.close()
            self._cluster.close()
            self._cluster = None
