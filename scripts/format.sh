#!/usr/bin/env bash
# Apply .clang-format in place.
#   scripts/format.sh            every *.c/*.h in src/ include/ tests/ fuzz/ bench/
#   scripts/format.sh FILE...    just those files
# scripts/lint.sh checks the same set without changing anything.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CLANG_FORMAT=${CLANG_FORMAT:-clang-format}
if (($# > 0)); then
    files=("$@")
else
    dirs=()
    for d in src include tests fuzz bench; do [[ -d $d ]] && dirs+=("$d"); done
    mapfile -t files < <(find "${dirs[@]}" -type f \( -name '*.c' -o -name '*.h' \) | LC_ALL=C sort)
fi
((${#files[@]})) || exit 0
"$CLANG_FORMAT" -i --style=file "${files[@]}"
echo "formatted ${#files[@]} file(s)"
