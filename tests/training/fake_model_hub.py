"""A fake Hugging Face Hub for model repos on loopback: enough of the API for ``huggingface_hub`` 2.4 to
create a repo, commit files to it (``upload_folder``) and download it again (``snapshot_download``).

Routes (found by logging the requests of real ``create_repo`` / ``upload_folder`` / ``snapshot_download``
calls against it):

- ``POST /api/repos/create``: a new model repo (409 when it exists; the client's ``exist_ok`` accepts it),
- ``POST /api/validate-yaml``: the client checks a ``README.md`` card's YAML header before committing,
- ``POST /api/models/{repo}/preupload/{rev}``: every file is uploaded ``regular`` (inline, base64, in the
  commit), so no LFS or Xet storage is needed,
- ``POST /api/models/{repo}/commit/{rev}``: the NDJSON commit (header + files), stored as a new commit,
- ``GET /api/models/{repo}[/revision/{rev}]``: the repo's info (commit sha, files),
- ``GET /api/models/{repo}/tree/{rev}[/{dir}]``: file listings,
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}``: file metadata (``X-Repo-Commit``, ``ETag``) and bytes.

Everything else is a 404 and is logged in ``requests`` (a test can assert that nothing unexpected came).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeModelHub:
    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}  # repo id -> {"sha": str, "files": {path: bytes}, "private": bool}
        self.requests: list[str] = []
        self.commits: list[dict] = []
        self.validated: list[str] = []
        self.fail_commits = False
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                hub._handle(self, "GET")

            def do_HEAD(self) -> None:
                hub._handle(self, "HEAD")

            def do_POST(self) -> None:
                hub._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    # -- helpers ------------------------------------------------------------------------------------

    @staticmethod
    def _send(req: BaseHTTPRequestHandler, method: str, code: int, body: bytes, headers: dict | None = None):
        req.send_response(code)
        for k, v in (headers or {}).items():
            req.send_header(k, v)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if method != "HEAD":
            req.wfile.write(body)

    def _json(self, req, method, code: int, obj, headers: dict | None = None):
        self._send(
            req,
            method,
            code,
            json.dumps(obj).encode(),
            {"Content-Type": "application/json", **(headers or {})},
        )

    def _info(self, repo_id: str) -> dict:
        repo = self.repos[repo_id]
        return {
            "id": repo_id,
            "modelId": repo_id,
            "sha": repo["sha"],
            "private": repo["private"],
            "siblings": [{"rfilename": f} for f in sorted(repo["files"])],
        }

    # -- routing ------------------------------------------------------------------------------------

    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        self.requests.append(f"{method} {req.path}")
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        parts = urllib.parse.urlsplit(req.path)
        segs = [urllib.parse.unquote(s) for s in parts.path.split("/")[1:]]
        if method == "POST" and segs == ["api", "repos", "create"]:
            payload = json.loads(body or b"{}")
            repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
            if payload.get("type", "model") != "model":
                return self._send(req, method, 400, b"only model repos")
            if repo_id in self.repos:
                return self._json(
                    req,
                    method,
                    409,
                    {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"},
                )
            self.repos[repo_id] = {
                "sha": "0" * 40,
                "files": {},
                "private": bool(payload.get("private")) or payload.get("visibility") == "private",
            }
            return self._json(req, method, 200, {"url": f"{self.url}/{repo_id}", "name": repo_id})
        if method == "POST" and segs == ["api", "validate-yaml"]:  # a README.md with a YAML header
            self.validated.append(json.loads(body)["content"])
            return self._json(req, method, 200, {"errors": [], "warnings": []})
        if segs[:2] == ["api", "models"] and len(segs) >= 4:
            repo_id, rest = f"{segs[2]}/{segs[3]}", segs[4:]
            if repo_id not in self.repos:
                return self._json(
                    req, method, 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
                )
            repo = self.repos[repo_id]
            if method == "POST" and rest[:1] == ["preupload"]:
                files = json.loads(body)["files"]
                modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                return self._json(req, method, 200, {"files": modes})
            if method == "POST" and rest[:1] == ["commit"]:
                return self._commit(req, method, repo_id, body)
            if method == "GET" and (not rest or rest[0] == "revision"):
                return self._json(req, method, 200, self._info(repo_id))
            if method == "GET" and rest[:1] == ["tree"]:
                folder = "/".join(rest[2:]).strip("/")
                prefix = folder + "/" if folder else ""
                entries = [
                    {"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                    for p, b in sorted(repo["files"].items())
                    if p.startswith(prefix)
                ]
                return self._json(req, method, 200, entries)
            return self._send(req, method, 404, b"no such route")
        if len(segs) >= 5 and segs[2] == "resolve" and f"{segs[0]}/{segs[1]}" in self.repos:
            repo = self.repos[f"{segs[0]}/{segs[1]}"]
            path = "/".join(segs[4:])
            if path not in repo["files"]:
                return self._send(req, method, 404, b"entry not found", {"X-Error-Code": "EntryNotFound"})
            data = repo["files"][path]
            etag = '"' + hashlib.sha256(data).hexdigest() + '"'
            return self._send(req, method, 200, data, {"X-Repo-Commit": repo["sha"], "ETag": etag})
        return self._send(req, method, 404, b"no such route")

    def _commit(self, req, method, repo_id: str, body: bytes) -> None:
        if self.fail_commits:
            return self._json(req, method, 500, {"error": "storage is down"})
        repo = self.repos[repo_id]
        header: dict = {}
        added: dict[str, bytes] = {}
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            if item["key"] == "header":
                header = item["value"]
            elif item["key"] == "file":
                v = item["value"]
                raw = v["content"]
                added[v["path"]] = base64.b64decode(raw) if v.get("encoding") == "base64" else raw.encode()
            else:
                return self._json(req, method, 400, {"error": f"unsupported commit item {item['key']}"})
        repo["files"].update(added)
        repo["sha"] = hashlib.sha1((repo["sha"] + json.dumps(sorted(added))).encode()).hexdigest()
        self.commits.append({"repo": repo_id, "summary": header.get("summary"), "files": sorted(added)})
        return self._json(
            req,
            method,
            200,
            {
                "commitUrl": f"{self.url}/{repo_id}/commit/{repo['sha']}",
                "commitOid": repo["sha"],
                "pullRequestUrl": None,
            },
        )
