"""Command-line entry point. Thin: each subcommand parses its arguments and calls one library
function.

Subcommands live in ``mofbalora.commands.<name>``; each module defines ``register(subparsers)``
which adds its parser and sets ``func`` to a callable ``func(args) -> int``. The command modules
import most of the library inside ``func``: a convention of thin commands, not a way around import
cycles (the layers, checked by ``lint-imports``, put ``mofbalora.commands`` above everything but
this module).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys

from mofbalora import __version__
from mofbalora.commands import (
    al,
    candidates,
    compare,
    data,
    dft_inputs,
    evaluate,
    finetune,
    screen,
    sweep,
)

# Order is the order shown in ``mofbalora --help``.
COMMANDS = [data, candidates, finetune, evaluate, compare, screen, dft_inputs, al, sweep]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mofbalora",
        description=(
            "Fine-tune atomistic foundation models with BaLoRA adapters on MOF band gaps, "
            "and rank candidate CIFs for DFT by test-time uncertainty."
        ),
    )
    parser.add_argument("--version", action="version", version=f"mofbalora {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    _add_quiet(parser)
    return parser


def _add_quiet(parser: argparse.ArgumentParser) -> None:
    """Give every (sub)command that lacks one a ``--quiet`` flag: no progress bars, warnings-only
    logs."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if any(isinstance(a, argparse._SubParsersAction) for a in child._actions):
                    _add_quiet(child)
                elif "--quiet" not in child._option_string_actions:
                    child.add_argument(
                        "--quiet",
                        action="store_true",
                        help="no progress bars; logs show warnings only",
                    )


@contextlib.contextmanager
def _progress_bars(show: bool):
    """Within the block, every tqdm bar of this process is off unless ``show`` (``--quiet``, or
    stderr is not a terminal: a piped log would fill with carriage-return lines; each stage logs
    a one-line summary instead)."""
    from tqdm import std

    original = std.tqdm.__init__
    if not show:

        def init(self, *args, **kwargs):
            kwargs["disable"] = True
            original(self, *args, **kwargs)

        std.tqdm.__init__ = init
    try:
        yield
    finally:
        std.tqdm.__init__ = original


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the command itself, not a call from Python: large tensors on huge pages
        from mofbalora.allocator import reexec_with_hugepages

        reexec_with_hugepages()
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = getattr(args, "quiet", False)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        with _progress_bars(not quiet and sys.stderr.isatty()):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
