"""CLI subcommands; each module defines ``register(subparsers)``. Shared argument types live here."""

from __future__ import annotations

import argparse
import sys


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1, with a message naming the bad value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0, with a message naming the bad value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars for this command: on a terminal (stderr) and without ``--quiet`` (a piped log gets the
    one-line summaries of the logs instead)."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()

