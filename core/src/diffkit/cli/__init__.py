"""The ``diffkit`` command line: ``plugins``, ``list``, ``info`` and ``generate``.

One module per subcommand (``plugins``, ``list_``, ``info``, ``generate``), each with an
``add_parser(subparsers)`` that sets its ``run`` handler; what they share (exit codes, the
one-line error, table/JSON output, argument types) is in :mod:`diffkit.cli.common`, and
writing images and audio in :mod:`diffkit.cli.output`. A new ``generate`` option that feeds a
pipeline's ``__call__`` is one entry of :data:`diffkit.cli.generate.CALL_OPTIONS`.

``plugins``, ``list`` and ``info`` read plugin metadata, ``registry.toml`` and checkpoint JSON
files only, so they never import torch and answer at once; ``generate`` imports torch inside
its handler.

Exit codes: 0 success; 1 ``info`` found something that no installed plugin provides, or a
plugin failed to load under ``DIFFKIT_STRICT_PLUGINS=1``; 2 bad arguments or bad input (one
line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .. import __version__
from ..errors import DiffkitError, PluginError
from . import generate, info, list_, plugins
from .common import EXIT_MISSING, EXIT_USAGE, CLIError, Parser, one_line
from .output import GRID_GAP, GRID_GAP_VALUE

__all__ = ["COMMANDS", "GRID_GAP", "GRID_GAP_VALUE", "CLIError", "build_parser", "main"]

#: subcommand name -> function adding its parser (which sets ``handler``)
COMMANDS: dict[str, Callable[[Any], None]] = {
    "plugins": plugins.add_parser,
    "list": list_.add_parser,
    "info": info.add_parser,
    "generate": generate.add_parser,
}


def build_parser() -> argparse.ArgumentParser:
    """The ``diffkit`` argument parser with one subparser per entry of :data:`COMMANDS`."""
    parser = Parser(
        prog="diffkit",
        description="diffkit: diffusion-model inference with plugins. Inspect installed plugins and checkpoints.",
    )
    parser.add_argument("--version", action="version", version=f"diffkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for add in COMMANDS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.error(f"choose a command: {', '.join(COMMANDS)}")
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    prog = f"diffkit {args.command}"
    try:
        return int(args.handler(args))
    except CLIError as exc:
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return exc.code
    except PluginError as exc:  # includes DuplicateNameError; raised under DIFFKIT_STRICT_PLUGINS=1
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_MISSING
    except BrokenPipeError:  # `diffkit list | head`: stop quietly
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_MISSING
    except (DiffkitError, ValueError, OSError) as exc:  # e.g. an unreadable DIFFKIT_REGISTRY_INDEX
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
