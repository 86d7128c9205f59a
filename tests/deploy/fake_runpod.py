#!/usr/bin/env python3
"""A local stand-in for RunPod's serverless job API (the side a worker talks to), bound to
127.0.0.1, stdlib only. It speaks the contract of RunPod's worker library (runpod-python,
serverless/modules rp_job.py, rp_http.py, rp_ping.py, rp_progress.py):

  GET  /v2/ep/job-take/{pod}?...&job_in_progress=0|1   200 {"id", "input"} | 204 (no job)
  POST /v2/ep/job-done/{pod}/{job}?isStream=false       {"output": ...} | {"error": "..."} |
                                                        {"status": "IN_PROGRESS", "output": ...}
  GET  /v2/ep/ping/{pod}?job_id=a,b&runpod_version=v    heartbeat

Every request must carry "Authorization: KEY" (the raw key), else 401. Failure modes on
purpose (see FAULTS): a 500 and a 400 (FlashBoot) from the job URL, a job URL answer slower
than the worker's timeout, a job without an id, a 503 and a 500 on the first result post of
two jobs (the worker must retry), and cancellation: a job listed in `cancel` is cancelled when
its first progress update arrives, which is answered 404, as is every later post for it.

Each job's terminal state is recorded once per accepted post; the test checks that every job
reached the right terminal state exactly once."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

# request number of GET job-take (1-based) -> fault
FAULTS = {2: "500", 4: "slow", 6: "400", 8: "no-id"}


class StandIn:
    def __init__(self, key, pod, jobs, cancel=(), slow_s=4.0, result_faults=None):
        self.key = key
        self.pod = pod
        self.queue = list(jobs)  # [(id, input)]
        self.cancel = set(cancel)
        self.slow_s = slow_s
        self.result_faults = dict(result_faults or {})  # job id -> [codes for first posts]
        self.lock = threading.Lock()
        self.jobs = {jid: {"state": "queued", "terminal": [], "progress": 0, "pct": 0.0,
                           "rejected": 0,
                           "taken": 0, "input": inp} for jid, inp in jobs}
        self.takes = 0
        self.take_params = []
        self.pings = []
        self.auth_failures = 0
        self.errors = []  # contract violations seen
        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.srv.daemon_threads = True
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)

    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def env(self):
        """The variables RunPod sets in a serverless worker's environment."""
        b = self.base()
        return {
            "RUNPOD_WEBHOOK_GET_JOB": b + "/v2/ep/job-take/$ID?gpu=TEST",
            "RUNPOD_WEBHOOK_POST_OUTPUT": b + "/v2/ep/job-done/$RUNPOD_POD_ID/$ID",
            "RUNPOD_WEBHOOK_PING": b + "/v2/ep/ping/$RUNPOD_POD_ID",
            "RUNPOD_AI_API_KEY": self.key,
            "RUNPOD_POD_ID": self.pod,
        }

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()

    def finished(self):
        with self.lock:
            return all(j["state"] in ("completed", "failed", "cancelled")
                       for j in self.jobs.values())

    def snapshot(self):
        with self.lock:
            return json.loads(json.dumps(self.jobs))

    # ---- HTTP ----------------------------------------------------------------------------

    def _handler(self):
        st = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def reply(self, code, obj=None):
                b = json.dumps(obj).encode() if obj is not None else b""
                try:
                    self.send_response(code)
                    if b:
                        self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(b)))
                    self.end_headers()
                    self.wfile.write(b)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def authed(self):
                if self.headers.get("Authorization") != st.key:
                    with st.lock:
                        st.auth_failures += 1
                    self.reply(401, {"error": "unauthorized"})
                    return False
                return True

            def do_GET(self):
                u = urlparse(self.path)
                q = parse_qs(u.query)
                if not self.authed():
                    return
                parts = u.path.strip("/").split("/")
                if len(parts) == 4 and parts[:3] == ["v2", "ep", "job-take"]:
                    return self.take(parts[3], q)
                if len(parts) == 4 and parts[:3] == ["v2", "ep", "ping"]:
                    with st.lock:
                        if parts[3] != st.pod:
                            st.errors.append(f"ping for pod {parts[3]!r}")
                        st.pings.append({"job_id": q.get("job_id", [""])[0],
                                         "runpod_version": q.get("runpod_version", [""])[0]})
                    return self.reply(200, {})
                self.reply(404, {"error": "no route"})

            def take(self, pod, q):
                with st.lock:
                    st.takes += 1
                    n = st.takes
                    st.take_params.append(q.get("job_in_progress", [None])[0])
                    if pod != st.pod:
                        st.errors.append(f"job-take for pod {pod!r}")
                    if q.get("gpu") != ["TEST"]:
                        st.errors.append("job-take lost the template's query string")
                fault = FAULTS.get(n)
                if fault == "500":
                    return self.reply(500, {"error": "internal"})
                if fault == "400":
                    return self.reply(400, {"error": "flashboot"})
                if fault == "slow":
                    time.sleep(st.slow_s)  # past the worker's timeout: it must give up and retry
                    return self.reply(204)
                if fault == "no-id":
                    return self.reply(200, {"input": {"prompt": "no id"}})
                with st.lock:
                    if not st.queue:
                        job = None
                    else:
                        jid, inp = st.queue.pop(0)
                        st.jobs[jid]["state"] = "taken"
                        st.jobs[jid]["taken"] += 1
                        job = {"id": jid, "input": inp}
                if job is None:
                    return self.reply(204)
                self.reply(200, job)

            def do_POST(self):
                u = urlparse(self.path)
                q = parse_qs(u.query)
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                if not self.authed():
                    return
                parts = u.path.strip("/").split("/")
                if len(parts) != 5 or parts[:3] != ["v2", "ep", "job-done"]:
                    return self.reply(404, {"error": "no route"})
                pod, jid = parts[3], parts[4]
                try:
                    body = json.loads(raw)
                except ValueError:
                    with st.lock:
                        st.errors.append(f"job {jid}: result body is not JSON: {raw[:80]!r}")
                    return self.reply(400, {"error": "bad json"})
                with st.lock:
                    if pod != st.pod:
                        st.errors.append(f"job-done for pod {pod!r}")
                    if q.get("isStream") != ["false"]:
                        st.errors.append(f"job {jid}: isStream={q.get('isStream')}")
                    j = st.jobs.get(jid)
                    if j is None:
                        st.errors.append(f"post for unknown job {jid!r}")
                        return self.reply(404, {"error": "unknown job"})
                    if j["state"] == "cancelled" or (
                            body.get("status") == "IN_PROGRESS" and jid in st.cancel):
                        j["state"] = "cancelled"
                        j["rejected"] += 1
                        return self.reply(404, {"error": "job cancelled"})
                    if j["state"] in ("completed", "failed"):
                        st.errors.append(f"job {jid}: a post after its terminal state")
                        return self.reply(400, {"error": "already finished"})
                    if body.get("status") == "IN_PROGRESS":
                        j["progress"] += 1
                        out = body.get("output")
                        if isinstance(out, dict) and isinstance(out.get("progress"), (int, float)):
                            j["pct"] = float(out["progress"])
                        return self.reply(200, {})
                    faults = st.result_faults.get(jid)
                    if faults:
                        code = faults.pop(0)
                        return self.reply(code, {"error": "try again"})
                    if "error" in body:
                        j["state"] = "failed"
                        j["terminal"].append({"error": body["error"]})
                    elif "output" in body:
                        j["state"] = "completed"
                        j["terminal"].append({"output": body["output"]})
                    else:
                        st.errors.append(f"job {jid}: a post with neither output nor error")
                        return self.reply(400, {"error": "empty"})
                self.reply(200, {})

        return H
