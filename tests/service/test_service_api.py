#!/usr/bin/env python3
"""The worker end to end with Python's requests: every endpoint's happy path, bad inputs
with their 4xx (and the server still serving afterwards), the schema, jobs, SSE,
cancellation, the compatibility layers, metrics and logs. One server for the whole file."""
import base64
import shutil
import http.client
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import svc  # noqa: E402

svc.need_requests()
import requests  # noqa: E402

BODY_MAX = 256 * 1024
ROOT = svc.tmp_root()
# A second model dir holding links that leave it: they must never be served.
EVIL = os.path.join(ROOT, "evil")
os.makedirs(EVIL)
os.symlink(os.path.join(svc.model_dir(), svc.MODEL_ID), os.path.join(EVIL, "escape"))
os.symlink("/etc/passwd", os.path.join(EVIL, "passwd.safetensors"))
# A third holding a copy of the SDXL-topology model (links out of a model dir are refused).
XL = os.path.join(ROOT, "xl")
shutil.copytree(os.path.join(os.path.dirname(svc.model_dir()), "sdxl-narrow", "diffusers"),
                os.path.join(XL, "sdxl"))
# ... and a second SDXL model to refine with: the same folder with other UNet output biases,
# so that a hand-off to it changes the image.
shutil.copytree(os.path.join(XL, "sdxl"), os.path.join(XL, "sdxl-ref"))


def _perturb_bias(path, name, delta):
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        info = json.loads(f.read(n))[name]
        assert info["dtype"] == "F32", info
        lo, hi = info["data_offsets"]
        f.seek(8 + n + lo)
        vals = memoryview(bytearray(f.read(hi - lo))).cast("f")
        for i in range(len(vals)):
            vals[i] += delta
        f.seek(8 + n + lo)
        f.write(vals.tobytes())


_perturb_bias(os.path.join(XL, "sdxl-ref", "unet", "diffusion_pytorch_model.safetensors"),
              "conv_out.bias", 0.25)
# FLUX.1: the dev folder, and schnell's partial folder with the dev folder's encoders and VAE
# named in the config file.
FLUX_KIT = os.path.join(os.path.dirname(svc.model_dir()), "flux-narrow")
shutil.copytree(os.path.join(FLUX_KIT, "diffusers"), os.path.join(XL, "flux"))
shutil.copytree(os.path.join(FLUX_KIT, "schnell"), os.path.join(XL, "schnell"))


def write_hypernet(path, widths=(8, 16, 32), seed=3):
    """An A1111 hypernetwork as safetensors (layer_structure [1, 2, 1], relu): widths 8, 16
    and 32 are attention widths of both narrow models (no text width: family unknown)."""
    import random
    import struct
    rnd, header, blobs, off = random.Random(seed), {}, [], 0
    for d in widths:
        for kv in (0, 1):
            for name, shape, scale in (("linear.0.weight", [2 * d, d], d ** -0.5),
                                       ("linear.0.bias", [2 * d], 0.1),
                                       ("linear.2.weight", [d, 2 * d], (2 * d) ** -0.5),
                                       ("linear.2.bias", [d], 0.1)):
                n = shape[0] * (shape[1] if len(shape) > 1 else 1)
                b = struct.pack(f"<{n}f", *[rnd.uniform(-scale, scale) for _ in range(n)])
                header[f"{d}.{kv}.{name}"] = {"dtype": "F32", "shape": shape,
                                              "data_offsets": [off, off + len(b)]}
                blobs.append(b)
                off += len(b)
    header["__metadata__"] = {"activation_func": "relu", "is_layer_norm": "False",
                              "activate_output": "False"}
    hj = json.dumps(header).encode()
    hj += b" " * (-len(hj) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)) + hj + b"".join(blobs))


write_hypernet(os.path.join(XL, "hn-narrow.safetensors"))
FLUX_PARTS = {"clip_l": os.path.join(XL, "flux", "text_encoder"),
              "t5": os.path.join(XL, "flux", "text_encoder_2"),
              "vae": os.path.join(XL, "flux", "vae")}
SRV = svc.Server(ROOT, config={"http": {"body_max": BODY_MAX},
                               "queue": {"batch_max": 1},
                               "models": {"sdxl": {"te_heads": 4}, "sdxl-ref": {"te_heads": 4},
                                          "schnell": FLUX_PARTS}},
                 extra_dirs=[EVIL, XL])
S = requests.Session()
PNG_B64 = None  # a 64x64 PNG the server made (for img2img)


def url(p):
    return SRV.url(p)


def post(p, body, **kw):
    return S.post(url(p), json=body, timeout=120, **kw)


def still_serving():
    r = S.get(url("/v1/health"), timeout=10)
    assert r.status_code == 200 and r.json() == {"status": "ok"}, r.text


def problem(r, status, pointer=None, type_=None):
    """Checks an RFC 9457 problem response, then that the server still serves."""
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["Content-Type"].startswith("application/problem+json"), r.headers
    p = r.json()
    for k in ("type", "title", "status", "detail"):
        assert k in p, (k, p)
    assert p["status"] == status, p
    if pointer is not None:
        assert p.get("pointer") == pointer, p
    if type_ is not None:
        assert p["type"].endswith("/" + type_), p
    still_serving()
    return p


def small(**over):
    b = dict(svc.SMALL)
    b.update(over)
    return b


def png_ok(b64, w=64, h=64):
    raw = base64.b64decode(b64, validate=True)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", raw[:8]
    iw, ih = int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
    assert (iw, ih) == (w, h), (iw, ih)
    return raw


# ---- native: health, models, schema --------------------------------------------------------

def test_health_ready():
    still_serving()
    r = S.get(url("/v1/ready"))
    assert r.status_code == 200 and r.json()["ready"] is True, r.text
    assert svc.MODEL_ID in r.json()["loaded"]


def test_models():
    r = S.get(url("/v1/models"))
    assert r.status_code == 200, r.text
    ids = {m["id"]: m for m in r.json()["models"]}
    m = ids[svc.MODEL_ID]
    assert m["loaded"] is True and m["servable"] is True and m["family"] == "sd1", m
    r = S.get(url(f"/v1/models/{svc.MODEL_ID}"))
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["id"] == svc.MODEL_ID and j["loaded"] and j["capabilities"]["txt2img"], j
    # a non-model file under the dir: detected, not servable, but listed
    r = S.get(url("/v1/models/sd15-narrow.yaml"))
    assert r.status_code in (404, 422), r.text


def test_schema():
    r = S.get(url(f"/v1/models/{svc.MODEL_ID}/schema"))
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/schema+json")
    s = r.json()
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema", s["$schema"]
    assert s["type"] == "object" and s["additionalProperties"] is False
    assert s["required"] == ["prompt"]
    p = s["properties"]
    for k in ("prompt", "negative_prompt", "seed", "steps", "width", "height", "sampler",
              "schedule", "cfg_scale"):
        assert k in p, k
    assert "euler" in p["sampler"]["enum"] and p["sampler"]["default"] in p["sampler"]["enum"]
    assert p["width"]["minimum"] >= 8 and p["width"]["multipleOf"] == 8, p["width"]
    assert p["steps"]["maximum"] >= p["steps"]["default"] >= p["steps"]["minimum"] >= 1
    # conditional fields: img2img (init_image + strength) and inpainting (mask_image, which
    # needs init_image) for an SD 1.x model; the LoRA field lists the sd1 LoRAs under the
    # model dir (kohya and PEFT files of the kit), not the other adapters
    assert p["init_image"]["contentEncoding"] == "base64"
    assert 0 < p["strength"]["default"] <= p["strength"]["maximum"] == 1
    assert "mask_image" in p and s["dependentRequired"]["mask_image"] == ["init_image"]
    names = s["$defs"]["lora"]["properties"]["name"]["enum"]
    assert sorted(names) == ["lora/narrow-lora_kohya.safetensors",
                             "lora/narrow-lora_peft.safetensors"], names
    assert p["model"]["enum"] == [svc.MODEL_ID]
    # every default validates: {"prompt": ...} alone is a valid request (checked by
    # generate tests); the enforced conditional:
    p = problem(post("/v1/jobs", small(mask_image=PNG_B64)), 400, pointer="/init_image")
    assert "mask_image" in p["detail"], p


def test_model_load_unload():
    r = S.post(url(f"/v1/models/{svc.MODEL_ID}/load"))
    assert r.status_code == 200 and r.json()["loaded"] is True, r.text
    r = S.post(url(f"/v1/models/{svc.MODEL_ID}/unload"))
    assert r.status_code == 200 and r.json()["loaded"] is False, r.text
    r = S.get(url("/v1/ready"))
    assert r.status_code == 503 and r.json()["ready"] is False, r.text
    # no model loaded and none named: 400 model-required
    problem(post("/v1/jobs", {"prompt": "x"}), 400, type_="model-required")
    r = S.post(url(f"/v1/models/{svc.MODEL_ID}/load"))
    assert r.status_code == 200 and r.json()["loaded"] is True, r.text
    assert S.get(url("/v1/ready")).status_code == 200


# ---- native: generate, jobs, images, SSE, cancel --------------------------------------------

def test_generate_sync():
    global PNG_B64
    r = post("/v1/generate", small(seed=7))
    assert r.status_code == 200, r.text
    j = r.json()
    assert len(j["images"]) == 1 and j["images"][0]["seed"] == 7, j.keys()
    png_ok(j["images"][0]["b64"])
    assert j["timings"]["total_s"] > 0 and j["steps_run"] == 2, j["timings"]
    assert re.fullmatch(r"[0-9a-f]{32}", j["id"]), j["id"]
    PNG_B64 = j["images"][0]["b64"]
    # the same request again gives the same pixels (the stored request is reproducible)
    r2 = post("/v1/generate", small(seed=7, model=svc.MODEL_ID))
    assert r2.status_code == 200
    assert r2.json()["images"][0]["b64"] == PNG_B64


def test_generate_response_format_url():
    r = post("/v1/generate", small(seed=7, response_format="url"))
    assert r.status_code == 200, r.text
    im = r.json()["images"][0]
    assert "b64" not in im and im["url"].endswith("/images/0"), im
    b = S.get(im["url"])
    assert b.status_code == 200 and b.headers["Content-Type"] == "image/png", b.status_code
    assert b.content[:8] == b"\x89PNG\r\n\x1a\n"
    problem(post("/v1/generate", small(response_format="link")), 400,
            pointer="/response_format")


def test_generate_with_lora():
    base = post("/v1/generate", small(seed=7)).json()["images"][0]["b64"]
    one = post("/v1/generate", small(seed=7, loras=[
        {"name": "lora/narrow-lora_kohya.safetensors", "weight": 0.7}]))
    assert one.status_code == 200, one.text
    # the kit's kohya and PEFT files are the same LoRA: the same pixels, unlike no LoRA
    two = post("/v1/generate", small(seed=7, loras=[
        {"name": "lora/narrow-lora_peft.safetensors", "weight": 0.7}]))
    assert two.status_code == 200, two.text
    a, b = one.json()["images"][0]["b64"], two.json()["images"][0]["b64"]
    assert a != base, "the LoRA changed nothing"
    # (pixels: the PNGs' infotexts differ in the LoRA's name and hash)
    assert png_pixels(a) == png_pixels(b), "kohya and PEFT files of one LoRA gave different images"
    # without the LoRA again: the base weights are back exactly
    again = post("/v1/generate", small(seed=7)).json()["images"][0]["b64"]
    assert again == base
    problem(post("/v1/generate", small(loras=[{"name": "nope.safetensors"}])), 400,
            pointer="/loras/0/name")
    # A1111-style prompt tags name the LoRA by file name; same pixels as the "loras" field
    tag = post("/v1/generate", small(seed=7, prompt="a cat <lora:narrow-lora_peft:0.7>"))
    assert tag.status_code == 200, tag.text
    assert png_pixels(tag.json()["images"][0]["b64"]) == png_pixels(a)
    # A1111's "Lora hashes" names the file (never a server path) with its short addnet hash
    info = tag.json()["infotext"]
    assert "/" not in info, info
    assert re.search(r'Lora hashes: "narrow-lora_peft: [0-9a-f]{12}"', info), info
    bad = post("/v1/generate", small(prompt="a cat <lora:nope:1>"))
    assert bad.status_code == 400 and "nope" in bad.text, bad.text


def test_generate_with_hypernet():
    s = S.get(url(f"/v1/models/{svc.MODEL_ID}/schema")).json()
    assert s["$defs"]["hypernet"]["properties"]["name"]["enum"] == ["hn-narrow.safetensors"], s
    assert s["properties"]["hypernets"]["items"] == {"$ref": "#/$defs/hypernet"}
    base = png_pixels(post("/v1/generate", small(seed=7)).json()["images"][0]["b64"])
    zero = post("/v1/generate", small(seed=7, hypernets=[
        {"name": "hn-narrow.safetensors", "weight": 0}]))
    assert zero.status_code == 200, zero.text
    assert png_pixels(zero.json()["images"][0]["b64"]) == base, "weight 0 changed the image"
    one = post("/v1/generate", small(seed=7, hypernets=[
        {"name": "hn-narrow.safetensors", "weight": 0.8}]))
    assert one.status_code == 200, one.text
    a = png_pixels(one.json()["images"][0]["b64"])
    assert a != base, "the hypernetwork changed nothing"
    info = one.json()["infotext"]
    assert "Hypernet: hn-narrow, Hypernet strength: 0.8" in info and "/" not in info, info
    # the A1111 prompt tag, by file name: the same pixels; then without it the base again
    tag = post("/v1/generate", small(seed=7, prompt="a cat <hypernet:hn-narrow:0.8>"))
    assert tag.status_code == 200, tag.text
    assert png_pixels(tag.json()["images"][0]["b64"]) == a
    assert png_pixels(post("/v1/generate", small(seed=7)).json()["images"][0]["b64"]) == base
    problem(post("/v1/generate", small(hypernets=[{"name": "nope.pt"}])), 400,
            pointer="/hypernets/0/name")
    bad = post("/v1/generate", small(prompt="a cat <hypernet:nope:1>"))
    assert bad.status_code == 400 and "nope" in bad.text, bad.text
    # A1111: the listing and txt2img with the tag
    hns = S.get(url("/sdapi/v1/hypernetworks")).json()
    assert hns == [{"name": "hn-narrow", "path": "hn-narrow.safetensors"}], hns
    body = {"prompt": "a cat <hypernet:hn-narrow:0.8>", "steps": 2, "width": 64, "height": 64,
            "seed": 7, "sampler_name": "Euler"}
    r = post("/sdapi/v1/txt2img", body)
    assert r.status_code == 200, r.text
    body["prompt"] = "a cat"
    r0 = post("/sdapi/v1/txt2img", body)
    assert r0.status_code == 200, r0.text
    assert png_pixels(r.json()["images"][0]) != png_pixels(r0.json()["images"][0])


def png_pixels(b64):
    """The concatenated IDAT payload of a PNG, decompressed: its pixels, not its metadata."""
    import base64
    import struct
    import zlib
    data, pos, idat = base64.b64decode(b64), 8, b""
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + n]
        pos += 12 + n
    return zlib.decompress(idat)


def test_generate_batch_and_random_seed():
    r = post("/v1/generate", small(seed=-1, batch_size=2))
    assert r.status_code == 200, r.text
    ims = r.json()["images"]
    assert len(ims) == 2 and 0 <= ims[0]["seed"] <= 0xFFFFFFFF, ims[0]["seed"]
    png_ok(ims[0]["b64"])
    png_ok(ims[1]["b64"])


def test_img2img_native():
    r = post("/v1/generate", small(init_image=PNG_B64, strength=0.5))
    assert r.status_code == 200, r.text[:300]
    png_ok(r.json()["images"][0]["b64"])
    r = post("/v1/generate", small(init_image="data:image/png;base64," + PNG_B64, strength=0.5))
    assert r.status_code == 200, r.text[:300]


def test_jobs_async():
    r = post("/v1/jobs", small(seed=3))
    assert r.status_code == 202, r.text
    j = r.json()
    assert r.headers["Location"] == f"/v1/jobs/{j['id']}"
    assert j["state"] in ("queued", "running", "succeeded"), j
    done = svc.wait_job(S, SRV, j["id"])
    assert done["state"] == "succeeded" and done["progress"] == 100, done
    assert done["attempts"] == 1 and done["step"] == done["steps"] == 2, done
    png_ok(done["result"]["images"][0]["b64"])
    r = S.get(url(f"/v1/jobs/{j['id']}/images/0"))
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png", r.headers
    assert r.content == base64.b64decode(done["result"]["images"][0]["b64"])
    problem(S.get(url(f"/v1/jobs/{j['id']}/images/5")), 404)
    problem(S.get(url(f"/v1/jobs/{j['id']}/images/x")), 404)
    r = S.post(url(f"/v1/jobs/{j['id']}/images/0"))
    assert r.status_code == 405 and "GET" in r.headers["Allow"], r.headers
    # deleting a finished job leaves it alone
    r = S.delete(url(f"/v1/jobs/{j['id']}"))
    assert r.status_code == 200 and r.json()["state"] == "succeeded", r.text


def read_sse(resp):
    """Yields (event, data) from a text/event-stream response."""
    ev, data = None, []
    for raw in resp.iter_lines(decode_unicode=True):
        if raw is None:
            continue
        if raw == "":
            if ev or data:
                yield ev, "\n".join(data)
            ev, data = None, []
        elif raw.startswith(":"):
            continue
        elif raw.startswith("event:"):
            ev = raw[6:].strip()
        elif raw.startswith("data:"):
            data.append(raw[5:].lstrip())


def test_sse_progress():
    r = post("/v1/jobs", small(steps=12, seed=11))
    assert r.status_code == 202, r.text
    jid = r.json()["id"]
    with S.get(url(f"/v1/jobs/{jid}/events"), stream=True, timeout=120) as es:
        assert es.status_code == 200, es.text
        assert es.headers["Content-Type"].startswith("text/event-stream")
        events = list(read_sse(es))
    assert events, "no events"
    names = [e for e, _ in events]
    assert names[-1] == "done" and names.count("done") == 1, names
    assert all(n == "progress" for n in names[:-1]), names
    datas = [json.loads(d) for _, d in events]
    steps = [d["step"] for d in datas]
    assert steps == sorted(steps), f"progress went backwards: {steps}"
    assert datas[-1]["state"] == "succeeded" and datas[-1]["progress"] == 100, datas[-1]
    assert all(d["id"] == jid for d in datas)
    # a finished job's stream is one "done" event
    with S.get(url(f"/v1/jobs/{jid}/events"), stream=True, timeout=30) as es:
        ev = list(read_sse(es))
    assert [e for e, _ in ev] == ["done"], ev


LONG = {"prompt": "long", "steps": 150, "width": 128, "height": 128, "seed": 5}


def test_cancel_queued_and_running():
    a = post("/v1/jobs", LONG).json()["id"]
    b = post("/v1/jobs", small(seed=99)).json()["id"]
    svc.wait_job(S, SRV, a, states=("running",), timeout=60)
    # b is queued behind a (batch_max 1): cancelled at once
    t0 = time.time()
    r = S.delete(url(f"/v1/jobs/{b}"))
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "cancelled" and time.time() - t0 < 2, r.json()
    assert S.get(url(f"/v1/jobs/{b}")).json()["state"] == "cancelled"
    # a is running: 202, cancelled at its next step
    while S.get(url(f"/v1/jobs/{a}")).json()["step"] < 2:
        time.sleep(0.05)
    r = S.delete(url(f"/v1/jobs/{a}"))
    assert r.status_code == 202 and r.json()["cancel_requested"] is True, r.text
    t0 = time.time()
    j = svc.wait_job(S, SRV, a, timeout=30)
    assert j["state"] == "cancelled", j
    assert j["step"] < 150 and time.time() - t0 < 10, (j["step"], time.time() - t0)
    assert "result" not in j
    # the worker runs the next job normally
    assert post("/v1/generate", small()).status_code == 200


# ---- bad inputs ------------------------------------------------------------------------------

def raw_post(path, data, ctype="application/json"):
    return S.post(url(path), data=data, headers={"Content-Type": ctype}, timeout=60)


def test_malformed_json():
    for body in (b"{", b"{\"prompt\": }", b"not json", b"{\"prompt\":\"a\",}", b"\xff\xfe",
                 b"[" * 100 + b"]" * 100, b"{\"prompt\":\"a\"} trailing"):
        problem(raw_post("/v1/generate", body), 400)
    problem(raw_post("/v1/jobs", b""), 400, type_="invalid-json")
    problem(raw_post("/v1/jobs", b"[1,2]"), 400)
    problem(raw_post("/v1/jobs", b"\"a string\""), 400)
    problem(raw_post("/v1/jobs", b"null"), 400)


def test_wrong_types():
    for field, val in (("prompt", 5), ("steps", "many"), ("steps", 2.5), ("width", None),
                       ("seed", "x"), ("cfg_scale", [1]), ("sampler", 1),
                       ("negative_prompt", {"a": 1}), ("model", 3), ("strength", "half")):
        p = problem(post("/v1/jobs", small(**{field: val})), 400, pointer=f"/{field}")
        assert p["detail"], p
    problem(post("/v1/jobs", {"steps": 2}), 400)  # prompt missing


def test_unknown_fields():
    p = problem(post("/v1/jobs", small(stepz=3)), 400, pointer="/stepz")
    assert "did you mean" in p["hint"] and "steps" in p["hint"], p
    p = problem(post("/v1/jobs", small(negativ_prompt="x")), 400, pointer="/negativ_prompt")
    assert "negative_prompt" in p["hint"], p
    problem(post("/v1/jobs", small(zzzzzzzzzz=1)), 400, pointer="/zzzzzzzzzz")


def test_absurd_values():
    for field, val in (("width", 100000), ("height", 1), ("width", 65), ("steps", 0),
                       ("steps", 100000), ("batch_size", 10000), ("cfg_scale", 1e9),
                       ("seed", 2 ** 40), ("width", -64), ("sampler", "nope"),
                       ("strength", 2), ("prompt", "x" * 20000)):
        problem(post("/v1/jobs", small(**{field: val})), 400, pointer=f"/{field}")


def test_huge_body():
    big = json.dumps(small(prompt="x" * (BODY_MAX + 1000)))
    p = problem(raw_post("/v1/generate", big), 413, type_="body-too-large")
    assert str(BODY_MAX) in p["detail"], p
    problem(raw_post("/v1/jobs", b"{" + b" " * (4 << 20) + b"}"), 413)
    problem(raw_post("/sdapi/v1/txt2img", big), 413)


def test_content_type():
    body = json.dumps(small())
    problem(raw_post("/v1/generate", body, "text/plain"), 415)
    problem(raw_post("/v1/jobs", body, "application/x-www-form-urlencoded"), 415)
    problem(raw_post("/v1/jobs", body, "multipart/form-data; boundary=x"), 415)
    # JSON with a charset is fine
    r = raw_post("/v1/jobs", body, "application/json; charset=utf-8")
    assert r.status_code == 202, r.text


def test_model_traversal():
    cases = [
        ("../sd15-narrow/diffusers", 400),
        ("diffusers/../../sd15-narrow/diffusers", 400),
        ("..", 400),
        ("/etc/passwd", 400),
        (svc.model_dir() + "/diffusers", 400),
        ("~root", 400),
        ("dif\\fusers", 400),
        ("escape", 403),               # symlink out of its dir
        ("passwd.safetensors", 403),
        ("no-such-model", 404),
        ("", 400),
    ]
    for mid, st in cases:
        problem(post("/v1/jobs", small(model=mid)), st, pointer="/model")
    # in the URL: encoded dots and slashes, raw dots (sent as-is, not normalized by a client)
    for path, st in (("/v1/models/%2e%2e%2fsd15-narrow%2fdiffusers", 400),
                     ("/v1/models/%2E%2E/schema", 400),
                     ("/v1/models/%2fetc%2fpasswd", 400),
                     ("/v1/models/escape", 403),
                     ("/v1/models/escape/schema", 403),
                     # decoded once (by the server), "%252e" is the literal id "%2e...":
                     # no such model, and never "..".
                     ("/v1/models/%252e%252e%252fx", 404)):
        problem(S.get(url(path)), st)
    problem(S.post(url("/v1/models/escape/load")), 403)
    c = http.client.HTTPConnection("127.0.0.1", SRV.port, timeout=10)
    for path in ("/v1/models/../../etc/passwd", "/v1/models/diffusers/../../../x/schema"):
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        assert r.status in (400, 403, 404), (path, r.status, body)
        assert b"root:" not in body
    c.close()
    still_serving()
    # nothing was ever loaded from outside
    assert all(m["id"] != "escape" or not m["loaded"] for m in S.get(url("/v1/models")).json()["models"])


def test_bad_images():
    for bad in ("!!!notbase64", "AAA", "data:image/png;base64,@@@@", "aGVsbG8=\n\nd29ybGQ="):
        problem(post("/v1/jobs", small(init_image=bad)), 400, pointer="/init_image")
    # valid base64, not an image: refused at submission, no job created
    for notimg in (base64.b64encode(b"hello world, not an image").decode(),
                   base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 40).decode()):
        p = problem(post("/v1/jobs", small(init_image=notimg)), 400, pointer="/init_image")
        assert "job" not in p, p
    problem(post("/v1/jobs", small(init_image=PNG_B64, mask_image="%%%")), 400,
            pointer="/mask_image")
    problem(post("/sdapi/v1/img2img", {"prompt": "x", "steps": 2, "width": 64, "height": 64,
                                      "init_images": ["@@notb64"]}), 400)
    problem(post("/sdapi/v1/img2img", {"prompt": "x", "steps": 2}), 422, pointer="/init_images")


def test_routes_and_methods():
    for p in ("/", "/v2/generate", "/v1/nope", "/v1/healthz", "/sdapi/v1/nope", "/v1/jobs/"):
        problem(S.get(url(p)), 404)
    for method, p, allow in (("POST", "/v1/health", "GET"), ("DELETE", "/v1/models", "GET"),
                             ("GET", "/v1/generate", "POST"), ("PUT", "/v1/jobs", "POST"),
                             ("POST", "/v1/jobs/" + "0" * 32, "GET"),
                             ("GET", "/sdapi/v1/txt2img", "POST"),
                             ("DELETE", "/sdapi/v1/options", "GET"),
                             ("GET", "/v1/images/generations", "POST"),
                             ("GET", "/run", "POST"), ("PUT", "/health", "GET")):
        r = S.request(method, url(p), timeout=10)
        problem(r, 405)
        assert allow in r.headers.get("Allow", ""), (method, p, r.headers)


def test_unknown_jobs():
    for jid in ("0" * 32, "f" * 32, "nothex", "0" * 31, "0" * 33, "../../etc", "%00"):
        problem(S.get(url(f"/v1/jobs/{jid}")), 404)
        problem(S.delete(url(f"/v1/jobs/{jid}")), 404)
        problem(S.get(url(f"/v1/jobs/{jid}/events")), 404)
    problem(S.get(url("/v1/jobs/" + "0" * 32 + "/images/0")), 404)
    assert S.get(url("/status/" + "0" * 32)).status_code == 404
    assert S.post(url("/cancel/" + "a" * 32)).status_code == 404
    problem(S.get(url("/status/x")), 404)


# ---- compatibility layers ---------------------------------------------------------------------

def test_a1111():
    r = post("/sdapi/v1/txt2img", {"prompt": "a cat", "steps": 2, "width": 64, "height": 64,
                                   "seed": 4, "sampler_name": "Euler a", "batch_size": 1})
    assert r.status_code == 200, r.text[:300]
    j = r.json()
    png_ok(j["images"][0])
    info = json.loads(j["info"])
    assert info["seed"] == 4 and info["sampler_name"] == "Euler a", info
    assert j["parameters"]["prompt"] == "a cat"
    r = post("/sdapi/v1/img2img", {"prompt": "a dog", "steps": 2, "width": 64, "height": 64,
                                   "init_images": [PNG_B64], "denoising_strength": 0.6})
    assert r.status_code == 200, r.text[:300]
    png_ok(r.json()["images"][0])
    problem(post("/sdapi/v1/txt2img", {"prompt": "x", "sampler_name": "Bogus"}), 422)
    problem(post("/sdapi/v1/txt2img", {"prompt": "x", "steps": -3}), 400)
    titles = [m["title"] for m in S.get(url("/sdapi/v1/sd-models")).json()]
    assert svc.MODEL_ID in titles, titles
    names = [s["name"] for s in S.get(url("/sdapi/v1/samplers")).json()]
    assert "Euler a" in names and "DPM++ 2M Karras" in names, names
    sch = [s["name"] for s in S.get(url("/sdapi/v1/schedulers")).json()]
    assert "karras" in sch, sch
    loras = S.get(url("/sdapi/v1/loras")).json()
    assert sorted(x["name"] for x in loras) == ["narrow-lora_kohya", "narrow-lora_peft"], loras
    o = S.get(url("/sdapi/v1/options")).json()
    assert o["sd_model_checkpoint"] == svc.MODEL_ID, o
    r = post("/sdapi/v1/options", {"sd_model_checkpoint": svc.MODEL_ID})
    assert r.status_code == 200, r.text
    problem(post("/sdapi/v1/options", {"sd_model_checkpoint": "../x"}), 422)
    p = S.get(url("/sdapi/v1/progress")).json()
    assert 0 <= p["progress"] <= 1 and "state" in p, p
    assert S.post(url("/sdapi/v1/interrupt")).status_code == 200


def test_a1111_progress_while_running():
    jid = post("/v1/jobs", LONG).json()["id"]
    svc.wait_job(S, SRV, jid, states=("running",), timeout=60)
    seen = 0.0
    t0 = time.time()
    while time.time() - t0 < 20:
        p = S.get(url("/sdapi/v1/progress")).json()
        seen = max(seen, p["progress"])
        if p["state"]["sampling_step"] >= 3:
            assert p["state"]["job"] == jid and p["state"]["sampling_steps"] == 150, p
            break
        time.sleep(0.05)
    assert seen > 0, "progress never moved"
    # interrupt stops the running job (A1111 semantics)
    assert S.post(url("/sdapi/v1/interrupt")).status_code == 200
    j = svc.wait_job(S, SRV, jid, timeout=30)
    assert j["state"] == "cancelled", j


def test_openai_requests():
    r = post("/v1/images/generations", {"prompt": "a cat", "size": "64x64", "n": 1,
                                        "response_format": "b64_json"})
    assert r.status_code == 200, r.text[:300]
    d = r.json()["data"]
    png_ok(d[0]["b64_json"])
    r = post("/v1/images/generations", {"prompt": "a cat", "size": "64x64",
                                        "response_format": "url", "model": "dall-e-2"})
    assert r.status_code == 200, r.text[:300]
    u = r.json()["data"][0]["url"]
    assert u.startswith(SRV.base + "/v1/jobs/"), u
    img = S.get(u)
    assert img.status_code == 200 and img.content[:4] == b"\x89PNG"
    for body, param in (({"prompt": "x", "size": "big"}, "size"), ({"size": "64x64"}, "prompt"),
                        ({"prompt": "x", "size": "64x64", "response_format": "gif"},
                         "response_format"),
                        ({"prompt": "x", "size": "100000x64"}, "width")):
        r = post("/v1/images/generations", body)
        assert r.status_code == 400, r.text
        e = r.json()["error"]
        assert e["type"] == "invalid_request_error" and e["param"] == param, e
    still_serving()


def test_runpod():
    r = post("/run", {"input": small(seed=21)})
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["status"] in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED"), j
    end = time.time() + 60
    while j["status"] != "COMPLETED":
        assert j["status"] in ("IN_QUEUE", "IN_PROGRESS") and time.time() < end, j
        time.sleep(0.1)
        j = S.get(url(f"/status/{j['id']}")).json()
    png_ok(j["output"]["images"][0]["b64"])
    assert S.post(url(f"/status/{j['id']}")).json()["status"] == "COMPLETED"
    r = post("/runsync", {"input": small(seed=22)})
    assert r.status_code == 200 and r.json()["status"] == "COMPLETED", r.text[:300]
    h = S.get(url("/health")).json()
    assert h["jobs"]["completed"] >= 2 and "workers" in h, h
    problem(post("/run", {"prompt": "no envelope"}), 400, pointer="/input")
    problem(post("/run", {"input": small(stepz=1)}), 400, pointer="/stepz")
    # cancel a queued RunPod job
    a = post("/v1/jobs", LONG).json()["id"]
    b = post("/run", {"input": small(seed=23)}).json()["id"]
    c = S.post(url(f"/cancel/{b}")).json()
    assert c["status"] == "CANCELLED", c
    S.delete(url(f"/v1/jobs/{a}"))
    svc.wait_job(S, SRV, a, timeout=30)


# ---- metrics and logs ----------------------------------------------------------------------

PROM_SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*"'
    r'(,[a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*")*)?\})? '
    r'(-?[0-9.e+-]+|NaN|\+Inf|-Inf)( -?[0-9]+)?$')


def parse_prometheus(text):
    """Validates Prometheus text format 0.0.4 strictly enough; returns {name: [samples]}."""
    types, samples = {}, {}
    for ln, line in enumerate(text.splitlines(), 1):
        if not line:
            continue
        if line.startswith("# HELP "):
            assert len(line.split(" ", 3)) >= 3, (ln, line)
            continue
        if line.startswith("# TYPE "):
            parts = line.split(" ")
            assert len(parts) == 4 and parts[3] in ("counter", "gauge", "histogram", "summary",
                                                   "untyped"), (ln, line)
            assert parts[2] not in types, f"line {ln}: second TYPE for {parts[2]}"
            types[parts[2]] = parts[3]
            continue
        assert not line.startswith("#") or line.startswith("# "), (ln, line)
        if line.startswith("#"):
            continue
        m = PROM_SAMPLE.match(line)
        assert m, f"line {ln} is not a valid sample: {line!r}"
        samples.setdefault(m.group(1), []).append(line)
    for name in samples:
        base = re.sub(r"_(bucket|sum|count|total)$", "", name)
        assert name in types or base in types, f"{name} has no TYPE"
    return types, samples


def test_metrics():
    S.get(url("/v1/nope"))  # a 404, counted
    r = S.get(url("/v1/metrics"))
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain"), r.headers
    assert "version=0.0.4" in r.headers["Content-Type"]
    types, samples = parse_prometheus(r.text)
    for name in ("imgd_http_requests_total", "imgd_http_request_duration_seconds_bucket",
                 "imgd_http_request_duration_seconds_sum",
                 "imgd_http_request_duration_seconds_count", "imgd_queue_depth",
                 "imgd_steps_total", "imgd_images_total", "imgd_errors_total",
                 "imgd_model_load_seconds", "imgd_models_loaded", "imgd_jobs"):
        assert name in samples, f"missing metric {name}; have {sorted(samples)}"
    assert types["imgd_http_request_duration_seconds"] == "histogram"
    assert any('le="+Inf"' in s for s in samples["imgd_http_request_duration_seconds_bucket"])
    assert any('code="4xx"' in s for s in samples["imgd_http_requests_total"]), \
        samples["imgd_http_requests_total"]
    images = float(samples["imgd_images_total"][0].split()[-1])
    assert images >= 5, images
    mem = [n for n in samples if "memory" in n or "rss" in n or "bytes" in n]
    assert mem, f"no memory-in-use metric: {sorted(samples)}"


def test_logs_request_id():
    rid = "test-rid-12345"
    r = S.get(url("/v1/health"), headers={"X-Request-Id": rid})
    assert r.headers["X-Request-Id"] == rid
    r = post("/v1/generate", small(seed=31), headers={"X-Request-Id": "gen-rid-1"})
    assert r.status_code == 200 and r.headers["X-Request-Id"] == "gen-rid-1"
    # a bad X-Request-Id is replaced, not echoed
    r = S.get(url("/v1/health"), headers={"X-Request-Id": "bad id\"{}"})
    assert re.fullmatch(r"[0-9a-f]{16}", r.headers["X-Request-Id"]), r.headers["X-Request-Id"]
    time.sleep(0.3)
    recs = SRV.log_records()
    assert recs, "no JSON log lines"
    for rec in recs:
        for k in ("ts", "level", "component", "event", "msg"):
            assert k in rec, rec
    http_lines = [x for x in recs if x["component"] == "http" and x["event"] == "request"]
    assert http_lines and all("request_id" in x for x in http_lines), \
        [x for x in http_lines if "request_id" not in x][:3]
    assert any(x.get("request_id") == rid for x in http_lines)
    gen = [x for x in recs if x.get("request_id") == "gen-rid-1"]
    assert {x["event"] for x in gen} >= {"job_accepted", "request"}, gen
    # every line written while serving a request or running a job carries an id
    job_lines = [x for x in recs if x["component"] == "sched"]
    assert job_lines and all("request_id" in x for x in job_lines), job_lines[:3]


def test_sdxl():
    # the SDXL model's schema adds the micro-conditioning fields and defaults to 1024
    r = S.get(url("/v1/models/sdxl/schema"))
    assert r.status_code == 200, r.text
    p = r.json()["properties"]
    for k in ("original_width", "original_height", "crop_left", "crop_top", "target_width",
              "target_height"):
        assert p[k]["type"] == "integer" and p[k]["default"] == 0, (k, p.get(k))
    assert p["width"]["default"] == 1024 and "aesthetic_score" not in p, p["width"]
    body = small(model="sdxl", seed=3, original_width=2048, original_height=2048)
    r = post("/v1/generate", body)
    assert r.status_code == 200, r.text
    a = r.json()["images"][0]["b64"]
    png_ok(a)
    # the conditioning reaches the UNet: another original size gives other pixels, the same
    # one the same pixels
    b = post("/v1/generate", dict(body, original_width=512, original_height=512))
    assert b.status_code == 200 and b.json()["images"][0]["b64"] != a, b.text[:300]
    assert post("/v1/generate", body).json()["images"][0]["b64"] == a
    # an SD 1.x model has no such field
    problem(post("/v1/generate", small(model=svc.MODEL_ID, original_width=512)), 400,
            pointer="/original_width")


def test_sdxl_refiner():
    # the base's schema offers the other SDXL models as refiners, never itself
    p = S.get(url("/v1/models/sdxl/schema")).json()["properties"]
    assert p["refiner"]["enum"] == ["sdxl-ref"], p["refiner"]
    assert p["refiner_switch"]["default"] == 0.8, p["refiner_switch"]
    assert p["refiner_switch"]["exclusiveMaximum"] == 1, p["refiner_switch"]
    body = small(model="sdxl", seed=5, steps=4)
    base = post("/v1/generate", body)
    assert base.status_code == 200, base.text
    a = png_pixels(base.json()["images"][0]["b64"])
    # the refiner (other output biases) runs the last steps: other pixels; the same request
    # again: the same pixels; the infotext says so as A1111 does
    r = post("/v1/generate", dict(body, refiner="sdxl-ref", refiner_switch=0.5))
    assert r.status_code == 200, r.text
    b = png_pixels(r.json()["images"][0]["b64"])
    assert b != a, "the refiner changed nothing"
    again = post("/v1/generate", dict(body, refiner="sdxl-ref", refiner_switch=0.5))
    assert png_pixels(again.json()["images"][0]["b64"]) == b
    info = r.json()["infotext"]
    assert "Refiner: " in info and "Refiner switch at: 0.5" in info, info
    # a later switch leaves the refiner fewer steps: another image again
    c = post("/v1/generate", dict(body, refiner="sdxl-ref", refiner_switch=0.9))
    assert c.status_code == 200, c.text[:300]
    assert png_pixels(c.json()["images"][0]["b64"]) not in (a, b)
    # bad refiners: unknown, itself, an SD 1.x model, a switch outside (0, 1); the refiner of
    # an SD 1.x request
    problem(post("/v1/generate", dict(body, refiner="nope")), 400, pointer="/refiner")
    problem(post("/v1/generate", dict(body, refiner="sdxl")), 400, pointer="/refiner")
    problem(post("/v1/generate", dict(body, refiner=svc.MODEL_ID)), 400, pointer="/refiner")
    problem(post("/v1/generate", dict(body, refiner="sdxl-ref", refiner_switch=1)), 400,
            pointer="/refiner_switch")
    problem(post("/v1/generate", small(model=svc.MODEL_ID, refiner="sdxl-ref")), 400,
            pointer="/refiner")
    # A1111 clients name it by checkpoint title
    r = post("/sdapi/v1/txt2img", {"prompt": "a cat", "steps": 4, "width": 64, "height": 64,
                                   "seed": 5, "override_settings": {"sd_model_checkpoint": "sdxl"},
                                   "refiner_checkpoint": "sdxl-ref [0123456789]",
                                   "refiner_switch_at": 0.5})
    assert r.status_code == 200, r.text
    assert "Refiner switch at: 0.5" in r.json()["info"], r.json()["info"]
    still_serving()


def test_flux():
    # the schema shows what the loaded variant supports: dev has guidance, schnell not;
    # neither has negative_prompt or clip_skip; 1024 by default; 28 / 4 steps
    schemas = {}
    for mid in ("flux", "schnell"):
        r = S.get(url(f"/v1/models/{mid}/schema"))
        assert r.status_code == 200, r.text
        schemas[mid] = r.json()["properties"]
    d, s = schemas["flux"], schemas["schnell"]
    assert d["guidance"]["default"] == 3.5 and "guidance" not in s, (d.get("guidance"), s)
    for p in (d, s):
        assert "negative_prompt" not in p and "clip_skip" not in p, sorted(p)
        assert p["width"]["default"] == 1024 and p["width"]["multipleOf"] == 16, p["width"]
        assert p["sampler"]["enum"] == ["euler"], p["sampler"]
        assert p["max_sequence_length"]["maximum"] == 512, p["max_sequence_length"]
        assert "init_image" in p and "strength" in p and "mask_image" not in p, sorted(p)
    assert d["steps"]["default"] == 28 and s["steps"]["default"] == 4, (d["steps"], s["steps"])
    body = {"model": "flux", "prompt": "a red fox", "width": 64, "height": 64, "steps": 2,
            "seed": 5, "max_sequence_length": 64}
    r = post("/v1/generate", body)
    assert r.status_code == 200, r.text[:500]
    j = r.json()
    png_ok(j["images"][0]["b64"])
    assert j["steps_run"] == 2 and "Distilled CFG Scale: 3.5" in j["infotext"], j["infotext"]
    # guidance reaches the transformer: another value, other pixels; the same, the same
    b = post("/v1/generate", dict(body, guidance=7.0))
    assert b.status_code == 200 and b.json()["images"][0]["b64"] != j["images"][0]["b64"]
    assert post("/v1/generate", body).json()["images"][0]["b64"] == j["images"][0]["b64"]
    problem(post("/v1/generate", dict(body, negative_prompt="blurry")), 400,
            pointer="/negative_prompt")
    problem(post("/v1/generate", dict(body, clip_skip=2)), 400, pointer="/clip_skip")
    problem(post("/v1/generate", dict(body, width=72)), 400, pointer="/width")
    # img2img: the txt2img image as the init image, half the steps run; a mask is refused
    i2i = post("/v1/generate", dict(body, init_image=j["images"][0]["b64"], strength=0.5))
    assert i2i.status_code == 200 and i2i.json()["steps_run"] == 1, i2i.text[:500]
    assert "Denoising strength: 0.5" in i2i.json()["infotext"], i2i.json()["infotext"]
    problem(post("/v1/generate", dict(body, init_image=j["images"][0]["b64"],
                                      mask_image=j["images"][0]["b64"])), 400,
            pointer="/mask_image")
    caps = S.get(url("/v1/models/flux")).json()["capabilities"]
    assert caps == {"txt2img": True, "img2img": True, "inpaint": False}, caps
    # schnell: its own steps default (4), no guidance field
    r = post("/v1/generate", {"model": "schnell", "prompt": "a red fox", "width": 64,
                              "height": 64, "seed": 5})
    assert r.status_code == 200, r.text[:500]
    j = r.json()
    assert j["steps_run"] == 4 and "Distilled" not in j["infotext"], j
    problem(post("/v1/generate", {"model": "schnell", "prompt": "x", "guidance": 2}), 400,
            pointer="/guidance")


# ---- ControlNet and embeddings through the API ----------------------------------------------

CN = "controlnet/control_narrow.safetensors"


def cli_png(prompt, *extra, seed=3):
    """The same generation through `imgd generate` (base64 PNG), to compare pixels with."""
    import subprocess
    out = os.path.join(ROOT, "cli-%d.png" % len(os.listdir(ROOT)))
    cmd = [svc.imgd_bin(), "generate", "-m", os.path.join(svc.model_dir(), svc.MODEL_ID),
           "-p", prompt, "--steps", "2", "-W", "64", "-H", "64", "--seed", str(seed),
           "--sampler", "euler", "--schedule", "normal", "--cfg", "7", "--te-heads", "4",
           "-o", out, *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (cmd, r.stderr[-2000:])
    with open(out, "rb") as f:
        return base64.b64encode(f.read()).decode()


def test_generate_with_controls():
    s = S.get(url(f"/v1/models/{svc.MODEL_ID}/schema")).json()
    ids = s["$defs"]["control"]["properties"]["model"]["enum"]
    assert sorted(ids) == ["controlnet/control_narrow.safetensors",
                           "controlnet/diffusers/diffusion_pytorch_model.safetensors"], ids
    assert s["properties"]["controls"]["items"] == {"$ref": "#/$defs/control"}
    assert s["x-imgd-capabilities"]["controlnets"] == 2, s["x-imgd-capabilities"]
    # the SDXL model has no ControlNet of its family: no field
    xs = S.get(url("/v1/models/sdxl/schema")).json()
    assert "controls" not in xs["properties"], list(xs["properties"])
    ctl = dict(model=CN, image=PNG_B64, scale=0.8, preprocess="canny", resize_mode="crop")
    base = post("/v1/generate", small(seed=3, schedule="normal"))
    assert base.status_code == 200, base.text[:300]
    r = post("/v1/generate", small(seed=3, schedule="normal", controls=[ctl]))
    assert r.status_code == 200, r.text[:300]
    a = r.json()["images"][0]["b64"]
    assert png_pixels(a) != png_pixels(base.json()["images"][0]["b64"]), "the control did nothing"
    info = r.json()["infotext"]
    assert ('ControlNet 0: "Module: canny, Model: control_narrow, Weight: 0.8, Resize Mode: '
            'Crop and Resize, Threshold A: 100, Threshold B: 200, Guidance Start: 0, '
            'Guidance End: 1, Control Mode: Balanced"') in info, info
    # the request means what the CLI's flags mean: the same pixels
    ctl_png = os.path.join(ROOT, "control.png")
    with open(ctl_png, "wb") as f:
        f.write(base64.b64decode(PNG_B64))
    cli = cli_png("a cat", "--control", "%s:%s:0.8" % (os.path.join(svc.model_dir(), CN), ctl_png),
                  "--control-preprocess", "canny", "--control-resize", "crop")
    assert png_pixels(cli) == png_pixels(a), "API and CLI ControlNet runs differ"
    # scale 0 adds nothing: the plain image again
    z = post("/v1/generate", small(seed=3, schedule="normal", controls=[dict(ctl, scale=0)]))
    assert png_pixels(z.json()["images"][0]["b64"]) == png_pixels(base.json()["images"][0]["b64"])
    # bad inputs name the member
    problem(post("/v1/generate", small(controls=[dict(ctl, image="aGVsbG8=")])), 400,
            pointer="/controls/0/image")
    problem(post("/v1/generate", small(controls=[dict(ctl, model="controlnet/nope")])), 400,
            pointer="/controls/0/model")
    problem(post("/v1/generate", small(controls=[ctl, dict(ctl, start=0.6, end=0.5)])), 400,
            pointer="/controls/1/end")
    problem(post("/v1/generate", small(controls=[dict(ctl, preprocess="depth")])), 400,
            pointer="/controls/0/preprocess")
    problem(post("/v1/generate", small(controls=[{"model": CN}])), 400, pointer="/controls/0/image")
    # A1111 with sd-webui-controlnet's alwayson_scripts: the same generation
    unit = {"input_image": PNG_B64, "module": "canny", "model": "control_narrow [0123abcd]",
            "weight": 0.8, "resize_mode": "Crop and Resize", "control_mode": "Balanced",
            "threshold_a": 100, "threshold_b": 200, "guidance_start": 0, "guidance_end": 1}
    body = {"prompt": "a cat", "steps": 2, "width": 64, "height": 64, "seed": 3,
            "sampler_name": "Euler", "cfg_scale": 7,
            "alwayson_scripts": {"controlnet": {"args": [unit, {"enabled": False}]}}}
    r = post("/sdapi/v1/txt2img", body)
    assert r.status_code == 200, r.text[:300]
    assert png_pixels(r.json()["images"][0]) == png_pixels(a), "A1111 ControlNet differs"
    for field, val in (("module", "depth_midas"), ("control_mode", 1), ("resize_mode", 7),
                       ("model", "None")):
        bad = dict(body, alwayson_scripts={"controlnet": {"args": [dict(unit, **{field: val})]}})
        problem(post("/sdapi/v1/txt2img", bad), 422,
                pointer="/alwayson_scripts/controlnet/args/0/" + field)
    bad = dict(body, alwayson_scripts={"controlnet": {"args": [dict(unit, model="nope")]}})
    problem(post("/sdapi/v1/txt2img", bad), 400, pointer="/controls/0/model")
    # the extension's own routes: the models and modules it offers, and its detect
    ml = S.get(url("/controlnet/model_list"))
    assert ml.status_code == 200 and any(m.split(" [")[0] == "control_narrow"
                                         for m in ml.json()["model_list"]), ml.text
    mods = S.get(url("/controlnet/module_list")).json()
    assert "canny" in mods["module_list"] and mods["module_detail"]["canny"]["model_free"], mods
    assert S.get(url("/controlnet/version")).json() == {"version": 2}

    def detect(images, **kw):
        return post("/controlnet/detect", dict({"controlnet_input_images": images}, **kw))

    same = detect([PNG_B64], controlnet_module="none")
    assert same.status_code == 200, same.text[:300]
    assert png_pixels(same.json()["images"][0]) == png_pixels(PNG_B64)
    inv = detect([PNG_B64], controlnet_module="invert (from white bg & black line)").json()
    assert png_pixels(inv["images"][0]) != png_pixels(PNG_B64)
    back = detect(inv["images"], controlnet_module="invert").json()
    assert png_pixels(back["images"][0]) == png_pixels(PNG_B64), "invert twice is not identity"
    edges = detect([PNG_B64, PNG_B64], controlnet_module="canny", controlnet_processor_res=32,
                   controlnet_threshold_a=1, controlnet_threshold_b=2)
    assert edges.status_code == 200 and edges.json()["info"] == "Success", edges.text[:300]
    e0, e1 = edges.json()["images"]
    raw = png_ok(e0, 32, 32)
    assert raw[25] == 0, "canny gives a gray map"  # IHDR colour type
    assert e0 == e1
    high = detect([PNG_B64], controlnet_module="canny", controlnet_processor_res=32,
                  controlnet_threshold_a=250, controlnet_threshold_b=255).json()["images"][0]
    assert png_pixels(high) != png_pixels(e0), "the thresholds reach canny"
    problem(detect([PNG_B64], controlnet_module="depth_midas"), 422, pointer="/controlnet_module")
    problem(detect(["bm90IGFuIGltYWdl"], controlnet_module="canny"), 422,
            pointer="/controlnet_input_images/0")
    problem(detect([]), 422, pointer="/controlnet_input_images")
    assert S.delete(url("/controlnet/model_list")).status_code == 405
    still_serving()


def test_embeddings():
    s = S.get(url(f"/v1/models/{svc.MODEL_ID}/schema")).json()
    assert s["x-imgd-embeddings"] == ["narrowti"], s.get("x-imgd-embeddings")
    r = post("/v1/generate", small(seed=3, schedule="normal", prompt="a narrowti cat"))
    assert r.status_code == 200, r.text[:300]
    got = png_pixels(r.json()["images"][0]["b64"])
    ti = os.path.join(svc.model_dir(), "textual_inversion")
    with_ti = png_pixels(cli_png("a narrowti cat", "--embedding-dir", ti))
    without = png_pixels(cli_png("a narrowti cat"))
    assert with_ti != without, "the embedding changed nothing in the CLI"
    assert got == with_ti, "the worker did not apply the embedding named in the prompt"


CASES = [test_health_ready, test_models, test_generate_sync, test_schema,
         test_model_load_unload, test_generate_response_format_url, test_generate_with_lora,
         test_generate_with_hypernet,
         test_generate_with_controls, test_embeddings,
         test_generate_batch_and_random_seed, test_img2img_native,
         test_jobs_async, test_sse_progress, test_cancel_queued_and_running,
         test_malformed_json, test_wrong_types, test_unknown_fields, test_absurd_values,
         test_huge_body, test_content_type, test_model_traversal, test_bad_images,
         test_routes_and_methods, test_unknown_jobs, test_a1111,
         test_a1111_progress_while_running, test_openai_requests, test_runpod, test_metrics,
         test_logs_request_id, test_sdxl, test_sdxl_refiner, test_flux]


def main():
    try:
        SRV.start()
    except RuntimeError as e:
        print(f"FAIL start: {e}")
        return 1
    try:
        rc = svc.run_cases(CASES, SRV)
        stop = SRV.stop()
        if stop != 0:
            print(f"FAIL: server exit status {svc.sig_name(stop)} after SIGTERM")
            rc = 1
        return rc
    finally:
        if SRV.proc:
            SRV.kill9()
        svc.cleanup(ROOT)


if __name__ == "__main__":
    sys.exit(main())
