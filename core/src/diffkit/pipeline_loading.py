"""The ``from_pretrained`` / ``download`` / ``save_pretrained`` flow of pipelines.

Order of work: find the source folder (plugin-registered name, local folder or Hub repo),
validate ``model_index.json``, pick the pipeline class, then load each component through the
registry (``diffusers``/``diffkit`` libraries) or a registered component loader (any other
library). Nothing is imported because a JSON file names it: code that no installed package
provides (``custom_pipeline`` files and repos, ``_class_name: [module, Class]``, component
``.py`` files) runs only through the gate of :mod:`diffkit.remote_code`.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._env import env_flag
from ._fs import LINKS_OPT_OUT, check_links, recover, safe_child
from ._index import diffusers_module_entry
from ._registry import registry
from .checkpoint import MODEL_INDEX, NATIVE_LIBRARIES, ComponentEntry, parse_model_index, read_json
from .dtypes import dtype_for, one_dtype, parse_dtype
from .errors import CheckpointError
from .hub import hub_kwargs, is_repo_id
from .model import Model
from .pipeline import LOAD_OPTIONS, resolve_component_class
from .processor import Processor
from .remote_code import CodeSource, check_remote_code, code_file_of, pick_class, run_remote_module
from .scheduler import Scheduler
from .weights import select_weight_files

if TYPE_CHECKING:
    from .pipeline import Pipeline

logger = logging.getLogger("diffkit.pipeline")


# -- sources -------------------------------------------------------------------------------
def _pretrained_path(name: str) -> Path | None:
    if not registry.has("pretrained", name):
        return None
    value = registry.get("pretrained", name)
    path = Path(value() if callable(value) else value)
    if not (path / MODEL_INDEX).is_file():
        raise CheckpointError(f"pretrained {name!r} points at {path}, which has no {MODEL_INDEX}")
    return path


def _trust(options: dict[str, Any]) -> bool:
    """``trust_remote_code`` from the loading options: only a real ``True`` trusts (not ``"false"``)."""
    value = options.get("trust_remote_code", False)
    if not isinstance(value, bool):
        raise TypeError(f"trust_remote_code must be True or False, got {value!r}")
    return value


@dataclass
class _Origin:
    """Where a checkpoint's files are: a local folder, possibly the snapshot of a Hub repo.

    While a Hub repo is being downloaded, ``listing`` holds the repo's files and code files are
    fetched on demand; otherwise files are looked up in ``folder``. Code files resolved during
    one load are kept in ``modules``, so each is judged and run once per load.
    """

    folder: Path
    repo_id: str | None = None
    revision: str | None = None
    commit: str | None = None
    listing: set[str] | None = None
    fetch_options: dict[str, Any] = field(default_factory=dict)
    modules: dict[str, ModuleType] = field(default_factory=dict)

    def has_file(self, relpath: str) -> bool:
        if self.listing is not None:
            return relpath in self.listing
        return (self.folder / relpath).is_file()

    def run_code(self, relpath: str, options: dict[str, Any]) -> tuple[ModuleType, str]:
        """Run the checkpoint's code file ``relpath`` through the gate; (module, its description)."""
        trust = _trust(options)
        local = self.folder.joinpath(*relpath.split("/"))
        if self.repo_id is not None:
            source = CodeSource.hub(self.repo_id, relpath, self.revision, self.commit, path=local)
        else:
            source = CodeSource.local(local)
        if relpath in self.modules:
            return self.modules[relpath], source.describe()
        check_remote_code(source, trust_remote_code=trust)  # before anything is downloaded
        if self.listing is not None:
            assert self.repo_id is not None and self.commit is not None
            source = replace(source, path=_fetch(self.repo_id, relpath, self.commit, self.fetch_options))
        elif not local.is_file():
            raise CheckpointError(f"{source.describe()} does not exist")
        elif not options.get(LINKS_OPT_OUT, False):
            check_links(self.folder, [relpath])
        module = run_remote_module(source, trust_remote_code=trust)
        self.modules[relpath] = module
        return module, source.describe()


def _pipeline_class(cls: type[Pipeline], class_name: Any, source: str, options: dict[str, Any],
                    origin: _Origin) -> type[Pipeline]:
    """``custom_pipeline`` if given, else ``cls`` if concrete, else what ``_class_name`` names."""
    from .pipeline import Pipeline

    custom_pipeline = options.get("custom_pipeline")
    if custom_pipeline is not None:
        return custom_pipeline_class(custom_pipeline, options)
    if cls is not Pipeline:
        return cls
    if isinstance(class_name, list):
        module_name, wanted = class_name
        if not module_name.isidentifier():
            raise CheckpointError(
                f"{source}: _class_name {class_name} must name a .py file at the top of the checkpoint "
                f"([module, ClassName] with a plain module name), found {module_name!r}"
            )
        relpath = f"{module_name}.py"
        if not origin.has_file(relpath):
            raise CheckpointError(f"{source}: _class_name {class_name} names {relpath}, which the checkpoint lacks")
        module, what = origin.run_code(relpath, options)
        return pick_class(module, Pipeline, what=what, class_name=wanted)
    return registry.get("pipeline", class_name, context=source)


#: the file a ``custom_pipeline`` folder or Hub repo must hold
CUSTOM_PIPELINE_FILE = "pipeline.py"


def custom_pipeline_class(custom_pipeline: Any, options: dict[str, Any]) -> type[Pipeline]:
    """The pipeline class a ``custom_pipeline`` argument names, tried in this order:

    an installed pipeline's registered name (no remote code); a local ``.py`` file, or a local
    folder holding ``pipeline.py``; a Hub repo id ``org/name`` holding ``pipeline.py`` at
    ``custom_revision``. Files run only through the remote-code gate, with ``trust_remote_code``.
    """
    from .pipeline import Pipeline

    if not isinstance(custom_pipeline, (str, os.PathLike)):
        raise TypeError(f"custom_pipeline must be a name, a path or a Hub repo id, got {type(custom_pipeline).__name__}")
    text = os.fspath(custom_pipeline)
    if isinstance(custom_pipeline, str) and registry.has("pipeline", text):
        return registry.get("pipeline", text)
    path = Path(text)
    trust = _trust(options)
    if path.is_dir() or path.is_file():
        file = path / CUSTOM_PIPELINE_FILE if path.is_dir() else path
        if path.is_dir() and not file.is_file():
            raise CheckpointError(f"custom_pipeline folder {path} has no {CUSTOM_PIPELINE_FILE}")
        if file.suffix != ".py":
            raise CheckpointError(f"custom_pipeline file {path} is not a .py file")
        source = CodeSource.local(file, named_by_caller=True)
        module = run_remote_module(source, trust_remote_code=trust)
        return pick_class(module, Pipeline, what=source.describe())
    if isinstance(custom_pipeline, os.PathLike) or text.endswith(".py"):
        raise CheckpointError(f"custom_pipeline {text!r} does not exist")
    if "/" in text and is_repo_id(text):
        return _hub_custom_pipeline(text, options)
    return registry.get(
        "pipeline", text,
        context="custom_pipeline: it is not an installed pipeline, a local .py file or folder, or a Hub repo id "
        "'org/name'",
    )


def _hub_custom_pipeline(repo_id: str, options: dict[str, Any]) -> type[Pipeline]:
    """``pipeline.py`` of Hub repo ``repo_id`` at ``custom_revision``: the gate judges exactly that file."""
    from .pipeline import Pipeline

    trust = _trust(options)
    revision = options.get("custom_revision")
    source = CodeSource.hub(repo_id, CUSTOM_PIPELINE_FILE, revision)
    check_remote_code(source, trust_remote_code=trust)  # refused code is never downloaded
    hub = hub_kwargs(
        revision=revision, cache_dir=options.get("cache_dir"), force_download=options.get("force_download", False),
        local_files_only=options.get("local_files_only"), token=options.get("token"),
    )
    path = _fetch(repo_id, CUSTOM_PIPELINE_FILE, revision, {k: v for k, v in hub.items() if k != "revision"})
    source = replace(source, path=path, commit=path.parent.name)
    module = run_remote_module(source, trust_remote_code=trust)
    return pick_class(module, Pipeline, what=source.describe())


def _fetch(repo_id: str, filename: str, revision: str | None, download: dict[str, Any]) -> Path:
    """``hf_hub_download`` of one file; every failure is one :class:`CheckpointError` naming it."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    from .hub import hub_error, network_errors

    download = {k: v for k, v in download.items() if k != "proxies"}
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, **download))
    except LocalEntryNotFoundError as exc:
        raise hub_error(repo_id, revision, exc, download.get("local_files_only")) from None
    except EntryNotFoundError:
        raise CheckpointError(
            f"Hub repo {repo_id!r} has no {filename} at revision {revision or 'main'!r}"
        ) from None
    except HfHubHTTPError as exc:
        raise hub_error(repo_id, revision, exc) from None
    except network_errors() as exc:
        raise CheckpointError(f"downloading {filename} of Hub repo {repo_id!r} failed: {exc}") from None


# -- component classes ---------------------------------------------------------------------
def _loader_for(library: str, context: str) -> Any:
    loader_cls = registry.get("component_loader", library, context=context)
    return loader_cls() if isinstance(loader_cls, type) else loader_cls


def _component_target(name: str, entry: ComponentEntry, source: str, origin: _Origin,
                      options: dict[str, Any]) -> tuple[str, Any]:
    """What loads one component entry: ("class", cls) or ("loader", loader).

    diffusers/diffkit entries resolve through the registry; another library goes to the
    component loader registered for it; failing that, a ``<component>/<library>.py`` file of the
    checkpoint is custom code, run through the remote-code gate.
    """
    context = f"component {name!r} in {source}"
    assert entry.library is not None and entry.class_name is not None
    in_module = diffusers_module_entry(entry.library, entry.class_name, installed_only=True)
    if entry.library in NATIVE_LIBRARIES or in_module:
        return "class", resolve_component_class(entry.class_name, context)
    code_file = f"{name}/{entry.library}.py"
    if (not registry.has("component_loader", entry.library) and entry.library.isidentifier()
            and origin.has_file(code_file)):
        module, what = origin.run_code(code_file, options)
        return "class", pick_class(module, (Model, Scheduler, Processor), what=what, class_name=entry.class_name)
    if diffusers_module_entry(entry.library, entry.class_name, installed_only=False):
        return "class", resolve_component_class(entry.class_name, context)  # says which package to install
    loader = _loader_for(entry.library, context)
    if not loader.can_load(entry.class_name):
        raise CheckpointError(f"{context}: the {entry.library!r} loader does not know class {entry.class_name!r}")
    return "loader", loader


def _has_variant(folder: Path, variant: str) -> bool:
    return folder.is_dir() and any(variant in p.name.split(".")[1:-1] or f".{variant}-" in p.name
                                   for p in folder.iterdir())


# -- loading -------------------------------------------------------------------------------
def load_pipeline(cls: type[Pipeline], source: str | os.PathLike[str], **kwargs: Any) -> Pipeline:
    options = {k: kwargs.pop(k) for k in LOAD_OPTIONS if k in kwargs}
    if "dtype" in kwargs:  # diffusers 0.42's name for torch_dtype
        options["torch_dtype"] = one_dtype(options.get("torch_dtype"), kwargs.pop("dtype"))
    torch_dtype = options.get("torch_dtype")
    if isinstance(torch_dtype, dict):
        for key, value in torch_dtype.items():
            parse_dtype(value, f"torch_dtype[{key!r}]")
    else:
        parse_dtype(torch_dtype)
    from .model import _single_device

    _single_device(options.get("device_map"))

    origin, pipeline_cls = _resolve_source(cls, source, kwargs, options)
    folder = origin.folder
    if origin.repo_id is None:
        recover(folder)  # finish or clean up a save into this folder that was killed
    links_checked = not options.get(LINKS_OPT_OUT, False)
    if links_checked:
        check_links(folder, [MODEL_INDEX])
    index_path = folder / MODEL_INDEX
    class_name, entries, settings = parse_model_index(read_json(index_path, "model_index.json"), index_path)
    where = f"{MODEL_INDEX} in {folder}"
    if pipeline_cls is None:
        pipeline_cls = _pipeline_class(cls, class_name, where, options, origin)

    expected = pipeline_cls.component_names()
    optional = set(pipeline_cls.optional_components)
    params = set(pipeline_cls.parameter_names())
    passed = {k: kwargs.pop(k) for k in list(kwargs) if k in expected}
    init_settings = {k: v for k, v in settings.items() if k in params}
    init_settings.update({k: kwargs.pop(k) for k in list(kwargs) if k in params})
    if kwargs:
        logger.warning(
            "Keyword arguments %s are not expected by %s and will be ignored", sorted(kwargs), pipeline_cls.__name__
        )

    variant = options.get("variant")
    to_load = [n for n in expected if n not in passed and n in entries and entries[n].library is not None]
    if links_checked:
        check_links(folder, to_load)
    if variant and to_load and not any(_has_variant(folder / n, variant) for n in to_load):
        raise CheckpointError(f"variant {variant!r} was requested but no component folder of {folder} has it")

    components: dict[str, Any] = dict(passed)
    from tqdm.auto import tqdm

    disable = len(to_load) < 2 or env_flag("DIFFKIT_DISABLE_PROGRESS")
    for name in tqdm(to_load, desc="Loading pipeline components", disable=disable):
        components[name] = _load_component(name, entries[name], origin, options, where)
    for name in expected:
        if name in components:
            continue
        entry = entries.get(name)
        if name in optional or (entry is not None and entry.library is None and name in optional):
            components[name] = None
        elif entry is not None and entry.library is None:
            raise CheckpointError(f"{where}: component {name!r} is [null, null] but {pipeline_cls.__name__} requires it; pass {name}=...")
        else:
            raise CheckpointError(
                f"{where} declares no component {name!r}, which {pipeline_cls.__name__} requires; pass {name}=... "
                f"(it declares: {', '.join(sorted(entries)) or 'nothing'})"
            )
    pipe = pipeline_cls(**components, **init_settings)
    meta = {"_name_or_path": str(source)}
    index = read_json(index_path, "model_index.json")
    if isinstance(index.get("_diffusers_version"), str):
        meta["_diffusers_version"] = index["_diffusers_version"]
    pipe._index_meta.update(meta)
    registry.notify_pipeline_loaded(pipe, str(source))
    return pipe


def _resolve_source(cls: type[Pipeline], source: str | os.PathLike[str], passed: dict[str, Any],
                    options: dict[str, Any]) -> tuple[_Origin, type[Pipeline] | None]:
    """The checkpoint's origin, and the pipeline class when downloading already had to resolve it."""
    if not isinstance(source, os.PathLike):
        pretrained = _pretrained_path(str(source))
        if pretrained is not None:
            return _Origin(pretrained), None
    path = Path(source)
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path} is not a folder; pass a pipeline folder or a Hub repo id")
        return _Origin(path), None
    if not isinstance(source, os.PathLike):
        _refuse_unloaded_pretrained(str(source))
    if isinstance(source, os.PathLike) or not is_repo_id(str(source)):
        raise CheckpointError(
            f"{str(source)!r} is not an existing folder, a Hub repo id ('org/name') or a registered pretrained name"
            f" (registered: {', '.join(registry.names('pretrained')) or 'none'})"
        )
    return _download(cls, str(source), passed, options)


def _refuse_unloaded_pretrained(name: str) -> None:
    """A pretrained name whose installed plugin is disabled or broken says so (instead of trying the Hub)."""
    from ._index import packages_providing

    for dist in packages_providing("pretrained", name):
        info = registry.plugin(dist)
        if info is not None and info.status != "loaded":
            raise CheckpointError(
                f"{name!r} is the pretrained checkpoint of plugin {dist!r}, which is {info.status}: {info.error}"
            )


def _load_component(name: str, entry: ComponentEntry, origin: _Origin, options: dict[str, Any], where: str) -> Any:
    folder = safe_child(origin.folder, name, f"{where}: component name")
    if not folder.is_dir():
        raise CheckpointError(f"{where} declares component {name!r} but the folder {folder} does not exist")
    how, target = _component_target(name, entry, where, origin, options)
    dtype = dtype_for(options.get("torch_dtype"), name)
    variant = options.get("variant")
    if variant and not _has_variant(folder, variant):
        logger.warning("component %r has no %r variant files; loading its default weights", name, variant)
        variant = None
    if how == "loader":
        return target.load(entry.class_name, folder, torch_dtype=dtype, variant=variant,
                           use_safetensors=options.get("use_safetensors"), allow_pickle=options.get("allow_pickle", False))
    if issubclass(target, Model):
        return target.from_pretrained(
            folder,
            torch_dtype=dtype,
            variant=variant,
            use_safetensors=options.get("use_safetensors"),
            allow_pickle=options.get("allow_pickle", False),
            device_map=options.get("device_map"),
            low_cpu_mem_usage=options.get("low_cpu_mem_usage", True),
            allow_external_symlinks=True,  # the whole component folder was checked above
        )
    if issubclass(target, (Scheduler, Processor)):
        return target.from_pretrained(folder, allow_external_symlinks=True)  # the folder was checked above
    raise CheckpointError(f"{where}: {entry.class_name} (component {name!r}) is not a model, scheduler or processor")


# -- Hub -----------------------------------------------------------------------------------
def download_pipeline(cls: type[Pipeline], repo_id: str, *, _passed: dict[str, Any] | None = None, **options: Any) -> Path:
    """Fetch ``model_index.json`` and then only the files of the components that will be loaded.

    Offline (``local_files_only``, ``HF_HUB_OFFLINE``), or when the Hub cannot be reached, the
    snapshot already in the cache is returned without any request. Code files of the repo are
    fetched only when they will run, and only once the remote-code gate allows them.
    """
    return _download(cls, repo_id, _passed or {}, options)[0].folder


def _download(cls: type[Pipeline], repo_id: str, passed: dict[str, Any],
              options: dict[str, Any]) -> tuple[_Origin, type[Pipeline] | None]:
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    from .hub import download_files, hub_error, network_errors, network_reason, not_cached_error

    hub = hub_kwargs(
        revision=options.get("revision"), cache_dir=options.get("cache_dir"),
        force_download=options.get("force_download", False), local_files_only=options.get("local_files_only"),
        token=options.get("token"), proxies=options.get("proxies"),
    )
    if hub["local_files_only"]:
        # Only model_index.json must be there: the snapshot holds the files of the components
        # loaded before, not the whole repo, and loading names whatever else is missing.
        return _cached_origin(download_files(repo_id, [MODEL_INDEX], **hub), repo_id, hub["revision"]), None
    download = {k: v for k, v in hub.items() if k not in ("revision", "local_files_only", "proxies")}
    try:
        api = HfApi(token=hub["token"])
        info = api.repo_info(repo_id, revision=hub["revision"])
        files = {f.path for f in api.list_repo_tree(repo_id, recursive=True, revision=info.sha) if hasattr(f, "size")}
        if MODEL_INDEX not in files:
            raise CheckpointError(f"Hub repo {repo_id!r} has no {MODEL_INDEX}: it is not a pipeline repo")
        # Asked for by the revision given (not the sha) so that the cache records the commit it
        # names: offline loading by that revision finds this snapshot.
        index_file = Path(hf_hub_download(repo_id, MODEL_INDEX, revision=hub["revision"], **download))
    except HfHubHTTPError as exc:
        raise hub_error(repo_id, hub["revision"], exc) from None
    except (LocalEntryNotFoundError, *network_errors()) as exc:
        try:
            cached = download_files(repo_id, [MODEL_INDEX], **{**hub, "local_files_only": True})
        except CheckpointError:
            raise not_cached_error(repo_id, hub["revision"], unreachable=exc, cache_dir=hub["cache_dir"]) from None
        logger.warning("cannot reach the Hub (%s); using the cached snapshot of %r", network_reason(exc), repo_id)
        return _cached_origin(cached, repo_id, hub["revision"]), None
    root = index_file.parent
    if root.name != info.sha:
        raise CheckpointError(
            f"Hub repo {repo_id!r} changed while it was being downloaded (revision {hub['revision'] or 'main'!r} "
            f"moved from {info.sha} to {root.name}); try again"
        )
    class_name, entries, _ = parse_model_index(read_json(index_file, "model_index.json"), f"{repo_id}/{MODEL_INDEX}")
    origin = _Origin(root, repo_id=repo_id, revision=hub["revision"], commit=info.sha, listing=files,
                     fetch_options=download)
    pipeline_cls = _pipeline_class(cls, class_name, f"{MODEL_INDEX} of {repo_id}", options, origin)
    wanted: list[str] = []
    for name in pipeline_cls.component_names():
        entry = entries.get(name)
        if name in passed or entry is None or entry.library is None:
            continue
        wanted += _component_files(name, entry, origin, options)
    # Files the listing lacks are not asked for: loading then says what the component misses.
    for filename in sorted(set(wanted) & files):
        try:
            hf_hub_download(repo_id, filename, revision=info.sha, **download)
        except (HfHubHTTPError, LocalEntryNotFoundError, *network_errors()) as exc:
            raise CheckpointError(f"downloading {filename} of Hub repo {repo_id!r} failed: {exc}") from None
    # Loading continues from the snapshot folder, reusing the code modules resolved here.
    origin.listing = None
    return origin, pipeline_cls


def _cached_origin(folder: Path, repo_id: str, revision: str | None) -> _Origin:
    """The origin of a snapshot taken from the Hub cache (its folder is named after its commit)."""
    return _Origin(folder, repo_id=repo_id, revision=revision, commit=folder.name)


def _component_files(name: str, entry: ComponentEntry, origin: _Origin, options: dict[str, Any]) -> list[str]:
    assert origin.listing is not None
    prefix = f"{name}/"
    in_folder = sorted(f for f in origin.listing if f.startswith(prefix))
    how, target = _component_target(name, entry, f"{MODEL_INDEX} of {origin.repo_id}", origin, options)
    if how == "loader":
        if hasattr(target, "files_needed"):
            names = {f[len(prefix):] for f in in_folder}
            chosen = target.files_needed(entry.class_name, names, variant=options.get("variant"),
                                         use_safetensors=options.get("use_safetensors"),
                                         allow_pickle=options.get("allow_pickle", False))
            return [prefix + n for n in chosen]
        return [f for f in in_folder if target_files_match(target, f)]
    if issubclass(target, Model):
        names = {f[len(prefix):] for f in in_folder}
        variant = options.get("variant")
        if variant and not any(variant in n.split(".")[1:-1] or f".{variant}-" in n for n in names):
            variant = None
        chosen = select_weight_files(names, target.weights_name, variant, options.get("use_safetensors"),
                                     options.get("allow_pickle", False))
        return [f"{prefix}{target.config_name}", *(prefix + n for n in chosen)]
    return [f for f in in_folder if f.endswith(".json")]


def target_files_match(loader: Any, filename: str) -> bool:
    """Files a component loader needs: all but other formats' weights."""
    wanted = getattr(loader, "wanted_file", None)
    if wanted is not None:
        return bool(wanted(filename))
    return not filename.endswith((".bin", ".msgpack", ".h5", ".onnx", ".pb", ".ot"))


# -- saving --------------------------------------------------------------------------------
def component_entry(component: Any) -> ComponentEntry:
    """The ``[library, ClassName]`` written for a component (``diffusers`` for our own classes)."""
    if component is None:
        return ComponentEntry(None, None)
    if isinstance(component, (Model, Scheduler, Processor)):
        code = code_file_of(type(component))
        # a class diffusers files under one of its pipeline modules names it (``model_index_library``)
        library = getattr(type(component), "model_index_library", None) or "diffusers"
        return ComponentEntry(library if code is None else code[0], type(component).__name__)
    for loader_entry in registry.entries("component_loader"):
        loader = _loader_for(loader_entry.name, "save_pretrained")
        if loader.owns(component):
            naming = getattr(loader, "entry_class_name", None)  # optional: the name the library resolves
            return ComponentEntry(loader_entry.name, naming(component) if naming else type(component).__name__)
    raise CheckpointError(
        f"cannot save a component of type {type(component).__name__}: it is not a diffkit model, scheduler or "
        "processor, and no component loader owns it"
    )


def save_component(component: Any, folder: Path, **options: Any) -> None:
    """Write one component into ``folder``, with its ``<library>.py`` when remote code defined its class."""
    if isinstance(component, (Model, Scheduler, Processor)):
        if isinstance(component, Model):
            component.save_pretrained(folder, **{k: v for k, v in options.items() if v is not None})
        else:
            component.save_pretrained(folder)
        code = code_file_of(type(component))
        if code is not None:
            shutil.copyfile(code[1], folder / f"{code[0]}.py")
    else:
        entry = component_entry(component)
        _loader_for(entry.library, "save_pretrained").save(component, folder, **options)

