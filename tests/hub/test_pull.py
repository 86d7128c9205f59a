#!/usr/bin/env python3
"""imgd pull against the local fake hub (fake_hub.py): one case per run, named on the command
line (ctest registers each). Exit 77 = skipped."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fake_hub  # noqa: E402


class Hub:
    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "fake_hub.py")],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        self.port = int(line.split()[1])
        self.base = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *a):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()

    def stats(self):
        with urllib.request.urlopen(self.base + "/_stats") as r:
            return json.load(r)["requests"]


def pull(hub, dest, *args, env=None):
    b = os.environ.get("IMGD_BIN")
    e = dict(os.environ)
    e.pop("HF_TOKEN", None)
    e.pop("CIVITAI_TOKEN", None)
    e["IMGD_HF_ENDPOINT"] = hub.base
    e["IMGD_CIVITAI_ENDPOINT"] = hub.base
    e.update(env or {})
    t0 = time.time()
    r = subprocess.run([b, "pull", *args, "--dir", dest, "--json"], env=e, capture_output=True,
                       text=True, timeout=120)
    r.seconds = time.time() - t0
    return r


def files_under(d):
    out = set()
    for root, _, fs in os.walk(d):
        for f in fs:
            out.add(os.path.relpath(os.path.join(root, f), d))
    return out


def ok(r):
    assert r.returncode == 0, f"rc {r.returncode}\nstdout {r.stdout}\nstderr {r.stderr}"
    return json.loads(r.stdout)


def fail(r, *words):
    assert r.returncode == 1, f"expected failure, rc {r.returncode}: {r.stdout} {r.stderr}"
    for w in words:
        assert w in r.stderr, f"{w!r} not in: {r.stderr}"
    print("message:", r.stderr.strip())


def case_hf_pipeline_fp16(hub, d):
    ok(pull(hub, d, "test/pipe", "--variant", "fp16"))
    want = {"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors",
            "text_encoder/config.json", "text_encoder/model.safetensors.index.json",
            "text_encoder/model-00001-of-00002.safetensors",
            "text_encoder/model-00002-of-00002.safetensors", "tokenizer/vocab.json",
            "tokenizer/merges.txt", "scheduler/scheduler_config.json", "vae/config.json",
            "vae/diffusion_pytorch_model.fp16.safetensors"}
    got = files_under(os.path.join(d, "pipe"))
    assert got == want, (sorted(got - want), sorted(want - got))
    for f in want:
        with open(os.path.join(d, "pipe", f), "rb") as fh:
            assert fh.read() == fake_hub.PIPE_FILES[f], f


def case_hf_pipeline_plain(hub, d):
    ok(pull(hub, d, "hf:test/pipe@main"))
    got = files_under(os.path.join(d, "pipe"))
    assert "unet/diffusion_pytorch_model.safetensors" in got, got
    assert not any(".fp16." in f or f.endswith((".bin", ".msgpack", ".md")) for f in got), got


def case_hf_single_file(hub, d):
    ok(pull(hub, d, "test/single"))
    assert files_under(os.path.join(d, "single")) == {"model.safetensors", "model.yaml"}


def case_hf_404(hub, d):
    fail(pull(hub, d, "test/nope"), "test/nope", "404", "not found")


def case_hf_bad_source(hub, d):
    r = pull(hub, d, "no-slash")
    assert r.returncode == 1 and "org/name" in r.stderr, r.stderr


def case_hf_429_retry_after(hub, d):
    r = pull(hub, d, "test/flaky")
    ok(r)
    gets = [q for q in hub.stats() if q[1].endswith("/big.safetensors")]
    assert len(gets) == 2, gets
    assert r.seconds >= 1.0, f"Retry-After: 1 not honoured ({r.seconds:.2f} s)"


def case_hf_truncated_body_resumes(hub, d):
    ok(pull(hub, d, "test/truncated"))
    gets = [q for q in hub.stats() if q[1].endswith("/big.safetensors")]
    assert len(gets) == 2 and gets[0][2] is None and gets[1][2] == "bytes=100000-", gets
    with open(os.path.join(d, "truncated", "big.safetensors"), "rb") as f:
        assert f.read() == fake_hub.BIG["big.safetensors"]


def case_hf_wrong_hash(hub, d):
    fail(pull(hub, d, "test/badhash"), "sha256 mismatch", "big.safetensors", "deleted")
    assert files_under(d) == set(), files_under(d)


def case_hf_token(hub, d):
    fail(pull(hub, d, "test/private"), "HF_TOKEN", "401")
    ok(pull(hub, d, "test/private", env={"HF_TOKEN": "hf-secret"}))


def case_resume_after_interruption(hub, d):
    data = fake_hub.SINGLE["model.safetensors"]
    os.makedirs(os.path.join(d, "single"))
    with open(os.path.join(d, "single", "model.safetensors.part"), "wb") as f:
        f.write(data[:2000])
    ok(pull(hub, d, "test/single"))
    gets = [q for q in hub.stats() if q[1].endswith("/model.safetensors")]
    assert len(gets) == 1 and gets[0][2] == "bytes=2000-", gets
    with open(os.path.join(d, "single", "model.safetensors"), "rb") as f:
        assert f.read() == data
    assert not os.path.exists(os.path.join(d, "single", "model.safetensors.part"))
    # a second pull finds the file verified and downloads nothing
    n = len(hub.stats())
    j = ok(pull(hub, d, "test/single"))
    assert not any(f["downloaded"] for f in j["files"]), j
    assert len([q for q in hub.stats()[n:] if "/resolve/" in q[1]]) == 0


def case_civitai_version(hub, d):
    ok(pull(hub, d, "civitai:100"))
    with open(os.path.join(d, "styleLora.safetensors"), "rb") as f:
        assert f.read() == fake_hub.CIV_FILE
    with open(os.path.join(d, "styleLora.civitai.json")) as f:
        meta = json.load(f)
    assert meta["baseModel"] == "SD 1.5" and meta["trainedWords"] == ["sks style"], meta


def case_civitai_url_and_model(hub, d):
    ok(pull(hub, d, "https://civitai.com/models/10?modelVersionId=100"))
    os.remove(os.path.join(d, "styleLora.safetensors"))
    ok(pull(hub, d, "civitai-model:10"))
    assert os.path.exists(os.path.join(d, "styleLora.safetensors"))


def case_civitai_by_hash(hub, d):
    with open(os.path.join(d, "styleLora.safetensors"), "wb") as f:
        f.write(fake_hub.CIV_FILE)
    sha = hashlib.sha256(fake_hub.CIV_FILE).hexdigest()
    j = ok(pull(hub, d, "civitai-hash:" + sha))
    assert not j["files"][0]["downloaded"], j
    assert not any("/api/download/" in q[1] for q in hub.stats())
    assert os.path.exists(os.path.join(d, "styleLora.civitai.json"))


def case_civitai_by_local_file(hub, d):
    # a file the user already has, under a name of their own: metadata beside it, no download
    mine = os.path.join(d, "my-style.safetensors")
    with open(mine, "wb") as f:
        f.write(fake_hub.CIV_FILE)
    j = ok(pull(hub, d, "civitai-hash:" + mine))
    assert j["files"][0]["path"] == mine and not j["files"][0]["downloaded"], j
    assert j["files"][0]["sha256"] == hashlib.sha256(fake_hub.CIV_FILE).hexdigest(), j
    assert not any("/api/download/" in q[1] for q in hub.stats())
    with open(os.path.join(d, "my-style.civitai.json")) as f:
        meta = json.load(f)
    assert meta["trainedWords"] == ["sks style"] and meta["baseModel"] == "SD 1.5", meta
    assert files_under(d) == {"my-style.safetensors", "my-style.civitai.json"}, files_under(d)
    # a file CivitAI does not know: a 404 naming the file and its hash
    other = os.path.join(d, "unknown.safetensors")
    with open(other, "wb") as f:
        f.write(b"not on the hub")
    fail(pull(hub, d, "civitai-hash:" + other), "unknown.safetensors", "not a file CivitAI knows")


def case_civitai_wrong_hash(hub, d):
    fail(pull(hub, d, "civitai:101"), "sha256 mismatch", "bad.safetensors")
    assert files_under(d) == set(), files_under(d)


def case_civitai_404(hub, d):
    fail(pull(hub, d, "civitai:102"), "gone.safetensors", "404")
    fail(pull(hub, d, "civitai:999"), "civitai:999", "404")


CASES = {k[5:]: v for k, v in globals().items() if k.startswith("case_")}


def main():
    if not os.environ.get("IMGD_BIN"):
        print("IMGD_BIN not set; run through ctest")
        return 77
    names = sys.argv[1:] or list(CASES)
    failed = 0
    for name in names:
        d = tempfile.mkdtemp(prefix="pull-", dir=os.environ.get("IMGD_TEST_TMP"))
        try:
            with Hub() as hub:
                CASES[name](hub, d)
            print(f"ok   {name}")
        except Exception as e:  # noqa: BLE001
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")
        finally:
            shutil.rmtree(d, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
