#!/usr/bin/env bash
# OOM-injection sweep (STYLE X6): run one test executable with IMGD_FAIL_ALLOC_AT=1..N
# under an ASan+UBSan build configured with -DIMGD_ALLOC_DEBUG=ON. A first run counts the
# test's allocations: a test that makes fewer than N is swept over all of them, one that
# makes more also at IMGD_OOM_SPREAD (default 50) points spread over the rest.
#
#   scripts/oom_sweep.sh BUILD_DIR TEST_NAME N
#
# Each run may pass or fail its checks normally (an injected failure is supposed to make
# something report IMGD_E_NOMEM), but it must not crash, leak, hang or trip a sanitizer.
# Sanitizer reports exit with code 23 (set below); a signal shows as a code above 128;
# a hang is killed after IMGD_OOM_TIMEOUT seconds (default 120). The test runs with the
# environment, arguments and working folder that ctest would give it. IMGD_OOM_JOBS runs
# that many injection points at once (default: the number of CPUs).
# Skips (exit 0) with a message when TEST_NAME is not built in BUILD_DIR.
set -euo pipefail

if (($# != 3)) || ! [[ $3 =~ ^[0-9]+$ ]]; then
    echo "usage: $0 BUILD_DIR TEST_NAME N" >&2
    exit 2
fi
build=$1 name=$2 n=$3
timeout_s=${IMGD_OOM_TIMEOUT:-120}
SAN_EXIT=23
DETAIL_MAX=${IMGD_OOM_DETAIL_MAX:-5} # failures printed in full

if [[ ! -f $build/CTestTestfile.cmake ]]; then
    echo "oom_sweep: $build is not a configured build folder; skipping $name"
    exit 0
fi
build=$(cd "$build" && pwd)
if ! grep -q '^IMGD_ALLOC_DEBUG:BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null; then
    echo "oom_sweep: $build was not configured with -DIMGD_ALLOC_DEBUG=ON: injection would do nothing" >&2
    exit 1
fi
exe=$(find "$build" -type f -name "$name" -perm -u+x 2>/dev/null | head -n 1)
if [[ -z $exe ]]; then
    echo "oom_sweep: $name is not built in $build; skipping (nothing to sweep yet)"
    exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/imgd-oom.XXXXXX")
trap 'rm -rf "$work"' EXIT

# A wrapper that runs the test exactly as ctest would (command, ENVIRONMENT, folder);
# falls back to the bare executable when ctest does not know the test.
python3 - "$build" "$name" "$exe" "$work/run.sh" <<'EOF'
import json, shlex, subprocess, sys
build, name, exe, out = sys.argv[1:5]
cmd, env, cwd = [exe], [], build
try:
    js = subprocess.run(["ctest", "--test-dir", build, "--show-only=json-v1", "-R", "^%s$" % name],
                        capture_output=True, text=True, check=True).stdout
    tests = [t for t in json.loads(js).get("tests", []) if t.get("name") == name]
    if tests:
        t = tests[0]
        cmd = t.get("command") or cmd
        for p in t.get("properties", []):
            if p.get("name") == "ENVIRONMENT":
                env = p.get("value") or []
            elif p.get("name") == "WORKING_DIRECTORY":
                cwd = p.get("value") or cwd
except Exception as e:  # keep going with the bare executable
    print("oom_sweep: could not ask ctest for %s (%s); running it bare" % (name, e), file=sys.stderr)
with open(out, "w") as f:
    f.write("cd %s\n" % shlex.quote(cwd))
    for kv in env:
        f.write("export %s\n" % shlex.quote(kv))
    f.write("exec %s\n" % " ".join(shlex.quote(c) for c in cmd))
EOF

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:exitcode=$SAN_EXIT:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=$SAN_EXIT"
export LSAN_OPTIONS="exitcode=$SAN_EXIT"

jobs_max=${IMGD_OOM_JOBS:-$(nproc 2>/dev/null || echo 2)}

# How many allocations the test makes (IMGD_ALLOC_REPORT=1 prints each process's count at
# exit; the largest counts). The injection points: the first N allocations (all of them when
# there are fewer: a point past the count would only repeat a normal run), and when there
# are more, IMGD_OOM_SPREAD (default 50) points spread evenly over the rest, so the failure
# paths of the test's later cases are reached too. No count (no allocation, or a build
# without the report): 1..N.
spread=${IMGD_OOM_SPREAD:-50}
count=$( (IMGD_ALLOC_REPORT=1 timeout -k 5 "$timeout_s" bash "$work/run.sh" 2>&1 || true) |
    sed -n 's/^imgd_alloc_count=\([0-9][0-9]*\)$/\1/p' | sort -n | tail -n 1)
points=()
last=$n
[[ -n $count ]] && ((count < n)) && last=$count
for ((i = 1; i <= last; i++)); do points+=("$i"); done
what="1..$last"
if [[ -n $count ]] && ((count > n && spread > 0)); then
    ((spread > count - n)) && spread=$((count - n))
    for ((k = 1; k <= spread; k++)); do points+=($((n + (k * (count - n) + spread - 1) / spread))); done
    what="$what and $spread points spread over $((n + 1))..$count"
fi
echo "oom_sweep: $exe (${count:-an unknown number of} allocations), IMGD_FAIL_ALLOC_AT=$what ($jobs_max at a time)"

# Runs every injection point, jobs_max at a time; each leaves its output and exit code.
run_one() {
    local i=$1 rc=0
    IMGD_FAIL_ALLOC_AT=$i timeout -k 5 "$timeout_s" bash "$work/run.sh" >"$work/out.$i" 2>&1 || rc=$?
    echo "$rc" >"$work/rc.$i"
}
running=0
for i in "${points[@]}"; do
    run_one "$i" &
    running=$((running + 1))
    if ((running >= jobs_max)); then
        wait -n || true
        running=$((running - 1))
    fi
done
wait || true

pass=0 normal_fail=0 bad=0 bad_list=()
for i in "${points[@]}"; do
    log="$work/out.$i"
    rc=$(cat "$work/rc.$i" 2>/dev/null || echo 255)
    why=""
    if ((rc == SAN_EXIT)); then
        why="sanitizer report (exit $rc)"
    elif ((rc == 124 || rc == 137)); then
        why="hung: killed after ${timeout_s}s"
    elif ((rc > 128)); then
        why="killed by signal $((rc - 128))"
    elif grep -qE '^(==[0-9]+==ERROR: (Address|Leak)Sanitizer|SUMMARY: (Address|Leak|UndefinedBehavior)Sanitizer)|: runtime error: ' "$log"; then
        why="sanitizer report in the output (exit $rc)"
    fi
    if [[ -n $why ]]; then
        bad=$((bad + 1))
        bad_list+=("$i")
        if ((bad <= DETAIL_MAX)); then
            echo "--- IMGD_FAIL_ALLOC_AT=$i: $why:"
            # The sanitizer report up to its SUMMARY line (no shadow-byte dump), or the tail.
            if grep -qE '==ERROR: |: runtime error: ' "$log"; then
                awk '/==ERROR: |: runtime error: /{on=1} on{print; n++} /^SUMMARY: /{exit} n>=40{exit}' "$log"
            else
                tail -n 30 "$log"
            fi
            echo "--- rerun: IMGD_FAIL_ALLOC_AT=$i $exe"
        elif ((bad == DETAIL_MAX + 1)); then
            echo "--- (further failures listed at the end only)"
        fi
    elif ((rc == 0)); then
        pass=$((pass + 1))
    else
        normal_fail=$((normal_fail + 1))
    fi
done
echo "oom_sweep: $name: ${#points[@]} runs: $pass passed, $normal_fail failed cleanly, $bad crashed/leaked/sanitizer"
if ((bad > 0)); then
    echo "oom_sweep: FAILED at IMGD_FAIL_ALLOC_AT=${bad_list[*]}"
    exit 1
fi
