#!/usr/bin/env bash
# Builds test_ops against the cuda backend with its kernels compiled for the host
# (-DCUK_EMU, tests/cuda_emu/cuda_emu.h) and the CUDA runtime, cuBLAS and cuDNN replaced by
# host stand-ins (mock_runtime.c, mock_cudnn.c), then runs the cuda configurations against the reference:
# a check of the kernels' and the host code's logic on a machine without a GPU. It needs
# the CUDA headers (not a GPU or the driver) and a build without CUDA for the rest of imgd.
#
#   tests/cuda_emu/run.sh [test_ops arguments, e.g. --op attention]
#   EMU_TEST=conformance/test_clip_text tests/cuda_emu/run.sh   a conformance test on the
#                                          emulated cuda backend (IMGD_TEST_BACKEND=cuda);
#                                          EMU_TEST may list several, space-separated
#   EMU_BUILD_ONLY=1 tests/cuda_emu/run.sh  build $LIBB/cuda-emu/<test>_emu, run nothing
# Environment: IMGD_EMU_LIB_BUILD (a -DIMGD_CUDA=OFF build folder, default build-nocuda),
# IMGD_SHARED_DIR (default ../shared) for conformance tests.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
LIBB=${IMGD_EMU_LIB_BUILD:-build-nocuda}
OUT=$LIBB/cuda-emu
CUDA_INC=${CUDA_INC:-/usr/local/cuda/include}
mkdir -p "$OUT"
[[ -f $LIBB/libimgd.a ]] || { cmake -S . -B "$LIBB" -DIMGD_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo &&
    cmake --build "$LIBB" -j"$(nproc 2>/dev/null || echo 2)" --target imgd_static; }
INC=(-Iinclude -I"$LIBB/include" -Isrc -Itests -isystem "$CUDA_INC")
DEF=(-D_POSIX_C_SOURCE=200809L -DIMGD_HAVE_CUDA=1)
HOSTDEF=("${DEF[@]}")
MOCKS=(tests/cuda_emu/mock_runtime.c)
if [[ -f $CUDA_INC/cudnn.h ]]; then # cuDNN's headers: its conv2d path, against mock_cudnn.c
    HOSTDEF+=(-DIMGD_HAVE_CUDNN=1)
    MOCKS+=(tests/cuda_emu/mock_cudnn.c)
fi
# every file compiled as a job of its own, JOBS at a time
JOBS=$(nproc 2>/dev/null || echo 2)
objs=()
pids=()
compile() { # output, then the compiler command line
    local o=$1
    shift
    while (($(jobs -rp | wc -l) >= JOBS)); do wait -n; done
    "$@" -c -o "$o" &
    pids+=($!)
    objs+=("$o")
}
for f in src/tensor/cuda/*.cu; do
    compile "$OUT/$(basename "$f" .cu).cu.o" g++ -std=c++20 -O1 -g -x c++ -DCUK_EMU \
        -include tests/cuda_emu/cuda_emu.h "${DEF[@]}" "${INC[@]}" "$f"
done
read -ra TESTS <<<"${EMU_TEST:-ops/test_ops}"
# host files of the backend; with cuDNN's headers its convolution calls are answered by
# mock_cudnn.c (the configurations with IMGD_CUDA_CUDNN=0 run im2col), without them conv2d
# runs im2col only
for f in src/tensor/cuda/backend.c src/tensor/cuda/exec.c src/tensor/cuda/dispatch.c src/tensor/cuda/matmul.c \
         src/tensor/cuda/conv2d.c src/tensor/cuda/attention_gemm.c src/tensor/cuda/attention_cudnn.c src/tensor/cuda/cudnn_graph.c \
         src/tensor/cuda/attention_tune.c src/tensor/cuda/tune.c src/tensor/cuda/gemm_lt.c src/tensor/cuda/quant.c src/tensor/backend.c "${MOCKS[@]}"; do
    compile "$OUT/$(echo "$f" | tr / _).o" gcc -std=c11 -O1 -g "${HOSTDEF[@]}" "${INC[@]}" "$f"
done
shared=("${objs[@]}")
for t in "${TESTS[@]}"; do
    objs=()
    compile "$OUT/$(echo "tests/$t.c" | tr / _).o" gcc -std=c11 -O1 -g "${HOSTDEF[@]}" "${INC[@]}" "tests/$t.c"
done
for p in "${pids[@]}"; do wait "$p"; done # set -e: a failed compile stops here
export IMGD_SHARED_DIR=${IMGD_SHARED_DIR:-$(cd .. && pwd)/shared}
export IMGD_TEST_TMP=${IMGD_TEST_TMP:-/tmp}
rc=0
for t in "${TESTS[@]}"; do
    name=$(basename "$t")
    # shellcheck disable=SC2046
    g++ -o "$OUT/${name}_emu" "${shared[@]}" "$OUT/$(echo "tests/$t.c" | tr / _).o" "$LIBB/libimgd.a" \
        $(pkg-config --libs libcjson libutf8proc libpng libjpeg libwebp libwebpmux openblas zlib) \
        -ldnnl -lm -lpthread -ldl
    if [[ ${EMU_BUILD_ONLY:-0} == 1 ]]; then
        echo "built $OUT/${name}_emu"
    elif [[ $name == test_ops ]]; then
        "$OUT/test_ops_emu" --backend cuda "$@" || rc=1
    else
        IMGD_TEST_BACKEND=cuda "$OUT/${name}_emu" "$@" || rc=1
    fi
done
exit $rc
