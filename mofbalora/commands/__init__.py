"""CLI subcommands; each module defines ``register(subparsers)``. Shared argument types live
here."""

from __future__ import annotations

import argparse
import sys


def _int_at_least(low: int, what: str):
    """An argparse type: an integer >= ``low``, with a message naming the bad value."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


#: argparse type: an integer >= 1, with a message naming the bad value
positive_int = _int_at_least(1, "a positive integer")
#: argparse type: an integer >= 0, with a message naming the bad value
non_negative_int = _int_at_least(0, "an integer >= 0")


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars for this command: on a terminal (stderr) and without ``--quiet`` (a piped log
    gets the one-line summaries of the logs instead)."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()
