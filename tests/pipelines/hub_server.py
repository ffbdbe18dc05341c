"""A stand-in for the Hugging Face hub: the part of its HTTP API that huggingface_hub 2.4 uses to list and fetch
a repo, served from memory on 127.0.0.1, recording every request.

  GET      /api/models/{repo}[/revision/{rev}]     repo info (sha, siblings, gated), as HfApi.repo_info reads it
  GET      /api/models/{repo}/tree/{rev}[/{path}]  the file tree (?recursive=true), in pages linked by a
                                                   `Link: <...>; rel="next"` header, as list_repo_tree follows them
  HEAD/GET /{repo}/resolve/{rev}/{path}            a regular file: 200 with ETag (its git blob id), X-Repo-Commit;
                                                   an LFS file (weights): 302 to the "CDN" with X-Linked-Size,
                                                   X-Linked-Etag (its sha256) and X-Repo-Commit
  HEAD/GET {cdn}/repos/{repo}/{sha256}/{path}      the LFS bytes, with Range requests (206) for resuming

The CDN is a second server on another port, so that huggingface_hub, as with the real hub's CDN host, takes the
metadata from the redirect itself and fetches the bytes there. Errors come as the hub sends them: 404 with
X-Error-Code RepoNotFound, RevisionNotFound or EntryNotFound; 401 with GatedRepo for a gated repo's files.

Sizes: the tree lists each file at its real size (tests/data/hub_listings.json), while the bytes served are tiny
stand-ins (loadable tiny weights, or dummy bytes for files no loader reads) and HEAD and GET give those bytes'
length. huggingface_hub checks a download only against the HEAD's size, so a plan and the disk check see the real
repo while transfers stay small.

Why not `olah` (a hub mirror server on PyPI, which can serve git repos from disk offline): it serves what a local
git repo holds, at the size it holds, so it cannot list a 7.7 GB checkpoint while serving a few bytes; it cannot
cut a transfer, gate a repo or log requests for a test; and it would bring FastAPI, uvicorn, pydantic, GitPython
and peewee into requirements.txt for the tests alone.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import PurePosixPath
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")  # what the repos keep in LFS (their .gitattributes)


@dataclass
class StandInRepo:
    repo_id: str
    listed: dict[str, int]  # path -> bytes, as the real hub lists it
    content: dict[str, bytes] = field(default_factory=dict)  # what is served; a listed path without any: dummy bytes
    gated: bool = False

    @property
    def sha(self) -> str:
        return hashlib.sha1(f"stand-in commit of {self.repo_id}".encode()).hexdigest()

    def served(self, path: str) -> bytes:
        return self.content.get(path, f"stand-in bytes of {self.repo_id}/{path}\n".encode())


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # the URL path, unquoted
    query: str
    repo_id: str | None  # the repo the request is about, where it names one
    file: str | None  # the repo file whose bytes or metadata it asked for
    range: str | None  # its Range header
    status: int
    body_bytes: int  # bytes of body sent (0 for HEAD, redirects and errors)


def _is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class StandInHub:
    """`with StandInHub(repos) as hub:` serves `repos` at `hub.url` until the block ends."""

    def __init__(self, repos: list[StandInRepo], page_size: int = 1000):
        self.repos = {r.repo_id: r for r in repos}
        self.page_size = page_size  # tree entries per page (the real hub: 1000)
        self.requests: list[Request] = []
        self.cut_once: set[tuple[str, str]] = set()  # (repo, path): the next full GET of its bytes stops halfway
        self._lock = threading.Lock()
        self._servers = [ThreadingHTTPServer(("127.0.0.1", 0), self._handler(cdn)) for cdn in (False, True)]
        self.url, self.cdn_url = (f"http://127.0.0.1:{s.server_address[1]}" for s in self._servers)

    def __enter__(self) -> StandInHub:
        for server in self._servers:
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def downloads(self, repo_id: str) -> list[str]:
        """The files of `repo_id` whose bytes were sent (GETs with a body), in order."""
        return [
            r.file for r in self.requests if r.repo_id == repo_id and r.method == "GET" and r.body_bytes and r.file
        ]

    # ------------------------------------------------------------------ responses

    def _handler(self, cdn: bool) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as huggingface_hub's connection pool expects

            def log_message(self, *args) -> None:
                return None

            def do_HEAD(self) -> None:
                self._serve(cdn)

            def do_GET(self) -> None:
                self._serve(cdn)

            def _serve(self, is_cdn: bool) -> None:
                url = urlsplit(self.path)
                path, query = unquote(url.path), parse_qs(url.query)
                status, headers, body, repo_id, file = (hub._cdn if is_cdn else hub._route)(self, path, query)
                send_body = self.command == "GET" and bool(body)
                cut = send_body and (repo_id, file) in hub.cut_once and status == 200 and is_cdn
                if cut:
                    hub.cut_once.discard((repo_id, file))
                hub.record(
                    Request(
                        self.command,
                        path,
                        url.query,
                        repo_id,
                        file,
                        self.headers.get("Range"),
                        status,
                        len(body) // 2 if cut else len(body) if send_body else 0,
                    )
                )
                self.send_response(status)
                for key, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(key, value)
                self.end_headers()
                if send_body:
                    self.wfile.write(body[: len(body) // 2] if cut else body)
                if cut:  # the connection drops mid-transfer: the client holds half the file
                    self.wfile.flush()
                    self.close_connection = True

        return Handler

    def _route(self, handler, path: str, query: dict) -> tuple:
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            return self._api(f"{parts[2]}/{parts[3]}", parts[4:], query)
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), handler.command)
        return _error(404, "NotFound", "Not found") + (None, None)

    def _repo(self, repo_id: str, revision: str) -> StandInRepo | tuple:
        repo = self.repos.get(repo_id)
        if repo is None:
            return _error(404, "RepoNotFound", "Repository not found") + (repo_id, None)
        if revision not in ("main", repo.sha):
            return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}") + (repo_id, None)
        return repo

    def _api(self, repo_id: str, rest: list[str], query: dict) -> tuple:
        if rest[:1] == ["tree"] and len(rest) >= 2:
            repo = self._repo(repo_id, rest[1])
            return repo if isinstance(repo, tuple) else self._tree(repo, rest[1], "/".join(rest[2:]), query)
        if not rest or (len(rest) == 2 and rest[0] == "revision"):
            repo = self._repo(repo_id, rest[1] if rest else "main")
            if isinstance(repo, tuple):
                return repo
            info = {
                "_id": repo.sha[:24],
                "id": repo_id,
                "modelId": repo_id,
                "sha": repo.sha,
                "private": False,
                "gated": "manual" if repo.gated else False,
                "disabled": False,
                "library_name": "diffusers",
                "lastModified": "2024-01-01T00:00:00.000Z",
                "tags": [],
                "downloads": 0,
                "likes": 0,
                "siblings": [{"rfilename": p} for p in sorted(repo.listed)],
            }
            return _json(info) + (repo_id, None)
        return _error(404, "NotFound", "Not found") + (repo_id, None)

    def _tree(self, repo: StandInRepo, revision: str, under: str, query: dict) -> tuple:
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        prefix = f"{under}/" if under else ""
        entries: dict[str, dict] = {}
        for path in sorted(repo.listed):
            if not path.startswith(prefix):
                continue
            parts = PurePosixPath(path[len(prefix) :]).parts
            for depth in range(1, len(parts)):  # the folders on the way
                folder = prefix + "/".join(parts[:depth])
                if recursive or depth == 1:
                    entries.setdefault(
                        folder, {"type": "directory", "oid": _blob_id(folder.encode()), "size": 0, "path": folder}
                    )
            if recursive or len(parts) == 1:
                entries[path] = self._file_entry(repo, path)
        if under and not entries:
            return _error(404, "EntryNotFound", f"{under} does not exist") + (repo.repo_id, under)
        ordered = [entries[k] for k in sorted(entries)]
        start = int(query.get("cursor", ["0"])[0])
        page, headers = ordered[start : start + self.page_size], {}
        if start + self.page_size < len(ordered):
            params = urlencode(
                {"recursive": str(recursive).lower(), "expand": "false", "cursor": start + self.page_size}
            )
            tree_path = f"/api/models/{repo.repo_id}/tree/{revision}" + (f"/{under}" if under else "")
            headers["Link"] = f'<{self.url}{tree_path}?{params}>; rel="next"'
        status, response_headers, body = _json(page)
        return status, {**response_headers, **headers}, body, repo.repo_id, None

    def _file_entry(self, repo: StandInRepo, path: str) -> dict:
        data = repo.served(path)
        entry = {"type": "file", "oid": _blob_id(data), "size": repo.listed[path], "path": path}
        if _is_lfs(path):
            entry["lfs"] = {"oid": _sha256(data), "size": repo.listed[path], "pointerSize": 134}
        return entry

    def _resolve(self, repo_id: str, revision: str, path: str, method: str) -> tuple:
        repo = self._repo(repo_id, revision)
        if isinstance(repo, tuple):
            return repo[:3] + (repo_id, path)
        if repo.gated:
            message = (
                f"Access to model {repo_id} is restricted. You must have access to it and be authenticated to "
                "access it. Please log in."
            )
            return _error(401, "GatedRepo", message) + (repo_id, path)
        commit = {"X-Repo-Commit": repo.sha}
        if path not in repo.listed:
            status, headers, body = _error(404, "EntryNotFound", "Entry not found")
            return status, {**headers, **commit}, body, repo_id, path
        data = repo.served(path)
        if _is_lfs(path):
            digest = _sha256(data)
            headers = {
                "Location": f"{self.cdn_url}/repos/{repo_id}/{digest}/{path}",
                "X-Linked-Etag": f'"{digest}"',
                "X-Linked-Size": str(len(data)),
                "ETag": f'"{_blob_id(data)}"',
            }
            return 302, {**commit, **headers}, b"", repo_id, path
        headers = {"ETag": f'"{_blob_id(data)}"', "Content-Type": "application/octet-stream"}
        return 200, {**commit, **headers}, data, repo_id, path

    def _cdn(self, handler, path: str, query: dict) -> tuple:
        parts = path.strip("/").split("/")
        if len(parts) < 5 or parts[0] != "repos":
            return 404, {}, b"", None, None
        repo_id, digest, file = f"{parts[1]}/{parts[2]}", parts[3], "/".join(parts[4:])
        repo = self.repos.get(repo_id)
        if repo is None or file not in repo.listed or _sha256(repo.served(file)) != digest:
            return 404, {}, b"", repo_id, file
        data = repo.served(file)
        headers = {"ETag": f'"{digest}"', "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        requested = handler.headers.get("Range")
        if requested is None:
            return 200, headers, data, repo_id, file
        first, _, last = requested.removeprefix("bytes=").partition("-")
        start, end = int(first), int(last) if last else len(data) - 1
        if start >= len(data):
            return 416, {"Content-Range": f"bytes */{len(data)}"}, b"", repo_id, file
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return 206, headers, data[start : end + 1], repo_id, file


def _json(payload: object) -> tuple[int, dict, bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(payload).encode()


def _error(status: int, code: str, message: str) -> tuple[int, dict, bytes]:
    body = json.dumps({"error": message}).encode()
    return status, {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message}, body
