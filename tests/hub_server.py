"""A local stand-in for the Hugging Face Hub's HTTP protocol, so tests run the real client without network.

It answers the subset of the Hub API that `huggingface_hub` 2.x uses for `create_repo`, `create_branch`,
`upload_folder` / `create_commit` (regular, non-LFS files only: the preupload call answers "regular" for
every file; deletions too), `snapshot_download` / `hf_hub_download` (repo info, tree listing, HEAD and GET
on `resolve`) and a Space's variables (`get_space_variables`, `add_space_variable`, `delete_space_variable`).
Model and Space repos, named "namespace/name": the client puts a Space's API calls under /api/spaces/ and
its files under /spaces/<id>/resolve/, a model's under /api/models/ and /<id>/resolve/, so the two kinds
live in separate namespaces, as on the Hub. State lives in memory: per repo, its type, branch -> commit id,
commit id -> {path: bytes}, and (Spaces) its SDK and variables. It listens on 127.0.0.1 on an ephemeral
port; use it as a context manager.

    with FakeHub() as hub:
        HfApi(endpoint=hub.url).create_repo("me/model")
        HfApi(endpoint=hub.url).create_repo("me/demo", repo_type="space", space_sdk="gradio")
        hub.files("me/demo", repo_type="space")
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
# The API's /api/models/<id>/... and /api/spaces/<id>/..., the files' /<id>/resolve/... and /spaces/<id>/resolve/...
API = r"/api/(?P<kind>models|spaces)"
FILES = r"(?:/(?P<kind>spaces))?"
KINDS = {"models": "model", "spaces": "space", None: "model"}


def blob_id(data: bytes) -> str:
    """Git's blob id, as the Hub reports it in `oid` and `ETag` for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def repo_key(repo_id: str, repo_type: str | None = "model") -> str:
    """The key of a repo in `FakeHub.repos`: "me/x" for a model, "spaces/me/x" for a Space (as in its URL)."""
    return repo_id if repo_type in (None, "model") else f"{repo_type}s/{repo_id}"


class FakeHub:
    def __init__(self):
        # repo_key -> {"type": "model" | "space", "branches": {name: sha}, "commits": {sha: {path: bytes}},
        #              "private": bool, and for Spaces "sdk": str, "variables": {key: {"value", "description"}}}
        self.repos: dict[str, dict] = {}
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
    def create(self, repo_id: str, repo_type: str = "model", sdk: str | None = None, private: bool = False) -> bool:
        """A new empty repo (False if it exists). A Space starts with .gitattributes, as the Hub's do."""
        key = repo_key(repo_id, repo_type)
        with self.lock:
            if key in self.repos:
                return False
            sha = hashlib.sha1(f"init {key}".encode()).hexdigest()
            files = {".gitattributes": b"*.h5 filter=lfs diff=lfs merge=lfs -text\n"} if repo_type == "space" else {}
            self.repos[key] = {"type": repo_type, "branches": {"main": sha}, "commits": {sha: files},
                               "private": private}
            if repo_type == "space":
                self.repos[key] |= {"sdk": sdk, "variables": {}}
            return True

    def commit(self, repo_id: str, changes: dict[str, bytes | None], branch: str = "main", message: str = "",
               repo_type: str = "model") -> str:
        """Add, replace or (value None) delete files on a branch; returns the new commit id."""
        with self.lock:
            repo = self.repos[repo_key(repo_id, repo_type)]
            parent = repo["branches"][branch]
            files = {**repo["commits"][parent], **changes}
            files = {path: data for path, data in files.items() if data is not None}
            listing = "".join(f"{p} {blob_id(d)}\n" for p, d in sorted(files.items()))
            sha = hashlib.sha1(f"{parent}\n{message}\n{listing}".encode()).hexdigest()
            repo["commits"][sha], repo["branches"][branch] = files, sha
            return sha

    def resolve(self, repo_id: str, revision: str, repo_type: str = "model") -> str | None:
        repo = self.repos[repo_key(repo_id, repo_type)]
        if revision in repo["branches"]:
            return repo["branches"][revision]
        return revision if revision in repo["commits"] else None

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        return self.repos[repo_key(repo_id, repo_type)]["commits"][self.resolve(repo_id, revision, repo_type)]

    def variables(self, space_id: str) -> dict[str, dict]:
        """A Space's variables, as the Hub lists them: {key: {"value": ..., "description": ...}}."""
        with self.lock:
            return {k: dict(v) for k, v in self.repos[repo_key(space_id, "space")]["variables"].items()}


class Handler(BaseHTTPRequestHandler):
    """Routes: (method, path pattern) -> handler method; anything else is a 404."""

    ROUTES = [
        ("POST", r"/api/repos/create", "create_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("GET", rf"/api/spaces/{REPO}/variables", "get_variable"),
        ("POST", rf"/api/spaces/{REPO}/variables", "add_variable"),
        ("DELETE", rf"/api/spaces/{REPO}/variables", "delete_variable"),
        ("GET", rf"{API}/{REPO}(?:/revision/{REV})?", "repo_info"),
        ("GET", rf"{API}/{REPO}/tree/{REV}(?:/.*)?", "tree"),
        ("POST", rf"{API}/{REPO}/preupload/{REV}", "preupload"),
        ("POST", rf"{API}/{REPO}/commit/{REV}", "commit"),
        ("POST", rf"{API}/{REPO}/branch/{REV}", "create_branch"),
        ("HEAD", rf"{FILES}/{REPO}/resolve/{REV}/(?P<path>.+)", "resolve"),
        ("GET", rf"{FILES}/{REPO}/resolve/{REV}/(?P<path>.+)", "resolve"),
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

    def do_DELETE(self):
        self.route("DELETE")

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
                groups = match.groupdict()
                args = {k: unquote(v) for k, v in groups.items() if v is not None and k != "kind"}
                if "repo" in args:  # the URL says which kind of repo; a Space's variables are Space-only
                    args["repo_type"] = "space" if name.endswith("_variable") else KINDS[groups.get("kind")]
                    if repo_key(args["repo"], args["repo_type"]) not in hub.repos:
                        return self.reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    if name in self.READS_REVISION and hub.resolve(args["repo"], args.get("rev", "main"),
                                                                   args["repo_type"]) is None:
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

    def repo_url(self, hub: FakeHub, repo: str, repo_type: str) -> str:
        """A repo's web address, as the Hub writes it: /<id> for a model, /spaces/<id> for a Space."""
        return f"{hub.url}/{repo_key(repo, repo_type)}"

    # -- endpoints ---------------------------------------------------------------------------
    def create_repo(self, hub: FakeHub):
        data = json.loads(self.body)
        repo_id, repo_type = f"{data['organization']}/{data['name']}", data.get("type", "model")
        if repo_type == "space" and not data.get("sdk"):
            return self.reply(400, {"error": "a Space needs an sdk"})
        created = hub.create(repo_id, repo_type, sdk=data.get("sdk"), private=data.get("visibility") == "private")
        status = 200 if created else 409  # 409 "already exists" still carries the url
        self.reply(status, {"url": self.repo_url(hub, repo_id, repo_type), "name": repo_id}
                   | ({} if created else {"error": f"You already created this {repo_type} repo"}))

    def validate_yaml(self, hub: FakeHub):
        self.reply(200, {"errors": [], "warnings": []})

    def repo_info(self, hub: FakeHub, repo: str, repo_type: str, rev: str = "main"):
        sha = hub.resolve(repo, rev, repo_type)
        record = hub.repos[repo_key(repo, repo_type)]
        siblings = [{"rfilename": p} for p in sorted(hub.files(repo, sha, repo_type))]
        self.reply(200, {"id": repo, "sha": sha, "private": record["private"], "siblings": siblings}
                   | ({"sdk": record["sdk"]} if repo_type == "space" else {}))

    def tree(self, hub: FakeHub, repo: str, repo_type: str, rev: str):
        entries = [{"type": "file", "path": p, "size": len(d), "oid": blob_id(d)}
                   for p, d in sorted(hub.files(repo, rev, repo_type).items())]
        self.reply(200, entries)

    def preupload(self, hub: FakeHub, repo: str, repo_type: str, rev: str):
        files = json.loads(self.body)["files"]
        self.reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                   for f in files]})

    def commit(self, hub: FakeHub, repo: str, repo_type: str, rev: str):
        # NDJSON: a header line, then one line per file with its content in base64, or per deleted file.
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        header, changes = lines[0]["value"], {}
        for line in lines[1:]:
            if line["key"] == "deletedFile":
                changes[line["value"]["path"]] = None
            elif line["key"] == "file" and line["value"].get("encoding") == "base64":
                changes[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
            else:
                return self.reply(400, {"error": f"the fake Hub only takes regular files, not {line['key']}"})
        sha = hub.commit(repo, changes, branch=rev, message=header["summary"], repo_type=repo_type)
        self.reply(200, {"commitUrl": f"{self.repo_url(hub, repo, repo_type)}/commit/{sha}", "commitOid": sha})

    def create_branch(self, hub: FakeHub, repo: str, repo_type: str, rev: str):
        start = hub.resolve(repo, json.loads(self.body or b"{}").get("startingPoint", "main"), repo_type)
        with hub.lock:
            branches = hub.repos[repo_key(repo, repo_type)]["branches"]
            if rev in branches:
                return self.reply(409, {"error": "Reference already exists"})
            branches[rev] = start
        self.reply(200, {})

    def resolve(self, hub: FakeHub, repo: str, repo_type: str, rev: str, path: str):
        sha = hub.resolve(repo, rev, repo_type)
        files = hub.files(repo, sha, repo_type)
        if path not in files:
            return self.reply(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha})
        data = files[path]
        self.reply(200, headers={"X-Repo-Commit": sha, "ETag": f'"{blob_id(data)}"',
                                 "Content-Type": "application/octet-stream"}, body=data)

    # A Space's variables: {key: {"value", "description"}}; every call answers with all of them.
    def get_variable(self, hub: FakeHub, repo: str, repo_type: str):
        self.reply(200, hub.variables(repo))

    def add_variable(self, hub: FakeHub, repo: str, repo_type: str):
        data = json.loads(self.body)
        with hub.lock:
            hub.repos[repo_key(repo, "space")]["variables"][data["key"]] = {
                "value": data["value"], "description": data.get("description")}
        self.reply(200, hub.variables(repo))

    def delete_variable(self, hub: FakeHub, repo: str, repo_type: str):
        with hub.lock:
            hub.repos[repo_key(repo, "space")]["variables"].pop(json.loads(self.body)["key"], None)
        self.reply(200, hub.variables(repo))
