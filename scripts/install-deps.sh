#!/usr/bin/env bash
# Installs every Debian 12 package imgd builds, tests, lints and fuzzes with.
# Used by the README's set-up command and by .ci/run. Run as root (or through sudo).
set -euo pipefail
IMGD_DEBIAN_PACKAGES=(
    build-essential cmake pkg-config git ca-certificates python3
    clang clang-format clang-tidy libclang-rt-14-dev
    llvm # llvm-symbolizer: readable ASan/UBSan stacks
    zlib1g-dev libcjson-dev libutf8proc-dev
    libsqlite3-dev libpng-dev libjpeg-dev libwebp-dev libmicrohttpd-dev
    libcurl4-openssl-dev libdnnl-dev libopenblas-dev
    # the worker's end-to-end tests (tests/service): real HTTP clients
    curl python3-requests
)
# The npm openai client test needs Node.js with npm. Machines that already carry a Node.js
# build with its own npm (NodeSource's `nodejs` bundles it and conflicts with Debian's `npm`
# package) keep theirs; elsewhere Debian's nodejs + npm are installed.
if ! command -v npm >/dev/null 2>&1; then
    IMGD_DEBIAN_PACKAGES+=(nodejs npm)
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${IMGD_DEBIAN_PACKAGES[@]}"
# The Dockerfile linter of the lint stage (scripts/check-dockerfile.sh): from the npm registry,
# pinned; kept when already installed.
if ! command -v dockerfilelint >/dev/null 2>&1; then
    npm install -g dockerfilelint@1.8.0
fi
