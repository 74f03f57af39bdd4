"""A local stand-in for the Hugging Face Hub's HTTP protocol, so tests run the real client without network.

It answers the subset of the Hub API that `huggingface_hub` 2.x uses for `create_repo`, `create_branch`,
`upload_folder` (regular, non-LFS commits only: the preupload call answers "regular" for every file) and
`snapshot_download` / `hf_hub_download` (repo info, tree listing, HEAD and GET on `resolve`). Model repos
only, named "namespace/name". State lives in memory: per repo, branch -> commit id and commit id ->
{path: bytes}. It listens on 127.0.0.1 on an ephemeral port; use it as a context manager.

    with FakeHub() as hub:
        HfApi(endpoint=hub.url).create_repo("me/model")
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

REPO = r"(?P<repo>[^/]+/[^/]+)"
REV = r"(?P<rev>[^/]+)"


def blob_id(data: bytes) -> str:
    """Git's blob id, as the Hub reports it in `oid` and `ETag` for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    def __init__(self):
        self.repos: dict[str, dict] = {}  # repo_id -> {"branches": {name: sha}, "commits": {sha: {path: bytes}}}
        self.fail_status: int | None = None  # when set, every request is answered with this status
        self.requests: list[tuple[str, str, dict]] = []  # (method, path, headers) of every request
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.hub = self
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "FakeHub":
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    # -- repository state (also used by tests to plant or tamper with repos) -----------------
    def create(self, repo_id: str) -> bool:
        with self.lock:
            if repo_id in self.repos:
                return False
            sha = hashlib.sha1(f"init {repo_id}".encode()).hexdigest()
            self.repos[repo_id] = {"branches": {"main": sha}, "commits": {sha: {}}}
            return True

    def commit(self, repo_id: str, changes: dict[str, bytes], branch: str = "main", message: str = "") -> str:
        """Add or replace files on a branch; returns the new commit id."""
        with self.lock:
            repo = self.repos[repo_id]
            parent = repo["branches"][branch]
            files = {**repo["commits"][parent], **changes}
            listing = "".join(f"{p} {blob_id(d)}\n" for p, d in sorted(files.items()))
            sha = hashlib.sha1(f"{parent}\n{message}\n{listing}".encode()).hexdigest()
            repo["commits"][sha], repo["branches"][branch] = files, sha
            return sha

    def resolve(self, repo_id: str, revision: str) -> str | None:
        repo = self.repos[repo_id]
        if revision in repo["branches"]:
            return repo["branches"][revision]
        return revision if revision in repo["commits"] else None

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        return self.repos[repo_id]["commits"][self.resolve(repo_id, revision)]


class Handler(BaseHTTPRequestHandler):
    """Routes: (method, path pattern) -> handler method; anything else is a 404."""

    ROUTES = [
        ("POST", r"/api/repos/create", "create_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("GET", rf"/api/models/{REPO}(?:/revision/{REV})?", "repo_info"),
        ("GET", rf"/api/models/{REPO}/tree/{REV}(?:/.*)?", "tree"),
        ("POST", rf"/api/models/{REPO}/preupload/{REV}", "preupload"),
        ("POST", rf"/api/models/{REPO}/commit/{REV}", "commit"),
        ("POST", rf"/api/models/{REPO}/branch/{REV}", "create_branch"),
        ("HEAD", rf"/{REPO}/resolve/{REV}/(?P<path>.+)", "resolve"),
        ("GET", rf"/{REPO}/resolve/{REV}/(?P<path>.+)", "resolve"),
    ]
    READS_REVISION = {"repo_info", "tree", "preupload", "commit", "resolve"}  # 404 RevisionNotFound if unknown

    def log_message(self, *args):  # keep the test output quiet
        pass

    def do_GET(self):
        self.route("GET")

    def do_HEAD(self):
        self.route("HEAD")

    def do_POST(self):
        self.route("POST")

    def route(self, method: str):
        hub: FakeHub = self.server.hub
        path = urlsplit(self.path).path
        hub.requests.append((method, path, dict(self.headers)))
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        if hub.fail_status:
            return self.reply(hub.fail_status, {"error": "fake Hub failure"})
        for verb, pattern, name in self.ROUTES:
            match = re.fullmatch(pattern, path)
            if verb == method and match:
                args = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                if "repo" in args and name != "create_repo" and args["repo"] not in hub.repos:
                    return self.reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                if name in self.READS_REVISION and hub.resolve(args["repo"], args.get("rev", "main")) is None:
                    return self.reply(404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"})
                return getattr(self, name)(hub, **args)
        self.reply(404, {"error": f"no route {method} {path}"})

    def reply(self, status: int, payload=None, headers: dict | None = None, body: bytes | None = None):
        if body is None:
            body = json.dumps(payload).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    # -- endpoints ---------------------------------------------------------------------------
    def create_repo(self, hub: FakeHub):
        data = json.loads(self.body)
        repo_id = f"{data['organization']}/{data['name']}"
        status = 200 if hub.create(repo_id) else 409  # 409 "already exists" still carries the url
        self.reply(status, {"url": f"{hub.url}/{repo_id}", "name": repo_id} | ({"error": "You already created this "
                                                                                "model repo"} if status == 409 else {}))

    def validate_yaml(self, hub: FakeHub):
        self.reply(200, {"errors": [], "warnings": []})

    def repo_info(self, hub: FakeHub, repo: str, rev: str = "main"):
        sha = hub.resolve(repo, rev)
        siblings = [{"rfilename": p} for p in sorted(hub.files(repo, sha))]
        self.reply(200, {"id": repo, "sha": sha, "private": False, "siblings": siblings})

    def tree(self, hub: FakeHub, repo: str, rev: str):
        entries = [{"type": "file", "path": p, "size": len(d), "oid": blob_id(d)}
                   for p, d in sorted(hub.files(repo, rev).items())]
        self.reply(200, entries)

    def preupload(self, hub: FakeHub, repo: str, rev: str):
        files = json.loads(self.body)["files"]
        self.reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                   for f in files]})

    def commit(self, hub: FakeHub, repo: str, rev: str):
        # NDJSON: a header line, then one line per file with its content in base64.
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        header, changes = lines[0]["value"], {}
        for line in lines[1:]:
            if line["key"] != "file" or line["value"].get("encoding") != "base64":
                return self.reply(400, {"error": f"the fake Hub only takes regular files, not {line['key']}"})
            changes[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
        sha = hub.commit(repo, changes, branch=rev, message=header["summary"])
        self.reply(200, {"commitUrl": f"{hub.url}/{repo}/commit/{sha}", "commitOid": sha})

    def create_branch(self, hub: FakeHub, repo: str, rev: str):
        with hub.lock:
            branches = hub.repos[repo]["branches"]
            if rev in branches:
                return self.reply(409, {"error": "Reference already exists"})
            branches[rev] = hub.resolve(repo, json.loads(self.body or b"{}").get("startingPoint", "main"))
        self.reply(200, {})

    def resolve(self, hub: FakeHub, repo: str, rev: str, path: str):
        sha = hub.resolve(repo, rev)
        files = hub.files(repo, sha)
        if path not in files:
            return self.reply(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha})
        data = files[path]
        self.reply(200, headers={"X-Repo-Commit": sha, "ETag": f'"{blob_id(data)}"',
                                 "Content-Type": "application/octet-stream"}, body=data)
