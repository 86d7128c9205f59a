#!/usr/bin/env python3
"""Model registry and caches through the worker: GET /v1/models from the registry, --preload
reported by /v1/ready, --memory-budget evicting the least recently used model (never one in
use), and a .ckpt converted once into STATE/cache so the next cold start maps safetensors."""
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import svc  # noqa: E402

svc.need_requests()
import requests  # noqa: E402

CKPT = "sd15-narrow.ckpt"
ROOT = svc.tmp_root()
MD = svc.model_dir()
CONFIG = {"models": {CKPT: {"te_heads": 4, "tokenizer": os.path.join(MD, "diffusers", "tokenizer")}}}
S = requests.Session()
SRV = None


def start(*args):
    global SRV
    ext = os.path.join(ROOT, "extra")
    if not os.path.isdir(ext):
        os.makedirs(ext)
        shutil.copyfile(os.path.join(MD, "sd15-narrow.safetensors"), os.path.join(ext, "m.safetensors"))
    SRV = svc.Server(ROOT, config=CONFIG, args=args, state=os.path.join(ROOT, "state"),
                     extra_dirs=[ext])
    SRV.start()
    return SRV


def model(mid):
    r = S.get(SRV.url(f"/v1/models/{mid}"))
    assert r.status_code == 200, r.text
    return r.json()


def load_times(mid):
    """load seconds of mid from the log's model_loaded events, oldest first."""
    out = []
    for rec in SRV.log_records():
        if rec.get("event") == "model_loaded" and rec["msg"].startswith(mid + " in "):
            out.append(float(rec["msg"].split(" in ")[1].split(" s")[0]))
    return out


def test_models_list_comes_from_the_registry():
    ms = {m["id"]: m for m in S.get(SRV.url("/v1/models")).json()["models"]}
    assert ms[svc.MODEL_ID]["loaded"] and ms[svc.MODEL_ID]["servable"], ms
    assert ms[CKPT]["format"] == "ckpt" and ms[CKPT]["servable"], ms[CKPT]
    assert any(m.get("kind") == "lora" for m in ms.values()), ms
    assert os.path.exists(os.path.join(ROOT, "state", "registry.sqlite3"))
    # lookups by file name without extension
    assert model("sd15-narrow.ckpt")["id"] == CKPT


def test_preload_is_reported_by_ready():
    j = S.get(SRV.url("/v1/ready")).json()
    assert j["ready"] and j["preload"] == [{"id": svc.MODEL_ID, "loaded": True}], j


def test_ckpt_is_converted_once_into_the_disk_cache():
    r = S.post(SRV.url(f"/v1/models/{CKPT}/load"))
    assert r.status_code == 200 and r.json()["loaded"], r.text
    cache = os.path.join(ROOT, "state", "cache")
    files = [f for f in os.listdir(cache) if f.endswith(".safetensors")]
    assert len(files) == 1 and len(files[0]) == 64 + 12, files
    assert model(CKPT)["sha256"] == files[0][:64]
    assert any(r.get("event") == "disk_cache" and "converted" in r["msg"] for r in SRV.log_records())


def test_budget_evicts_least_recently_used():
    # the budget fits one of the two models: loading the ckpt evicted the preloaded one
    ms = {m["id"]: m for m in S.get(SRV.url("/v1/models")).json()["models"]}
    assert ms[CKPT]["loaded"] and not ms[svc.MODEL_ID]["loaded"], ms
    j = S.get(SRV.url("/v1/ready")).json()
    assert j["preload"] == [{"id": svc.MODEL_ID, "loaded": False}] and j["loaded"] == [CKPT], j


def test_a_job_loads_its_model_back():
    r = S.post(SRV.url("/v1/jobs"), json={"model": svc.MODEL_ID, "prompt": "x", "steps": 1,
                                         "width": 64, "height": 64})
    assert r.status_code == 202, r.text
    j = svc.wait_job(S, SRV, r.json()["id"])
    assert j["state"] == "succeeded", j
    assert model(svc.MODEL_ID)["loaded"] and not model(CKPT)["loaded"]
    # by AutoV2 hash: the job holds the model while it runs and gives it back after
    av2 = model(CKPT)["sha256"][:10]
    r = S.post(SRV.url("/v1/jobs"), json={"model": av2, "prompt": "x", "steps": 1, "width": 64,
                                         "height": 64})
    assert r.status_code == 202, r.text
    j = svc.wait_job(S, SRV, r.json()["id"])
    assert j["state"] == "succeeded", j
    m = model(CKPT)
    assert m["loaded"] and m["in_use"] == 0, m
    # an ambiguous file name is refused with both ids named
    r = S.post(SRV.url("/v1/jobs"), json={"model": "sd15-narrow", "prompt": "x", "steps": 1})
    assert r.status_code == 400 and "ambiguous" in r.text, r.text


def test_pin_replace_rollback():
    ext = os.path.join(ROOT, "extra")
    mp = os.path.join(ext, "m.safetensors")
    lists = lambda: {m["id"]: m for m in S.get(SRV.url("/v1/models")).json()["models"]}  # noqa: E731
    r = S.post(SRV.url("/v1/models/m.safetensors/pin"))
    assert r.status_code == 200 and len(r.json()["pinned"]) == 64, r.text
    v1 = r.json()["pinned"]
    # replace the file (write beside, rename over) with a LoRA
    shutil.copyfile(os.path.join(MD, "lora", "narrow-lora_kohya.safetensors"), mp + ".new")
    os.replace(mp + ".new", mp)
    ms = lists()
    assert ms["m.safetensors"]["kind"] == "lora" and ms["m.safetensors"]["pinned"] == v1, ms
    # the pinned version stays addressable as ID@AUTOV2 (and by hash)
    old = model(f"m.safetensors@{v1[:10]}")
    assert old["kind"] == "checkpoint" and old["id"] == f"m.safetensors@{v1[:10]}", old
    assert model(v1)["id"] == old["id"]
    r = S.post(SRV.url("/v1/models/m.safetensors/rollback"))
    assert r.status_code == 200, r.text
    ms = lists()
    assert ms["m.safetensors"]["kind"] == "checkpoint", ms["m.safetensors"]
    assert S.post(SRV.url("/v1/models/m.safetensors/unpin")).status_code == 200
    r = S.post(SRV.url("/v1/models/m.safetensors/rollback"))
    assert r.status_code == 404 and "not pinned" in r.text, r.text


def main():
    # measure one model's resident bytes, then give a budget that holds one but not two
    start("--preload", svc.MODEL_ID)
    resident = model(svc.MODEL_ID)["resident_bytes"]
    SRV.stop()
    budget = int(resident * 1.5)
    start("--preload", svc.MODEL_ID, "--memory-budget", str(budget))
    cases = [test_models_list_comes_from_the_registry, test_preload_is_reported_by_ready,
             test_ckpt_is_converted_once_into_the_disk_cache, test_budget_evicts_least_recently_used,
             test_a_job_loads_its_model_back, test_pin_replace_rollback]
    rc = svc.run_cases(cases, SRV)
    first = load_times(CKPT)
    SRV.stop()
    # second cold start of the ckpt: a cache hit (a memory map of the converted file)
    start("--memory-budget", str(budget))
    r = S.post(SRV.url(f"/v1/models/{CKPT}/load"))
    hit = any(x.get("event") == "disk_cache" and ": hit " in x["msg"] for x in SRV.log_records())
    second = load_times(CKPT)[len(first):]
    print(f"ckpt cold start: first {first} s (convert + load), second {second} s (cache hit)")
    if r.status_code != 200 or not hit:
        print(f"FAIL second start: {r.status_code} {r.text} hit={hit}")
        rc = 1
    SRV.stop()
    svc.cleanup(ROOT)
    return rc


if __name__ == "__main__":
    sys.exit(main())
