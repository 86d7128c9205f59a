#!/usr/bin/env bash
# The worker with curl: health, a generation, an SSE stream, a 413, a 404 and a 405.
# ctest passes IMGD_BIN and IMGD_SHARED_DIR; exits 77 (skipped) when something is missing.
set -euo pipefail
command -v curl >/dev/null || { echo "SKIP: curl is not installed"; exit 77; }
[[ -x ${IMGD_BIN:-} ]] || { echo "SKIP: IMGD_BIN not set; run through ctest"; exit 77; }
models=${IMGD_SHARED_DIR:-}/conformance/sd15-narrow
[[ -d $models/diffusers ]] || { echo "SKIP: no shared model at $models (IMGD_SHARED_DIR)"; exit 77; }
tmp=$(mktemp -d "${IMGD_TEST_TMP:-/tmp}/svc-curl.XXXXXX")
pid=
cleanup() {
    if [[ -n $pid ]]; then kill -9 "$pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    tail -n 30 "$tmp/log" || true
    exit 1
}
echo '{"http":{"body_max":65536},"models":{"diffusers":{"te_heads":4}}}' >"$tmp/config.json"
"$IMGD_BIN" serve --models "$models" --model diffusers --port 0 --state "$tmp/state" \
    --config "$tmp/config.json" --threads 1 >"$tmp/out" 2>"$tmp/log" &
pid=$!
for _ in $(seq 1 200); do
    grep -q 'listening on' "$tmp/out" 2>/dev/null && break
    sleep 0.1
done
base=$(grep -o 'http://[0-9.:]*' "$tmp/out") || fail "server did not start"
j='Content-Type: application/json'

code() { curl -s -o "$tmp/body" -w '%{http_code}' "$@"; }

[[ $(code "$base/v1/health") == 200 ]] || fail "health"
grep -q '"ok"' "$tmp/body" || fail "health body"
echo "ok   health"

[[ $(code -X POST -H "$j" -d '{"prompt":"a cat","steps":2,"width":64,"height":64,"seed":1}' \
    "$base/v1/generate") == 200 ]] || fail "generate: $(cat "$tmp/body")"
python3 -c 'import json,sys,base64; d=json.load(open(sys.argv[1])); assert base64.b64decode(d["images"][0]["b64"])[:4]==b"\x89PNG"' \
    "$tmp/body" || fail "generate body"
echo "ok   generate"

[[ $(code -X POST -H "$j" -d '{"prompt":"a cat","steps":4,"width":64,"height":64}' \
    "$base/v1/jobs") == 202 ]] || fail "jobs"
id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$tmp/body")
curl -s -N --max-time 60 "$base/v1/jobs/$id/events" >"$tmp/sse" || fail "sse"
grep -q '^event: done' "$tmp/sse" || fail "no done event: $(cat "$tmp/sse")"
[[ $(grep '^event:' "$tmp/sse" | tail -n1) == "event: done" ]] || fail "done is not last"
[[ $(code "$base/v1/jobs/$id/images/0") == 200 ]] || fail "image"
[[ $(head -c4 "$tmp/body" | od -An -c | tr -d ' ') == '211PNG' ]] || fail "image bytes"
echo "ok   job + SSE + image"

head -c 200000 /dev/zero | tr '\0' 'x' | sed 's/^/{"prompt":"/; s/$/"}/' >"$tmp/big.json"
[[ $(code -X POST -H "$j" --data-binary @"$tmp/big.json" "$base/v1/generate") == 413 ]] ||
    fail "413"
[[ $(code -X POST -H "$j" -d '{"prompt":' "$base/v1/generate") == 400 ]] || fail "400"
[[ $(code "$base/v1/nope") == 404 ]] || fail "404"
allow=$(curl -s -o /dev/null -D - -X DELETE "$base/v1/health" | tr -d '\r' |
    awk -F': ' 'tolower($1)=="allow"{print $2}')
[[ $allow == GET ]] || fail "405 Allow: '$allow'"
[[ $(code "$base/v1/health") == 200 ]] || fail "still serving"
echo "ok   413 / 400 / 404 / 405"

kill -TERM "$pid"
wait "$pid" || fail "exit status $? after SIGTERM"
pid=
echo "ok   SIGTERM"
