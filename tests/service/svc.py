"""Shared pieces of the worker's end-to-end tests: find the binary and the shared model,
start `imgd serve` on a loopback port with a temporary state directory, stop it.

ctest passes IMGD_BIN (the built imgd) and IMGD_SHARED_DIR (the shared conformance data).
A test that cannot run here exits 77 (ctest SKIP_RETURN_CODE) after saying why.
"""
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SKIP = 77
MODEL_ID = "diffusers"
# A request that runs in well under a second with the narrow model on two cores.
SMALL = {"prompt": "a cat", "steps": 2, "width": 64, "height": 64, "seed": 1}


def skip(why):
    print(f"SKIP: {why}", flush=True)
    sys.exit(SKIP)


def need_requests():
    try:
        import requests  # noqa: F401
    except ImportError:
        skip("python3 module 'requests' is missing (Debian: python3-requests; "
             "scripts/install-deps.sh installs it)")


def imgd_bin():
    b = os.environ.get("IMGD_BIN")
    if not b or not os.access(b, os.X_OK):
        skip(f"IMGD_BIN not set or not executable ({b!r}); run through ctest")
    return b


def model_dir():
    shared = os.environ.get("IMGD_SHARED_DIR", "")
    d = os.path.join(shared, "conformance", "sd15-narrow")
    if not os.path.isdir(os.path.join(d, MODEL_ID)):
        skip(f"shared conformance model not found at {d} (set IMGD_SHARED_DIR)")
    return os.path.realpath(d)


def tmp_root():
    base = os.environ.get("IMGD_TEST_TMP") or tempfile.gettempdir()
    os.makedirs(base, exist_ok=True)
    return tempfile.mkdtemp(prefix="svc-", dir=base)


class Server:
    """One `imgd serve` process. config is a dict written as --config (the model's load
    options are added); extra_dirs are more --models folders."""

    def __init__(self, root, config=None, extra_dirs=(), args=(), state=None):
        self.root = root
        self.state = state or os.path.join(root, "state")
        self.config = dict(config or {})
        models = dict(self.config.get("models", {}))
        models.setdefault(MODEL_ID, {"te_heads": 4})
        self.config["models"] = models
        self.extra_dirs = list(extra_dirs)
        self.args = list(args)
        self.proc = None
        self.port = None
        self.log_path = os.path.join(root, "server.log")
        self.starts = 0

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def url(self, path):
        return self.base + path

    def start(self, timeout=60):
        cfg = os.path.join(self.root, "config.json")
        with open(cfg, "w") as f:
            json.dump(self.config, f)
        cmd = [imgd_bin(), "serve", "--models", model_dir(), *self.extra_dirs,
               "--model", MODEL_ID, "--port", "0", "--state", self.state,
               "--config", cfg, "--threads", os.environ.get("IMGD_TEST_THREADS", "1"), *self.args]
        self.starts += 1
        log = open(self.log_path, "a")
        log.write(f"--- start {self.starts}: {' '.join(cmd)}\n")
        log.flush()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
        log.close()
        end = time.time() + timeout
        line = ""
        while time.time() < end:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if r:
                line = self.proc.stdout.readline()
                if "listening on http://" in line:
                    self.port = int(line.strip().rsplit(":", 1)[1])
                    return self
                if not line:
                    break
            if self.proc.poll() is not None:
                break
        self.proc.kill()
        raise RuntimeError(f"server did not start (last stdout {line!r}); log:\n{self.log()}")

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Sends sig and waits; returns the exit status (negative: killed by a signal)."""
        if not self.proc:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
            raise RuntimeError(f"server did not stop within {timeout} s after {sig}")
        finally:
            self.proc.stdout.close()
        self.proc = None
        return rc

    def kill9(self):
        return self.stop(signal.SIGKILL, 30)

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def log_records(self):
        """The server's JSON-lines log records (lines that are JSON objects)."""
        out = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out


def wait_job(http, srv, job_id, states=("succeeded", "failed", "cancelled"), timeout=120,
             headers=None):
    """Polls GET /v1/jobs/{id} until its state is one of states; returns the job JSON."""
    end = time.time() + timeout
    while True:
        r = http.get(srv.url(f"/v1/jobs/{job_id}"), headers=headers, timeout=30)
        assert r.status_code == 200, (r.status_code, r.text)
        j = r.json()
        if j["state"] in states:
            return j
        if time.time() > end:
            raise AssertionError(f"job {job_id} still {j['state']} after {timeout} s")
        time.sleep(0.05)


def cleanup(root):
    if os.environ.get("IMGD_KEEP_TMP") != "1":
        shutil.rmtree(root, ignore_errors=True)


def run_cases(cases, srv=None):
    """Runs test functions in order, prints one line each, returns the exit status.
    On failure prints the server log's tail."""
    failed = 0
    for fn in cases:
        t0 = time.time()
        try:
            fn()
            print(f"ok   {fn.__name__} ({time.time() - t0:.2f} s)", flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure and go on
            failed += 1
            print(f"FAIL {fn.__name__}: {type(e).__name__}: {e}", flush=True)
            import traceback
            traceback.print_exc()
    if failed and srv is not None:
        print("---- server log (tail) ----")
        print("\n".join(srv.log().splitlines()[-60:]))
    print(f"{len(cases) - failed}/{len(cases)} passed")
    return 1 if failed else 0


def sig_name(rc):
    if rc is not None and rc < 0:
        return signal.Signals(-rc).name
    return str(rc)
