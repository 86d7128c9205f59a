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
    curl python3-requests nodejs npm
)
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${IMGD_DEBIAN_PACKAGES[@]}"
