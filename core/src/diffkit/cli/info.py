"""``diffkit info PATH_OR_REPO``: what a checkpoint needs and which installed plugin provides each part.

It reads ``model_index.json`` (or a single model's config) from a folder, a registered
pretrained name or the Hub, and never imports the classes it names.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._index import diffusers_module_entry
from .._registry import registry, resolve_target
from ..checkpoint import NATIVE_LIBRARIES
from ..errors import CheckpointError, ComponentNotFoundError, DuplicateNameError, PluginError
from ..hookspecs import PretrainedDefaults
from .common import EXIT_MISSING, EXIT_OK, CLIError, dist_label, emit_json, install_command, format_table

#: the kinds a component of a diffkit/diffusers library can be, in lookup order
COMPONENT_KINDS = ("model", "scheduler", "processor")
#: files that identify a checkpoint folder, in the order they are tried
PIPELINE_FILE = "model_index.json"
SINGLE_FILES = ("config.json", "scheduler_config.json")


def add_parser(sub: Any) -> None:
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
    parser.set_defaults(handler=run)


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
    from ..checkpoint import read_json

    try:
        return read_json(path, "file")
    except CheckpointError as exc:
        raise CLIError(str(exc)) from None


def parse_model_index(data: dict[str, Any], path: Path) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The loader's own validation of ``model_index.json``, with its error as a CLI error."""
    from ..checkpoint import parse_model_index as parse

    try:
        return parse(data, path)
    except CheckpointError as exc:
        raise CLIError(str(exc)) from None


def _hub_download_options(args: argparse.Namespace) -> dict[str, Any]:
    """``hf_hub_download`` keyword arguments from the CLI's ``--revision``/``--cache-dir``/``--local-files-only``."""
    from ..hub import hub_kwargs

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

    from ..hub import hub_unreachable, network_errors, not_cached_error

    kwargs = _hub_download_options(args)
    offline_cause = None if kwargs["local_files_only"] else hub_unreachable(repo_id, args.revision, kwargs["token"])
    if offline_cause is not None:  # the Hub is away: read the cache at once (downloads would retry for ~25 s)
        args.local_files_only = kwargs["local_files_only"] = True
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
        cause = offline_cause if kwargs["local_files_only"] else first
        raise CLIError(str(not_cached_error(repo_id, args.revision, unreachable=cause, cache_dir=args.cache_dir)))
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
    from ..hub import is_repo_id

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
    recommended: dict[str, Any] | None = None  # what the package registering a pretrained name recommends

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
            "recommended": self.recommended,
            "missing": [{"kind": m.kind, "name": m.name, "needed_by": by} for m, by in missing],
            "install_command": install_command(install) if install else None,
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
            if library in NATIVE_LIBRARIES or diffusers_module_entry(library, cls, installed_only=False):
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
        label = dist_label(found.dist, found.version)
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
        for line in format_table(rows, indent="  "):
            print(line)
    if report.parameters:
        print("parameters: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in report.parameters.items()))
    if report.recommended:
        settings = [report.recommended["scheduler"]] if report.recommended["scheduler"] else []
        settings += [f"{k}={json.dumps(v)}" for k, v in report.recommended["call_defaults"].items()]
        print("recommended: " + ", ".join(settings) + " (diffkit generate uses these unless told otherwise)")
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
        print(f"    {install_command(install)}")
    if unknown and install:
        print("No single known plugin provides: " + ", ".join(unknown))


def run(args: argparse.Namespace) -> int:
    """``diffkit info PATH_OR_REPO``: what a checkpoint needs and who provides it."""
    if not args.source.strip():
        raise CLIError("PATH_OR_REPO is empty")
    file, source, repo_id = locate_checkpoint_file(args.source, args)
    report = inspect_checkpoint(file, source, _hub_has_file(repo_id, args) if repo_id else None)
    report.recommended = _recommended(args.source)
    if args.json:
        emit_json(report.as_dict())
    else:
        _print_report(report)
    return EXIT_MISSING if report.missing() else EXIT_OK


def _recommended(source: str) -> dict[str, Any] | None:
    """The scheduler and call defaults the package registering pretrained ``source`` recommends, if any."""
    if not registry.has("pretrained", source):
        return None
    entry = registry.entry("pretrained", source)
    try:
        recommended = PretrainedDefaults.from_meta(source, entry.dist, entry.meta)
    except PluginError as exc:
        raise CLIError(str(exc), EXIT_MISSING) from None
    if recommended.scheduler is None and not recommended.call_defaults:
        return None
    return {"scheduler": recommended.scheduler, "call_defaults": dict(recommended.call_defaults)}
