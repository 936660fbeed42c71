"""``mofbalora dft-inputs``: write QMOF-compatible DFT inputs for the top-ranked candidates."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mofbalora.commands import positive_int

_positive_int = positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``dft-inputs`` subcommand to ``subparsers``."""
    from mofbalora.dft import CODES

    parser = subparsers.add_parser(
        "dft-inputs",
        help="write DFT (VASP/ASE) inputs with QMOF's settings for the top-ranked structures",
        description=(
            "Read a ranked CSV from `mofbalora screen`, take the rows with status 'ok' in rank "
            "order and write one folder per structure with PBE-D3(BJ) inputs using QMOF's "
            "settings, plus manifest.csv and run_quacc.py (runs quacc's QMOF recipe where quacc is "
            "installed). POTCARs are written only when a pymatgen POTCAR directory is configured; "
            "otherwise each folder gets POTCAR.spec listing the potentials to supply."
        ),
    )
    parser.add_argument("ranked_csv", type=Path, help="ranked CSV written by the screening step")
    parser.add_argument(
        "--top",
        type=_positive_int,
        default=None,
        metavar="K",
        help="hand over the K best ranks (default: all ok rows)",
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="output folder to create"
    )
    parser.add_argument(
        "--code",
        choices=list(CODES),
        default="vasp",
        help="vasp: VASP input folders; ase: extxyz + calculator JSON",
    )
    parser.add_argument(
        "--potcar-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="pymatgen POTCAR directory (PMG_VASP_PSP_DIR "
        "layout); default: pymatgen's configured one, if any",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace DIR if it holds a previous hand-off (has manifest.csv)",
    )
    parser.set_defaults(func=run)


def cli_words(message: str) -> str:
    """The library's message in the CLI's words (``--overwrite``, not ``overwrite=True``)."""
    return message.replace("pass overwrite=True to replace", "give --overwrite to replace").replace(
        "top must be", "--top must be"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``dft-inputs`` with parsed ``args``; return the exit status."""
    import pandas as pd

    from mofbalora.dft import write_dft_inputs

    if not args.ranked_csv.is_file():
        raise ValueError(
            f"ranked CSV {args.ranked_csv}: no such file (write one with `mofbalora screen --out`)"
        )
    if args.potcar_dir is not None and not args.potcar_dir.is_dir():
        raise ValueError(f"--potcar-dir {args.potcar_dir}: no such folder")
    try:
        manifest = write_dft_inputs(
            args.ranked_csv,
            args.out,
            top=args.top,
            code=args.code,
            potcar_dir=args.potcar_dir,
            overwrite=args.overwrite,
        )
    except (FileExistsError, ValueError) as exc:
        print(f"error: {cli_words(str(exc))}", file=sys.stderr)
        return 2
    n = len(pd.read_csv(manifest))
    # printed here once (the library logs it at DEBUG only)
    print(f"wrote {n} {args.code} input folder(s) to {manifest.parent}")
    print(f"manifest: {manifest}")
    print(f"quacc runner: {manifest.parent / 'run_quacc.py'}")
    return 0
