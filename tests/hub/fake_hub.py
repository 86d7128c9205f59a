#!/usr/bin/env python3
"""A local stand-in for Hugging Face and CivitAI, bound to 127.0.0.1 (no hub is reachable from
the test machines). It serves the JSON shapes imgd pull reads and the files, with failures on
purpose:

  HF   GET /api/models/{org}/{name}/revision/{rev}   {"sha", "siblings": [{"rfilename",
                                                       "size", "lfs": {"sha256", "size"}}]}
       GET /{org}/{name}/resolve/{rev}/{file}         the bytes (Range supported)
  Civ  GET /api/v1/model-versions/{id}                {"id","modelId","name","baseModel",
                                                       "trainedWords","files":[{"name","type",
                                                       "primary","downloadUrl","hashes":{"SHA256"}}]}
       GET /api/v1/model-versions/by-hash/{sha256}    the same
       GET /api/v1/models/{id}                        {"id","modelVersions":[{"id"}, ...]}
       GET /api/download/models/{id}                  the version's file
  Test GET /_stats                                    {"requests": [[method, path, range], ...]}

Repos and versions (see REPOS / VERSIONS): test/pipe (a diffusers pipeline with fp16 variants,
a sharded text encoder, .bin and flax files that must not be fetched), test/single, test/flaky
(429 + Retry-After: 1 on the first request of each file), test/truncated (the first response of
each file stops halfway), test/badhash (the LFS sha256 is wrong), test/private (401 without
"Authorization: Bearer hf-secret"); CivitAI version 100 (ok), 101 (wrong SHA256), 102 (its
file is 404), model 10 -> versions [100]. Anything else is 404.

Usage: fake_hub.py  -> prints "port N" on stdout, serves until killed."""
import hashlib
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def blob(name, n):
    """Deterministic bytes for a file name."""
    seed = hashlib.sha256(name.encode()).digest()
    out = bytearray()
    while len(out) < n:
        seed = hashlib.sha256(seed).digest()
        out += seed
    return bytes(out[:n])


PIPE_FILES = {
    "model_index.json": b'{"_class_name": "StableDiffusionPipeline"}',
    "README.md": b"# readme",
    "unet/config.json": b'{"sample_size": 64}',
    "unet/diffusion_pytorch_model.safetensors": blob("u32", 3000),
    "unet/diffusion_pytorch_model.fp16.safetensors": blob("u16", 1500),
    "unet/diffusion_pytorch_model.bin": blob("ubin", 3000),
    "unet/diffusion_pytorch_model.msgpack": blob("uflax", 3000),
    "text_encoder/config.json": b'{"hidden_size": 8}',
    "text_encoder/model.safetensors.index.json": b'{"weight_map": {}}',
    "text_encoder/model-00001-of-00002.safetensors": blob("te1", 2000),
    "text_encoder/model-00002-of-00002.safetensors": blob("te2", 2000),
    "text_encoder/pytorch_model.bin": blob("tebin", 4000),
    "tokenizer/vocab.json": b"{}",
    "tokenizer/merges.txt": b"#version: 0.2\n",
    "scheduler/scheduler_config.json": b'{"_class_name": "PNDMScheduler"}',
    "vae/config.json": b"{}",
    "vae/diffusion_pytorch_model.fp16.safetensors": blob("v16", 1000),
    "vae/diffusion_pytorch_model.safetensors": blob("v32", 2000),
}
SINGLE = {"model.safetensors": blob("single", 5000), "model.yaml": b"model: {}\n",
          "model.ckpt": blob("singleckpt", 5000)}
BIG = {"big.safetensors": blob("big", 200000)}
REPOS = {
    "test/pipe": PIPE_FILES,
    "test/single": SINGLE,
    "test/flaky": BIG,
    "test/truncated": BIG,
    "test/badhash": BIG,
    "test/private": SINGLE,
}
CIV_FILE = blob("civ", 30000)
VERSIONS = {
    100: {"id": 100, "modelId": 10, "name": "v1", "baseModel": "SD 1.5",
          "trainedWords": ["sks style"],
          "files": [{"name": "styleLora.safetensors", "type": "Model", "primary": True,
                     "downloadUrl": "/api/download/models/100",
                     "hashes": {"SHA256": hashlib.sha256(CIV_FILE).hexdigest().upper()}}]},
    101: {"id": 101, "modelId": 11, "name": "bad", "baseModel": "SD 1.5", "trainedWords": [],
          "files": [{"name": "bad.safetensors", "type": "Model", "primary": True,
                     "downloadUrl": "/api/download/models/101", "hashes": {"SHA256": "AB" * 32}}]},
    102: {"id": 102, "modelId": 12, "name": "gone", "baseModel": "SD 1.5", "trainedWords": [],
          "files": [{"name": "gone.safetensors", "type": "Model", "primary": True,
                     "downloadUrl": "/api/download/models/102", "hashes": {"SHA256": "CD" * 32}}]},
}
MODELS = {10: {"id": 10, "name": "style", "modelVersions": [{"id": 100}]}}
# version id -> the bytes /api/download/models/{id} serves (tests may add their own)
DOWNLOADS = {100: CIV_FILE, 101: CIV_FILE}

STATE = {"requests": [], "seen": set()}
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send_json(self, obj, code=200):
        b = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)

    def not_found(self):
        self.send_json({"error": "not found"}, 404)

    def first_time(self, key):
        with LOCK:
            if key in STATE["seen"]:
                return False
            STATE["seen"].add(key)
            return True

    def send_bytes(self, data, truncate=False):
        rng = self.headers.get("Range")
        start = 0
        if rng:
            m = re.match(r"bytes=(\d+)-$", rng)
            start = int(m.group(1)) if m else 0
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        if truncate:
            self.send_header("Connection", "close")
        self.end_headers()
        if truncate:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def hf_api(self, repo):
        files = REPOS.get(repo)
        if files is None:
            return self.not_found()
        if repo == "test/private" and self.headers.get("Authorization") != "Bearer hf-secret":
            return self.send_json({"error": "unauthorized"}, 401)
        sib = []
        for name, data in files.items():
            sha = hashlib.sha256(data).hexdigest()
            if repo == "test/badhash":
                sha = "0" * 64
            sib.append({"rfilename": name, "size": len(data),
                        "lfs": {"sha256": sha, "size": len(data), "pointerSize": 134}})
        self.send_json({"id": repo, "sha": "abc123", "siblings": sib})

    def hf_file(self, repo, name):
        files = REPOS.get(repo)
        if files is None or name not in files:
            return self.not_found()
        if repo == "test/private" and self.headers.get("Authorization") != "Bearer hf-secret":
            return self.send_json({"error": "unauthorized"}, 401)
        if repo == "test/flaky" and self.first_time(("429", name)):
            self.send_response(429)
            self.send_header("Retry-After", "1")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        trunc = repo == "test/truncated" and self.first_time(("trunc", name))
        self.send_bytes(files[name], truncate=trunc)

    def do_GET(self):
        path = self.path.split("?")[0]
        with LOCK:
            STATE["requests"].append([self.command, self.path, self.headers.get("Range")])
        if path == "/_stats":
            with LOCK:
                return self.send_json({"requests": STATE["requests"]})
        m = re.match(r"^/api/models/([^/]+/[^/]+)/revision/([^/]+)$", path)
        if m:
            return self.hf_api(m.group(1))
        m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if m:
            return self.hf_file(m.group(1), m.group(3))
        m = re.match(r"^/api/v1/model-versions/by-hash/([0-9A-Fa-f]+)$", path)
        if m:
            for v in VERSIONS.values():
                if v["files"][0]["hashes"]["SHA256"].lower() == m.group(1).lower():
                    return self.send_json(self.version(v))
            return self.not_found()
        m = re.match(r"^/api/v1/model-versions/(\d+)$", path)
        if m:
            v = VERSIONS.get(int(m.group(1)))
            return self.send_json(self.version(v)) if v else self.not_found()
        m = re.match(r"^/api/v1/models/(\d+)$", path)
        if m:
            mo = MODELS.get(int(m.group(1)))
            return self.send_json(mo) if mo else self.not_found()
        m = re.match(r"^/api/download/models/(\d+)$", path)
        if m and int(m.group(1)) in DOWNLOADS:
            return self.send_bytes(DOWNLOADS[int(m.group(1))])
        return self.not_found()

    def version(self, v):
        v = json.loads(json.dumps(v))
        host = f"http://127.0.0.1:{self.server.server_address[1]}"
        for f in v["files"]:
            f["downloadUrl"] = host + f["downloadUrl"]
        return v


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    print(f"port {srv.server_address[1]}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
