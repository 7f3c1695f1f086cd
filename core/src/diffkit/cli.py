"""The ``diffkit`` command line: ``plugins``, ``list`` and ``info``.

These commands read plugin metadata, ``registry.toml`` and checkpoint JSON files only, so they
never import torch and answer at once. Each subcommand is one entry of :data:`COMMANDS`
(a parser builder and a handler), which is where ``generate`` will be added.

Exit codes: 0 success; 1 ``info`` found something that no installed plugin provides, or a
plugin failed to load under ``DIFFKIT_STRICT_PLUGINS=1``; 2 bad arguments or bad input (one
line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from ._registry import INDEX_KEYS, KINDS, registry, resolve_target
from .errors import CheckpointError, ComponentNotFoundError, DiffkitError, DuplicateNameError, PluginError

#: ``model_index.json`` libraries whose classes the registry itself provides
DIFFKIT_LIBRARIES = ("diffusers", "diffkit")
#: the kinds a component of a diffkit/diffusers library can be, in lookup order
COMPONENT_KINDS = ("model", "scheduler", "processor")
#: files that identify a checkpoint folder, in the order they are tried
PIPELINE_FILE = "model_index.json"
SINGLE_FILES = ("config.json", "scheduler_config.json")

EXIT_OK = 0
EXIT_MISSING = 1
EXIT_USAGE = 2


class CLIError(Exception):
    """A problem with the arguments or the input: printed as one line, exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit code 2) instead of two."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# -- small helpers ---------------------------------------------------------------------


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


def _table(rows: list[list[str]], indent: str = "") -> list[str]:
    """Left-aligned columns; the last column is not padded."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)] + [row[-1]]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def _dist_label(dist: str | None, version: str | None) -> str:
    if dist is None:
        return "-"
    return f"{dist} {version}" if version else dist


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def _pip_command(dists: Sequence[str], upgrade: bool = False) -> str:
    from ._index import pip_command

    return pip_command(" ".join(dists), upgrade=upgrade)


# -- diffkit plugins ---------------------------------------------------------------------


def _add_plugins_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "plugins",
        help="list the installed plugin distributions and what each provides",
        description="List the installed diffkit plugin distributions: version, whether each loaded, "
        "and the names it provides by kind.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=cmd_plugins)


def cmd_plugins(args: argparse.Namespace) -> int:
    """``diffkit plugins``: one row per installed plugin distribution."""
    infos = registry.plugins()
    if args.json:
        _emit_json(
            [
                {
                    "dist": info.dist,
                    "version": info.version,
                    "status": info.status,
                    "error": info.error,
                    "hook_module": info.hook_module,
                    "provides": {kind: sorted(names) for kind, names in info.provides.items() if names},
                }
                for info in infos
            ]
        )
        return EXIT_OK
    if not infos:
        print("No diffkit plugins are installed. See what exists with: diffkit list --available")
        return EXIT_OK
    rows = [["DISTRIBUTION", "VERSION", "STATUS", "PROVIDES"]]
    errors: list[str] = []
    for info in infos:
        provides = "; ".join(
            f"{kind}: {', '.join(sorted(info.provides[kind]))}" for kind in KINDS if info.provides.get(kind)
        )
        rows.append([info.dist, info.version or "-", info.status, provides or "-"])
        if info.error:
            errors.append(f"{info.dist}: {info.error}")
    for line in _table(rows):
        print(line)
    if errors:
        print()
        for line in errors:
            print(line)
    return EXIT_OK


# -- diffkit list ------------------------------------------------------------------------


def _add_list_parser(sub: Any) -> None:
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
    parser.set_defaults(handler=cmd_list)


def list_rows(kind: str, available: bool) -> list[dict[str, Any]]:
    """Rows of ``diffkit list`` for one kind: installed names, conflicts, then (optionally) known ones."""
    rows: list[dict[str, Any]] = []
    for e in registry.entries(kind):
        target = e.target if isinstance(e.target, str) else repr(e.target)
        rows.append({"name": e.name, "status": "installed", "dist": e.dist, "version": e.version, "target": target})
    seen = {row["name"] for row in rows}
    for (conflict_kind, name), clash in sorted(registry.conflicts().items()):
        if conflict_kind == kind:
            rows.append(
                {
                    "name": name,
                    "status": "conflict",
                    "dists": [e.dist for e in clash],
                    "note": "registered by " + " and ".join(_dist_label(e.dist, e.version) for e in clash),
                }
            )
            seen.add(name)
    if available:
        from ._index import read_index

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
        row.update(status="not installed", install=_pip_command([dist]))
    elif info.status == "loaded":
        row.update(
            status="outdated",
            note=f"{_dist_label(dist, info.version)} is installed but does not provide it",
            install=_pip_command([dist], upgrade=True),
        )
    else:  # failed or disabled: say why rather than suggest installing it again
        row.update(status=info.status, note=f"{dist} is installed but {info.status}: {info.error}")
    return row


def cmd_list(args: argparse.Namespace) -> int:
    """``diffkit list [KIND] [--available]``."""
    kinds = [parse_kind(args.kind)] if args.kind else list(KINDS)
    data = {_plural(kind): list_rows(kind, args.available) for kind in kinds}
    if args.json:
        _emit_json(data)
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
                detail = _dist_label(row["dist"], row["version"])
            elif row["status"] == "conflict":
                detail = "CONFLICT: " + row["note"]
            elif "install" in row:
                detail = f"{row['dist']} ({row['status']}): {row['install']}"
            else:
                detail = row["note"]
            table.append([row["name"], detail])
        for line in _table(table, indent="  "):
            print(line)
    return EXIT_OK


# -- diffkit info ------------------------------------------------------------------------


def _add_info_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "info",
        help="show what a checkpoint needs and which installed plugin provides each part",
        description="Read a checkpoint's model_index.json (or a single model's config.json) from a local "
        "folder, a registered pretrained name or a Hub repo ('org/name'), and show the pipeline class, each "
        "component [library, ClassName], the installed plugin that provides it, and how to install "
        "what is missing. Exits with 1 when something is missing.",
    )
    parser.add_argument("source", metavar="PATH_OR_REPO", help="checkpoint folder, JSON file or Hub repo id")
    parser.add_argument("--revision", help="Hub branch, tag or commit (Hub repos only)")
    parser.add_argument("--local-files-only", action="store_true", help="use the local Hub cache, never the network")
    parser.add_argument("--cache-dir", help="Hub cache folder (default: the standard Hugging Face cache)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(handler=cmd_info)


@dataclass
class Lookup:
    """Which installed plugin provides ``name`` of ``kind``, or why none does."""

    kind: str
    name: str
    dist: str | None = None
    version: str | None = None
    problem: str | None = None
    suggested: list[str] = field(default_factory=list)
    conflict: bool = False  # several plugins register the name

    @property
    def ok(self) -> bool:
        return self.dist is not None

    @property
    def install(self) -> list[str]:
        """Suggested distributions that are not installed at all (installing them would help)."""
        return [dist for dist in self.suggested if registry.plugin(dist) is None]

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "dist": self.dist,
            "version": self.version,
            "problem": self.problem,
            "install": self.install,
        }


def lookup(kind: str, name: str, context: str = "") -> Lookup:
    """Look ``name`` up without importing it; a miss keeps the registry's explanation."""
    try:
        entry = registry.entry(kind, name, context=context)
    except ComponentNotFoundError as exc:
        return Lookup(kind, name, problem=str(exc), suggested=list(exc.suggested_packages))
    except DuplicateNameError as exc:
        return Lookup(kind, name, problem=str(exc), conflict=True)
    return Lookup(kind, name, dist=entry.dist, version=entry.version)


def lookup_class(name: str, context: str = "") -> Lookup:
    """A class of a diffkit/diffusers library: a model, scheduler or processor, whichever is registered."""
    conflicts = registry.conflicts()
    for kind in COMPONENT_KINDS:
        if registry.has(kind, name) or (kind, name) in conflicts:
            return lookup(kind, name, context)
    misses = [lookup(kind, name, context) for kind in COMPONENT_KINDS]
    for miss in misses:
        if miss.suggested:
            return miss
    guess = "scheduler" if name.endswith("Scheduler") else "processor" if name.endswith("Processor") else "model"
    return misses[COMPONENT_KINDS.index(guess)]


@dataclass
class Component:
    """One ``model_index.json`` component entry and what provides it."""

    name: str
    library: str | None
    class_name: str | None
    found: Lookup | None = None  # None for [null, null]

    @property
    def status(self) -> str:
        if self.library is None:
            return "absent"
        assert self.found is not None
        return "ok" if self.found.ok else "conflict" if self.found.conflict else "missing"

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "library": self.library,
            "class_name": self.class_name,
            "status": self.status,
        }
        if self.found is not None:
            data.update({k: v for k, v in self.found.as_dict().items() if k != "name"})
        return data


def _plain_identifier(value: Any) -> bool:
    return isinstance(value, str) and value.isidentifier()


def _dotted_identifier(value: Any) -> bool:
    return isinstance(value, str) and all(part.isidentifier() for part in value.split("."))


def _read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; every problem is one line naming the file."""
    from .checkpoint import read_json

    try:
        return read_json(path, "file")
    except CheckpointError as exc:
        raise CLIError(str(exc)) from None


def parse_model_index(data: dict[str, Any], path: Path) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The loader's own validation of ``model_index.json``, with its error as a CLI error."""
    from .checkpoint import parse_model_index as parse

    try:
        return parse(data, path)
    except CheckpointError as exc:
        raise CLIError(str(exc)) from None


def _hub_file(repo_id: str, args: argparse.Namespace) -> Path:
    """Download (or find in the cache) ``model_index.json``, else a single model's config, of a Hub repo."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from .hub import hub_kwargs, network_errors

    kwargs = hub_kwargs(
        revision=args.revision, cache_dir=args.cache_dir, local_files_only=True if args.local_files_only else None
    )
    kwargs.pop("proxies", None)
    unreachable = network_errors()
    first: Exception | None = None
    for filename in (PIPELINE_FILE, *SINGLE_FILES):
        try:
            return Path(hf_hub_download(repo_id, filename, **kwargs))
        except GatedRepoError:
            raise CLIError(f"Hub repo {repo_id!r} is gated: accept its terms on the Hub and log in") from None
        except RepositoryNotFoundError:
            raise CLIError(f"{repo_id!r} is not a Hub repo (or it is private: log in with 'hf auth login')") from None
        except RevisionNotFoundError:
            raise CLIError(f"Hub repo {repo_id!r} has no revision {args.revision!r}") from None
        except HFValidationError as exc:
            raise CLIError(f"{repo_id!r} is not a valid Hub repo id: {exc}") from None
        except (EntryNotFoundError, LocalEntryNotFoundError) as exc:
            first = first or exc
            if (
                isinstance(exc, LocalEntryNotFoundError)
                and filename == PIPELINE_FILE
                and not kwargs["local_files_only"]
            ):
                break  # offline and not cached: trying other files would only repeat the wait
        except (HfHubHTTPError, OSError, *unreachable) as exc:
            raise CLIError(f"reading {repo_id!r} from the Hub failed: {' '.join(str(exc).split())}") from None
    if isinstance(first, LocalEntryNotFoundError):
        where = (
            "in the local Hub cache"
            if kwargs["local_files_only"]
            else "in the local Hub cache, and the Hub cannot be reached"
        )
        raise CLIError(
            f"Hub repo {repo_id!r}{'@' + args.revision if args.revision else ''} has no {PIPELINE_FILE} "
            f"{where}; run once online, or pass a local folder"
        )
    raise CLIError(
        f"Hub repo {repo_id!r} has no {PIPELINE_FILE} or {' or '.join(SINGLE_FILES)}: is it a diffusers checkpoint?"
    )


def _local_file(path: Path) -> Path:
    """``path`` itself if it is a file, else the checkpoint JSON file in the folder ``path``."""
    if path.is_file():
        return path
    if path.is_dir():
        for name in (PIPELINE_FILE, *SINGLE_FILES):
            if (path / name).is_file():
                return path / name
        raise CLIError(
            f"{path} has no {PIPELINE_FILE} or {' or '.join(SINGLE_FILES)}: is it a diffusers checkpoint folder?"
        )
    if path.exists():
        raise CLIError(f"{path} is neither a folder nor a file")
    raise CLIError(f"{path} does not exist")


def locate_checkpoint_file(source: str, args: argparse.Namespace) -> tuple[Path, str]:
    """The JSON file describing ``source`` and how the source was understood (for messages).

    The order is ``from_pretrained``'s: a name a plugin registered as ``pretrained``, then a
    local folder or file, then a Hub repo id.
    """
    if registry.has("pretrained", source):
        entry = registry.entry("pretrained", source)
        try:
            value = resolve_target(entry)
            target = Path(value() if callable(value) else value)
        except PluginError as exc:
            raise CLIError(str(exc), EXIT_MISSING) from None
        return _local_file(target), f"{source} (pretrained, from {entry.dist})"
    path = Path(source).expanduser()
    if path.exists():
        return _local_file(path), str(path)
    from .hub import is_repo_id

    if "/" in source and is_repo_id(source):  # 'org/name'; a bare 'name' is more likely a mistyped folder
        return _hub_file(source, args), f"{source} (Hub repo{', revision ' + args.revision if args.revision else ''})"
    if args.revision is not None:
        raise CLIError(f"{source!r} is not a valid Hub repo id ('org/name')")
    raise CLIError(
        f"{source!r} does not exist: pass a checkpoint folder, a registered pretrained name "
        "or a Hub repo id ('org/name')"
    )


@dataclass
class Report:
    """What ``diffkit info`` found: the checkpoint's class, its components and their providers."""

    source: str
    file: Path
    what: str  # "pipeline" | "model"
    class_name: str
    library: str | None
    main: Lookup | None  # None for remote-code pipelines
    components: list[Component] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    note: str | None = None

    def missing(self) -> list[tuple[Lookup, list[str]]]:
        """Each name no installed plugin provides, once, with the components that need it."""
        groups: dict[tuple[str, str], tuple[Lookup, list[str]]] = {}
        if self.main is not None and not self.main.ok:
            groups[(self.main.kind, self.main.name)] = (self.main, [])
        for c in self.components:
            if c.found is not None and not c.found.ok:
                groups.setdefault((c.found.kind, c.found.name), (c.found, []))[1].append(c.name)
        return list(groups.values())

    def install(self) -> list[str]:
        """Distributions that would provide every missing name with a single provider."""
        dists: list[str] = []
        for item, _ in self.missing():
            if len(item.install) == 1 and item.install[0] not in dists:
                dists.append(item.install[0])
        return dists

    def as_dict(self) -> dict[str, Any]:
        missing = self.missing()
        install = self.install()
        return {
            "source": self.source,
            "file": str(self.file),
            "type": self.what,
            "class_name": self.class_name,
            "library": self.library,
            "provider": self.main.as_dict() if self.main is not None else None,
            "note": self.note,
            "components": [c.as_dict() for c in self.components],
            "parameters": self.parameters,
            "missing": [{"kind": m.kind, "name": m.name, "needed_by": by} for m, by in missing],
            "install_command": _pip_command(install) if install else None,
        }


def inspect_checkpoint(file: Path, source: str) -> Report:
    """Read ``file`` (``model_index.json`` or a single config) and look up every class it names."""
    data = _read_json_object(file)
    context = f"from {file}"
    if file.name == PIPELINE_FILE:
        class_name, entries, parameters = parse_model_index(data, file)
        if isinstance(class_name, list):
            module, cls = class_name
            report = Report(
                source,
                file,
                "pipeline",
                cls,
                module,
                None,
                parameters=parameters,
                note=f"custom pipeline code {module}.py:{cls} from the checkpoint; it runs only with "
                "trust_remote_code=True",
            )
        else:
            report = Report(
                source,
                file,
                "pipeline",
                class_name,
                None,
                lookup("pipeline", class_name, context),
                parameters=parameters,
            )
        for name, (library, cls) in entries.items():
            component = Component(name, library, cls)
            if library in DIFFKIT_LIBRARIES:
                component.found = lookup_class(cls, context)
            elif library is not None:
                component.found = lookup("component_loader", library, context)
            report.components.append(component)
        return report
    class_name = data.get("_class_name")
    library: str | None = None
    if class_name is None and isinstance(data.get("architectures"), list) and data["architectures"]:
        class_name, library = data["architectures"][0], "transformers"  # a transformers model folder
    if not _plain_identifier(class_name):
        raise CLIError(f"{file}: '_class_name' must be a class name, found {class_name!r}")
    if library is not None:
        found = lookup("component_loader", library, context)
    else:
        found = lookup_class(class_name, context)
    return Report(source, file, "model", class_name, library, found)


def _describe(found: Lookup | None) -> str:
    if found is None:
        return "-"
    if found.ok:
        label = _dist_label(found.dist, found.version)
        return (
            f"{label} ({found.kind} {found.name!r})" if found.kind == "component_loader" else f"{label} ({found.kind})"
        )
    return "CONFLICT" if found.conflict else "MISSING"


def _print_report(report: Report) -> None:
    print(f"{report.file.name} of {report.source}")
    label = "pipeline" if report.what == "pipeline" else "class"
    if report.main is None:
        print(f"{label}: {report.class_name}  (remote code) {report.note}")
    else:
        lib = f"[{report.library}, {report.class_name}]" if report.library else report.class_name
        print(f"{label}: {lib}  ->  {_describe(report.main)}")
    if report.components:
        print("components:")
        rows = []
        for c in report.components:
            entry = "[null, null]" if c.library is None else f"[{c.library}, {c.class_name}]"
            rows.append([c.name, entry, "(absent)" if c.found is None else _describe(c.found)])
        for line in _table(rows, indent="  "):
            print(line)
    if report.parameters:
        print("parameters: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in report.parameters.items()))
    missing = report.missing()
    if not missing:
        print("Everything it needs is installed.")
        return
    print()
    heading = "Missing or ambiguous" if any(item.conflict for item, _ in missing) else "Missing"
    print(f"{heading} ({len(missing)}):")
    for item, needed_by in missing:
        lines = (item.problem or "").splitlines() or ["no installed plugin provides it"]
        by = f" (for {', '.join(needed_by)})" if needed_by else ""
        print(f"  {item.kind} {item.name!r}{by}: {lines[0]}")
        for line in lines[1:]:
            print(f"      {line.strip()}")
    install = report.install()
    unknown = [f"{m.kind} {m.name!r}" for m, _ in missing if len(m.install) != 1]
    if install:
        print()
        print("Install " + ("everything that is missing" if not unknown else "the known providers") + " with:")
        print(f"    {_pip_command(install)}")
    if unknown and install:
        print("No single known plugin provides: " + ", ".join(unknown))


def cmd_info(args: argparse.Namespace) -> int:
    """``diffkit info PATH_OR_REPO``: what a checkpoint needs and who provides it."""
    if not args.source.strip():
        raise CLIError("PATH_OR_REPO is empty")
    file, source = locate_checkpoint_file(args.source, args)
    report = inspect_checkpoint(file, source)
    if args.json:
        _emit_json(report.as_dict())
    else:
        _print_report(report)
    return EXIT_MISSING if report.missing() else EXIT_OK


# -- the parser and main -----------------------------------------------------------------

#: subcommand name -> function adding its parser (which sets ``handler``); ``generate`` goes here
COMMANDS: dict[str, Callable[[Any], None]] = {
    "plugins": _add_plugins_parser,
    "list": _add_list_parser,
    "info": _add_info_parser,
}


def build_parser() -> argparse.ArgumentParser:
    """The ``diffkit`` argument parser with one subparser per entry of :data:`COMMANDS`."""
    parser = _Parser(
        prog="diffkit",
        description="diffkit: diffusion-model inference with plugins. Inspect installed plugins and checkpoints.",
    )
    parser.add_argument("--version", action="version", version=f"diffkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in COMMANDS.values():
        add(sub)
    return parser


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


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
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return exc.code
    except PluginError as exc:  # includes DuplicateNameError; raised under DIFFKIT_STRICT_PLUGINS=1
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_MISSING
    except BrokenPipeError:  # `diffkit list | head`: stop quietly
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_MISSING
    except (DiffkitError, ValueError, OSError) as exc:  # e.g. an unreadable DIFFKIT_REGISTRY_INDEX
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
