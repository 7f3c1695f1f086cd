"""The ``diffkit`` command line: ``plugins``, ``list``, ``info`` and ``generate``.

``plugins``, ``list`` and ``info`` read plugin metadata, ``registry.toml`` and checkpoint JSON
files only, so they never import torch and answer at once; ``generate`` imports torch inside
its handler. Each subcommand is one entry of :data:`COMMANDS` (a parser builder and a handler);
the ``generate`` options that feed a pipeline's ``__call__`` are entries of :data:`CALL_OPTIONS`.

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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from ._registry import INDEX_KEYS, KINDS, registry, resolve_target
from .checkpoint import NATIVE_LIBRARIES
from .errors import CheckpointError, ComponentNotFoundError, DiffkitError, DuplicateNameError, PluginError

#: ``model_index.json`` libraries whose classes the registry itself provides
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
    """``diffkit plugins``: one row per installed plugin distribution.

    It is the tool for finding a broken plugin, so under ``DIFFKIT_STRICT_PLUGINS=1`` it still
    shows every plugin (the strict error on stderr, exit code 1) rather than the first error alone.
    """
    strict_error: PluginError | None = None
    try:
        infos = registry.plugins()
    except PluginError as exc:
        strict_error = exc
        with _env("DIFFKIT_STRICT_PLUGINS", None):
            infos = registry.plugins()
    if strict_error is not None:
        print(f"diffkit plugins: error: {_one_line(strict_error)}", file=sys.stderr)
    status = EXIT_MISSING if strict_error is not None else EXIT_OK
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
    for line in _table(rows):
        print(line)
    if errors:
        print()
        for line in errors:
            print(line)
    return status


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
    found: Lookup | None = None  # None for [null, null] and for code in the checkpoint
    code_file: str | None = None  # ``<component>/<library>.py`` of the checkpoint, run as remote code

    @property
    def status(self) -> str:
        if self.library is None:
            return "absent"
        if self.code_file is not None:
            return "remote code"
        assert self.found is not None
        return "ok" if self.found.ok else "conflict" if self.found.conflict else "missing"

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "library": self.library,
            "class_name": self.class_name,
            "status": self.status,
        }
        if self.code_file is not None:
            data["code_file"] = self.code_file
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


def _hub_download_options(args: argparse.Namespace) -> dict[str, Any]:
    """``hf_hub_download`` keyword arguments from the CLI's ``--revision``/``--cache-dir``/``--local-files-only``."""
    from .hub import hub_kwargs

    kwargs = hub_kwargs(
        revision=args.revision, cache_dir=args.cache_dir, local_files_only=True if args.local_files_only else None
    )
    kwargs.pop("proxies", None)
    return kwargs


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

    from .hub import network_errors

    kwargs = _hub_download_options(args)
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


def _hub_has_file(repo_id: str, args: argparse.Namespace) -> Callable[[str], bool]:
    """Whether the Hub repo holds a file (fetched into the cache, never run); a failure counts as no."""
    from huggingface_hub import hf_hub_download

    kwargs = _hub_download_options(args)

    def has_file(relative: str) -> bool:
        try:
            hf_hub_download(repo_id, relative, **kwargs)
        except Exception:  # not there, not cached offline, or unreachable: info then reports it missing
            return False
        return True

    return has_file


@contextlib.contextmanager
def _env(name: str, value: str | None) -> Iterator[None]:
    """Set (or, with ``None``, unset) an environment variable for the duration of the block."""
    saved = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


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


def locate_checkpoint_file(source: str, args: argparse.Namespace) -> tuple[Path, str, str | None]:
    """The JSON file describing ``source``, how the source was understood (for messages), and its Hub repo id.

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
        return _local_file(target), f"{source} (pretrained, from {entry.dist})", None
    path = Path(source).expanduser()
    if path.exists():
        return _local_file(path), str(path), None
    from .hub import is_repo_id

    if "/" in source and is_repo_id(source):  # 'org/name'; a bare 'name' is more likely a mistyped folder
        described = f"{source} (Hub repo{', revision ' + args.revision if args.revision else ''})"
        return _hub_file(source, args), described, source
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


def inspect_checkpoint(file: Path, source: str, has_file: Callable[[str], bool] | None = None) -> Report:
    """Read ``file`` (``model_index.json`` or a single config) and look up every class it names.

    ``has_file(relative_path)`` says whether the checkpoint holds a file (default: beside
    ``file``); a component whose library no plugin loads but whose ``<component>/<library>.py``
    the checkpoint holds is custom code, as ``from_pretrained`` sees it.
    """
    if has_file is None:
        has_file = lambda relative: (file.parent / relative).is_file()  # noqa: E731
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
            if library in NATIVE_LIBRARIES:
                component.found = lookup_class(cls, context)
            elif library is not None:
                component.found = lookup("component_loader", library, context)
                code_file = f"{name}/{library}.py"
                if not component.found.ok and library.isidentifier() and has_file(code_file):
                    component.found, component.code_file = None, code_file
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
            if c.code_file is not None:
                provider = f"custom code {c.code_file} (runs only with trust_remote_code=True)"
            else:
                provider = "(absent)" if c.found is None else _describe(c.found)
            rows.append([c.name, entry, provider])
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
    file, source, repo_id = locate_checkpoint_file(args.source, args)
    report = inspect_checkpoint(file, source, _hub_has_file(repo_id, args) if repo_id else None)
    if args.json:
        _emit_json(report.as_dict())
    else:
        _print_report(report)
    return EXIT_MISSING if report.missing() else EXIT_OK


# -- diffkit generate --------------------------------------------------------------------

#: what ``--output`` may end in for audio; images take any suffix Pillow can write
AUDIO_SUFFIX = ".wav"
IMAGE_SUFFIX = ".png"
#: pixels between the images of a grid, and their value
GRID_GAP = 2
GRID_GAP_VALUE = 255


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value < 2**64:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2**64-1, got {value}")
    return value


def _nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _existing_file(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a file")
    return path


def _open_image(path: Path) -> Any:
    """An input image for the pipeline, read with Pillow (RGB)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise CLIError(f"cannot read the image {path}: {exc}") from None


@dataclass(frozen=True)
class CallOption:
    """One ``generate`` option that becomes a keyword argument of the pipeline's ``__call__``.

    ``parameters`` are the ``__call__`` parameters it can fill, by preference: the first one
    the pipeline accepts gets the value. ``load`` turns the parsed text into the call value
    (e.g. opens an image) once the option is known to be used. A new kind of pipeline input
    is one more entry of :data:`CALL_OPTIONS`.
    """

    flag: str
    parameters: tuple[str, ...]
    metavar: str
    help: str
    parse: Callable[[str], Any]
    load: Callable[[Any], Any] | None = None

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


#: ``generate`` options passed to the pipeline, each only where its ``__call__`` takes it
CALL_OPTIONS: tuple[CallOption, ...] = (
    CallOption("--steps", ("num_inference_steps",), "N", "denoising steps (default: the pipeline's)", _positive_int),
    CallOption(
        "--num-images", ("batch_size", "num_images_per_prompt"), "N",
        "how many images (or audio clips) to generate (default: the pipeline's, usually 1)", _positive_int,
    ),
    CallOption("--prompt", ("prompt",), "TEXT", "text prompt, for text-conditioned pipelines", _nonempty),
    CallOption("--image", ("image",), "FILE", "input image, for image-to-image pipelines", _existing_file, _open_image),
    CallOption("--mask-image", ("mask_image",), "FILE", "mask image, for inpainting pipelines", _existing_file, _open_image),
)


def _add_generate_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "generate",
        help="run a pipeline and write what it makes: a PNG grid of images, or WAV audio",
        description="Load a pipeline from a checkpoint folder, a registered pretrained name (e.g. "
        "diffkit/ddpm-digits) or a Hub repo, run it with a progress bar, and write its images as one PNG "
        "grid (or its audio as WAV). Options the pipeline does not take are an error; so is an input it "
        "needs that no option gives.",
    )
    parser.add_argument("source", metavar="PATH_OR_REPO_OR_PRETRAINED_NAME", help="what to load")
    for option in CALL_OPTIONS:
        parser.add_argument(option.flag, dest=option.dest, type=option.parse, metavar=option.metavar, help=option.help)
    parser.add_argument("--seed", type=_seed, metavar="S", help="random seed (default: a random one, printed)")
    parser.add_argument("--scheduler", metavar="NAME", help="sample with this installed scheduler (e.g. DDIMScheduler)")
    parser.add_argument(
        "--pipeline", metavar="NAME",
        help="load the checkpoint into this installed pipeline class instead of the one it names (e.g. PNDMPipeline)",
    )
    parser.add_argument("--device", default="auto", metavar="D", help="cpu, cuda, cuda:1, mps... (default: auto)")
    parser.add_argument("--dtype", metavar="T", help="float32, float16, bfloat16 or auto (default: float32)")
    parser.add_argument(
        "--output", type=Path, metavar="FILE",
        help=f"file to write (default: named after the source, {IMAGE_SUFFIX} or {AUDIO_SUFFIX}, in this folder)",
    )
    parser.set_defaults(handler=cmd_generate)


def _check_output(path: Path | None) -> Path | None:
    """Fail early (before loading anything) when ``--output`` cannot be written."""
    folder = Path.cwd() if path is None else path.parent
    if path is not None:
        if path.is_dir():
            raise CLIError(f"--output {path} is a folder; give a file name such as {path / ('out' + IMAGE_SUFFIX)}")
        suffix = path.suffix.lower()
        if suffix != AUDIO_SUFFIX and suffix not in _image_formats():
            raise CLIError(
                f"--output {path}: unknown file type {path.suffix or '(no suffix)'!r}; "
                f"use {IMAGE_SUFFIX} (or another image type Pillow writes) for images, {AUDIO_SUFFIX} for audio"
            )
    if not folder.is_dir():
        raise CLIError(f"--output {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CLIError(f"cannot write to the folder {folder}")
    return path


def _image_formats() -> dict[str, str]:
    """File suffix -> Pillow format, for the formats Pillow can write."""
    from PIL import Image

    Image.init()
    return {ext: fmt for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}


def _pick_device(text: str) -> Any:
    """``--device`` as a ``torch.device`` that works here (``auto``: CUDA, then MPS, then the CPU)."""
    import torch

    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise CLIError(f"--device {text!r} is not a device; use cpu, cuda, cuda:N, mps or auto") from None
    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError, AttributeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CLIError(f"--device {text!r} is not usable here: {first}") from None
    return device


def _pick_dtype(text: str | None) -> Any:
    if text is None:
        return None
    from .dtypes import parse_dtype

    try:
        return parse_dtype(text, "--dtype")
    except (TypeError, ValueError) as exc:
        raise CLIError(str(exc)) from None


def _installed_class(kind: str, name: str | None, flag: str) -> type | None:
    """The installed class for ``--scheduler``/``--pipeline`` (an unknown name says what is installed)."""
    if name is None:
        return None
    if not name.strip():
        raise CLIError(f"{flag} is empty")
    try:
        return registry.get(kind, name)
    except ComponentNotFoundError as exc:
        raise CLIError(f"{flag}: {_one_line(exc)}") from None


def _compatible(source: type, target: type | None) -> bool:
    """Whether ``target`` can be built from a ``source`` config: the same class, or either lists the other."""
    if target is None:
        return False
    names = (source.__name__, target.__name__)
    return (
        source is target
        or names[1] in getattr(source, "compatibles_names", ())
        or names[0] in getattr(target, "compatibles_names", ())
    )


def _installed_scheduler(name: str) -> type | None:
    try:
        return registry.get("scheduler", name)
    except DiffkitError:  # a broken plugin must not hide the message being built
        return None


def _swap_scheduler(pipe: Any, scheduler_cls: type) -> Any:
    """A sibling of ``pipe`` sampling with ``scheduler_cls``, built from the current scheduler's config.

    The pipeline is constructed again (sharing every other component), so a pipeline that
    converts its scheduler on construction does so here too; when it refuses the requested
    class that is an error rather than a silent substitution.
    """
    pipeline_name = type(pipe).__name__
    current = pipe.components.get("scheduler")
    if current is None:
        raise CLIError(f"{pipeline_name} has no scheduler, so --scheduler does not apply")
    target = scheduler_cls.__name__
    if not _compatible(type(current), scheduler_cls):
        others = sorted(n for n in registry.names("scheduler") if _compatible(type(current), _installed_scheduler(n)))
        raise CLIError(
            f"--scheduler {target} cannot take the config of {type(current).__name__}; compatible installed "
            f"schedulers: {', '.join(others) or 'none'}"
        )
    scheduler = scheduler_cls.from_config(current.config)
    sibling = type(pipe)(**{**pipe.components, "scheduler": scheduler}, **pipe.settings)
    if not isinstance(sibling.scheduler, scheduler_cls):
        raise CLIError(
            f"{pipeline_name} samples only with {type(sibling.scheduler).__name__}, so --scheduler {target} "
            "does not apply to it"
        )
    sibling.set_progress_bar_config(**pipe._progress_bar_config)
    return sibling


def _call_arguments(pipe: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments for ``pipe(...)`` from the options, checked against its signature."""
    import inspect

    pipeline_name = type(pipe).__name__
    params = inspect.signature(pipe.__call__).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    kwargs: dict[str, Any] = {}
    for option in CALL_OPTIONS:
        value = getattr(args, option.dest)
        if value is None:
            continue
        target = next((p for p in option.parameters if p in params), option.parameters[0] if takes_any else None)
        if target is None:
            raise CLIError(
                f"{pipeline_name} does not take {option.flag} (its __call__ has no {' or '.join(option.parameters)})"
            )
        kwargs[target] = option.load(value) if option.load is not None else value
    if "generator" in params or takes_any:
        import torch

        kwargs["generator"] = torch.Generator("cpu").manual_seed(args.seed)
    missing = [
        name
        for name, p in params.items()
        if p.default is p.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and name not in kwargs
    ]
    if missing:
        flags = {p: o.flag for o in CALL_OPTIONS for p in o.parameters}
        needs = ", ".join(f"{name} ({flags[name]})" if name in flags else repr(name) for name in missing)
        hint = "" if all(name in flags for name in missing) else "; generate runs pipelines whose inputs it has options for"
        raise CLIError(f"{pipeline_name} needs {needs}{hint}")
    return kwargs


def _default_of(pipe: Any, parameter: str) -> Any:
    """The default value of a ``__call__`` parameter, or ``None``."""
    import inspect

    param = inspect.signature(pipe.__call__).parameters.get(parameter)
    return None if param is None or param.default is param.empty else param.default


def _suffix_kind(path: Path) -> str:
    return "audio" if path.suffix.lower() == AUDIO_SUFFIX else "image"


def _declared_kind(pipe: Any) -> str | None:
    """``"image"`` or ``"audio"`` when the return annotation of ``pipe.__call__`` names one output class."""
    import inspect

    annotation = inspect.signature(pipe.__call__).return_annotation
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    kinds = {kind for kind, name in (("image", "ImagePipelineOutput"), ("audio", "AudioPipelineOutput")) if name in text}
    return kinds.pop() if len(kinds) == 1 else None


def _classify(result: Any, pipeline_name: str) -> tuple[str, Any]:
    """What a pipeline returned: ``("image", images)`` or ``("audio", audios)``.

    Output objects are read by field; a bare tuple (``return_dict=False`` style) by its first
    item; a bare array or tensor by its rank (4: images, 1 to 3: audio).
    """
    for kind, field_name in (("image", "images"), ("audio", "audios")):
        value = getattr(result, field_name, None)
        if value is not None:
            return kind, value
    if isinstance(result, tuple) and result:
        result = result[0]
    if isinstance(result, list) and result and all(hasattr(im, "save") for im in result):
        return "image", result
    ndim = getattr(result, "ndim", None)
    if ndim == 4:
        return "image", result
    if ndim in (1, 2, 3):
        return "audio", result
    raise CLIError(f"{pipeline_name} returned {type(result).__name__}, which holds no images or audio", EXIT_MISSING)


def _default_output(source: str, suffix: str) -> Path:
    name = Path(source.rstrip("/\\")).name or "output"
    return Path.cwd() / f"{name}{suffix}"


def _as_pil(images: Any) -> list[Any]:
    """Pipeline images (PIL list, NHWC numpy in [0, 1], or NCHW tensor in [0, 1]) as PIL images."""
    import numpy as np

    from .outputs import numpy_to_pil

    if isinstance(images, (list, tuple)) and all(hasattr(im, "save") for im in images):
        return list(images)
    if hasattr(images, "detach"):
        images = images.detach().float().cpu().permute(0, 2, 3, 1).numpy()
    array = np.asarray(images)
    if array.ndim != 4:
        raise CLIError(f"the pipeline returned images shaped {array.shape}; expected a batch of images", EXIT_MISSING)
    return numpy_to_pil(np.clip(array, 0.0, 1.0))


def grid_shape(count: int) -> tuple[int, int]:
    """``(columns, rows)`` of a grid of ``count`` images: ``ceil(sqrt(count))`` columns."""
    import math

    cols = math.ceil(math.sqrt(count))
    return cols, math.ceil(count / cols)


def image_grid(images: Sequence[Any], gap: int = GRID_GAP) -> Any:
    """One PIL image holding ``images`` in rows of ``ceil(sqrt(n))``, ``gap`` pixels apart (one image: itself)."""
    from PIL import Image

    if len(images) == 1:
        return images[0]
    mode = "RGB" if any(im.mode != "L" for im in images) else "L"
    width = max(im.width for im in images)
    height = max(im.height for im in images)
    cols, rows = grid_shape(len(images))
    fill = GRID_GAP_VALUE if mode == "L" else (GRID_GAP_VALUE,) * 3
    grid = Image.new(mode, (cols * width + (cols - 1) * gap, rows * height + (rows - 1) * gap), fill)
    for i, im in enumerate(images):
        row, col = divmod(i, cols)
        grid.paste(im.convert(mode), (col * (width + gap), row * (height + gap)))
    return grid


def _write_images(images: Any, path: Path) -> str:
    from .audio import partial_path

    pictures = _as_pil(images)
    grid = image_grid(pictures)
    fmt = _image_formats()[path.suffix.lower()]
    tmp = partial_path(path)
    try:
        grid.save(tmp, format=fmt)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    w, h = pictures[0].size
    if len(pictures) == 1:
        return f"1 image of {w}x{h}"
    cols, rows = grid_shape(len(pictures))
    return f"{len(pictures)} images of {w}x{h} in a {cols}x{rows} grid ({grid.width}x{grid.height} px)"


def _sample_rate(pipe: Any) -> int:
    """The audio sample rate: the pipeline's ``sample_rate``, else a component config's ``sample_rate``."""
    rate = getattr(pipe, "sample_rate", None)
    if rate is None:
        for component in pipe.components.values():
            rate = getattr(getattr(component, "config", None), "sample_rate", None)
            if rate is not None:
                break
    if rate is None:
        raise CLIError(f"{type(pipe).__name__} made audio but declares no sample_rate", EXIT_MISSING)
    return int(rate)


def _write_audio(audios: Any, path: Path, sample_rate: int) -> tuple[list[Path], str]:
    """One WAV per clip: ``path`` itself for one clip, ``stem-0.wav``, ``stem-1.wav``... for several."""
    import numpy as np

    from .audio import write_wav

    clips = audios.detach().float().cpu().numpy() if hasattr(audios, "detach") else np.asarray(audios)
    if clips.ndim == 1:
        clips = clips[None, None, :]
    elif clips.ndim == 2:
        clips = clips[:, None, :]
    paths = [path] if len(clips) == 1 else [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(len(clips))]
    for clip, target in zip(clips, paths, strict=True):
        write_wav(target, clip, sample_rate)
    seconds = clips.shape[-1] / sample_rate
    what = "1 clip" if len(clips) == 1 else f"{len(clips)} clips"
    return paths, f"{what} of {seconds:.2f} s, {clips.shape[1]} channel(s) at {sample_rate} Hz"


def _size(paths: Sequence[Path]) -> str:
    total = sum(p.stat().st_size for p in paths)
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if total >= scale:
            return f"{total / scale:.1f} {unit}"
    return f"{total} B"


def cmd_generate(args: argparse.Namespace) -> int:
    """``diffkit generate SOURCE``: load, run, write a PNG grid (or WAV) and say what was written."""
    import random
    import time

    if not args.source.strip():
        raise CLIError("PATH_OR_REPO_OR_PRETRAINED_NAME is empty")
    output = _check_output(args.output.expanduser() if args.output is not None else None)
    dtype = _pick_dtype(args.dtype)
    scheduler_cls = _installed_class("scheduler", args.scheduler, "--scheduler")
    pipeline_cls = _installed_class("pipeline", args.pipeline, "--pipeline")
    device = _pick_device(args.device)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)

    from .pipeline import Pipeline

    started = time.perf_counter()
    options = {} if dtype is None else {"torch_dtype": dtype}
    try:
        with _env("DIFFKIT_DISABLE_PROGRESS", "1"):  # only the sampling bar: an error after loading stays a single line
            pipe = (pipeline_cls or Pipeline).from_pretrained(args.source, **options)
    except ComponentNotFoundError as exc:
        raise CLIError(f"cannot load {args.source!r}: {_one_line(exc)}", EXIT_MISSING) from None
    except (DiffkitError, OSError, ValueError, TypeError) as exc:
        raise CLIError(f"cannot load {args.source!r}: {_one_line(exc)}") from None
    if scheduler_cls is not None:
        pipe = _swap_scheduler(pipe, scheduler_cls)
    kwargs = _call_arguments(pipe, args)
    expected = _declared_kind(pipe)
    if output is not None and expected is not None and _suffix_kind(output) != expected:
        suffix = IMAGE_SUFFIX if expected == "image" else AUDIO_SUFFIX
        raise CLIError(f"{type(pipe).__name__} makes {expected}: --output must be a file such as {output.with_suffix(suffix)}")
    pipe.to(device)
    loaded = time.perf_counter()
    import torch

    try:
        with torch.inference_mode():
            result = pipe(**kwargs)
    except (ValueError, TypeError) as exc:
        message = f"{type(pipe).__name__} refused the arguments: {_one_line(exc)}"
        if scheduler_cls is not None:
            # e.g. DDPMPipeline passes generator= to step(), which PNDMScheduler does not take
            family = scheduler_cls.__name__.removesuffix("Scheduler") + "Pipeline"
            hint = f"; try --pipeline {family}" if registry.has("pipeline", family) else ""
            message = f"{type(pipe).__name__} cannot sample with {scheduler_cls.__name__}: {_one_line(exc)}{hint}"
        raise CLIError(message) from None
    except RuntimeError as exc:
        raise CLIError(f"{type(pipe).__name__} failed on {device}: {_one_line(exc)}", EXIT_MISSING) from None
    seconds = time.perf_counter() - loaded

    kind, payload = _classify(result, type(pipe).__name__)
    suffix = IMAGE_SUFFIX if kind == "image" else AUDIO_SUFFIX
    path = (output or _default_output(args.source, suffix)).resolve()
    if _suffix_kind(path) != kind:  # the annotation did not tell: keep the work, fix the name
        fixed = path.with_suffix(suffix)
        print(f"diffkit generate: note: {type(pipe).__name__} made {kind}, so it goes to {fixed}", file=sys.stderr)
        path = fixed
    if kind == "image":
        paths, what = [path], _write_images(payload, path)
    else:
        paths, what = _write_audio(payload, path, _sample_rate(pipe))

    scheduler = pipe.components.get("scheduler")
    steps = kwargs.get("num_inference_steps", _default_of(pipe, "num_inference_steps"))
    steps = f", {steps} steps" if isinstance(steps, int) else ""
    how = f"{type(pipe).__name__}" + (f" with {type(scheduler).__name__}" if scheduler is not None else "")
    for path in paths:
        print(path)
    print(
        f"wrote {what}, {_size(paths)}: {how}{steps}, seed {args.seed}, on {device}; "
        f"{seconds:.1f} s (loading {loaded - started:.1f} s)"
    )
    return EXIT_OK


# -- the parser and main -----------------------------------------------------------------

#: subcommand name -> function adding its parser (which sets ``handler``)
COMMANDS: dict[str, Callable[[Any], None]] = {
    "plugins": _add_plugins_parser,
    "list": _add_list_parser,
    "info": _add_info_parser,
    "generate": _add_generate_parser,
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
