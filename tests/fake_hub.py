"""A stand-in for the Hugging Face hub's upload API on localhost, recording what is uploaded.

It answers the calls `HfApi.create_repo` and `HfApi.upload_folder` make: create the repository, validate a
README's metadata (its YAML front matter must parse), ask how to upload each file (always "regular": the content
then travels inside the commit), and the commit itself, whose NDJSON lines carry each file base64-encoded.
"""

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml


class FakeHub:
    def __init__(self):
        self.repos: set[str] = set()
        self.files: dict[str, dict[str, bytes]] = {}
        self.authorizations: list[str] = []
        self.validated_metadata: list[dict] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hub.authorizations.append(self.headers.get("Authorization", ""))
                self.reply(hub.answer(self.path.split("?")[0], body))

            def reply(self, answer: dict | None):
                payload = json.dumps(answer or {"error": "not found"}).encode()
                self.send_response(200 if answer is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, path: str, body: bytes) -> dict | None:
        if path == "/api/validate-yaml":
            front_matter = json.loads(body)["content"].split("---\n")[1]
            self.validated_metadata.append(yaml.safe_load(front_matter))
            return {"errors": [], "warnings": []}
        if path == "/api/repos/create":
            request = json.loads(body)
            repo = f"{request['organization']}/{request['name']}" if request.get("organization") else request["name"]
            self.repos.add(repo)
            return {"url": f"{self.url}/{repo}", "name": repo}
        # /api/models/<owner>/<name>/<preupload or commit>/<revision>
        parts = path.strip("/").split("/")
        repo, action = "/".join(parts[2:4]), parts[4] if len(parts) == 6 else None
        if parts[:2] != ["api", "models"] or repo not in self.repos:
            return None
        if action == "preupload":
            files = json.loads(body)["files"]
            return {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
        if action == "commit":
            for line in body.decode().splitlines():
                entry = json.loads(line)
                if entry["key"] == "file":
                    self.files.setdefault(repo, {})[entry["value"]["path"]] = base64.b64decode(
                        entry["value"]["content"])
            return {"commitUrl": f"{self.url}/{repo}/commit/1", "commitOid": "1" * 40}
        return None

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
