"""A loopback stand-in for the Hugging Face Hub, for tests (standard library only).

It serves model repos registered in-process, one or more commits each, through the endpoints
that ``huggingface_hub`` calls to find and download files:

``GET /api/models/{repo_id}`` and ``GET /api/models/{repo_id}/revision/{revision}``
    repo info (``HfApi.model_info`` / ``repo_info``): ``id``, ``sha`` and ``siblings``
    (with ``size``/``blobId``/``lfs`` when ``?blobs=true``).
``GET /api/models/{repo_id}/tree/{revision}[/{path}]``
    tree listing (``HfApi.list_repo_tree``), ``?recursive=`` honoured; paginated with a
    ``Link: <...>; rel="next"`` header when the server has a ``page_size``.
``HEAD`` and ``GET /{repo_id}/resolve/{revision}/{path}``
    file metadata and content (``hf_hub_download``): ``X-Repo-Commit``, ``ETag`` (git blob
    sha1, or sha256 for LFS-tracked weight files, as on the Hub), ``Content-Length``;
    single ``Range: bytes=a-b`` requests are answered with 206.

Errors carry the ``X-Error-Code`` header that ``huggingface_hub.utils.hf_raise_for_status``
maps to exceptions: ``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound`` (404). Revisions
are branch names or full 40-hex commit shas; a commit's sha is a fixed hash of the repo id and
its files, so the same content always gets the same sha.

Every request (method, unquoted path, query) is recorded, so tests can assert exactly what a
client fetched. The server binds 127.0.0.1 on a free port, answers with HTTP/1.0 (one request
per connection, so no connection outlives its request) and :meth:`HubServer.stop` joins every
thread it started, with a bound.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

#: files stored with Git LFS on the Hub (their ETag and tree entry use the sha256)
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5", ".onnx", ".gguf", ".pkl")
_COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_DATE = "2024-01-01T00:00:00.000Z"


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob holding ``data``."""
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Request:
    """One request the server received; ``path`` is unquoted and has no query string."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    raw_path: str = ""  # as sent, still quoted


@dataclass(frozen=True)
class RepoFile:
    data: bytes
    blob_id: str
    sha256: str | None  # set for LFS-tracked files

    @classmethod
    def build(cls, path: str, data: bytes) -> RepoFile:
        if path.endswith(LFS_SUFFIXES):
            sha256 = hashlib.sha256(data).hexdigest()
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n"
            return cls(data, git_blob_sha1(pointer.encode()), sha256)
        return cls(data, git_blob_sha1(data), None)

    @property
    def etag(self) -> str:
        return self.sha256 or self.blob_id


@dataclass
class HubRepo:
    repo_id: str
    commits: dict[str, dict[str, RepoFile]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None


class HubServer:
    """The loopback Hub. Use as a context manager, or call :meth:`start` and :meth:`stop`."""

    def __init__(self, page_size: int | None = None, request_timeout: float = 5.0) -> None:
        self.page_size = page_size
        self.request_timeout = request_timeout
        self._repos: dict[str, HubRepo] = {}
        self._requests: list[Request] = []
        self._lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- repos --------------------------------------------------------------------------
    def add_commit(self, repo_id: str, files: str | Path | Mapping[str, bytes], *, branch: str = "main") -> str:
        """Add a commit holding ``files`` (a folder, read now, or ``{path: bytes}``); point ``branch`` at it.

        Returns the commit sha: a hash of the repo id and the files, fixed for given content.
        """
        if isinstance(files, (str, Path)):
            root = Path(files)
            contents = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
        else:
            contents = dict(files)
        commit = {path: RepoFile.build(path, data) for path, data in sorted(contents.items())}
        digest = hashlib.sha1(repo_id.encode())
        for path, entry in commit.items():
            digest.update(f"\x00{path}\x00{entry.blob_id}".encode())
        sha = digest.hexdigest()
        with self._lock:
            repo = self._repos.setdefault(repo_id, HubRepo(repo_id))
            repo.commits[sha] = commit
            repo.refs[branch] = sha
        return sha

    def repo(self, repo_id: str) -> HubRepo | None:
        with self._lock:
            return self._repos.get(repo_id)

    # -- records ------------------------------------------------------------------------
    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def calls(self) -> list[tuple[str, str]]:
        """``(method, path)`` of every request so far, in order."""
        return [(r.method, r.path) for r in self.requests]

    def downloaded(self) -> set[str]:
        """Paths, inside their repo, of the files whose content was sent (``GET .../resolve/...``)."""
        found = set()
        for r in self.requests:
            route = _route(r.raw_path)
            if r.method == "GET" and route is not None and route[0] == "resolve":
                found.add(route[3])
        return found

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def _record(self, request: Request) -> None:
        with self._lock:
            self._requests.append(request)

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the hub server is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> HubServer:
        if self._httpd is not None:
            raise RuntimeError("the hub server is already running")
        handler = type("BoundHubHandler", (_HubHandler,), {"hub": self, "timeout": self.request_timeout})
        self._httpd = _HTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="loopback-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving, close the socket and join every thread; raises if one outlives ``timeout``."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        httpd.shutdown()  # returns once serve_forever has left its loop
        httpd.server_close()  # closes the socket and joins the request threads (bounded by their timeout)
        thread.join(timeout)
        self._httpd = self._thread = None
        if thread.is_alive():
            raise RuntimeError(f"the hub server thread did not stop within {timeout} s")

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _HTTPServer(ThreadingHTTPServer):
    # Request threads are joined on server_close(); each ends after one request or its socket timeout.
    daemon_threads = False
    block_on_close = True


def _route(path: str) -> tuple[str, str, str, str] | None:
    """``(kind, repo_id, revision, path_in_repo)`` of a quoted or unquoted URL path; ``None`` if not a Hub route.

    kind is ``info`` (revision may be ""), ``tree`` (path may be "") or ``resolve``.
    """
    segments = path.strip("/").split("/")
    if len(segments) >= 3 and segments[0] == "api" and segments[1] == "models":
        rest = segments[2:]
        for n in (2, 1):
            if len(rest) > n + 1 and rest[n] in ("revision", "tree"):
                repo_id = unquote("/".join(rest[:n]))
                revision = unquote(rest[n + 1])
                inner = unquote("/".join(rest[n + 2:]))
                if rest[n] == "revision":
                    return ("info", repo_id, revision, "") if not inner else None
                return ("tree", repo_id, revision, inner)
        if len(rest) in (1, 2):
            return ("info", unquote("/".join(rest)), "", "")
        return None
    for n in (2, 1):
        if len(segments) > n + 2 and segments[n] == "resolve":
            return ("resolve", unquote("/".join(segments[:n])), unquote(segments[n + 1]), unquote("/".join(segments[n + 2:])))
    return None


class _HubHandler(BaseHTTPRequestHandler):
    hub: HubServer  # set on the per-server subclass
    server_version = "LoopbackHub/1.0"
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # -- dispatch -----------------------------------------------------------------------
    def _handle(self, method: str) -> None:
        split = urlsplit(self.path)
        query = tuple(parse_qsl(split.query, keep_blank_values=True))
        self.hub._record(Request(method, unquote(split.path), query, split.path))
        route = _route(split.path)
        if route is None or method not in ("GET", "HEAD") or (route[0] != "resolve" and method != "GET"):
            self._send_json(404 if route is None else 405, {"error": f"no route for {method} {split.path}"}, method)
            return
        kind, repo_id, revision, inner = route
        repo = self.hub.repo(repo_id)
        if repo is None:
            self._send_error(method, "RepoNotFound", "Repository not found")
            return
        sha = repo.resolve(revision or "main")
        if sha is None:
            self._send_error(method, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        files = repo.commits[sha]
        params = dict(query)
        if kind == "info":
            self._send_json(200, self._info(repo_id, sha, files, _true(params.get("blobs"))), method)
        elif kind == "tree":
            self._tree(method, split.path, sha, files, inner, params)
        else:
            self._resolve(method, sha, files, inner)

    # -- endpoints ------------------------------------------------------------------------
    @staticmethod
    def _info(repo_id: str, sha: str, files: dict[str, RepoFile], blobs: bool) -> dict[str, Any]:
        siblings = []
        for path, entry in files.items():
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=len(entry.data), blobId=entry.blob_id)
                if entry.sha256:
                    sibling["lfs"] = {"size": len(entry.data), "sha256": entry.sha256, "pointerSize": 134}
            siblings.append(sibling)
        return {
            "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": repo_id.split("/")[0] if "/" in repo_id else None,
            "sha": sha,
            "lastModified": _DATE,
            "createdAt": _DATE,
            "private": False,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "library_name": "diffusers",
            "siblings": siblings,
            "usedStorage": sum(len(f.data) for f in files.values()),
        }

    def _tree(self, method: str, raw_path: str, sha: str, files: dict[str, RepoFile], inner: str,
              params: dict[str, str]) -> None:
        folders = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
        inner = inner.strip("/")
        if inner and inner not in folders:
            self._send_error(method, "EntryNotFound", f"{inner} does not exist on {sha}", sha)
            return
        prefix = f"{inner}/" if inner else ""
        recursive = _true(params.get("recursive"))

        def wanted(path: str) -> bool:
            return path.startswith(prefix) and (recursive or "/" not in path[len(prefix):])

        entries: list[dict[str, Any]] = []
        for folder in sorted(f for f in folders if wanted(f)):
            tree_id = hashlib.sha1(f"{sha}:{folder}".encode()).hexdigest()
            entries.append({"type": "directory", "oid": tree_id, "size": 0, "path": folder})
        for path in sorted(p for p in files if wanted(p)):
            entry = files[path]
            item: dict[str, Any] = {"type": "file", "oid": entry.blob_id, "size": len(entry.data), "path": path}
            if entry.sha256:
                item["lfs"] = {"oid": entry.sha256, "size": len(entry.data), "pointerSize": 134}
            entries.append(item)
        if _true(params.get("expand")):
            for item in entries:
                item["lastCommit"] = {"id": sha, "title": "Upload", "date": _DATE}
        headers = {}
        if self.hub.page_size:
            start = int(params.get("cursor", "0") or 0)
            end = start + self.hub.page_size
            if end < len(entries):
                next_query = urlencode({**params, "cursor": str(end)})
                headers["Link"] = f'<{self.hub.url}{raw_path}?{next_query}>; rel="next"'
            entries = entries[start:end]
        self._send_json(200, entries, method, headers)

    def _resolve(self, method: str, sha: str, files: dict[str, RepoFile], path: str) -> None:
        entry = files.get(path)
        if entry is None:
            self._send_error(method, "EntryNotFound", f"{path} does not exist on {sha}", sha)
            return
        headers = {
            "X-Repo-Commit": sha,
            "ETag": f'"{entry.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        body, status = entry.data, 200
        match = _RANGE.match(self.headers.get("Range", "") or "")
        if match and (match.group(1) or match.group(2)):
            size = len(entry.data)
            if match.group(1):
                first, last = int(match.group(1)), int(match.group(2) or size - 1)
            else:  # suffix range: the last N bytes
                first, last = max(size - int(match.group(2)), 0), size - 1
            last = min(last, size - 1)
            if first >= size or first > last:
                self._send(416, b"", method, {"Content-Range": f"bytes */{size}", "X-Repo-Commit": sha})
                return
            body, status = entry.data[first:last + 1], 206
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        self._send(status, body, method, headers)

    # -- responses ----------------------------------------------------------------------
    def _send_error(self, method: str, code: str, message: str, sha: str | None = None) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": message}
        if sha is not None:
            headers["X-Repo-Commit"] = sha
        self._send_json(404, {"error": message}, method, headers)

    def _send_json(self, status: int, data: Any, method: str, headers: Mapping[str, str] | None = None) -> None:
        body = json.dumps(data).encode()
        self._send(status, body, method, {"Content-Type": "application/json", **(headers or {})})

    def _send(self, status: int, body: bytes, method: str, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)


def _true(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")
