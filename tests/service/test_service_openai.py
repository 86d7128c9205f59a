#!/usr/bin/env python3
"""Starts the worker and runs tests/service/node/test_openai.mjs (the npm openai client).
Skips, saying why, when node or tests/service/node/node_modules is missing (install with
`npm ci --prefix tests/service/node`; .ci/run does)."""
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import svc  # noqa: E402

NODE_DIR = os.path.join(HERE, "node")


def main():
    node = shutil.which("node")
    if not node:
        svc.skip("node is not installed (Debian: nodejs npm; scripts/install-deps.sh)")
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "openai")):
        svc.skip(f"{NODE_DIR}/node_modules/openai is missing: run "
                 f"`npm ci --prefix {NODE_DIR}` (.ci/run does)")
    root = svc.tmp_root()
    srv = svc.Server(root)
    try:
        srv.start()
        r = subprocess.run([node, os.path.join(NODE_DIR, "test_openai.mjs"), srv.base],
                           timeout=240)
        rc = srv.stop()
        if r.returncode != 0:
            print("---- server log (tail) ----")
            print("\n".join(srv.log().splitlines()[-40:]))
            return 1
        return 0 if rc == 0 else 1
    finally:
        if srv.proc:
            srv.kill9()
        svc.cleanup(root)


if __name__ == "__main__":
    sys.exit(main())
