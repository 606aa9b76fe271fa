#!/usr/bin/env bash
# Issue 21, item 5: the paper-scale CelebA recipe (config.yaml's celeba_paper: the authors' U-Net at W = 32 with
# dropout 0.1, DDPM, SGD with momentum 0.95, batch 512 on 1x32x32 images) trained on a GPU for a few hundred steps
# of synthetic images, in fp32, with TF32 and in bf16 channels-last; each rate then goes into `diffmem plan` to
# give the GPU-hours celeba_paper needs at that rate. About 5 minutes on an H100/H200, from the repository root:
#   bash benchmarks/gpu_recipe_check.sh            # writes $OUT (default ./gpu_out): per variant the benchmark's
#                                                  # .md/.json and plan_<variant>.md; recipe_summary.md at the end
#   DEVICE=cpu STEPS=1 WARMUP=1 MIN_S=0 bash benchmarks/gpu_recipe_check.sh   # the same wiring on a CPU (slow)
# Each variant runs under its own timeout (LIMIT, default 150 s), so one hang cannot eat the device time.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-./gpu_out}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-100}
WARMUP=${WARMUP:-10}
MIN_S=${MIN_S:-3}
LIMIT=${LIMIT:-150}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
: > "$OUT/recipe_summary.md"
for variant in "fp32:" "tf32:--tf32" "bf16_cl:--precision bf16 --channels-last"; do
    name=${variant%%:*}
    flags=${variant#*:}
    echo "== celeba_paper $name (timeout ${LIMIT}s)"
    # shellcheck disable=SC2086 # the flags are words
    timeout -k 10 "$LIMIT" python benchmarks/bench_training.py --device "$DEVICE" --models celeba_paper --ks --proc-ks \
        --steps "$STEPS" --min-seconds "$MIN_S" --warmup "$WARMUP" --repeats 1 $flags \
        --json "$OUT/celeba_$name.json" > "$OUT/celeba_$name.md" 2> "$OUT/celeba_$name.err"
    rc=$?
    if [ "$rc" != 0 ]; then
        echo "   failed rc=$rc:"; tail -n 5 "$OUT/celeba_$name.err"
        echo "- $name: failed rc=$rc" >> "$OUT/recipe_summary.md"
        continue
    fi
    # the achieved rate of one model alone: FLOPs per step (FlopCounterMode) x steps/s
    read -r steps_s tflops < <(python -c '
import json, sys
row = json.load(open(sys.argv[1]))["models"]["celeba_paper"]["a"]
print(row["model_steps_per_s"], row["flops_per_model_step"] * row["model_steps_per_s"] / 1e12)' "$OUT/celeba_$name.json")
    python -m diffmem plan --experiment celeba_paper --tflops "$tflops" > "$OUT/plan_$name.md" 2>&1
    total=$(grep '^total:' "$OUT/plan_$name.md")
    line="- $name: $steps_s steps/s at batch 512, $tflops TFLOP/s achieved; celeba_paper at that rate: $total"
    echo "   $line"
    echo "$line" >> "$OUT/recipe_summary.md"
done
cat "$OUT/recipe_summary.md"
