#!/usr/bin/env python3
"""API keys, rate limits and daily quotas over HTTP: 401 without or with a bad key, 429 +
Retry-After for the token bucket and for the daily image quota, and the quota surviving a
restart on the same state directory."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import svc  # noqa: E402

svc.need_requests()
import requests  # noqa: E402

KEY_OK = "sk-test-0123456789abcdef"
KEY_RATE = "sk-rate-0123456789abcdef"
KEY_QUOTA = "sk-quota-0123456789abcdef"
KEY_REFUND = "sk-refund-0123456789abcdef"
CONFIG = {"auth": {"anonymous": False, "keys": [
    {"name": "ok", "key": KEY_OK},
    {"name": "rate", "key": KEY_RATE, "rate_per_min": 1, "burst": 2},
    {"name": "quota", "key": KEY_QUOTA, "daily_images": 2},
    {"name": "refund", "key": KEY_REFUND, "daily_images": 2},
]}}
ROOT = svc.tmp_root()
SRV = svc.Server(ROOT, config=CONFIG)
S = requests.Session()


def h(key):
    return {"Authorization": f"Bearer {key}"}


def url(p):
    return SRV.url(p)


def test_open_routes():
    assert S.get(url("/v1/health")).status_code == 200
    assert S.get(url("/v1/metrics")).status_code == 200


def test_401():
    for headers in ({}, h("sk-wrong"), {"Authorization": "Basic dXNlcjpwYXNz"},
                    {"Authorization": "Bearer"}, {"Authorization": KEY_OK}):
        for method, p in (("POST", "/v1/generate"), ("POST", "/v1/jobs"),
                          ("GET", "/v1/models"), ("GET", f"/v1/models/{svc.MODEL_ID}/schema"),
                          ("POST", f"/v1/models/{svc.MODEL_ID}/unload"),
                          ("GET", "/v1/jobs/" + "0" * 32), ("POST", "/sdapi/v1/txt2img"),
                          ("GET", "/sdapi/v1/sd-models"), ("POST", "/run"),
                          ("POST", "/v1/images/generations")):
            r = S.request(method, url(p), json=svc.SMALL, headers=headers, timeout=30)
            assert r.status_code == 401, (method, p, headers, r.status_code, r.text[:200])
            assert r.headers.get("WWW-Authenticate", "").startswith("Bearer"), r.headers
            assert KEY_OK not in r.text
    # the unload above was refused: the model is still loaded
    assert S.get(url("/v1/ready")).status_code == 200
    r = S.post(url("/v1/generate"), json=svc.SMALL, headers=h(KEY_OK), timeout=60)
    assert r.status_code == 200, r.text[:300]
    assert S.get(url("/v1/models"), headers=h(KEY_OK)).status_code == 200


def test_rate_limit():
    codes = [S.get(url("/v1/models"), headers=h(KEY_RATE)).status_code for _ in range(2)]
    assert codes == [200, 200], codes
    r = S.get(url("/v1/models"), headers=h(KEY_RATE))
    assert r.status_code == 429, r.text
    assert r.json()["type"].endswith("/rate-limited"), r.text
    ra = int(r.headers["Retry-After"])
    assert 1 <= ra <= 60, ra
    # other keys are not affected
    assert S.get(url("/v1/models"), headers=h(KEY_OK)).status_code == 200
    # OpenAI clients get their error shape, with Retry-After kept
    r = S.post(url("/v1/images/generations"), json={"prompt": "x"}, headers=h(KEY_RATE))
    assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error", r.text
    assert int(r.headers["Retry-After"]) >= 1


def quota_generate():
    return S.post(url("/v1/generate"), json=svc.SMALL, headers=h(KEY_QUOTA), timeout=60)


def test_daily_quota():
    for i in range(2):
        r = quota_generate()
        assert r.status_code == 200, (i, r.text[:300])
    r = quota_generate()
    assert r.status_code == 429, r.text
    assert r.json()["type"].endswith("/quota-exceeded"), r.text
    ra = int(r.headers["Retry-After"])
    assert 1 <= ra <= 86400, ra
    # asking for more images than the whole quota at once is a 400
    r = S.post(url("/v1/jobs"), json=dict(svc.SMALL, batch_size=3), headers=h(KEY_QUOTA))
    assert r.status_code == 400, r.text


def test_quota_refund_on_cancel():
    # a long job keeps the scheduler busy, so the next one stays queued
    long = S.post(url("/v1/jobs"), json=dict(svc.SMALL, steps=60), headers=h(KEY_OK)).json()
    for _ in range(200):
        if S.get(url("/v1/jobs/" + long["id"]), headers=h(KEY_OK)).json()["state"] == "running":
            break
        time.sleep(0.02)
    r = S.post(url("/v1/jobs"), json=dict(svc.SMALL, batch_size=2), headers=h(KEY_REFUND))
    assert r.status_code == 202, r.text
    d = S.delete(url("/v1/jobs/" + r.json()["id"]), headers=h(KEY_REFUND))
    assert d.status_code == 200 and d.json()["state"] == "cancelled", d.text
    S.delete(url("/v1/jobs/" + long["id"]), headers=h(KEY_OK))
    # the cancelled job made nothing: its 2 images are back in the quota
    r = S.post(url("/v1/generate"), json=dict(svc.SMALL, batch_size=2), headers=h(KEY_REFUND),
               timeout=60)
    assert r.status_code == 200, r.text[:300]
    r = S.post(url("/v1/generate"), json=svc.SMALL, headers=h(KEY_REFUND), timeout=60)
    assert r.status_code == 429, r.text[:300]


def test_quota_survives_restart():
    rc = SRV.stop()
    assert rc == 0, svc.sig_name(rc)
    SRV.start()
    r = quota_generate()
    assert r.status_code == 429, r.text
    assert int(r.headers["Retry-After"]) >= 1
    # rate buckets are in memory: refilled by the restart
    assert S.get(url("/v1/models"), headers=h(KEY_RATE)).status_code == 200


CASES = [test_open_routes, test_401, test_rate_limit, test_daily_quota,
         test_quota_refund_on_cancel, test_quota_survives_restart]


def main():
    rc = 1
    try:
        SRV.start()
        rc = svc.run_cases(CASES, SRV)
        stop = SRV.stop()
        if stop != 0:
            print(f"FAIL: server exit status {svc.sig_name(stop)} after SIGTERM")
            rc = 1
    finally:
        if SRV.proc:
            SRV.kill9()
        svc.cleanup(ROOT)
    return rc


if __name__ == "__main__":
    sys.exit(main())
