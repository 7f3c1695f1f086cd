"""Typed configuration on pydantic, read and written in the diffusers JSON layout.

Each configurable class (model, scheduler, processor) declares a :class:`Config` subclass
with typed fields and defaults. Files keep every key: unknown keys are preserved and written
back (reported once), and ``_``-prefixed metadata such as ``_class_name`` and
``_diffusers_version`` is kept apart from the fields. A bad value raises
:class:`~diffkit.errors.ConfigError` naming the file, the field, the value and what is allowed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import pydantic
from pydantic import ConfigDict, PrivateAttr

from ._fs import check_folder_links
from .checkpoint import read_json, write_json
from .errors import CheckpointError, ConfigError

logger = logging.getLogger("diffkit.config")

#: the diffusers on-disk format we read and write; stamped into files that carry no version
DIFFUSERS_FORMAT_VERSION = "0.42.1"

_reported: set[tuple[str, frozenset[str]]] = set()
#: fields that size a table built at construction, with their largest sane value: a file saying
#: ``num_train_timesteps: 1e10`` must be an error naming it, not a 40 GB allocation
SIZE_LIMITS = {"num_train_timesteps": 1_000_000}


def _format_validation_error(exc: pydantic.ValidationError, owner: str, source: str | None) -> str:
    where = source or owner
    lines = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"]) or "(root)"
        allowed = (err.get("ctx") or {}).get("expected")
        line = f"{where}: field {loc!r} of {owner}: got {err.get('input')!r}; {err['msg']}"
        if allowed:
            line += f" (allowed values: {allowed})"
        lines.append(line)
    return "invalid configuration\n" + "\n".join(lines)


class Config(pydantic.BaseModel):
    """Base of every typed configuration.

    Read access works like diffusers' config: ``config.sample_size``, ``config["sample_size"]``,
    ``config.get("x")``. Configs are immutable; :meth:`replace` returns an updated copy.
    """

    model_config = ConfigDict(extra="allow", frozen=True, protected_namespaces=(), validate_default=True)

    _meta: dict[str, Any] = PrivateAttr(default_factory=dict)

    #: the class that owns this config; used in messages and in ``_class_name``
    owner_name: ClassVar[str] = ""

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        source: str | os.PathLike[str] | None = None,
        report_unknown: bool = True,
        **overrides: Any,
    ) -> Self:
        """Validate ``data`` (and ``overrides``, which win); ``source`` names the file in errors."""
        owner = cls.owner_name or cls.__name__
        where = str(source) if source is not None else None
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where or owner}: a config must be a mapping, got {type(data).__name__}")
        meta = {k: v for k, v in data.items() if isinstance(k, str) and k.startswith("_")}
        body = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("_"))}
        for key, value in overrides.items():
            if key.startswith("_"):
                meta[key] = value
            else:
                body[key] = value
        unknown = frozenset(k for k in body if k not in cls.model_fields)
        if unknown and report_unknown and (owner, unknown) not in _reported:
            _reported.add((owner, unknown))
            logger.warning(
                "%s: keys %s are not used by %s; they are kept and written back unchanged",
                where or "config",
                ", ".join(sorted(unknown)),
                owner,
            )
        try:
            config = cls.model_validate(body)
        except pydantic.ValidationError as exc:
            raise ConfigError(_format_validation_error(exc, owner, where)) from None
        for name, limit in SIZE_LIMITS.items():
            value = getattr(config, name, None)
            if isinstance(value, int) and value > limit:
                raise ConfigError(
                    f"invalid configuration\n{where or owner}: field {name!r} of {owner}: got {value!r}; it must be at "
                    f"most {limit:_} (tables of that many entries are built from it)"
                )
        config._meta.update(meta)
        return config

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **overrides: Any) -> Self:
        return cls.from_dict(read_json(path), source=path, **overrides)

    # -- reading --------------------------------------------------------------------
    @property
    def meta(self) -> dict[str, Any]:
        """``_``-prefixed keys read from the file (``_class_name``, ``_diffusers_version``, ...)."""
        return dict(self._meta)

    @property
    def extras(self) -> dict[str, Any]:
        """Keys the owning class does not use, kept for the round trip."""
        return dict(self.__pydantic_extra__ or {})

    def __getitem__(self, key: str) -> Any:
        if key in type(self).model_fields or key in (self.__pydantic_extra__ or {}):
            return getattr(self, key)
        if key in self._meta:
            return self._meta[key]
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (key in self.keys())

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def keys(self) -> list[str]:
        return [*type(self).model_fields, *(self.__pydantic_extra__ or {}), *self._meta]

    def items(self) -> list[tuple[str, Any]]:
        return [(k, self[k]) for k in self.keys()]

    # -- writing --------------------------------------------------------------------
    def to_dict(self, *, explicit_only: bool = False) -> dict[str, Any]:
        """A JSON-ready dict with fields, extras and metadata.

        ``explicit_only`` leaves out fields that hold their class default without having been
        given, so that swapping classes with :meth:`Configurable.from_config` does not impose
        one class's defaults on another.
        """
        fields = self.model_dump(mode="json")
        if explicit_only:
            given = self.model_fields_set | set(self.__pydantic_extra__ or {})
            fields = {k: v for k, v in fields.items() if k in given}
        return {**fields, **self._meta}

    def replace(self, **updates: Any) -> Self:
        """A validated copy with ``updates`` applied."""
        data = self.to_dict()
        return type(self).from_dict(data, report_unknown=False, **updates)


def _without_rejected_values(
    config_class: type[Config], data: Mapping[str, Any], overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """``data`` from another class's config, less the values ``config_class`` rejects (reported once).

    A key that another family defines more widely (DDPM's ``variance_type='fixed_small'`` where
    DPM-Solver allows only the learned kinds) must not stop a swap: the target keeps its own
    default for it, as diffusers' classes ignore values they do not use. Values the caller passes
    in ``overrides`` are never dropped, so a bad override is still an error naming it.
    """
    body = {k: v for k, v in data.items() if not k.startswith("_")}
    probe = {**body, **{k: v for k, v in overrides.items() if not k.startswith("_")}}
    try:
        config_class.model_validate(probe)
        return dict(data)
    except pydantic.ValidationError as exc:
        rejected = {err["loc"][0] for err in exc.errors() if err["loc"]} & (body.keys() - overrides.keys())
    owner = config_class.owner_name or config_class.__name__
    key = (f"{owner} (swap)", frozenset(map(str, rejected)))
    if rejected and key not in _reported:
        _reported.add(key)
        logger.warning(
            "%s: %s from %s are not values it accepts; it uses its own defaults for them",
            owner,
            ", ".join(f"{k}={body[k]!r}" for k in sorted(map(str, rejected))),
            data.get("_class_name") or "the source config",
        )
    return {k: v for k, v in data.items() if k not in rejected}


class Configurable:
    """Mixin for classes built from a :class:`Config`: models, schedulers, processors."""

    config_class: ClassVar[type[Config]] = Config
    config_name: ClassVar[str] = "config.json"
    config: Config

    def _init_config(self, config: Config | Mapping[str, Any] | None, kwargs: Mapping[str, Any]) -> Config:
        cls = type(self)
        if config is None:
            built = cls.config_class.from_dict({}, **kwargs)
        elif isinstance(config, cls.config_class) and not kwargs:
            built = config
        elif isinstance(config, Config):
            built = cls.config_class.from_dict(config.to_dict(), report_unknown=False, **kwargs)
        else:
            built = cls.config_class.from_dict(config, **kwargs)
        built._meta["_class_name"] = cls.__name__
        object.__setattr__(self, "config", built)
        return built

    @classmethod
    def from_config(cls, config: Config | Mapping[str, Any] | None = None, /, **overrides: Any) -> Self:
        """Build from a config of this class or of a compatible one (scheduler swaps).

        Keys the target does not use are kept (and written back); fields that the source only
        held as its own defaults are not imposed on the target.
        """
        if isinstance(config, Config):
            swap = not isinstance(config, cls.config_class)
            data = config.to_dict(explicit_only=swap)
            if swap:
                data = _without_rejected_values(cls.config_class, data, overrides)
            data.pop("_class_name", None)
            built = cls.config_class.from_dict(data, report_unknown=False, **overrides)
        else:
            data = dict(config or {})
            if data.get("_class_name", cls.__name__) != cls.__name__:
                data = _without_rejected_values(cls.config_class, data, overrides)
            built = cls.config_class.from_dict(data, **overrides)
        return cls(built)  # type: ignore[call-arg]

    @classmethod
    def load_config(cls, path: str | os.PathLike[str], subfolder: str | None = None) -> dict[str, Any]:
        """Read ``config_name`` from a folder (``subfolder`` first) or from a file path."""
        path = Path(path)
        if path.is_file():
            return read_json(path)
        folder = path / subfolder if subfolder else path
        candidate = folder / cls.config_name
        if not candidate.is_file() and subfolder:
            raise CheckpointError(
                f"{candidate} does not exist: the folder {path} has no subfolder {subfolder!r} with a {cls.config_name}"
            )
        return read_json(candidate)

    def config_dict(self) -> dict[str, Any]:
        """What :meth:`save_config` writes."""
        data = self.config.to_dict()
        data["_class_name"] = type(self).__name__
        data.setdefault("_diffusers_version", DIFFUSERS_FORMAT_VERSION)
        for private in ("_name_or_path", "_use_default_values", "_ignore_files", "_pre_quantization_dtype"):
            data.pop(private, None)
        return data

    def save_config(self, directory: str | os.PathLike[str]) -> Path:
        directory = Path(directory)
        if directory.is_file():
            raise ConfigError(f"save_config: {directory} is a file, expected a folder")
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / self.config_name
        write_json(target, self.config_dict())
        return target

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike[str],
        subfolder: str | None = None,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        force_download: bool = False,
        local_files_only: bool | None = None,
        token: str | bool | None = None,
        proxies: dict[str, str] | None = None,
        allow_external_symlinks: bool = False,
        **overrides: Any,
    ) -> Self:
        """Build from ``config_name`` in a folder, ``folder/subfolder`` or a Hub repo (config-only classes).

        A config file that links outside its folder is refused unless ``allow_external_symlinks=True``.
        """
        from .hub import resolve_config_folder

        folder = resolve_config_folder(
            pretrained_model_name_or_path,
            subfolder=subfolder,
            config_name=cls.config_name,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
            proxies=proxies,
        )
        if not allow_external_symlinks:
            check_folder_links(pretrained_model_name_or_path, subfolder, folder, [cls.config_name])
        data = cls.load_config(folder)
        if data.get("_class_name", cls.__name__) != cls.__name__:  # another class's file: a swap
            data = _without_rejected_values(cls.config_class, data, overrides)
        config = cls.config_class.from_dict(data, source=folder / cls.config_name, **overrides)
        return cls(config)  # type: ignore[call-arg]

    def save_pretrained(self, save_directory: str | os.PathLike[str], **_: Any) -> Path:
        """Write the config file into ``save_directory`` (config-only classes have no weights)."""
        return self.save_config(save_directory)
