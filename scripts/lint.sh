#!/usr/bin/env bash
# imgd lint (STYLE B5). Run from anywhere; works on the repository this script lives in.
#
#   scripts/lint.sh            all checks
#   scripts/lint.sh --no-tidy  skip clang-tidy (the slow one)
#
# Checks, each a function below:
#   format    clang-format --dry-run --Werror over src/ include/ tests/ fuzz/ bench/
#   banned    banned C library calls outside src/base/ (use the imgd_ wrappers)
#   layers    the layer-include graph (STYLE M1, DESIGN "Layers")
#   filesize  .c files over budget (STYLE M7): > 1500 lines warns, > 3000 lines fails
#   tidy      clang-tidy with .clang-tidy; fails only on its WarningsAsErrors
#   docker    deploy/Dockerfile and the RunPod template: scripts/check-dockerfile.sh (our rules,
#             then dockerfilelint when installed); no container engine builds the image here
#
# Environment:
#   IMGD_TIDY_BUILD_DIR  build folder configured for compile_commands.json (default build-tidy)
#   CLANG_FORMAT, CLANG_TIDY  tool names (default clang-format, clang-tidy)
#
# Exits non-zero when any check fails, after running all of them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

CLANG_FORMAT=${CLANG_FORMAT:-clang-format}
CLANG_TIDY=${CLANG_TIDY:-clang-tidy}
TIDY_BUILD_DIR=${IMGD_TIDY_BUILD_DIR:-build-tidy}
JOBS=$(nproc 2>/dev/null || echo 2)

# Layers in DESIGN order; a file may include headers of its own layer or layers before it.
LAYERS=(base formats detect tensor models sampling pipeline service cli)
SOURCE_DIRS=(src include tests fuzz bench)
BANNED='sprintf|vsprintf|strcpy|strcat|strncat|strncpy|gets|atoi|atol|atof|strtok|alloca|malloc|calloc|realloc|free|strdup'

FAILED=()

# All *.c / *.h files under the given folders that exist, NUL-free, one per line, sorted.
list_sources() {
    local d dirs=()
    for d in "$@"; do [[ -d $d ]] && dirs+=("$d"); done
    ((${#dirs[@]})) || return 0
    find "${dirs[@]}" -type f \( -name '*.c' -o -name '*.h' \) | LC_ALL=C sort
}

section() { printf '\n== lint: %s ==\n' "$1"; }

# Prints a file with comments, string literals and character literals blanked out
# (newlines kept, so line numbers still match).
strip_c() {
    perl -0777 -pe '
        s{ (/\*.*?\*/) | (//[^\n]*) | ("(?:\\.|[^"\\\n])*") | (\x27(?:\\.|[^\x27\\\n])*\x27) }
         { my $m = $&; $m =~ s/[^\n]/ /g; $m }gsex;
    ' "$1"
}

# ---- (a) formatting -------------------------------------------------------------------------

check_format() {
    section "clang-format ($("$CLANG_FORMAT" --version | sed 's/.*version //'))"
    local f n bad=0 total=0 files
    files=$(list_sources "${SOURCE_DIRS[@]}")
    for f in $files; do
        total=$((total + 1))
        n=$("$CLANG_FORMAT" --dry-run "$f" 2>&1 | grep -c ': warning:' || true)
        if ((n > 0)); then
            echo "  $f: $n place(s) differ from .clang-format"
            bad=$((bad + 1))
        fi
    done
    if ((bad > 0)); then
        echo "format: $bad of $total files need clang-format (see: $CLANG_FORMAT --dry-run FILE;" \
            "fix: scripts/format.sh FILE...)"
        return 1
    fi
    echo "format: $total files OK"
}

# ---- (b) banned functions -------------------------------------------------------------------

check_banned() {
    section "banned functions outside src/base/"
    local f out hits=0 files
    files=$(list_sources "${SOURCE_DIRS[@]}" | grep -v '^src/base/' || true)
    for f in $files; do
        # A call: the name not preceded by an identifier character, '.' or '->' (struct
        # members such as backend->free are fine), then optional space and '('.
        out=$(strip_c "$f" | LINT_FILE=$f perl -ne '
            while (/(?<![A-Za-z0-9_.])(?<!->)\b('"$BANNED"')\s*\(/g) {
                print "$ENV{LINT_FILE}:$.: $1()\n";
            }
        ')
        if [[ -n $out ]]; then
            echo "$out" | sed 's/^/  /'
            hits=$((hits + $(echo "$out" | wc -l)))
        fi
    done
    if ((hits > 0)); then
        echo "banned: $hits call(s); use imgd_malloc/imgd_calloc/imgd_realloc/imgd_free/imgd_strdup," \
            "snprintf, strtol/strtod with checks, arenas"
        return 1
    fi
    echo "banned: none"
}

# ---- (c) layer includes (STYLE M1) ----------------------------------------------------------

layer_index() {
    local i
    for i in "${!LAYERS[@]}"; do
        [[ ${LAYERS[$i]} == "$1" ]] && { echo "$i"; return; }
    done
    echo -1
}

check_layers() {
    section "layer includes (${LAYERS[*]})"
    local f line inc lnum own own_i top top_i dir errs=0 public=() h
    for h in include/*.h; do [[ -e $h ]] && public+=("$(basename "$h")"); done
    public+=(imgd_version.h) # generated into the build tree from cmake/imgd_version.h.in

    is_public() {
        local p
        for p in "${public[@]}"; do [[ $1 == "$p" ]] && return 0; done
        return 1
    }
    bad() {
        echo "  $1:$2: $3"
        errs=$((errs + 1))
    }

    for f in $(list_sources src include); do
        dir=$(dirname "$f")
        own=""
        own_i=-1
        if [[ $f == src/* ]]; then
            own=$(echo "$f" | cut -d/ -f2)
            own_i=$(layer_index "$own")
            if ((own_i < 0)); then
                bad "$f" 1 "src/$own/ is not a layer in DESIGN (${LAYERS[*]})"
                continue
            fi
        fi
        while IFS= read -r line; do
            lnum=${line%%:*}
            inc=$(echo "${line#*:}" | sed -E 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"]([^>"]*)[>"].*/\1/')
            top=${inc%%/*}
            # The public header (and the generated version header) are fine from anywhere.
            if [[ $inc != */* ]] && is_public "$inc"; then continue; fi
            if [[ $f == include/* ]]; then
                bad "$f" "$lnum" "public headers include only each other, not \"$inc\""
                continue
            fi
            # *_impl.h stays inside its own folder (STYLE M2).
            if [[ $inc == *_impl.h ]] && [[ ! -e $dir/$(basename "$inc") ]]; then
                bad "$f" "$lnum" "\"$inc\" is an internal header of another folder (STYLE M2)"
                continue
            fi
            if [[ $inc == */* ]]; then
                top_i=$(layer_index "$top")
                if ((top_i < 0)); then
                    # not a layer path: must be a file next to the includer
                    [[ -e $dir/$inc ]] || bad "$f" "$lnum" "\"$inc\" is neither a layer header nor a local file"
                    continue
                fi
                if [[ $own == cli && $top != cli ]]; then
                    bad "$f" "$lnum" "src/cli uses only the public header imgd.h, not \"$inc\""
                elif ((top_i > own_i)); then
                    bad "$f" "$lnum" "layer $own must not include $top (\"$inc\"): $top comes after $own"
                fi
            else
                [[ -e $dir/$inc ]] || bad "$f" "$lnum" "\"$inc\" is not in $dir/ nor a public header"
            fi
        done < <(strip_c_keep_includes "$f" | grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' || true)
        # Angle-bracket includes of a layer path (<base/x.h>) are the same thing in disguise.
        while IFS= read -r line; do
            bad "$f" "${line%%:*}" "use quotes for project headers: ${line#*:}"
        done < <(grep -nE "^[[:space:]]*#[[:space:]]*include[[:space:]]*<($(IFS='|'; echo "${LAYERS[*]}"))/" "$f" || true)
    done
    if ((errs > 0)); then
        echo "layers: $errs include(s) break the layer graph"
        return 1
    fi
    echo "layers: OK"
}

# Like strip_c but leaves #include lines alone (their "..." is a path, not a string).
strip_c_keep_includes() {
    perl -0777 -pe '
        s{ (/\*.*?\*/) | (//[^\n]*) | (^[ \t]*\#[ \t]*include[^\n]*) | ("(?:\\.|[^"\\\n])*") | (\x27(?:\\.|[^\x27\\\n])*\x27) }
         { if (defined $3) { $3 } else { my $m = $&; $m =~ s/[^\n]/ /g; $m } }gsexm;
    ' "$1"
}

# ---- (d) file size (STYLE M7) ---------------------------------------------------------------

check_filesize() {
    section "file size (warn > 1500 lines, fail > 3000)"
    local f n warn=0 fail=0 files
    files=$(list_sources "${SOURCE_DIRS[@]}" | grep '\.c$' || true)
    for f in $files; do
        n=$(wc -l <"$f")
        if ((n > 3000)); then
            echo "  FAIL $f: $n lines (over 3000 needs a reviewer's OK and a split plan)"
            fail=$((fail + 1))
        elif ((n > 1500)); then
            echo "  warn $f: $n lines (budget ~1500)"
            warn=$((warn + 1))
        fi
    done
    echo "filesize: $warn warning(s), $fail failure(s)"
    ((fail == 0))
}

# ---- (e) clang-tidy -------------------------------------------------------------------------

check_tidy() {
    section "clang-tidy ($("$CLANG_TIDY" --version | sed -n 's/.*version //p' | head -n1))"
    local cc=clang
    command -v "$cc" >/dev/null || cc=cc
    # Configure only (no build): compile_commands.json and the generated version header are
    # produced at configure time. Compiler warnings are the builds' business, not tidy's.
    mkdir -p "$TIDY_BUILD_DIR"
    rm -f "$TIDY_BUILD_DIR/tidy.failed" "$TIDY_BUILD_DIR"/tidy.*.out
    if ! cmake -S . -B "$TIDY_BUILD_DIR" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
        -DCMAKE_C_COMPILER="$cc" -DIMGD_WERROR=OFF -DCMAKE_BUILD_TYPE=Debug \
        >"$TIDY_BUILD_DIR/configure.log" 2>&1; then
        cat "$TIDY_BUILD_DIR/configure.log"
        echo "tidy: cmake configure failed"
        return 1
    fi
    local files
    files=$(python3 - "$TIDY_BUILD_DIR/compile_commands.json" "$ROOT" <<'EOF'
import json, os, sys
root = sys.argv[2]
seen = set()
for e in json.load(open(sys.argv[1])):
    p = os.path.relpath(os.path.join(e["directory"], e["file"]), root)
    # CUDA sources (.cu) are nvcc's to check (-Xcompiler -Wall,-Wextra): clang-tidy 14
    # cannot parse them against the CUDA 13 headers.
    if p.endswith(".cu"):
        continue
    if p.split(os.sep)[0] in ("src", "tests", "fuzz", "bench") and p not in seen:
        seen.add(p)
        print(p)
EOF
)
    if [[ -z $files ]]; then
        echo "tidy: no source files in $TIDY_BUILD_DIR/compile_commands.json"
        return 1
    fi
    local log="$TIDY_BUILD_DIR/clang-tidy.log" rc=0
    # One process per file, in parallel; a file's exit status is non-zero on any
    # WarningsAsErrors hit or compile error.
    echo "$files" | xargs -P "$JOBS" -I{} sh -c \
        '"$1" -p "$2" --quiet "$3" >"$2/tidy.$(echo "$3" | tr / _).out" 2>&1 || echo "$3" >>"$2/tidy.failed"' \
        _ "$CLANG_TIDY" "$TIDY_BUILD_DIR" {} || true
    cat "$TIDY_BUILD_DIR"/tidy.*.out >"$log" 2>/dev/null || true
    rm -f "$TIDY_BUILD_DIR"/tidy.*.out
    # Headers are checked once per translation unit that includes them: count unique findings.
    local errors warnings
    errors=$(grep -E ': error: ' "$log" | LC_ALL=C sort -u || true)
    warnings=$(grep -E ': warning: ' "$log" | LC_ALL=C sort -u || true)
    local n_err n_warn
    n_err=$(printf '%s' "$errors" | grep -c . || true)
    n_warn=$(printf '%s' "$warnings" | grep -c . || true)
    if [[ -n $warnings ]]; then
        echo "  warnings by check:"
        echo "$warnings" | sed -nE 's/.*\[([^]]+)\]$/\1/p' | sort | uniq -c | sort -rn | sed 's/^/    /'
        echo "  warnings by file:"
        echo "$warnings" | cut -d: -f1 | sed "s|^$ROOT/||" | sort | uniq -c | sort -rn | sed 's/^/    /'
    fi
    if [[ -n $errors ]]; then
        echo "  errors (WarningsAsErrors in .clang-tidy, or code that does not compile):"
        echo "$errors" | sed "s|^$ROOT/||; s/^/    /"
    fi
    if [[ -f $TIDY_BUILD_DIR/tidy.failed ]]; then
        rc=1
        rm -f "$TIDY_BUILD_DIR/tidy.failed"
    fi
    echo "tidy: $n_err error(s), $n_warn warning(s) (not fatal) over $(echo "$files" | wc -l) files; full log: $log"
    if ((rc != 0 || n_err > 0)); then return 1; fi
}

# ---- (f) Dockerfile --------------------------------------------------------------------------

check_docker() {
    section "deploy/Dockerfile (scripts/check-dockerfile.sh)"
    [[ -f deploy/Dockerfile ]] || return 0
    scripts/check-dockerfile.sh
}

# ---- main -----------------------------------------------------------------------------------

run_check() {
    local name=$1
    shift
    if ! "$@"; then FAILED+=("$name"); fi
}

main() {
    local tidy=1 a
    for a in "$@"; do
        case $a in
        --no-tidy) tidy=0 ;;
        -h | --help)
            sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            return 0
            ;;
        *)
            echo "lint.sh: unknown argument '$a' (try --help)" >&2
            return 2
            ;;
        esac
    done
    run_check format check_format
    run_check banned check_banned
    run_check layers check_layers
    run_check filesize check_filesize
    run_check docker check_docker
    if ((tidy)); then run_check tidy check_tidy; else printf '\n== lint: clang-tidy skipped (--no-tidy) ==\n'; fi
    echo
    if ((${#FAILED[@]})); then
        echo "lint FAILED: ${FAILED[*]}"
        return 1
    fi
    echo "lint OK"
}

main "$@"
