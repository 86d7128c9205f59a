#!/usr/bin/env bash
# The README's test command: configure, build and run the whole ctest suite.
#   ./scripts/test.sh
# Environment: IMGD_BUILD_DIR (default build), IMGD_CMAKE_ARGS (extra cmake arguments,
# space-separated), CTEST_ARGS (extra ctest arguments, e.g. "-L unit").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build=${IMGD_BUILD_DIR:-build}
# shellcheck disable=SC2086 # word splitting of the extra-argument variables is intended
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo ${IMGD_CMAKE_ARGS:-}
cmake --build "$build" -j"$(nproc)"
# shellcheck disable=SC2086
ctest --test-dir "$build" --output-on-failure -j2 ${CTEST_ARGS:-}
