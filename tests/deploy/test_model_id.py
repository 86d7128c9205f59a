#!/usr/bin/env python3
"""MODEL_ID resolution (imgd serve --model-id, imgd resolve) for every form, against the shared
narrow SD 1.5 model and the local fake hub (tests/hub/fake_hub.py, run in-process on loopback).

Served (imgd serve --model-id, then HTTP): a local file (only that model registered: a LoRA
beside it is not scanned), a folder, a fake-hub repo id, a CivitAI version id of a checkpoint,
an AIR naming a CivitAI LoRA (base found by the registry family; CivitAI weight and trigger
words exposed; the LoRA changes the image). Resolved (imgd resolve): a LoRA whose base is found
by its metadata (file name, legacy hash), by the registry family, by a configured default, not
at all (the error lists what was tried), an incompatible configured base, a URL, and bad ids.
Exit 77 = skipped (no shared model)."""
import base64
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
from http.server import ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "service"))
sys.path.insert(0, os.path.join(HERE, "..", "hub"))
import fake_hub  # noqa: E402
import svc  # noqa: E402

CONF = None  # shared conformance folder
ROOT = None
HUB = None


def shared():
    md = svc.model_dir()  # skips when absent
    return os.path.dirname(md)


def lora_with_meta(src, dst, meta):
    """Copies a safetensors LoRA with its __metadata__ updated (None values remove keys)."""
    with open(src, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    md = header.get("__metadata__", {})
    for k, v in meta.items():
        if v is None:
            md.pop(k, None)
        else:
            md[k] = v
    header["__metadata__"] = md
    hb = json.dumps(header).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + data)
    return dst


def legacy_hash(path):
    with open(path, "rb") as f:
        f.seek(0x100000)
        return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGD_BASE_")}
    env.pop("MODEL_ID", None)
    env["IMGD_HF_ENDPOINT"] = HUB
    env["IMGD_CIVITAI_ENDPOINT"] = HUB
    env.update(extra or {})
    return env


def resolve(model_id, *args, env=None):
    r = subprocess.run([svc.imgd_bin(), "resolve", model_id, "--state",
                        os.path.join(ROOT, "rstate"), *args], capture_output=True, text=True,
                       env=clean_env(env), timeout=120)
    return r


def resolved(model_id, *args, env=None):
    r = resolve(model_id, *args, env=env)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    return json.loads(r.stdout)


class Served:
    """imgd serve --model-id ID (no --models unless given)."""

    def __init__(self, model_id, cfg_id, args=(), env=None, tag="s"):
        self.dir = os.path.join(ROOT, tag)
        os.makedirs(self.dir, exist_ok=True)
        cfg = os.path.join(self.dir, "config.json")
        with open(cfg, "w") as f:
            json.dump({"models": {cfg_id: {"te_heads": 4}}}, f)
        tok = os.path.join(CONF, "clip-tokenizer")
        self.cmd = [svc.imgd_bin(), "serve", "--model-id", model_id, "--port", "0", "--state",
                    os.path.join(self.dir, "state"), "--config", cfg, "--tokenizer", tok,
                    "--threads", "1", *args]
        self.env = clean_env(env)
        self.log = os.path.join(self.dir, "server.log")

    def __enter__(self):
        import requests
        self.http = requests.Session()
        with open(self.log, "w") as lf:
            self.p = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=lf, text=True,
                                      env=self.env)
        line = self.p.stdout.readline()
        if "listening on http://" not in line:
            self.p.kill()
            raise AssertionError(f"serve did not start: {line!r}\n{open(self.log).read()[-3000:]}")
        self.base = "http://127.0.0.1:" + line.strip().rsplit(":", 1)[1]
        return self

    def get(self, path):
        r = self.http.get(self.base + path, timeout=60)
        assert r.status_code == 200, (path, r.status_code, r.text[:500])
        return r.json() if "json" in r.headers.get("Content-Type", "") else r.text

    def generate(self, **kw):
        body = dict(svc.SMALL)
        body.update(kw)
        r = self.http.post(self.base + "/v1/generate", json=body, timeout=120)
        assert r.status_code == 200, (r.status_code, r.text[:800])
        return r.json()

    def __exit__(self, *a):
        self.p.terminate()
        self.p.wait(60)
        self.p.stdout.close()


def only_model(s, want_id, source):
    ready = s.get("/v1/ready")
    assert ready["loaded"] == [want_id], ready
    assert ready["start_to_ready_s"] > 0 and ready["model_id"], ready
    models = s.get("/v1/models")["models"]
    assert [m["id"] for m in models] == [want_id], [m["id"] for m in models]
    one = s.get("/v1/models/" + want_id)
    assert one["model_id_source"] == source, one
    metrics = s.get("/v1/metrics")
    assert "imgd_start_to_ready_seconds " in metrics, metrics[-800:]
    img = s.generate()["images"][0]
    assert base64.b64decode(img["b64"])[:4] == b"\x89PNG"
    return one


# ---- served forms ---------------------------------------------------------------------------

def test_local_file_registers_only_it():
    d = os.path.join(ROOT, "single")
    os.makedirs(d, exist_ok=True)
    shutil.copy(os.path.join(svc.model_dir(), "sd15-narrow.safetensors"), d)
    # a LoRA and another checkpoint beside it: a one-model worker must not scan them
    shutil.copy(os.path.join(svc.model_dir(), "lora", "narrow-lora_kohya.safetensors"), d)
    shutil.copy(os.path.join(svc.model_dir(), "sd15-narrow.safetensors"),
                os.path.join(d, "other.safetensors"))
    with Served(os.path.join(d, "sd15-narrow.safetensors"), "sd15-narrow.safetensors",
                ["--warmup"], tag="s-file") as s:
        one = only_model(s, "sd15-narrow.safetensors", "file")
        assert one["adapter"] is None
        assert "imgd_start_warmup_seconds" in s.get("/v1/metrics")


def test_folder():
    with Served(os.path.join(svc.model_dir(), "diffusers"), "diffusers", tag="s-folder") as s:
        only_model(s, "diffusers", "folder")


def test_fake_hub_repo_id():
    dl = os.path.join(ROOT, "dl-hf")
    with Served("test/narrow", "narrow", ["--download-dir", dl], tag="s-hf") as s:
        only_model(s, "narrow", "huggingface")
    assert os.path.isfile(os.path.join(dl, "narrow", "model_index.json"))


def test_civitai_version_of_checkpoint():
    dl = os.path.join(ROOT, "dl-civ")
    with Served("civitai:201", "sd15-narrow.safetensors", ["--download-dir", dl],
                tag="s-civ") as s:
        only_model(s, "sd15-narrow.safetensors", "civitai")


def test_air_lora_base_by_registry_family_applied():
    models = os.path.join(ROOT, "m-air")
    os.makedirs(models, exist_ok=True)
    if not os.path.isdir(os.path.join(models, "base")):
        shutil.copytree(os.path.join(svc.model_dir(), "diffusers"), os.path.join(models, "base"))
    dl = os.path.join(ROOT, "dl-air")
    with Served("urn:air:sd1:lora:civitai:20@200", "base",
                ["--models", models, "--download-dir", dl], tag="s-air") as s:
        one = s.get("/v1/models/base")
        assert one["model_id_source"] == "air", one
        a = one["adapter"]
        assert a["kind"] == "lora" and abs(a["weight"] - 0.6) < 1e-6, a
        assert a["weight_from"] == "CivitAI metadata", a
        assert a["trigger_words"] == ["sks style"], a
        assert "base" in a["base_found_by"], a
        with_lora = s.generate(model="base", seed=5)["images"][0]["b64"]
    with Served(os.path.join(models, "base"), "base", tag="s-base") as b:
        without = b.generate(model="base", seed=5)["images"][0]["b64"]
    assert without != with_lora, "the adapter did not change the image"


# ---- resolved forms: the base of a LoRA -----------------------------------------------------

def lora_dir(tag, meta, checkpoints):
    d = os.path.join(ROOT, tag)
    os.makedirs(d, exist_ok=True)
    src = os.path.join(svc.model_dir(), "lora", "narrow-lora_kohya.safetensors")
    lora = lora_with_meta(src, os.path.join(d, "style.safetensors"), meta)
    for name in checkpoints:
        dst = os.path.join(d, name)
        if not os.path.exists(dst):
            shutil.copy(os.path.join(svc.model_dir(), "sd15-narrow.safetensors"), dst)
    return d, lora


NO_NAME = {"ss_sd_model_name": None, "ss_sd_model_hash": None, "ss_new_sd_model_hash": None}


def test_lora_base_by_metadata_name():
    d, lora = lora_dir("r-meta", {"ss_sd_model_name": "wanted.safetensors"},
                       ["a-first.safetensors", "wanted.safetensors"])
    j = resolved(lora, "--models", d)
    assert j["base"]["path"].endswith("/wanted.safetensors"), j
    assert "ss_sd_model_name" in j["base"]["found_by"], j
    assert j["adapter"]["weight"] == 1 and j["adapter"]["weight_from"] == "default", j


def test_lora_base_by_metadata_legacy_hash():
    d, _ = lora_dir("r-hash", dict(NO_NAME), ["a-first.safetensors"])
    # a second checkpoint with different bytes past 1 MiB, named by the legacy hash
    with open(os.path.join(svc.model_dir(), "sd15-narrow.safetensors"), "rb") as f:
        data = bytearray(f.read())
    data[0x100000 + 100] ^= 0xFF
    tgt = os.path.join(d, "z-target.safetensors")
    with open(tgt, "wb") as f:
        f.write(data)
    meta = dict(NO_NAME)
    meta["ss_sd_model_hash"] = legacy_hash(tgt)
    assert meta["ss_sd_model_hash"] != legacy_hash(os.path.join(d, "a-first.safetensors"))
    lora = lora_with_meta(os.path.join(d, "style.safetensors"),
                          os.path.join(d, "style2.safetensors"), meta)
    j = resolved(lora, "--models", d)
    assert j["base"]["path"] == tgt and "ss_sd_model_hash" in j["base"]["found_by"], j


def test_lora_base_by_registry_family():
    d, lora = lora_dir("r-fam", dict(NO_NAME), ["only.safetensors"])
    j = resolved(lora, "--models", d)
    assert j["base"]["path"].endswith("/only.safetensors"), j
    assert "the only checkpoint" in j["base"]["found_by"], j
    assert j["family"] == "sd1" and j["base"]["family"] == "sd1"


def test_lora_base_by_configured_default():
    d, lora = lora_dir("r-default", dict(NO_NAME), [])
    base = os.path.join(svc.model_dir(), "diffusers")
    j = resolved(lora, env={"IMGD_BASE_SD1": base})
    assert j["base"]["path"] == base, j
    assert j["base"]["found_by"] == f"configured default IMGD_BASE_SD1={base}", j
    # a hub id as the default works too (pulled into the download dir)
    j = resolved(lora, "--download-dir", os.path.join(ROOT, "dl-default"),
                 env={"IMGD_BASE_SD1": "test/narrow"})
    assert j["base"]["path"].endswith("/narrow"), j


def test_lora_base_not_found_lists_tries():
    d, lora = lora_dir("r-none", {"ss_sd_model_name": "missing.safetensors"}, [])
    r = resolve(lora, "--models", d)
    assert r.returncode == 1, (r.returncode, r.stdout)
    err = r.stderr
    for want in ("no base model found", "family sd1", "missing.safetensors", "IMGD_BASE_SD1",
                 "Tried:", "Candidates: no checkpoints"):
        assert want in err, (want, err)


def test_lora_incompatible_base_refused():
    d, lora = lora_dir("r-incompat", dict(NO_NAME), [])
    sdxl = os.path.join(CONF, "sdxl-narrow")
    if not os.path.isdir(sdxl):
        svc.skip("no sdxl-narrow in the shared folder")
    r = resolve(lora, env={"IMGD_BASE_SD1": sdxl})
    assert r.returncode == 1, r.stdout
    assert "incompatible pair" in r.stderr and "sdxl" in r.stderr, r.stderr
    # and serve refuses it before loading anything
    s = Served(lora, "x", env={"IMGD_BASE_SD1": sdxl}, tag="s-incompat")
    p = subprocess.run(s.cmd, capture_output=True, text=True, env=s.env, timeout=120)
    assert p.returncode == 1 and "incompatible pair" in p.stderr, (p.returncode, p.stderr[-800:])
    assert "model_loaded" not in p.stderr


# ---- other forms and bad ids ----------------------------------------------------------------

def test_url_with_file_name():
    j = resolved(HUB + "/test/single2/resolve/main/sd15-narrow.safetensors", "--download-dir",
                 os.path.join(ROOT, "dl-url"))
    assert j["source"] == "url" and j["kind"] == "checkpoint", j
    assert j["path"].endswith("/sd15-narrow.safetensors"), j


def test_hub_unreachable_serves_the_copy_pulled_before():
    dl = os.path.join(ROOT, "dl-offline")
    first = resolved("test/narrow", "--download-dir", dl)
    assert first["source"] == "huggingface", first
    dead = {"IMGD_HF_ENDPOINT": "http://127.0.0.1:9", "IMGD_CIVITAI_ENDPOINT": "http://127.0.0.1:9"}
    again = resolved("test/narrow", "--download-dir", dl, env=dead)
    assert again["path"] == first["path"], (again, first)
    # never pulled: the error says the download failed
    r = resolve("test/other", "--download-dir", dl, env=dead)
    assert r.returncode == 1 and "download failed" in r.stderr, r.stderr[-400:]


def test_folder_of_weight_files():
    # a .ckpt and a .safetensors of one model (and a subfolder): the safetensors is served
    j = resolved(svc.model_dir())
    assert j["source"] == "folder" and j["path"].endswith("/sd15-narrow.safetensors"), j
    d = os.path.join(ROOT, "two")
    os.makedirs(d, exist_ok=True)
    for n in ("a.safetensors", "b.safetensors"):
        shutil.copy(os.path.join(svc.model_dir(), "sd15-narrow.safetensors"), os.path.join(d, n))
    r = resolve(d)
    assert r.returncode == 1 and "holds 2 weight files" in r.stderr, r.stderr[-400:]


def test_bad_ids():
    for bad, want in (("not a model id", "is not a file or folder here"),
                      ("urn:air:sd1:lora:elsewhere:1", "source 'elsewhere' is not supported"),
                      ("urn:air:sd1:lora", "expected urn:air:ECOSYSTEM:TYPE:SOURCE:ID"),
                      ("civitai:999999", "download failed")):
        r = resolve(bad)
        assert r.returncode == 1 and want in r.stderr, (bad, r.returncode, r.stderr[-500:])
    vae = os.path.join(svc.model_dir(), "diffusers", "vae")
    r = resolve(vae)
    assert r.returncode == 1 and "vae" in r.stderr, r.stderr[-500:]


# ---- the fake hub ---------------------------------------------------------------------------

def start_hub():
    md = svc.model_dir()
    files = {}
    top = os.path.join(md, "diffusers")
    for dp, _, fs in os.walk(top):
        for f in fs:
            full = os.path.join(dp, f)
            with open(full, "rb") as fh:
                files[os.path.relpath(full, top)] = fh.read()
    fake_hub.REPOS["test/narrow"] = files
    with open(os.path.join(md, "sd15-narrow.safetensors"), "rb") as f:
        ckpt = f.read()
    fake_hub.REPOS["test/single2"] = {"sd15-narrow.safetensors": ckpt}
    with open(os.path.join(md, "lora", "narrow-lora_kohya.safetensors"), "rb") as f:
        lora = lora_with_meta_bytes(f.read(), NO_NAME)
    fake_hub.DOWNLOADS[200] = lora
    fake_hub.DOWNLOADS[201] = ckpt
    fake_hub.VERSIONS[200] = {
        "id": 200, "modelId": 20, "name": "style", "baseModel": "SD 1.5",
        "trainedWords": ["sks style"], "settings": {"strength": 0.6},
        "files": [{"name": "style.safetensors", "type": "Model", "primary": True,
                   "downloadUrl": "/api/download/models/200",
                   "hashes": {"SHA256": hashlib.sha256(lora).hexdigest().upper()}}]}
    fake_hub.VERSIONS[201] = {
        "id": 201, "modelId": 21, "name": "ckpt", "baseModel": "SD 1.5", "trainedWords": [],
        "files": [{"name": "sd15-narrow.safetensors", "type": "Model", "primary": True,
                   "downloadUrl": "/api/download/models/201",
                   "hashes": {"SHA256": hashlib.sha256(ckpt).hexdigest().upper()}}]}
    fake_hub.MODELS[20] = {"id": 20, "name": "style", "modelVersions": [{"id": 200}]}
    srv = ThreadingHTTPServer(("127.0.0.1", 0), fake_hub.Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def lora_with_meta_bytes(raw, meta):
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    md = header.get("__metadata__", {})
    for k, v in meta.items():
        if v is None:
            md.pop(k, None)
        else:
            md[k] = v
    header["__metadata__"] = md
    hb = json.dumps(header).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    return struct.pack("<Q", len(hb)) + hb + raw[8 + n:]


CASES = [test_local_file_registers_only_it, test_folder, test_fake_hub_repo_id,
         test_civitai_version_of_checkpoint, test_air_lora_base_by_registry_family_applied,
         test_lora_base_by_metadata_name, test_lora_base_by_metadata_legacy_hash,
         test_lora_base_by_registry_family, test_lora_base_by_configured_default,
         test_lora_base_not_found_lists_tries, test_lora_incompatible_base_refused,
         test_url_with_file_name, test_folder_of_weight_files,
         test_hub_unreachable_serves_the_copy_pulled_before, test_bad_ids]

if __name__ == "__main__":
    svc.need_requests()
    CONF = shared()
    svc.imgd_bin()
    ROOT = svc.tmp_root()
    hub = start_hub()
    HUB = f"http://127.0.0.1:{hub.server_address[1]}"
    names = sys.argv[1:]
    cases = [c for c in CASES if not names or c.__name__ in names]
    rc = svc.run_cases(cases)
    hub.shutdown()
    if rc == 0:
        svc.cleanup(ROOT)
    sys.exit(rc)
