#!/usr/bin/env python3
"""CivitAI metadata beside models fills request defaults (issue 8): a checkpoint's
NAME.civitai.json settings (sampler, steps, cfgScale, clipSkip) become its schema's defaults
and the values a request without them runs with; a LoRA's recommended weight is used when a
request names it without a weight, and its trained words are listed in the schema and in
/v1/models; a bad field is skipped with a warning naming the file and the field. The
sidecars have the shape `imgd pull civitai:VERSION` writes (the model-version JSON)."""
import base64
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import svc  # noqa: E402

svc.need_requests()
import requests  # noqa: E402

ROOT = svc.tmp_root()
MD = svc.model_dir()
EXT = os.path.join(ROOT, "extra")
TOK = os.path.join(MD, "diffusers", "tokenizer")
CK, CK2, STYLE = "ck.safetensors", "ck2.safetensors", "style.safetensors"
CONFIG = {"models": {m: {"te_heads": 4, "tokenizer": TOK} for m in (CK, CK2)}}
S = requests.Session()
SRV = None


def version(words, settings, **extra):
    v = {"id": 100, "modelId": 10, "name": "v1", "baseModel": "SD 1.5", "trainedWords": words,
         "files": [{"name": "x.safetensors", "type": "Model", "primary": True}]}
    if settings is not None:
        v["settings"] = settings
    v.update(extra)
    return v


def setup():
    os.makedirs(EXT, exist_ok=True)
    ckpt = os.path.join(MD, "sd15-narrow.safetensors")
    lora = os.path.join(MD, "lora", "narrow-lora_kohya.safetensors")
    shutil.copyfile(ckpt, os.path.join(EXT, CK))
    shutil.copyfile(ckpt, os.path.join(EXT, CK2))
    shutil.copyfile(lora, os.path.join(EXT, STYLE))
    side = {
        "ck": version([], {"sampler": "DPM++ 2M Karras", "steps": 3, "cfgScale": 5.5,
                           "clipSkip": 2}),
        "ck2": version([], {"steps": "many", "cfgScale": 4}),
        "style": version(["sks style", "flat colors"], {"strength": 0.6}),
    }
    for stem, doc in side.items():
        with open(os.path.join(EXT, stem + ".civitai.json"), "w") as f:
            json.dump(doc, f)


def schema(mid):
    r = S.get(SRV.url(f"/v1/models/{mid}/schema"))
    assert r.status_code == 200, r.text
    return r.json()


def gen(**kw):
    body = dict(svc.SMALL, model=CK, **kw)
    r = S.post(SRV.url("/v1/generate"), json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_checkpoint_settings_are_the_schema_defaults():
    p = schema(CK)["properties"]
    assert p["steps"]["default"] == 3, p["steps"]
    assert p["cfg_scale"]["default"] == 5.5, p["cfg_scale"]
    assert p["sampler"]["default"] == "dpmpp_2m", p["sampler"]
    assert p["schedule"]["default"] == "karras", p["schedule"]
    assert p["clip_skip"]["default"] == 2, p["clip_skip"]
    note = schema(CK)["x-imgd-civitai"]
    assert note["defaults"] == {"steps": 3, "cfg_scale": 5.5, "sampler": "dpmpp_2m",
                                "schedule": "karras", "clip_skip": 2}, note
    assert note["file"].endswith("ck.civitai.json") and note["base_model"] == "SD 1.5"


def test_a_request_without_them_runs_with_them():
    body = {k: v for k, v in svc.SMALL.items() if k != "steps"}
    r = S.post(SRV.url("/v1/generate"), json=dict(body, model=CK))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["steps_run"] == 3, out["steps_run"]
    info = out["infotext"]
    assert "Steps: 3" in info and "CFG scale: 5.5" in info and "Clip skip: 2" in info, info
    # the request's own values still win
    out = gen(steps=2, cfg_scale=7)
    assert out["steps_run"] == 2 and "CFG scale: 7" in out["infotext"], out["infotext"]


def test_lora_weight_and_trained_words():
    sc = schema(CK)
    lm = sc["x-imgd-loras"][STYLE]
    assert lm["weight"] == 0.6 and lm["trained_words"] == ["sks style", "flat colors"], lm
    desc = sc["$defs"]["lora"]["properties"]["name"]["description"]
    assert "sks style" in desc and "recommended weight 0.6" in desc, desc
    assert sc["properties"]["loras"]["items"] == {"$ref": "#/$defs/lora"}
    m = S.get(SRV.url(f"/v1/models/{CK}")).json()
    assert m["lora_metadata"][STYLE]["weight"] == 0.6, m
    assert m["civitai"]["defaults"]["steps"] == 3, m
    listed = {e["id"]: e for e in S.get(SRV.url("/v1/models")).json()["models"]}
    assert listed[STYLE]["civitai"]["trained_words"] == ["sks style", "flat colors"], listed[STYLE]
    assert listed[STYLE]["civitai"]["weight"] == 0.6
    # no weight = the recommended 0.6: the same image as 0.6 given, not as 1.0
    omitted = gen(loras=[{"name": STYLE}])["images"][0]["b64"]
    given = gen(loras=[{"name": STYLE, "weight": 0.6}])["images"][0]["b64"]
    full = gen(loras=[{"name": STYLE, "weight": 1.0}])["images"][0]["b64"]
    assert omitted == given, "a LoRA without a weight did not get its recommended weight"
    assert base64.b64decode(omitted) != base64.b64decode(full), "weights 0.6 and 1.0 gave one image"


def test_a_bad_field_is_skipped_with_a_warning():
    p = schema(CK2)["properties"]
    assert p["steps"]["default"] == 20, p["steps"]  # "many": skipped
    assert p["cfg_scale"]["default"] == 4, p["cfg_scale"]  # the others still apply
    warned = [x for x in SRV.log_records() if x.get("event") == "bad_field"]
    assert any("ck2.civitai.json" in x["msg"] and "settings.steps" in x["msg"] for x in warned), warned


def main():
    global SRV
    setup()
    SRV = svc.Server(ROOT, config=CONFIG, state=os.path.join(ROOT, "state"), extra_dirs=[EXT])
    SRV.start()
    cases = [test_checkpoint_settings_are_the_schema_defaults,
             test_a_request_without_them_runs_with_them, test_lora_weight_and_trained_words,
             test_a_bad_field_is_skipped_with_a_warning]
    rc = svc.run_cases(cases, SRV)
    SRV.stop()
    svc.cleanup(ROOT)
    shutil.rmtree(EXT, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
