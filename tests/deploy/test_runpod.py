#!/usr/bin/env python3
"""imgd serve --runpod against a local RunPod stand-in (fake_runpod.py) on loopback.

  jobs20     20 jobs (18 good, one malformed, one cancelled by the platform while it runs) with
             the stand-in's failure modes (500/400/slow/no-id from the job URL, 503/500 on result
             posts): each job reaches the right terminal state exactly once; heartbeats carry the
             running job ids; SIGTERM then exits 0.
  sigterm    SIGTERM while a long job runs: the job finishes within --grace and its output is
             posted once; the worker exits 0.
  cutoff     SIGTERM with --grace 1 while a long job runs: the job is cut off and an error
             saying so is posted once.
  config     --runpod without RUNPOD_WEBHOOK_GET_JOB: exit 1 naming the variable.

Exit 77 = skipped (no shared model)."""
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "service"))
sys.path.insert(0, HERE)
import fake_runpod  # noqa: E402
import svc  # noqa: E402

KEY = "rp-test-key"
POD = "pod-123"


def start_worker(root, standin, extra=(), env_extra=None):
    cfg = os.path.join(root, "config.json")
    with open(cfg, "w") as f:
        f.write('{"models": {"diffusers": {"te_heads": 4}}}')
    env = dict(os.environ)
    env.update(standin.env() if standin else {})
    env.update({"IMGD_RUNPOD_HTTP_TIMEOUT": "2", "RUNPOD_PING_INTERVAL": "300"})
    env.update(env_extra or {})
    cmd = [svc.imgd_bin(), "serve", "--model-id", os.path.join(svc.model_dir(), "diffusers"),
           "--runpod", "--port", "0", "--state", os.path.join(root, "state"), "--config", cfg,
           "--threads", os.environ.get("IMGD_TEST_THREADS", "1"), *extra]
    log = open(os.path.join(root, "server.log"), "a")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    log.close()
    return p


def wait_ready(p, root, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        line = p.stdout.readline()
        if "listening on http://" in line:
            return
        if not line and p.poll() is not None:
            break
    raise AssertionError("worker did not start:\n" + tail(root))


def tail(root, n=40):
    try:
        with open(os.path.join(root, "server.log")) as f:
            return "\n".join(f.read().splitlines()[-n:])
    except OSError:
        return ""


def stop(p, timeout=60):
    p.send_signal(signal.SIGTERM)
    try:
        return p.wait(timeout)
    finally:
        if p.poll() is None:
            p.kill()
        p.stdout.close()


def wait_until(cond, timeout, what, root):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; worker log:\n{tail(root)}")


def good(i, steps=2, size=64):
    return {"prompt": f"a cat {i}", "steps": steps, "width": size, "height": size, "seed": i}


def test_jobs20():
    root = svc.tmp_root()
    jobs = [(f"job-{i:02d}", good(i)) for i in range(18)]
    jobs.insert(5, ("job-malformed", {"prompt": "x", "steps": "many", "width": 63}))
    jobs.insert(9, ("job-cancel", good(99, steps=150, size=128)))
    assert len(jobs) == 20
    si = fake_runpod.StandIn(KEY, POD, jobs, cancel={"job-cancel"},
                             result_faults={"job-03": [503], "job-07": [500, 502]}).start()
    p = start_worker(root, si, ["--runpod-concurrency", "2"])
    try:
        wait_ready(p, root)
        wait_until(si.finished, 300, "20 jobs to finish", root)
        time.sleep(1.0)  # any stray late post would show up now
        rc = stop(p)
    finally:
        if p.poll() is None:
            p.kill()
        si.stop()
    snap = si.snapshot()
    assert rc == 0, f"exit {rc}\n{tail(root)}"
    assert si.errors == [], si.errors
    assert si.auth_failures == 0
    for jid, j in snap.items():
        assert j["taken"] == 1, (jid, j["taken"])
        if jid == "job-cancel":
            assert j["state"] == "cancelled" and j["terminal"] == [], (jid, j)
            assert j["rejected"] == 1, f"the worker kept posting after a 404: {j['rejected']}"
            continue
        assert len(j["terminal"]) == 1, (jid, j["terminal"])
        if jid == "job-malformed":
            assert j["state"] == "failed", j
            err = j["terminal"][0]["error"]
            assert "/steps" in err or "steps" in err, err
            continue
        assert j["state"] == "completed", (jid, str(j["terminal"][0])[:300])
        out = j["terminal"][0]["output"]
        assert out["images"][0]["b64"], jid
        assert out["images"][0]["seed"] == j["input"]["seed"], (jid, out["images"][0]["seed"])
    assert "1" in si.take_params and "0" in si.take_params, set(si.take_params)
    assert any("job-" in pg["job_id"] for pg in si.pings), si.pings[:5]
    assert all(pg["runpod_version"].startswith("imgd-") for pg in si.pings)
    log = tail(root, 100000)
    assert "no usable \\\"id\\\"" in log or "without a usable" in log, "no-id job not reported"
    svc.cleanup(root)


def long_job_then_sigterm(grace, expect_output):
    root = svc.tmp_root()
    si = fake_runpod.StandIn(KEY, POD, [("job-long", good(7, steps=150, size=192))]).start()
    p = start_worker(root, si, ["--grace", str(grace)])
    try:
        wait_ready(p, root)
        # The finishing case stops the worker half-way through the job: the half that is left
        # takes as long as the half already run, whatever the machine's speed (a sanitizer
        # build on a loaded machine runs the job 50x slower than a release one), so the grace
        # covers it; the cut-off case stops it at the first progress post.
        pct = 50.0 if expect_output else 0.0
        wait_until(lambda: si.snapshot()["job-long"]["progress"] >= 1
                   and si.snapshot()["job-long"]["pct"] >= pct, 300,
                   f"a progress post at {pct:.0f}% or more", root)
        rc = stop(p, timeout=grace + 60)
    finally:
        if p.poll() is None:
            p.kill()
        si.stop()
    j = si.snapshot()["job-long"]
    assert rc == 0, f"exit {rc}\n{tail(root)}"
    assert si.errors == [], si.errors
    assert len(j["terminal"]) == 1, str(j)[:300]
    log = tail(root, 100000)
    # SIGTERM came while the job ran: the worker said it was stopping before the job ended
    stop_at = log.find('"component":"runpod","event":"stopping"')
    end_at = log.find('"event":"job_done"' if expect_output else '"event":"job_error"')
    assert 0 <= stop_at < end_at, (stop_at, end_at, log[-3000:])
    if expect_output:
        assert j["state"] == "completed", str(j["terminal"])[:300]
    else:
        assert j["state"] == "failed", str(j["terminal"])[:300]
        assert "SIGTERM" in j["terminal"][0]["error"], j["terminal"]
    svc.cleanup(root)


def test_sigterm_finishes_running_job():
    long_job_then_sigterm(250, True)


def test_sigterm_cutoff_posts_error():
    long_job_then_sigterm(1, False)


def test_config_missing_env():
    root = svc.tmp_root()
    env = {k: "" for k in ("RUNPOD_WEBHOOK_GET_JOB", "RUNPOD_WEBHOOK_POST_OUTPUT")}
    p = start_worker(root, None, env_extra=env)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 1, p.returncode
    assert "RUNPOD_WEBHOOK_GET_JOB" in tail(root), tail(root)
    svc.cleanup(root)


CASES = {"jobs20": [test_jobs20],
         "sigterm": [test_sigterm_finishes_running_job, test_sigterm_cutoff_posts_error],
         "config": [test_config_missing_env]}

if __name__ == "__main__":
    svc.model_dir()
    svc.imgd_bin()
    names = sys.argv[1:] or list(CASES)
    sys.exit(svc.run_cases([fn for n in names for fn in CASES[n]]))
