"""``mofbalora screen``: rank candidate CIFs for DFT follow-up.

The scoring settings' defaults are :class:`mofbalora.scoring.ScoringConfig`'s (shown in ``--help``,
never repeated here); every argument is checked before the model loads or a file is written.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mofbalora.commands import non_negative_int, positive_int

log = logging.getLogger(__name__)

#: CLI flag -> ScoringConfig field (the flags whose values go into the scoring configuration)
SCORING_FLAGS = {
    "samples": "n_samples",
    "acquisition": "acquisition",
    "kappa": "kappa",
    "target": "target_ev",
    "goal": "goal",
    "seed": "seed",
    "max_atoms": "max_atoms",
    "checks": "checks",
    "domain": "domain",
    "repeats_top": "repeats_top",
    "chunk_size": "chunk_size",
    "check_charges": "check_charges",
}


def register(sub: argparse._SubParsersAction) -> None:
    from mofbalora.acquisition import ACQUISITIONS, GOALS
    from mofbalora.checks import CHECK_POLICIES
    from mofbalora.domain import DOMAIN_POLICIES
    from mofbalora.scoring import ScoringConfig

    d = ScoringConfig.defaults()
    p = sub.add_parser(
        "screen",
        help="rank candidate CIFs by predicted band gap and uncertainty",
        description="Every input gets one row; bad files get status=error and a reason. "
        "--explain-columns describes every column of the ranked table.",
    )
    p.add_argument("inputs", nargs="*", help="CIF files, folders or glob patterns")
    p.add_argument(
        "--explain-columns", action="store_true", help="describe every column of the table and exit"
    )
    p.add_argument("--model", default="default", help="'default' (shipped) or a run folder")
    p.add_argument(
        "--samples",
        type=positive_int,
        default=None,
        help=f"stochastic passes T (default {d['n_samples']})",
    )
    p.add_argument(
        "--acquisition",
        default=None,
        choices=sorted(ACQUISITIONS),
        metavar="NAME",
        help=f"{' | '.join(sorted(ACQUISITIONS))} (default {d['acquisition']}; epistemic: the "
        "spread of the draws alone, without the predicted noise)",
    )
    p.add_argument(
        "--kappa", type=float, default=None, help=f"κ of ucb / lcb (default {d['kappa']})"
    )
    p.add_argument(
        "--target",
        nargs=2,
        type=float,
        metavar=("LO", "HI"),
        default=None,
        help="band-gap window in eV for 'target' (and ei / mean towards a window)",
    )
    p.add_argument(
        "--goal",
        choices=list(GOALS),
        default=None,
        help=f"seek small or large gaps (ei, mean, thompson; default {d['goal']})",
    )
    p.add_argument("--top", type=positive_int, default=10, help="rows shown in the terminal table")
    p.add_argument("--out", default="ranked.csv", help="output table (.csv, .parquet or .json)")
    p.add_argument("--seed", type=int, default=None, help=f"run seed (default {d['seed']})")
    p.add_argument(
        "--max-atoms",
        type=positive_int,
        default=None,
        help=f"structures with more atoms get an error row (default {d['max_atoms']})",
    )
    p.add_argument("--no-resume", action="store_true", help="ignore progress of an interrupted run")
    p.add_argument("--plot", default=None, metavar="PNG", help="write a figure of the screen")
    p.add_argument(
        "--dask",
        default=None,
        metavar="CLUSTER",
        help="screen on a Dask cluster: local:N (N worker processes here), a scheduler address "
        "(tcp://host:8786) or jobqueue:CONFIG.yaml (SLURM/PBS, see workflows/dask_slurm.yaml)",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="without --dask: local worker processes, each parsing, featurizing, predicting and "
        "checking its files (one thread each; 2 on a 2-core machine; CPU only)",
    )
    p.add_argument(
        "--chunk-size",
        type=positive_int,
        default=None,
        help=f"files per task and per progress checkpoint (default {d['chunk_size']})",
    )
    p.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda", "auto"],
        help="where the model runs (one process; worker processes use their CPU)",
    )
    p.add_argument(
        "--checks",
        default=None,
        choices=list(CHECK_POLICIES),
        help="MOF chemistry checks (mofchecker-next, extra 'checks'): flag = rank all and name "
        "failed checks, exclude = failing structures get an error row, off = do not run them "
        f"(default {d['checks']})",
    )
    p.add_argument(
        "--check-charges",
        action="store_true",
        default=None,
        help="also run EQeq's high_charges check (opt-in: most of the checks' cost for 0.4 %% of "
        "their findings on CoRE MOF; reports/checks_speed.md)",
    )
    p.add_argument(
        "--domain",
        default=None,
        choices=list(DOMAIN_POLICIES),
        help="out-of-domain structures (unseen elements, far embedding): ranked after all "
        f"in-domain ones, error rows, or ranked like the rest (default {d['domain']})",
    )
    p.add_argument(
        "--repeats-top",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="when the screen completes, mark in repeat_of which of the best N rows repeat a "
        "better-ranked structure (same structure given twice, "
        f"e.g. a redetermination; default {d['repeats_top']}, "
        "0 = off)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow full unpickling of the third-party backbone checkpoint the model names, which "
        "can run code: only for files you made or whose "
        "source you trust (never read from the model folder)",
    )
    p.set_defaults(func=run)


def scoring_config(args: argparse.Namespace):
    """The :class:`~mofbalora.scoring.ScoringConfig` of the flags given (the others keep its
    defaults); a bad combination is a ValueError in the CLI's words (``--target``, not
    ``target_ev``)."""
    from mofbalora.scoring import ScoringConfig

    given = {
        field: getattr(args, flag)
        for flag, field in SCORING_FLAGS.items()
        if getattr(args, flag) is not None
    }
    try:
        return ScoringConfig(**given)
    except ValueError as exc:
        message = str(exc)
        for flag, field in SCORING_FLAGS.items():
            message = message.replace(f"{field}=", f"--{flag.replace('_', '-')} ").replace(
                field, f"--{flag.replace('_', '-')}"
            )
        raise ValueError(message) from None


def run(args: argparse.Namespace) -> int:
    from mofbalora.io import TABLE_FORMATS
    from mofbalora.scoring import explain_columns

    if args.explain_columns:
        print(explain_columns())
        return 0
    if not args.inputs:
        raise ValueError("screen needs CIF files, folders or glob patterns (or --explain-columns)")
    cfg = scoring_config(args)  # every argument checked before the model loads or a file is written
    if Path(args.out).suffix.lower() not in TABLE_FORMATS:
        raise ValueError(
            f"--out {args.out}: unknown table format {Path(args.out).suffix!r}; choose from "
            f"{sorted(TABLE_FORMATS)}"
        )
    if args.plot and Path(args.plot).suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ValueError(f"--plot {args.plot}: give a .png, .pdf or .svg file")

    from mofbalora.screen import plot_screen, screen, summarize

    table = screen(
        args.inputs,
        model=args.model,
        config=cfg,
        out=args.out,
        resume=not args.no_resume,
        progress=not args.quiet and sys.stderr.isatty(),
        dask=args.dask,
        device=args.device,
        workers=args.workers,
        trust_checkpoint=args.trust_checkpoint,
    )
    n_ok = int((table["status"] == "ok").sum())
    log.info(
        "screen: %d file(s), %d ranked, %d error row(s), "
        "%d computed now (the rest resumed); table %s",
        len(table),
        n_ok,
        len(table) - n_ok,
        table.attrs.get("computed_files", len(table)),
        args.out,
    )
    print(summarize(table, args.top, acquisition=cfg.acquisition))
    print(f"ranked table: {args.out}")
    if args.plot:
        print(f"figure: {plot_screen(table, args.plot, args.top, acquisition=cfg.acquisition)}")
    if not (table["status"] == "ok").any():
        print("error: no structure could be screened", file=sys.stderr)
        return 1
    return 0
