"""Filesystem helpers shared by everything that writes or reads checkpoints.

Saving is a small transaction inside the target folder, so that it never removes what it did
not write and works on any folder (``"."`` included):

1. every file is written into a staging folder ``<target>/.diffkit-save-*/files/``;
2. a journal naming the files to move and the stale files of ours to remove is written
   atomically: from then on the save counts as done;
3. each file is renamed over its namesake in ``target``, then the stale files go.

A save killed before step 2 leaves the old checkpoint untouched; one killed during step 3 is
finished by the next save or load of that folder (:func:`recover`), which also removes the
staging folders of saves that died. A live save holds an ``flock`` on its staging folder, so
a concurrent load never touches it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; staging folders are judged by age
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("diffkit.save")

STAGING_PREFIX = ".diffkit-save-"
_FILES = "files"
_JOURNAL = "journal.json"
#: without locks, an unfinished staging folder this old (seconds) belongs to a dead save
_STALE_AGE = 600.0
_STAGING_IN_PATH = re.compile(r"[/\\]" + re.escape(STAGING_PREFIX) + r"[^/\\]+[/\\]" + _FILES)
# weight files and shard indexes of one family: (base, format, variant)
_WEIGHT_FILE = re.compile(
    r"^(?P<base>[^.\-]+)(?:-\d{5}-of-\d{5})?(?:\.(?P<variant>[^.]+))?\.(?P<ext>safetensors|bin)$"
)
_INDEX_FILE = re.compile(
    r"^(?P<base>[^.]+)\.(?P<ext>safetensors|bin)(?:\.index)?(?:\.(?P<variant>[^.]+))?(?:\.index)?\.json$"
)


def shown_path(path: str | os.PathLike[str]) -> str:
    """``path`` as the user knows it: a file being staged is named by where it will land."""
    text = os.fspath(path)
    while True:
        stripped = _STAGING_IN_PATH.sub("", text, count=1)
        if stripped == text:
            return text
        text = stripped


def write_error(path: str | os.PathLike[str], exc: OSError) -> OSError:
    """An ``OSError`` (same errno) that names the file whose write failed."""
    reason = exc.strerror or str(exc)
    return OSError(exc.errno, f"writing {shown_path(path)} failed: {reason}; the checkpoint there is unchanged")


def _weight_family(name: str) -> tuple[str, str, str | None] | None:
    if ".index" in name:
        match = _INDEX_FILE.match(name)
    else:
        match = _WEIGHT_FILE.match(name)
    if match is None:
        return None
    return match["base"], match["ext"], match["variant"]


def stale_files(target: Path, written: list[str]) -> list[str]:
    """Files of ``target`` that the new weights make stale: other shards/indexes of a family we wrote.

    A sharded save makes the single file of the same base, format and variant stale and the
    other way round; files of other variants or formats, and every file we do not name, stay.
    """
    families: dict[str, set[tuple[str, str, str | None]]] = {}
    names: dict[str, set[str]] = {}
    for rel in written:
        folder, _, name = rel.rpartition("/")
        names.setdefault(folder, set()).add(name)
        family = _weight_family(name)
        if family is not None:
            families.setdefault(folder, set()).add(family)
    stale = []
    for folder, wanted in families.items():
        existing = target / folder if folder else target
        if not existing.is_dir():
            continue
        for entry in existing.iterdir():
            if entry.name in names[folder] or not entry.is_file():
                continue
            if _weight_family(entry.name) in wanted:
                stale.append(f"{folder}/{entry.name}" if folder else entry.name)
    return sorted(stale)


def _lock(folder: Path) -> int | None:
    """An open descriptor holding an exclusive ``flock`` on ``folder``; ``None`` if another process holds it."""
    if fcntl is None:
        return -1
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None and fd >= 0:
        os.close(fd)


def _apply(target: Path, staging: Path, journal: dict[str, list[str]]) -> None:
    """Move the staged files over their namesakes, then remove the stale ones (idempotent)."""
    files = staging / _FILES
    for rel in journal["moves"]:
        src = files / rel
        if not src.exists():
            continue  # moved before the save was interrupted
        dst = target / rel
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
        except OSError as exc:
            raise write_error(dst, exc) from None
    for rel in journal["remove"]:
        with contextlib.suppress(FileNotFoundError):
            (target / rel).unlink()


def recover(target: str | os.PathLike[str]) -> None:
    """Finish the committed saves into ``target`` that were interrupted; remove dead saves' leftovers.

    Called before every save and load of a folder. Staging folders of saves still running are
    left alone. A folder that cannot be written (read-only media) is only reported.
    """
    target = Path(target)
    try:
        candidates = [p for p in target.iterdir() if p.name.startswith(STAGING_PREFIX) and p.is_dir()]
    except OSError:
        return
    for staging in candidates:
        try:
            _recover_one(target, staging)
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("%s holds an unfinished save that cannot be cleaned up: %s", staging, exc)
    _recover_legacy(target)


def _recover_one(target: Path, staging: Path) -> None:
    fd = _lock(staging)
    if fd is None:
        return  # a save in progress
    try:
        journal_path = staging / _JOURNAL
        if fcntl is None and not journal_path.exists() and time.time() - staging.stat().st_mtime < _STALE_AGE:
            return
        if journal_path.exists():
            journal = json.loads(journal_path.read_text(encoding="utf-8"))
            _apply(target, staging, journal)
            logger.info("finished an interrupted save into %s", target)
        shutil.rmtree(staging, ignore_errors=True)
    finally:
        _unlock(fd)


def _recover_legacy(target: Path) -> None:
    """Leftovers beside ``target`` of the whole-folder swap that earlier releases used."""
    parent = target.resolve().parent
    name = target.resolve().name
    try:
        beside = [p for p in parent.iterdir() if p.name.startswith(f".{name}.")]
    except OSError:
        return
    for path in beside:
        rest = path.name[len(name) + 2:]
        if rest.startswith("partial-"):
            shutil.rmtree(path, ignore_errors=True)
        elif rest.startswith("old-"):
            kept = path / name
            if kept.is_dir() and not target.exists():
                os.replace(kept, target)
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def atomic_save(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a staging folder whose files replace their namesakes in ``target`` if the block succeeds.

    Nothing else in ``target`` is touched, except stale shards of the weights written (see
    :func:`stale_files`). An exception or a kill inside the block leaves ``target`` as it was.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"cannot save into {target}: it exists and is not a folder")
    try:
        target.mkdir(parents=True, exist_ok=True)
        recover(target)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=target))
    except OSError as exc:
        raise write_error(target, exc) from None
    fd = _lock(staging)
    try:
        files = staging / _FILES
        files.mkdir()
        yield files
        moves = sorted(p.relative_to(files).as_posix() for p in files.rglob("*") if not p.is_dir())
        journal = {"moves": moves, "remove": stale_files(target, moves)}
        partial = staging / f"{_JOURNAL}.partial"
        partial.write_text(json.dumps(journal), encoding="utf-8")
        os.replace(partial, staging / _JOURNAL)  # the commit point
        _apply(target, staging, journal)
        shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        if not (staging / _JOURNAL).exists():
            shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        _unlock(fd)


#: the Hub cache's repo folders: ``<cache>/models--org--name/snapshots/<commit>/`` links into ``.../blobs/``
_HUB_REPO_PREFIXES = ("models--", "datasets--", "spaces--")
LINKS_OPT_OUT = "allow_external_symlinks"


def _allowed_roots(root: Path) -> list[Path]:
    """Where the files of ``root`` may lead: ``root`` itself, and the blobs of its Hub cache repo."""
    allowed = [root.resolve()]
    absolute = root.absolute()
    for folder in (absolute, *absolute.parents):
        if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith(_HUB_REPO_PREFIXES):
            allowed.append((folder.parent.parent / "blobs").resolve())
            break
    return allowed


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def check_links(root: Path, names: list[str]) -> None:
    """Refuse ``root/name`` (recursively for folders) where a symlink leads outside ``root``.

    The Hub cache's own layout, snapshot files linking into that repo's ``blobs/``, is allowed.
    Raises :class:`~diffkit.errors.CheckpointError` naming the link and the opt-out argument.
    """
    from .errors import CheckpointError

    roots = _allowed_roots(root)
    pending = [root / name for name in names]
    while pending:
        path = pending.pop()
        if not os.path.lexists(path):
            continue
        real = path.resolve()
        if not _inside(real, roots):
            raise CheckpointError(
                f"{path} leads to {real}, outside the checkpoint folder {root}: a checkpoint may only link to "
                f"files inside itself (or, in the Hub cache, into its repo's blobs/). If you made this link on "
                f"purpose, pass {LINKS_OPT_OUT}=True."
            )
        if path.is_dir() and not path.is_symlink():
            pending.extend(path.iterdir())


def check_folder_links(source: str | os.PathLike[str], subfolder: str | None, folder: Path, names: list[str]) -> None:
    """:func:`check_links` for one model or config folder.

    With a ``subfolder`` of a local folder, the checkpoint is the folder the caller named: the
    subfolder itself (a link out of it, say) and everything in it are checked.
    """
    given = Path(source)
    if subfolder and given.is_dir():
        check_links(given, [subfolder])
    else:
        check_links(folder, names)


def safe_child(root: Path, name: str, what: str) -> Path:
    """``root / name`` for a single path component coming from a JSON file; refuses escapes."""
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or os.path.isabs(name)
    ):
        raise ValueError(f"{what}: {name!r} is not a plain name (no '/', '\\\\', '..' or absolute paths)")
    return root / name
