"""``mofbalora al``: active learning — the simulated QMOF benchmark, the DFT suggest/ingest loop,
the report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mofbalora.commands import positive_int, show_progress

_positive_int = positive_int


def _trust_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow full unpickling of the backbone's third-party checkpoint, which can run code: "
        "only for files you made or whose source you trust (never read from a campaign folder)",
    )


def _config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", default=None, help="YAML campaign configuration (e.g. workflows/al_qmof.yaml)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config entry, e.g. --set al.batch_size=50 (repeatable)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``al`` parser and its actions to the top-level subparsers."""
    p = sub.add_parser(
        "al", help="active learning: simulated QMOF benchmark, DFT suggest/ingest loop, report"
    )
    asub = p.add_subparsers(dest="al_command", metavar="ACTION", required=True)

    run = asub.add_parser(
        "run",
        help="run (or resume) the simulated benchmark: "
        "strategies x seeds on QMOF with hidden labels",
        description=(
            "One resumable campaign per strategy and seed in OUT/<strategy>/seed_<seed>, advanced "
            "round by round together; every step is committed, so the same command resumes after a "
            "kill. With --report (or benchmark.report) the report is rewritten after every round."
        ),
    )
    _config_flags(run)
    run.add_argument("--out", default=None, help="runs folder (default: benchmark.out)")
    run.add_argument(
        "--strategy",
        dest="strategies",
        action="append",
        default=None,
        help="run only this strategy (repeatable; default: all of benchmark.strategies)",
    )
    run.add_argument(
        "--seed",
        dest="seeds",
        action="append",
        type=int,
        default=None,
        help="run only this seed (repeatable; default: benchmark.seeds)",
    )
    run.add_argument(
        "--rounds",
        type=positive_int,
        default=None,
        help="acquisition rounds (default: al.n_rounds)",
    )
    run.add_argument(
        "--report",
        default=None,
        help="report folder rewritten after every round (default: benchmark.report; none if unset)",
    )
    run.add_argument(
        "--snapshot",
        default=None,
        help="folder refreshed after every round with a compact, resumable copy of each campaign "
        "(`al snapshot`; default: benchmark.snapshot; none if unset)",
    )
    _trust_flag(run)
    run.set_defaults(func=_run)

    sug = asub.add_parser(
        "suggest",
        help="write the next batch of candidates for DFT (CSV + dft-inputs hand-off)",
        description=(
            "Open the campaign in --state, or create a real one: from --model (default: the "
            "shipped model; its own training data is the labelled set, --config/--set apply over "
            "its recipe), or from --config alone (fresh adapters on al.initial_labelled "
            "structures). Add --candidates to its pool and write batch_NNN.csv, batch_NNN.md (what "
            "its score means) and dft_inputs/batch_NNN/. Asked "
            "again before `al ingest`, it rewrites the same batch."
        ),
    )
    sug.add_argument("--state", required=True, help="campaign folder")
    sug.add_argument(
        "--candidates",
        nargs="+",
        default=[],
        metavar="PATH",
        help="candidate CIFs, folders or glob patterns to add to the pool",
    )
    sug.add_argument(
        "--batch", type=_positive_int, default=None, help="batch size (default: al.batch_size)"
    )
    sug.add_argument(
        "--model",
        default=None,
        help="a new campaign starts from this trained model: 'default' (the shipped one, used when "
        "neither --model nor --config is given), a run folder or a model folder",
    )
    _config_flags(sug)
    sug.add_argument("--code", choices=["vasp", "ase"], default="vasp", help="DFT input flavour")
    sug.add_argument(
        "--potcar-dir", default=None, help="pymatgen POTCAR directory (see dft-inputs)"
    )
    sug.add_argument(
        "--no-dft-inputs", dest="dft_inputs", action="store_false", help="write the CSV only"
    )
    _trust_flag(sug)
    sug.set_defaults(func=_suggest)

    ing = asub.add_parser(
        "ingest",
        help="add DFT band gaps (CSV: structure_id or path, bandgap_ev) and retrain warm-started",
        description=(
            "An empty bandgap_ev marks a failed calculation; any other value that is not a finite, "
            "non-negative number with '.' as the decimal mark is an error naming its line, and "
            "then nothing is ingested. Safe to repeat after an interruption."
        ),
    )
    ing.add_argument("--state", required=True, help="campaign folder")
    ing.add_argument("results", help="results CSV")
    ing.add_argument("--quiet", action="store_true", help="no progress bars")
    _trust_flag(ing)
    ing.set_defaults(func=_ingest)

    rep = asub.add_parser(
        "report", help="learning and discovery curves and a markdown summary of a runs folder"
    )
    rep.add_argument("--runs", required=True, help="runs folder of `al run`")
    rep.add_argument("--out", default="reports/active_learning", help="report folder")
    rep.set_defaults(func=_report)

    snap = asub.add_parser(
        "snapshot",
        help="copy what every campaign of a runs folder resumes from (state, configuration, the "
        "latest round's model) into another folder; copy back to restore",
    )
    snap.add_argument("--runs", required=True, help="runs folder of `al run` (or a snapshot)")
    snap.add_argument("--out", required=True, help="destination folder (a runs folder itself)")
    snap.set_defaults(func=_snapshot)

    st = asub.add_parser(
        "status",
        help="phase, round, set sizes and the history of a campaign; with --runs, the progress of "
        "every campaign of a benchmark",
    )
    where = st.add_mutually_exclusive_group(required=True)
    where.add_argument("--state", help="campaign folder")
    where.add_argument(
        "--runs",
        help="runs folder of `al run`: one line per campaign (round, phase, pace) and the process "
        "time its remaining rounds should take",
    )
    _trust_flag(st)
    st.set_defaults(func=_status)


def _run(args: argparse.Namespace) -> int:
    from mofbalora.al.benchmark import run_benchmark
    from mofbalora.al.config import campaign_config, load_campaign_config

    cfg = campaign_config(load_campaign_config(args.config, args.overrides))
    dirs = run_benchmark(
        cfg,
        args.out,
        strategies=args.strategies,
        seeds=args.seeds,
        n_rounds=args.rounds,
        report=args.report or cfg.benchmark.report,
        snapshot=args.snapshot or cfg.benchmark.snapshot,
        progress=show_progress(args),
        trust_checkpoint=args.trust_checkpoint,
    )
    print(f"{len(dirs)} campaign(s) done in {args.out or cfg.benchmark.out}")
    if args.report or cfg.benchmark.report:
        print(f"report: {Path(args.report or cfg.benchmark.report) / 'report.md'}")
    return 0


def _suggest(args: argparse.Namespace) -> int:
    from mofbalora.al.real import campaign_document, suggest
    from mofbalora.al.state import has_campaign

    if args.potcar_dir is not None and not Path(args.potcar_dir).is_dir():
        raise ValueError(f"--potcar-dir {args.potcar_dir}: no such folder")
    # a new campaign takes --model/--config/--set; an existing one keeps its stored configuration
    cfg = None
    if args.config or args.overrides or args.model:
        if has_campaign(args.state):
            print(
                f"{args.state} holds a campaign: --model/--config/--set are ignored (its stored "
                "configuration is used)",
                file=sys.stderr,
            )
        else:
            cfg = campaign_document(args.config, args.overrides, args.model)
    csv_path = suggest(
        args.state,
        args.candidates,
        args.batch,
        cfg=cfg,
        dft_inputs=args.dft_inputs,
        code=args.code,
        potcar_dir=args.potcar_dir,
        progress=show_progress(args),
        trust_checkpoint=args.trust_checkpoint,
    )
    print(f"batch: {csv_path}")
    note = csv_path.with_suffix(".md")
    if note.is_file():
        print(note.read_text().rstrip())
    if args.dft_inputs:
        print(f"DFT inputs: {csv_path.parent / 'dft_inputs' / csv_path.stem}")
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from mofbalora.al.real import ingest

    if not Path(args.results).is_file():
        raise ValueError(f"results CSV {args.results}: no such file")
    if not Path(args.state).is_dir():
        raise ValueError(f"--state {args.state}: no such campaign folder")
    row = ingest(
        args.state,
        args.results,
        progress=show_progress(args),
        trust_checkpoint=args.trust_checkpoint,
    )
    print(
        json.dumps(
            {
                k: row[k]
                for k in (
                    "round",
                    "n_labelled",
                    "n_acquired",
                    "n_low_gap_found",
                    "val_mae_ev",
                    "test_mae_ev",
                )
            },
            indent=2,
        )
    )
    return 0


def _report(args: argparse.Namespace) -> int:
    from mofbalora.al.report import write_report

    print(f"report: {write_report(args.runs, args.out)}")
    return 0


def _snapshot(args: argparse.Namespace) -> int:
    from mofbalora.al.snapshot import format_rows, snapshot_runs

    print(format_rows(snapshot_runs(args.runs, args.out)))
    return 0


def _status(args: argparse.Namespace) -> int:
    if args.runs is not None:
        return _benchmark_status(args.runs)
    from mofbalora.al.campaign import Campaign

    c = Campaign(args.state, trust_checkpoint=args.trust_checkpoint)
    print(
        f"{c.dir}: {c.mode} campaign, round {c.round}, phase {c.phase}; {len(c.labelled)} "
        f"labelled, {len(c.pool)} in the pool, "
        f"{len(c.pending)} pending, {len(c.state.failed)} failed"
    )
    for h in c.history:
        mae = "n/a" if h["test_mae_ev"] is None else f"{h['test_mae_ev']:.3f}"
        print(
            f"  round {h['round']:3d}: {h['n_labelled']} labelled, {h['n_low_gap_found']} low-gap "
            f"of {h['n_acquired']} acquired, test MAE {mae} eV"
        )
    return 0


def _benchmark_status(runs: str) -> int:
    from mofbalora.al.report import progress

    table = progress(runs)
    for _, r in table.iterrows():
        pace = r["seconds_per_round"]
        print(
            f"{r['strategy']:>22s} seed {r['seed']}: round {r['round']} ({r['phase']}), "
            f"{r['rounds_trained']}/{r['rounds_planned']} rounds trained, "
            + ("no warm round yet" if pace != pace else f"{pace:.0f} s a round")
            + (
                ", time to go not known yet"
                if r["remaining_seconds"] != r["remaining_seconds"]
                else f", {r['remaining_seconds'] / 3600:.1f} h to go"
            )
        )
    done = int((table["rounds_trained"] >= table["rounds_planned"]).sum())
    if table["remaining_seconds"].isna().any():  # no campaign has a warm round to time yet
        rest = "the time they need is known once a campaign has finished a warm round"
    else:
        rest = (
            f"the rest: about {table['remaining_seconds'].sum() / 3600:.1f} h of process time at "
            "their own pace (divide by the processes that run them side by side)"
        )
    print(f"{done} of {len(table)} campaigns finished; {rest}")
    return 0
