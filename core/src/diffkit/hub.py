"""Where checkpoint files come from: a local folder, or a Hub repo through ``huggingface_hub``.

Only the files that will be used are fetched: the config, and the weight files of the chosen
format and variant. ``local_files_only`` (or ``HF_HUB_OFFLINE=1``) reads the standard Hub
cache without touching the network.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from .errors import CheckpointError, MissingFileError
from .weights import SHARD_GLOB, _formats, weight_file_candidates

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def is_repo_id(value: str) -> bool:
    return bool(_REPO_ID.match(value)) and ".." not in value and not value.endswith(".")


def hub_kwargs(
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    force_download: bool = False,
    local_files_only: bool | None = None,
    token: str | bool | None = None,
    proxies: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The keyword arguments that go to ``huggingface_hub`` download functions."""
    if local_files_only is None:
        local_files_only = is_offline()
    kwargs: dict[str, Any] = {
        "revision": revision,
        "cache_dir": cache_dir,
        "force_download": force_download,
        "local_files_only": local_files_only,
        "token": token,
    }
    if proxies:
        kwargs["proxies"] = proxies  # older huggingface_hub releases only
    return kwargs


def is_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) as huggingface_hub reads it: 1/ON/YES/TRUE, any case."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in ("1", "ON", "YES", "TRUE")


def network_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the Hub cannot be reached" for the installed huggingface_hub.

    Its HTTP library (``requests`` in older releases, ``httpx``/``httpx2`` later) is already
    imported when a call fails, so only the modules already loaded are looked at.
    """
    from huggingface_hub.errors import OfflineModeIsEnabled

    found: list[type[BaseException]] = [OfflineModeIsEnabled]
    for module_name, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                               ("requests", ("ConnectionError", "Timeout"))):
        module = sys.modules.get(module_name)
        found += [getattr(module, n) for n in names if module is not None and hasattr(module, n)]
    return tuple(found)


def hub_error(
    repo_id: str, revision: str | None, exc: BaseException, local_files_only: bool | None = None
) -> CheckpointError:
    """One clear :class:`CheckpointError` naming ``repo_id`` for an error of huggingface_hub."""
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(exc, RepositoryNotFoundError):
        return CheckpointError(f"{repo_id!r} is not a Hub repo (or it is private or gated: pass token=...)")
    if isinstance(exc, RevisionNotFoundError):
        return CheckpointError(f"Hub repo {repo_id!r} has no revision {revision!r} (no such branch, tag or commit)")
    if isinstance(exc, LocalEntryNotFoundError):
        offline = is_offline() if local_files_only is None else local_files_only
        return not_cached_error(repo_id, revision, unreachable=None if offline else exc)
    return CheckpointError(f"downloading {repo_id!r} failed: {exc}")


def cache_folder(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The Hub cache that is read: ``cache_dir``, else ``HF_HUB_CACHE`` as huggingface_hub resolved it."""
    if cache_dir is not None:
        return Path(cache_dir)
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def network_reason(exc: BaseException) -> str:
    """The network failure behind ``exc`` in a few words (huggingface_hub wraps it in its own error)."""
    unreachable = network_errors()
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, unreachable):
        cause = cause.__cause__ or cause.__context__
    first = cause if cause is not None else exc
    text = str(first).strip().splitlines()[0] if str(first).strip() else ""
    return f"{type(first).__name__}: {text}" if text else type(first).__name__


def not_cached_error(
    repo_id: str,
    revision: str | None,
    *,
    unreachable: BaseException | None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> CheckpointError:
    """The one message for a Hub repo that is not in the cache and cannot be downloaded now.

    ``unreachable`` is the network error when a download was tried, ``None`` when downloading
    was switched off (``local_files_only``, ``HF_HUB_OFFLINE``). It says how to get the files.
    """
    name = f"{repo_id!r}" + (f"@{revision}" if revision else "")
    cache = cache_folder(cache_dir)
    if unreachable is None:
        return CheckpointError(
            f"{name} is not in the local Hub cache ({cache}) and downloading is switched off (HF_HUB_OFFLINE=1 or "
            "local_files_only=True / --local-files-only): allow downloads once to fetch it, or pass the path of a "
            "folder that holds the checkpoint"
        )
    return CheckpointError(
        f"cannot reach the Hub ({network_reason(unreachable)}) and {name} is not in the local Hub cache ({cache}). "
        "Download it once with network access (then HF_HUB_OFFLINE=1 or local_files_only=True / "
        "--local-files-only loads it from the cache without trying the network), or pass the path of a folder "
        "that holds the checkpoint"
    )


def hub_unreachable(repo_id: str, revision: str | None = None, token: str | bool | None = None) -> BaseException | None:
    """The network error when the Hub cannot be reached now, else ``None``.

    One request and no retries: huggingface_hub's file downloads retry a failed connection for
    about 25 s, so callers ask this first and go to the cache at once when the Hub is away.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        HfApi(token=token).repo_info(repo_id, revision=revision)
    except HfHubHTTPError:  # the Hub answered (e.g. no such repo): the download reports it
        return None
    except network_errors() as exc:
        return exc
    return None


def _check_source(path_or_repo: str | os.PathLike[str]) -> tuple[Path | None, str | None]:
    """(local folder, None) or (None, repo id); anything else raises naming the argument."""
    if isinstance(path_or_repo, os.PathLike) or Path(str(path_or_repo)).exists():
        path = Path(path_or_repo)
        if not path.is_dir():
            raise CheckpointError(f"{path} is not a folder; pass the checkpoint folder or a Hub repo id")
        return path, None
    text = str(path_or_repo)
    if not is_repo_id(text):
        raise CheckpointError(
            f"{text!r} is neither an existing local folder nor a valid Hub repo id ('org/name')"
        )
    return None, text


def download_files(repo_id: str, allow_patterns: list[str], **kwargs: Any) -> Path:
    """``snapshot_download`` of the matching files; maps Hub errors to one clear message."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    kwargs = {k: v for k, v in kwargs.items() if k != "proxies"}
    try:
        return Path(snapshot_download(repo_id, allow_patterns=allow_patterns, **kwargs))
    except LocalEntryNotFoundError as exc:
        unreachable = None if kwargs.get("local_files_only") else exc
        raise not_cached_error(
            repo_id, kwargs.get("revision"), unreachable=unreachable, cache_dir=kwargs.get("cache_dir")
        ) from None
    except HfHubHTTPError as exc:
        raise hub_error(repo_id, kwargs.get("revision"), exc) from None


def resolve_model_folder(
    path_or_repo: str | os.PathLike[str],
    *,
    subfolder: str | None,
    config_name: str,
    weights_name: str,
    variant: str | None,
    use_safetensors: bool | None,
    allow_pickle: bool,
    **hub: Any,
) -> Path:
    """The local folder holding one model's config and weights (downloading only those)."""
    local, repo_id = _check_source(path_or_repo)
    if local is not None:
        folder = local / subfolder if subfolder else local
        if not folder.is_dir():
            raise MissingFileError(f"{local} has no subfolder {subfolder!r}")
        if not (folder / config_name).is_file():
            raise MissingFileError(f"{folder} has no {config_name}: is it a model folder?")
        return folder
    assert repo_id is not None
    prefix = f"{subfolder}/" if subfolder else ""
    patterns = [prefix + config_name]
    for ext in _formats(use_safetensors, allow_pickle):
        patterns += [prefix + n for n in weight_file_candidates(weights_name, ext, variant)]
        if variant:  # diffusers' name (a-00001-of-00002.fp16.ext), then the legacy one (a.fp16-00001-of-00002.ext)
            patterns += [f"{prefix}{weights_name}{SHARD_GLOB}.{variant}.{ext}", f"{prefix}{weights_name}.{variant}{SHARD_GLOB}.{ext}"]
        else:
            patterns.append(f"{prefix}{weights_name}{SHARD_GLOB}.{ext}")
    root = download_files(repo_id, patterns, **hub_kwargs(**hub))
    folder = root / subfolder if subfolder else root
    if not (folder / config_name).is_file():
        raise MissingFileError(f"Hub repo {repo_id!r} has no {prefix}{config_name}")
    return folder


def resolve_config_folder(
    path_or_repo: str | os.PathLike[str], *, subfolder: str | None, config_name: str, **hub: Any
) -> Path:
    """The local folder holding one config file (schedulers, processors)."""
    local, repo_id = _check_source(path_or_repo)
    if local is not None:
        folder = local / subfolder if subfolder else local
        if not (folder / config_name).is_file():
            raise MissingFileError(f"{folder} has no {config_name}")
        return folder
    assert repo_id is not None
    prefix = f"{subfolder}/" if subfolder else ""
    root = download_files(repo_id, [prefix + config_name], **hub_kwargs(**hub))
    folder = root / subfolder if subfolder else root
    if not (folder / config_name).is_file():
        raise MissingFileError(f"Hub repo {repo_id!r} has no {prefix}{config_name}")
    return folder


def push_folder(folder: Path, repo_id: str, *, commit_message: str = "Upload with diffkit", private: bool | None = None,
                token: str | None = None, create_pr: bool = False) -> str:
    """Create ``repo_id`` if needed and upload ``folder``; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message,
                             create_pr=create_pr)
    return str(info)
