#!/usr/bin/env bash
# One-shot check of the CUDA backend on a GPU machine (issue 9), sized for ~5 minutes on an
# H100 with 16 cores:
#   1. configure a fresh RelWithDebInfo build with CUDA into build-gpu, build it (-j$(nproc))
#   2. every op on the cuda backend against the reference (test_ops --backend cuda: NMSE and
#      max error of every case in every cuda configuration: cuda, cuda-im2col,
#      cuda-attn-gemm, cuda-f16 (mma attention), cuda-f16-old, cuda-f16-attn-wmma, cuda-bf16, ...)
#   3. the SD conformance goldens and the GGUF FLUX test (linear_quant) on the cuda backend
#      (IMGD_TEST_BACKEND=cuda, f32); a failing test is rerun with IMGD_CUDA_CUDNN=0 to tell
#      whether cuDNN is the cause
#   4. imgd-bench sd --backend cuda --steps 10 --precision f32,f16 (it/s, load, peak VRAM,
#      UNet TFLOP/s vs the card's cuBLASLt fp16 GEMM TFLOP/s), with IMGD_PROFILE=nodes (GPU
#      time per op kind and the 40 costliest shapes) and IMGD_CUDA_VERBOSE=1 (each plan's
#      paths: cuDNN convs and their NCHW / NHWC layout, attention kernel,
#      ADDs / GELUs fused into a GEMM or convolution), then the same with the fast paths off
#      (IMGD_CUDA_CUDNN=0 IMGD_CUDA_ATTN=flash IMGD_CUDA_DIRECT_WEIGHTS=0 IMGD_CUDA_HALF_ACT=0
#      IMGD_CUDA_GRAPH=0 IMGD_CUDA_LT=0)
#   5. imgd-bench attn: the attention kernels side by side on SD / SDXL / FLUX shapes (TFLOP/s
#      vs the fp16 GEMM peak and vs mma: auto (timed per shape), cudnn, mma1, mma2, wmma,
#      gemm), then the f16 SD bench with IMGD_CUDA_ATTN=mma (untimed) and =cudnn, with =wmma,
#      and with IMGD_CUDA_CONV_ADD=0 (the ResNet ADDs as their own kernels)
#   5a. the convolutions' layouts and graph plans / legacy algorithms as timed (IMGD_CUDA_VERBOSE=1),
#      and the SD bench with them guessed, all NCHW, all NHWC, through the legacy API
#      (IMGD_CUDA_CONV_GRAPH=0), with runtime-compiled graph engines (=rtc), and with
#      IMGD_CUDA_NORM_NHWC=0
#   5b. the GEMM kernels timed per shape (IMGD_CUDA_VERBOSE=1) and the SD bench with
#      IMGD_CUDA_GEMM=heuristic (untimed) for comparison
#   6. imgd-bench sd --family flux --backend cuda --size 512 --steps 2: a real-size FLUX.1-dev
#      Q8_0 GGUF (written under the build folder) with its weights in their blocks on the GPU
#      for comparison
# Prints everything and ends with a summary: one line per SD bench run (its label, it/s, UNet
# TFLOP/s and share of the fp16 GEMM peak, load and tuner seconds). With $OUT set (the device
# machine's folder that comes back) the output is also kept in $OUT/gpu-check.log and the
# summary in $OUT/gpu-check-summary.txt. Every stage runs even when an earlier test stage
# fails, and the script exits non-zero if any stage failed (the build failing stops it).
#
#   scripts/gpu-check.sh                  from anywhere; uses the repository it lives in
# Environment:
#   IMGD_SHARED_DIR   the shared folder with conformance/ (default: ../shared, else ./shared)
#   IMGD_CUDA_ARCH    CMAKE_CUDA_ARCHITECTURES (default 90, H100)
#   GPU_CHECK_BUILD   build folder (default build-gpu)
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BUILD=${GPU_CHECK_BUILD:-build-gpu}
JOBS=$(nproc 2>/dev/null || echo 16)
export PATH="/usr/local/cuda/bin:$PATH"

if [[ -z ${IMGD_SHARED_DIR:-} ]]; then
    if [[ -d ../shared/conformance ]]; then IMGD_SHARED_DIR=$(cd ../shared && pwd)
    elif [[ -d shared/conformance ]]; then IMGD_SHARED_DIR=$ROOT/shared
    else IMGD_SHARED_DIR=$(cd .. && pwd)/shared; fi
fi
export IMGD_SHARED_DIR

FAILED=()
T0=$(date +%s)
stage() { printf '\n==== gpu-check: %s (t=%ds) ====\n' "$1" $(($(date +%s) - T0)); }
# On the device machine ($OUT set: what is written there comes back) the whole output is kept
# in $OUT/gpu-check.log as well, and the summary in $OUT/gpu-check-summary.txt.
if [[ -n ${OUT:-} && -d $OUT ]]; then
    exec > >(tee "$OUT/gpu-check.log") 2>&1
    SUMMARY=$OUT/gpu-check-summary.txt
else
    SUMMARY=$(mktemp)
fi
: >"$SUMMARY"

# sdb LABEL TIMEOUT [VAR=VALUE ...] -- ARGS: imgd-bench sd ARGS under those variables, its
# output printed; its it/s and UNet TFLOP/s (share of the card's fp16 GEMM peak) per precision,
# load and tuner seconds, go into the summary printed at the end, one line per run.
sdb() {
    local label=$1 t=$2 envs=() log rc
    shift 2
    while [[ $# -gt 0 && $1 != -- ]]; do envs+=("$1"); shift; done
    shift
    log=$(mktemp)
    env ${envs[@]+"${envs[@]}"} timeout "$t" "$BUILD/bench/imgd-bench" sd "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    [[ $rc -eq 0 ]] || FAILED+=("imgd-bench sd: $label (rc $rc)")
    printf '%-44s %s\n' "$label" "$(sed -n \
        -e 's/.*"metric":"\(it_per_s_[a-z0-9]*\)","value":\([^,]*\),.*/\1=\2/p' \
        -e 's/.*"metric":"\(unet_tflops_[a-z0-9]*\)","value":\([^,]*\),.*"ratio":\([^}]*\)}.*/\1=\2 (\3 of peak)/p' \
        -e 's/.*"metric":"\(load_s_[a-z0-9]*\|tune_s_[a-z0-9]*\)","value":\([^,]*\),.*/\1=\2/p' \
        "$log" | tr '\n' ' ')$( ((rc == 0)) || echo " rc=$rc")" >>"$SUMMARY"
    rm -f "$log"
}

stage "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "nvidia-smi failed"
nvcc --version 2>&1 | tail -1
echo "shared: $IMGD_SHARED_DIR ($(ls "$IMGD_SHARED_DIR/conformance" 2>/dev/null | tr '\n' ' '))"

stage "configure + build ($BUILD, -j$JOBS)"
rm -rf "$BUILD"
if ! cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIMGD_CUDA=ON \
        -DCMAKE_CUDA_ARCHITECTURES="${IMGD_CUDA_ARCH:-90}" -DIMGD_SHARED_DIR="$IMGD_SHARED_DIR" ||
   ! cmake --build "$BUILD" -j"$JOBS"; then
    echo "gpu-check: BUILD FAILED"
    exit 1
fi
"$BUILD/imgd" --version

stage "cuda ops vs reference (test_ops --backend cuda)"
# IMGD_CUDA_SYNC=1 (set by the test too) names the node of an asynchronous kernel fault
IMGD_CUDA_SYNC=1 timeout 150 "$BUILD/tests/test_ops" --backend cuda
rc=$?
[[ $rc -eq 0 ]] || FAILED+=("test_ops --backend cuda (rc $rc; 77 = skipped: no device)")

stage "conformance goldens on cuda (IMGD_TEST_BACKEND=cuda)"
for t in test_clip_text test_unet test_vae test_sd_pipeline test_flux_gguf; do
    echo "---- $t"
    IMGD_TEST_BACKEND=cuda IMGD_TEST_TMP="$ROOT/$BUILD/test-tmp" timeout 90 "$BUILD/tests/$t"
    rc=$?
    if [[ $rc -ne 0 ]]; then
        FAILED+=("$t on cuda (rc $rc)")
        echo "---- $t again with IMGD_CUDA_CUDNN=0 (im2col conv2d), to locate the failure"
        IMGD_CUDA_CUDNN=0 IMGD_TEST_BACKEND=cuda IMGD_TEST_TMP="$ROOT/$BUILD/test-tmp" \
            timeout 90 "$BUILD/tests/$t"
        echo "---- (rc $? with IMGD_CUDA_CUDNN=0)"
    fi
done

stage "bench: imgd-bench sd --backend cuda --steps 10 --precision f32,f16 (fast paths on; each plan's paths and fusions printed)"
sdb "SD 1.5 default (every path on)" 150 IMGD_CUDA_VERBOSE=1 IMGD_PROFILE=nodes -- \
    --backend cuda --steps 10 --precision f32,f16

stage "bench: attention kernels side by side (imgd-bench attn: mma, auto (timed per shape), cudnn, mma1, mma2, wmma, gemm; f16, then bf16)"
timeout 150 "$BUILD/bench/imgd-bench" attn --backend cuda
rc=$?
[[ $rc -eq 0 ]] || FAILED+=("imgd-bench attn (rc $rc)")
timeout 90 "$BUILD/bench/imgd-bench" attn --backend cuda --kernels mma,auto,cudnn,wmma --precision bf16 ||
    FAILED+=("imgd-bench attn bf16")

stage "bench: SD 1.5 f16 with attention untimed (IMGD_CUDA_ATTN=mma), then cuDNN's SDPA wherever it takes the node (=cudnn); compare it/s with the first bench (auto: timed per shape, choices printed there)"
for v in mma cudnn; do
    sdb "IMGD_CUDA_ATTN=$v" 90 IMGD_CUDA_ATTN=$v IMGD_PROFILE=1 -- --backend cuda --steps 10 \
        --precision f16
done

stage "bench: SD 1.5 f16 with the earlier attention kernel (IMGD_CUDA_ATTN=wmma; compare it/s with the first bench)"
sdb "IMGD_CUDA_ATTN=wmma" 90 IMGD_CUDA_ATTN=wmma IMGD_PROFILE=1 -- --backend cuda --steps 10 --precision f16

stage "bench: SD 1.5 f16 with each ResNet ADD as its own kernel (IMGD_CUDA_CONV_ADD=0; compare it/s with the first bench)"
sdb "IMGD_CUDA_CONV_ADD=0" 90 IMGD_CUDA_CONV_ADD=0 IMGD_PROFILE=1 -- --backend cuda --steps 10 --precision f16

stage "bench: SD 1.5 f16 with the convolutions' layout guessed (IMGD_CUDA_CONV_NHWC=guess), all NCHW (=0), all NHWC (=1); compare it/s with the first bench (auto: timed per shape)"
IMGD_CUDA_VERBOSE=1 timeout 90 "$BUILD/bench/imgd-bench" sd --backend cuda --steps 2 --precision f16 2>&1 |
    grep -E "layout (timed|remembered)" | sort | uniq -c | head -40
for v in guess 0 1; do
    sdb "IMGD_CUDA_CONV_NHWC=$v" 90 IMGD_CUDA_CONV_NHWC=$v -- --backend cuda --steps 20 --precision f16
done
echo "# the same with every convolution through cuDNN's legacy API (IMGD_CUDA_CONV_GRAPH=0), then with runtime-compiled graph engines admitted (=rtc; compare load time too)"
for v in 0 rtc; do
    sdb "IMGD_CUDA_CONV_GRAPH=$v" 120 IMGD_CUDA_CONV_GRAPH=$v -- --backend cuda --steps 20 --precision f16
done
echo "# the same with each group norm writing NCHW and its NHWC convolution transposing it (IMGD_CUDA_NORM_NHWC=0)"
sdb "IMGD_CUDA_NORM_NHWC=0" 90 IMGD_CUDA_NORM_NHWC=0 -- --backend cuda --steps 20 --precision f16

stage "bench: SD 1.5 f16 GEMM kernels: the timed choices (IMGD_CUDA_VERBOSE=1), then each GEMM on cuBLASLt's first heuristic algorithm or cublasGemmEx untimed (IMGD_CUDA_GEMM=heuristic; compare it/s with the first bench)"
IMGD_CUDA_VERBOSE=1 timeout 90 "$BUILD/bench/imgd-bench" sd --backend cuda --steps 2 --precision f16 2>&1 |
    grep -E "cuda: gemm .*(timed|not timed)" | sort | uniq -c | head -60
sdb "IMGD_CUDA_GEMM=heuristic" 90 IMGD_CUDA_GEMM=heuristic -- --backend cuda --steps 20 --precision f16

stage "bench: FLUX.1-dev Q8_0 GGUF transformer on cuda, 512x512, 2 steps (writes 12.7 GB under build)"
IMGD_PROFILE=1 timeout 240 "$BUILD/bench/imgd-bench" sd --family flux --backend cuda --size 512 \
    --steps 2 --dir "$ROOT/$BUILD"
rc=$?
[[ $rc -eq 0 ]] || FAILED+=("imgd-bench sd --family flux --backend cuda (rc $rc)")

stage "bench: the same with the fast paths off"
sdb "fast paths off" 150 IMGD_CUDA_CUDNN=0 IMGD_CUDA_ATTN=flash IMGD_CUDA_DIRECT_WEIGHTS=0 \
    IMGD_CUDA_HALF_ACT=0 IMGD_CUDA_GRAPH=0 IMGD_CUDA_LT=0 -- --backend cuda --steps 10 --precision f32,f16

stage "done"
echo "# SD 1.5 512x512 CFG, imgd-bench sd per run (it/s, UNet TFLOP/s and share of the fp16 GEMM peak):"
cat "$SUMMARY"
if ((${#FAILED[@]})); then
    printf 'gpu-check: FAILED: %s\n' "${FAILED[@]}"
    exit 1
fi
echo "gpu-check: all stages passed"
