#!/usr/bin/env bash
# Checks deploy/Dockerfile and deploy/runpod-template.json without a container engine (none runs
# on the project's machines, so CI never builds the image): the rules we care about, then
# dockerfilelint (npm; scripts/install-deps.sh installs it) when it is on PATH.
#
#   scripts/check-dockerfile.sh [DOCKERFILE [TEMPLATE]]
#
# Rules (each failure names the line and the fix):
#   base     every FROM names a tagged image (no :latest, no untagged); the last stage is a CUDA
#            runtime image (nvidia/cuda:*-runtime-*), not a devel one
#   user     the last stage switches to a non-root USER before ENTRYPOINT/CMD
#   health   a HEALTHCHECK that requests /v1/health
#   volume   a VOLUME for the model cache (/models)
#   apt      apt-get install uses --no-install-recommends and the lists are removed in that RUN
#   fetch    no ADD of a URL and no "curl ... | sh" (nothing unverified from the network)
#   template the RunPod template is JSON with imageName, dockerArgs containing --runpod,
#            isServerless true and a MODEL_ID entry in env
# Exits 1 when any rule fails.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DOCKERFILE=${1:-$ROOT/deploy/Dockerfile}
TEMPLATE=${2:-$ROOT/deploy/runpod-template.json}

python3 - "$DOCKERFILE" "$TEMPLATE" <<'PY'
import json
import re
import sys

path, template = sys.argv[1], sys.argv[2]
errors = []


def fail(line, msg):
    errors.append(f"{path}:{line}: {msg}")


# Logical instructions: continuation lines joined, comments dropped.
instrs = []
with open(path) as f:
    buf, start = "", 0
    for n, raw in enumerate(f, 1):
        line = raw.rstrip("\n")
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if not buf:
            start = n
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word = buf.split(None, 1)
        instrs.append((start, word[0].upper(), word[1] if len(word) > 1 else ""))
        buf = ""

stages = [i for i, (_, k, _) in enumerate(instrs) if k == "FROM"]
if not stages:
    fail(1, "no FROM: the image needs a base")
for i in stages:
    n, _, arg = instrs[i]
    image = arg.split()[0]
    if ":" not in image.split("/")[-1] or image.endswith(":latest"):
        fail(n, f"base image '{image}' is not pinned: give a tag (not latest)")
last = stages[-1] if stages else 0
final = instrs[last:]
if stages:
    n, _, arg = instrs[last]
    if not re.match(r"nvidia/cuda:\S*runtime", arg.split()[0]):
        fail(n, f"the final stage is '{arg.split()[0]}': use a CUDA runtime image "
                "(nvidia/cuda:VERSION-cudnn-runtime-OS) so the image ships no toolchain")

users = [(n, a.split()[0]) for n, k, a in final if k == "USER"]
if not users or users[-1][1].split(":")[0] in ("root", "0"):
    fail(users[-1][0] if users else instrs[last][0],
         "the final stage must switch to a non-root USER (e.g. USER imgd)")
else:
    u_at = max(i for i, (_, k, _) in enumerate(final) if k == "USER")
    for i, (n, k, _) in enumerate(final):
        if k in ("ENTRYPOINT", "CMD") and i < u_at:
            fail(n, f"{k} comes before USER: the process would start as root")

hc = [(n, a) for n, k, a in final if k == "HEALTHCHECK"]
if not hc or "/v1/health" not in hc[-1][1]:
    fail(hc[-1][0] if hc else 1, "a HEALTHCHECK that requests /v1/health is required")

vols = " ".join(a for _, k, a in final if k == "VOLUME")
if "/models" not in vols:
    fail(1, "declare the model cache as a volume: VOLUME [\"/models\", ...]")

for n, k, a in instrs:
    if k == "RUN" and "apt-get install" in a:
        if "--no-install-recommends" not in a:
            fail(n, "apt-get install without --no-install-recommends")
        if "rm -rf /var/lib/apt/lists" not in a:
            fail(n, "apt-get install without removing /var/lib/apt/lists in the same RUN")
    if k == "ADD" and re.search(r"https?://", a):
        fail(n, "ADD of a URL: download in a RUN with a checksum, or COPY from the context")
    if k == "RUN" and re.search(r"(curl|wget)[^|]*\|\s*(ba)?sh", a):
        fail(n, "piping a download into a shell runs unverified code")

try:
    with open(template) as f:
        t = json.load(f)
except (OSError, ValueError) as e:
    errors.append(f"{template}: not readable JSON: {e}")
else:
    if not isinstance(t.get("imageName"), str) or not t["imageName"]:
        errors.append(f"{template}: imageName is missing")
    if "--runpod" not in str(t.get("dockerArgs", "")):
        errors.append(f"{template}: dockerArgs must contain --runpod (the worker mode)")
    if t.get("isServerless") is not True:
        errors.append(f"{template}: isServerless must be true")
    keys = [e.get("key") for e in t.get("env", []) if isinstance(e, dict)]
    if "MODEL_ID" not in keys:
        errors.append(f"{template}: env has no MODEL_ID entry")

for e in errors:
    print(e)
print(f"check-dockerfile: {len(errors)} problem(s) in {path} and {template}")
sys.exit(1 if errors else 0)
PY

if command -v dockerfilelint >/dev/null 2>&1; then
    dockerfilelint "$DOCKERFILE"
else
    echo "check-dockerfile: dockerfilelint not on PATH (scripts/install-deps.sh installs it); skipped"
fi
