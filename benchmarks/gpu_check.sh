#!/usr/bin/env bash
# The GPU targets of issue 12 in one prepared run (~8 minutes on an H100/H200), from the repository root:
#   bash benchmarks/gpu_check.sh            # writes $OUT (default ./gpu_out): one .md and .json per step,
#                                           # summary.md (all steps, in order) and steps.tsv (status, seconds)
#   bash benchmarks/gpu_check.sh --dry-run  # no GPU needed: checks every step's arguments (--help at the end)
#   DEVICE=cpu BUDGET_S=60 bash benchmarks/gpu_check.sh   # exercises the timeouts and the budget on a CPU
# Targets: U-Net W=32, 1x32x32, batch 128 >= 180 steps/s; single default MLP >= 1,500 steps/s; MLP stack
# k=16 >= 3x sixteen single-model processes sharing the GPU. Every step reports FLOPs per step, the
# achieved TFLOP/s and its fraction of the measured and published peaks (bench_training.py).
# Each step has its own timeout, and all of them together stay within BUDGET_S (default 480 s), so one
# hang cannot eat the device time; a step that no longer fits is skipped and marked so in steps.tsv.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-./gpu_out}
BUDGET_S=${BUDGET_S:-480}
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
[ "$DRY" = 1 ] || mkdir -p "$OUT"
DEVICE=${DEVICE:-cuda}
BENCH=(python benchmarks/bench_training.py --device "$DEVICE")
START=$SECONDS

step() {  # step NAME TIMEOUT_S ARGS...: one bench_training.py run, under a timeout
    local name=$1 limit=$2; shift 2
    local left=$((BUDGET_S - (SECONDS - START)))
    if [ "$DRY" = 1 ]; then
        echo "== $name (timeout ${limit}s): ${BENCH[*]} $*"
        "${BENCH[@]}" "$@" --help > /dev/null || { echo "bad arguments in step $name"; exit 1; }
        return
    fi
    if [ "$left" -lt 30 ]; then
        printf '%s\tskipped (budget)\t0\n' "$name" >> "$OUT/steps.tsv"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    local t0=$SECONDS
    echo "== $name (timeout ${limit}s, $((SECONDS - START)) s elapsed)"
    # timeout signals the whole process group, so the benchmark's worker processes stop with it
    timeout -k 10 "$limit" "${BENCH[@]}" "$@" --json "$OUT/$name.json" > "$OUT/$name.md" 2> "$OUT/$name.err"
    local rc=$?
    local status=ok
    [ "$rc" = 124 ] || [ "$rc" = 137 ] && status="timeout after ${limit}s"
    [ "$status" = ok ] && [ "$rc" != 0 ] && status="failed rc=$rc"
    printf '%s\t%s\t%d\n' "$name" "$status" $((SECONDS - t0)) >> "$OUT/steps.tsv"
    { echo; echo "<!-- step $name: $status, $((SECONDS - t0)) s -->"; cat "$OUT/$name.md"; } >> "$OUT/summary.md"
    tail -n 3 "$OUT/$name.err" | sed "s/^/   [$name stderr] /"
    echo "   $status in $((SECONDS - t0)) s"
}

if [ "$DRY" = 0 ]; then
    : > "$OUT/steps.tsv"
    : > "$OUT/summary.md"
    {
        date -u
        nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,utilization.gpu --format=csv || true
        python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
        nproc
        uptime
    } > "$OUT/machine.txt" 2>&1
    cat "$OUT/machine.txt"
    [ "$DEVICE" != cuda ] || python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
        || { echo "no CUDA device visible to torch; nothing measured"; exit 1; }
fi

# cheapest first, so a short budget still yields the eager baselines; then the settings meant to meet the targets
step unet_eager_fp32 90 --models unet --ks --proc-ks --steps 50 --min-seconds 3 --warmup 5 --repeats 1 --breakdown --sync-check
step mlp_eager_fp32 150 --models mlp --ks 4 16 64 --proc-ks 4 16 --steps 300 --min-seconds 2 --warmup 20 --repeats 1 \
    --breakdown --sync-check
step unet_compile_bf16_cl 180 --models unet --ks --proc-ks --precision bf16 --channels-last --compile \
    --steps 200 --min-seconds 3 --warmup 20 --repeats 1 --breakdown
step mlp_compile_fp32 200 --models mlp --ks 16 --proc-ks 16 --compile --steps 1000 --min-seconds 2 --warmup 30 \
    --repeats 1 --breakdown
step unet_compile_tf32 150 --models unet --ks --proc-ks --compile --tf32 --steps 100 --min-seconds 3 --warmup 20 --repeats 1
step unet_bf16_cl_eager 60 --models unet --ks --proc-ks --precision bf16 --channels-last --steps 100 --min-seconds 3 \
    --warmup 5 --repeats 1

if [ "$DRY" = 0 ]; then
    echo "== done in $((SECONDS - START)) s; steps:"
    cat "$OUT/steps.tsv"
else
    echo "dry run: every step's arguments parse"
fi
