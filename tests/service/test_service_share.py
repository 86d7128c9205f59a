#!/usr/bin/env python3
"""Components shared between loaded models through the worker (issue 8): two checkpoints
whose VAE tensors are identical (one UNet byte differs) hold the VAE once; /v1/models,
/v1/models/{id} and the metrics count it once; unloading the first keeps the second
generating; after a restart the files' VAE digests come from the registry's SQLite (only
the diffusers folder's VAE is hashed again); a checkpoint with a different VAE does not share."""
import json
import os
import re
import shutil
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import svc  # noqa: E402

svc.need_requests()
import requests  # noqa: E402

ROOT = svc.tmp_root()
MD = svc.model_dir()
EXT = os.path.join(ROOT, "extra")
TOK = os.path.join(MD, "diffusers", "tokenizer")
A, B, C = "a.safetensors", "b.safetensors", "c.safetensors"
CONFIG = {"models": {m: {"te_heads": 4, "tokenizer": TOK} for m in (A, B, C)}}
S = requests.Session()
SRV = None


def write_variant(dst, flip):
    """sd15-narrow.safetensors with the first byte of tensor `flip` changed (None: a copy)."""
    src = os.path.join(MD, "sd15-narrow.safetensors")
    data = bytearray(open(src, "rb").read())
    if flip:
        n = struct.unpack("<Q", data[:8])[0]
        off = 8 + n + json.loads(data[8:8 + n])[flip]["data_offsets"][0]
        data[off] ^= 1
    with open(dst, "wb") as f:
        f.write(data)


def setup():
    os.makedirs(EXT, exist_ok=True)
    write_variant(os.path.join(EXT, A), None)
    write_variant(os.path.join(EXT, B), "model.diffusion_model.out.2.bias")
    write_variant(os.path.join(EXT, C), "first_stage_model.decoder.conv_out.bias")


def start():
    global SRV
    SRV = svc.Server(ROOT, config=CONFIG, state=os.path.join(ROOT, "state"), extra_dirs=[EXT])
    SRV.start()


def load(mid):
    r = S.post(SRV.url(f"/v1/models/{mid}/load"))
    assert r.status_code == 200, r.text


def model(mid):
    r = S.get(SRV.url(f"/v1/models/{mid}"))
    assert r.status_code == 200, r.text
    return r.json()


def metric(name):
    text = S.get(SRV.url("/v1/metrics")).text
    m = re.search(rf"^{name} (\d+)$", text, re.M)
    assert m, f"{name} missing from the metrics"
    return int(m.group(1))


def memory():
    return S.get(SRV.url("/v1/models")).json()["memory"]


def counted_once_check():
    """memory.resident_bytes = every loaded model's own bytes + the shared ones once."""
    ms = [m for m in S.get(SRV.url("/v1/models")).json()["models"] if m["loaded"]]
    mem = memory()
    own = sum(m["resident_bytes"] - m["shared_bytes"] for m in ms)
    assert mem["resident_bytes"] == own + mem["shared_bytes"], (mem, ms)
    assert metric("imgd_models_resident_bytes") == mem["resident_bytes"]
    assert metric("imgd_models_shared_bytes") == mem["shared_bytes"]
    return mem


def test_identical_vae_is_held_once():
    before = memory()
    load(A)
    load(B)
    a, b = model(A), model(B)
    assert a["shared_bytes"] > 0 and a["shared_bytes"] == b["shared_bytes"], (a, b)
    mem = counted_once_check()
    # the pair adds its VAE once: held bytes grow by one VAE, saved bytes by at least one
    assert mem["shared_saved_bytes"] - before["shared_saved_bytes"] >= a["shared_bytes"], mem
    assert metric("imgd_models_shared_saved_bytes") == mem["shared_saved_bytes"]
    assert metric("imgd_models_shared_hashed_bytes_total") > 0  # A and B were compared


def test_unloading_one_keeps_the_other_generating():
    r = S.post(SRV.url(f"/v1/models/{A}/unload"))
    assert r.status_code == 200, r.text
    assert not model(A)["loaded"]
    r = S.post(SRV.url("/v1/generate"), json=dict(svc.SMALL, model=B))
    assert r.status_code == 200, r.text
    assert model(B)["shared_bytes"] > 0
    counted_once_check()


def test_a_different_vae_is_not_shared():
    shared_before = memory()["shared_bytes"]
    load(C)
    c = model(C)
    mem = counted_once_check()
    # C's VAE is held too, but for C alone: the held bytes grow by its size, saved do not
    assert mem["shared_bytes"] == shared_before + c["shared_bytes"], (mem, c)


def test_digests_come_from_the_registry_after_a_restart():
    SRV.stop()
    start()
    load(A)
    load(B)
    vae = model(B)["shared_bytes"]
    assert vae > 0
    # A's and B's digests come from SQLite; only the preloaded diffusers folder's VAE (the
    # same bytes, so A binds to it) is hashed again: folders are not cached by mtime
    assert metric("imgd_models_shared_hashed_bytes_total") == vae
    counted_once_check()


def main():
    setup()
    start()
    cases = [test_identical_vae_is_held_once, test_unloading_one_keeps_the_other_generating,
             test_a_different_vae_is_not_shared, test_digests_come_from_the_registry_after_a_restart]
    rc = svc.run_cases(cases, SRV)
    SRV.stop()
    svc.cleanup(ROOT)
    shutil.rmtree(EXT, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
