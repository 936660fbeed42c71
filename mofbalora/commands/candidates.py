"""``mofbalora candidates``: gather candidate CIFs to screen (CoRE MOF export, input expansion)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``candidates`` parser and its actions to the top-level subparsers."""
    p = sub.add_parser(
        "candidates", help="gather candidate CIFs to screen (CoRE MOF export, input listing)"
    )
    csub = p.add_subparsers(dest="candidates_command", metavar="ACTION", required=True)

    core = csub.add_parser(
        "coremof",
        help="write CoRE MOF CIFs from the core-mof package into a folder, with manifest.csv",
        description=(
            "Write CoRE MOF CIFs, byte for byte as packaged, into --out with a manifest.csv of "
            "their metadata (disorder flag, pore geometry, metals). Without --seed the first "
            "--limit by name are taken; with --seed a reproducible random draw."
        ),
    )
    core.add_argument(
        "--set",
        dest="subset",
        default="2019-ASR",
        choices=["2019-ASR", "2019-FSR", "2014"],
        help="CoRE MOF subset (default: 2019-ASR)",
    )
    core.add_argument("--limit", type=int, default=None, help="at most N files (default: all)")
    core.add_argument("--out", required=True, help="output folder (created if needed)")
    core.add_argument(
        "--seed", type=int, default=None, help="draw --limit entries at random with this seed"
    )
    core.add_argument(
        "--no-disordered",
        dest="include_disordered",
        action="store_false",
        help="leave out entries the CoRE MOF csv flags as DISORDER",
    )
    core.set_defaults(func=_coremof)

    lst = csub.add_parser(
        "list",
        help="print the CIF paths that files, folders and glob patterns expand to",
        description="Expand inputs as the screen does; entries that do not exist are marked "
        "'unreadable', the reason `mofbalora screen` gives them.",
    )
    lst.add_argument(
        "inputs", nargs="+", help="CIF files, folders (searched recursively) or glob patterns"
    )
    lst.set_defaults(func=_list)


def _coremof(args: argparse.Namespace) -> int:
    from mofbalora.data.candidates import MANIFEST_NAME, export_coremof

    paths = export_coremof(
        args.subset,
        args.out,
        limit=args.limit,
        seed=args.seed,
        include_disordered=args.include_disordered,
    )
    print(
        f"wrote {len(paths)} CoRE MOF {args.subset} CIFs to {args.out} (manifest: {MANIFEST_NAME})"
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    from mofbalora.data.candidates import expand_candidates

    paths = expand_candidates(args.inputs)
    n_unreadable = 0
    for path in paths:
        if path.exists():
            print(path)
        else:  # the screen's reason for the same entry (mofbalora.data.structures.REASONS)
            n_unreadable += 1
            print(f"{path}\tunreadable")
    print(f"{len(paths)} candidate(s), {n_unreadable} unreadable (no such file)", flush=True)
    return 0
