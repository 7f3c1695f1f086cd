"""``diffkit list [KIND] [--available]``: registered names by kind, and what registry.toml knows."""

from __future__ import annotations

import argparse
from typing import Any

from .._registry import INDEX_KEYS, KINDS, registry
from .common import EXIT_OK, CLIError, dist_label, emit_json, install_command, format_table


def _kind_aliases() -> dict[str, str]:
    aliases: dict[str, str] = {}
    for kind in KINDS:
        aliases[kind] = kind
        aliases[INDEX_KEYS[kind]] = kind
    return aliases


def parse_kind(text: str) -> str:
    """A registry kind from user text: ``pipeline``, ``pipelines``, ``attention-backends``, ..."""
    key = text.strip().lower().replace("-", "_")
    kind = _kind_aliases().get(key)
    if kind is None:
        import difflib

        close = difflib.get_close_matches(key, list(_kind_aliases()), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise CLIError(f"unknown kind {text!r}{hint}. The kinds are: {', '.join(INDEX_KEYS.values())}")
    return kind


def _plural(kind: str) -> str:
    return INDEX_KEYS[kind]


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "list",
        help="list the names the installed plugins provide, by kind",
        description="List registered names by kind. KIND is one of: "
        + ", ".join(INDEX_KEYS.values())
        + " (singular forms work too). With --available, also list what registry.toml knows "
        "that is not installed, with the command that installs it.",
    )
    parser.add_argument("kind", nargs="?", metavar="KIND", help="only this kind (e.g. pipelines, schedulers)")
    parser.add_argument("--available", action="store_true", help="also list known plugins that are not installed")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(handler=run)


def list_rows(kind: str, available: bool) -> list[dict[str, Any]]:
    """Rows of ``diffkit list`` for one kind: installed names, conflicts, then (optionally) known ones."""
    rows: list[dict[str, Any]] = []
    for e in registry.entries(kind):
        target = e.target if isinstance(e.target, str) else repr(e.target)
        row = {"name": e.name, "status": "installed", "dist": e.dist, "version": e.version, "target": target}
        if kind == "pipeline":  # what AutoPipelineFor* and generate --image map through
            row.update({key: e.meta[key] for key in ("task", "family") if e.meta.get(key) is not None})
        rows.append(row)
    seen = {row["name"] for row in rows}
    for (conflict_kind, name), clash in sorted(registry.conflicts().items()):
        if conflict_kind == kind:
            rows.append(
                {
                    "name": name,
                    "status": "conflict",
                    "dists": [e.dist for e in clash],
                    "note": "registered by " + " and ".join(dist_label(e.dist, e.version) for e in clash),
                }
            )
            seen.add(name)
    if available:
        from .._index import read_index

        known: list[dict[str, Any]] = []
        for package in read_index().values():
            for name in package.provides.get(kind, ()):
                if name in seen:
                    continue
                known.append(_available_row(name, package.dist, package.first_party))
        rows.extend(sorted(known, key=lambda row: (row["name"], row["dist"])))
    return rows


def _available_row(name: str, dist: str, first_party: bool) -> dict[str, Any]:
    info = registry.plugin(dist)
    row: dict[str, Any] = {"name": name, "dist": dist, "first_party": first_party}
    if info is None:
        row.update(status="not installed", install=install_command([dist]))
    elif info.status == "loaded":
        row.update(
            status="outdated",
            note=f"{dist_label(dist, info.version)} is installed but does not provide it",
            install=install_command([dist], upgrade=True),
        )
    else:  # failed or disabled: say why rather than suggest installing it again
        row.update(status=info.status, note=f"{dist} is installed but {info.status}: {info.error}")
    return row


def run(args: argparse.Namespace) -> int:
    """``diffkit list [KIND] [--available]``."""
    kinds = [parse_kind(args.kind)] if args.kind else list(KINDS)
    data = {_plural(kind): list_rows(kind, args.available) for kind in kinds}
    if args.json:
        emit_json(data)
        return EXIT_OK
    shown = {plural: rows for plural, rows in data.items() if rows or args.kind}
    if not shown:
        hint = "" if args.available else " See what exists with: diffkit list --available"
        print("No names are registered: no diffkit plugin that provides any is installed." + hint)
        return EXIT_OK
    first = True
    for plural, rows in shown.items():
        if not first:
            print()
        first = False
        print(f"{plural}:")
        if not rows:
            print("  (none)")
            continue
        table = []
        for row in rows:
            if row["status"] == "installed":
                detail = dist_label(row["dist"], row["version"])
                role = ", ".join(row[key] for key in ("task", "family") if key in row)
                detail += f"  [{role}]" if role else ""
            elif row["status"] == "conflict":
                detail = "CONFLICT: " + row["note"]
            elif "install" in row:
                detail = f"{row['dist']} ({row['status']}): {row['install']}"
            else:
                detail = row["note"]
            table.append([row["name"], detail])
        for line in format_table(table, indent="  "):
            print(line)
    return EXIT_OK
