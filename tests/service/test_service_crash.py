#!/usr/bin/env python3
"""Durability: kill -9 the worker with jobs queued and one running, restart it on the same
state directory, and check that every accepted job completes exactly once from the
client's view. Then a graceful SIGTERM: the running job finishes (or, with no grace, is
requeued and runs after the restart) and the server exits 0."""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import svc  # noqa: E402

svc.need_requests()
import requests  # noqa: E402

S = requests.Session()
N_JOBS = 6
# Each job runs about a second on two cores (so the kill finds one running and the rest
# queued); seeds differ so every result is distinct.
JOB = {"prompt": "crash test", "steps": 20, "width": 64, "height": 64}


def job_of(srv, jid):
    r = S.get(srv.url(f"/v1/jobs/{jid}"), timeout=30)
    assert r.status_code == 200, (jid, r.status_code, r.text[:200])
    return r.json()


def test_kill9_restart():
    root = svc.tmp_root()
    srv = svc.Server(root, config={"queue": {"batch_max": 1}})
    try:
        srv.start()
        ids = []
        for i in range(N_JOBS):
            r = S.post(srv.url("/v1/jobs"), json=dict(JOB, seed=100 + i), timeout=30)
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        assert len(set(ids)) == N_JOBS
        # wait until one runs (and has made progress), then kill -9
        end = time.time() + 60
        while True:
            states = {j: job_of(srv, j) for j in ids}
            running = [j for j, v in states.items() if v["state"] == "running" and v["step"] > 0]
            if running:
                break
            assert time.time() < end, states
            time.sleep(0.02)
        rc = srv.kill9()
        assert rc == -signal.SIGKILL, svc.sig_name(rc)
        before = {j: v for j, v in states.items()}
        done_before = {j: v for j, v in before.items() if v["state"] == "succeeded"}
        was_running = running[0]
        queued_before = [j for j, v in before.items() if v["state"] == "queued"]
        assert queued_before, "nothing was queued at the kill"
        t_restart = time.time() * 1000
        srv.start()
        final = {j: svc.wait_job(S, srv, j, timeout=120) for j in ids}
        for j, v in final.items():
            assert v["state"] == "succeeded", (j, v)
            assert len(v["result"]["images"]) == 1, v
            assert v["result"]["images"][0]["seed"] == 100 + ids.index(j), v
        # the running job ran again (one more attempt); queued ones ran once, after the restart
        assert final[was_running]["attempts"] == 2, final[was_running]
        for j in queued_before:
            assert final[j]["attempts"] == 1, final[j]
            assert final[j]["started_ms"] >= t_restart - 1000, (final[j], t_restart)
        for j in done_before:
            assert final[j]["attempts"] == 1 and final[j]["finished_ms"] < t_restart, final[j]
        # none duplicated: six distinct results, and they stay the same when read again,
        # and after one more restart
        b64 = {j: v["result"]["images"][0]["b64"] for j, v in final.items()}
        assert len(set(b64.values())) == N_JOBS
        assert srv.stop() == 0
        srv.start()
        for j in ids:
            v = job_of(srv, j)
            assert v["state"] == "succeeded" and v["attempts"] == final[j]["attempts"], v
            assert v["result"]["images"][0]["b64"] == b64[j]
            img = S.get(srv.url(f"/v1/jobs/{j}/images/0"))
            assert img.status_code == 200 and img.content[:4] == b"\x89PNG"
        # nothing new appeared and nothing runs
        m = S.get(srv.url("/v1/metrics")).text
        assert 'imgd_jobs{state="succeeded"} 6' in m and "imgd_queue_depth 0" in m, m
        assert srv.stop() == 0
    finally:
        if srv.proc:
            srv.kill9()
        svc.cleanup(root)


LONG = {"prompt": "graceful", "steps": 30, "width": 128, "height": 128, "seed": 9}


def test_sigterm_finishes_running_job():
    root = svc.tmp_root()
    srv = svc.Server(root, config={"queue": {"batch_max": 1}}, args=["--grace", "60"])
    try:
        srv.start()
        jid = S.post(srv.url("/v1/jobs"), json=LONG, timeout=30).json()["id"]
        svc.wait_job(S, srv, jid, states=("running",), timeout=60)
        rc = srv.stop(signal.SIGTERM, timeout=90)
        assert rc == 0, svc.sig_name(rc)
        log = srv.log()
        srv.start()
        j = job_of(srv, jid)
        assert j["state"] == "succeeded" and j["attempts"] == 1, (j, log[-2000:])
        rc = srv.stop()
        assert rc == 0, (svc.sig_name(rc), srv.log()[-3000:])
    finally:
        if srv.proc:
            srv.kill9()
        svc.cleanup(root)


def test_sigterm_no_grace_requeues():
    root = svc.tmp_root()
    srv = svc.Server(root, config={"queue": {"batch_max": 1}}, args=["--grace", "0"])
    try:
        srv.start()
        jid = S.post(srv.url("/v1/jobs"), json=dict(LONG, steps=150), timeout=30).json()["id"]
        svc.wait_job(S, srv, jid, states=("running",), timeout=60)
        t0 = time.time()
        rc = srv.stop(signal.SIGTERM, timeout=60)
        assert rc == 0, svc.sig_name(rc)
        assert time.time() - t0 < 10, "the stop did not cancel the running job"
        srv.start()
        j = svc.wait_job(S, srv, jid, timeout=120)
        assert j["state"] == "succeeded", j
        assert srv.stop() == 0
    finally:
        if srv.proc:
            srv.kill9()
        svc.cleanup(root)


if __name__ == "__main__":
    sys.exit(svc.run_cases([test_kill9_restart, test_sigterm_finishes_running_job,
                            test_sigterm_no_grace_requeues]))
