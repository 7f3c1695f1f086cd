"""``diffkit plugins``: the installed plugin distributions, whether each loaded, what each provides."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .._registry import KINDS, registry
from ..errors import PluginError
from .common import EXIT_MISSING, EXIT_OK, emit_json, env_var, one_line, format_table


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "plugins",
        help="list the installed plugin distributions and what each provides",
        description="List the installed diffkit plugin distributions: version, whether each loaded, "
        "and the names it provides by kind.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """``diffkit plugins``: one row per installed plugin distribution.

    It is the tool for finding a broken plugin, so under ``DIFFKIT_STRICT_PLUGINS=1`` it still
    shows every plugin (the strict error on stderr, exit code 1) rather than the first error alone.
    """
    strict_error: PluginError | None = None
    try:
        infos = registry.plugins()
    except PluginError as exc:
        strict_error = exc
        with env_var("DIFFKIT_STRICT_PLUGINS", None):
            infos = registry.plugins()
    if strict_error is not None:
        print(f"diffkit plugins: error: {one_line(strict_error)}", file=sys.stderr)
    status = EXIT_MISSING if strict_error is not None else EXIT_OK
    if args.json:
        emit_json(
            [
                {
                    "dist": info.dist,
                    "version": info.version,
                    "status": info.status,
                    "error": info.error,
                    "problems": list(info.problems),
                    "hook_module": info.hook_module,
                    "provides": {kind: sorted(names) for kind, names in info.provides.items() if names},
                }
                for info in infos
            ]
        )
        return status
    if not infos:
        print("No diffkit plugins are installed. See what exists with: diffkit list --available")
        return status
    rows = [["DISTRIBUTION", "VERSION", "STATUS", "PROVIDES"]]
    errors: list[str] = []
    for info in infos:
        provides = "; ".join(
            f"{kind}: {', '.join(sorted(info.provides[kind]))}" for kind in KINDS if info.provides.get(kind)
        )
        rows.append([info.dist, info.version or "-", info.status, provides or "-"])
        if info.error:
            errors.append(f"{info.dist}: {info.error}")
        errors += [f"{info.dist}: {problem}" for problem in info.problems]
    for line in format_table(rows):
        print(line)
    if errors:
        print()
        for line in errors:
            print(line)
    return status
