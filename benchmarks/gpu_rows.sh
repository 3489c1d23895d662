#!/usr/bin/env bash
# The GPU rows of docs/benchmarks.md in one call of the lent device machine (issue 8), inside DEADLINE seconds.
#
#   DATA=path/to/cifar10-jpeg.tar.gz OUT=runs/gpu DEADLINE=540 bash benchmarks/gpu_rows.sh
#
# Phase 1, the timed rows, one job at a time on the GPU: s7 with its defaults at seed 0 (seconds per epoch,
# time to 93% / to its best from the command's start and from the first step, a cold data cache), s7 without
# cuDNN's autotuning, the throughput benchmark (convcli / notebook loop / ceiling), s7 with torch.compile, and
# `convcli eval` with 6-view TTA of the seed-0 run. Phase 2, accuracy only, JOBS (6) runs at a time on the
# same GPU (their seconds are those of a shared GPU and are not reported as speed), most important first: the
# training and distributed tests on CUDA, a CUDA run stopped and resumed, s7 seeds 1 and 2, s7_strided over
# 3 seeds, the airbench93 reference, a 1-process torchrun (NCCL), s7_strided with frozen whitening + Dirac
# init, fp32 and NCHW ablations, the airbench recipe through convcli, one-at-a-time changes to s7's recipe
# (lr, wd, label smoothing, lookahead), s7 seeds 3 and 4.
# Every step is bounded by what is left of DEADLINE; a step that fails or runs out of time is recorded and
# the script goes on. Every run's directory and log land under OUT; the rows to paste are in OUT/rows.md.
#
# A smoke test of this script on a CPU (DEVICE, EXTRA and STEPS exist for it):
#   DEVICE=cpu STEPS=2 REF_EPOCHS=0.1 DEADLINE=900 EXTRA="--subset 1000 --test-subset 500 --epochs 1 --batch-size 100" \
#     bash benchmarks/gpu_rows.sh
set -u
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/cifar10-jpeg.tar.gz}
OUT=${OUT:-runs/gpu}
PY=${PY:-python}
DEVICE=${DEVICE:-cuda}
EXTRA=${EXTRA:-}
STEPS=${STEPS:-60}
DEADLINE=${DEADLINE:-540}
T0=$(date +%s)
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1 || true
$PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)" \
  >> "$OUT/gpu.txt" 2>&1

left() { echo $(( DEADLINE - ($(date +%s) - T0) )); }
step() {  # step NAME COMMAND...: run within the time left (SIGTERM: convcli saves its run), log to OUT/NAME.log
  local name=$1; shift
  local budget; budget=$(left)
  if [ "$budget" -le 5 ]; then echo "== $name: skipped, out of time" | tee -a "$OUT/steps.txt"; return; fi
  local start; start=$(date +%s)
  timeout -k 10 "$budget" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $(( $(date +%s) - start )) s (at +$(( $(date +%s) - T0 )) s): $*" | tee -a "$OUT/steps.txt"
}
train() { local name=$1; shift; step "$name" $PY -m convcli train "$@" --device "$DEVICE" --data "$DATA" $EXTRA --out "$OUT/$name"; }

# Phase 1: timed, alone on the GPU.
train s7-seed0 architectures/s7.yaml --seed 0
# Epoch 1 took 14.1 s against 0.8 s for the others on the first GPU run (2026-12-04), where the reference,
# without cuDNN's autotuning, spent about 1 s: is it the autotuning? (the cache is warm from here on)
train s7-nobench architectures/s7.yaml --seed 0 --no-cudnn-benchmark
step speed $PY benchmarks/train_speed.py --device "$DEVICE" --steps "$STEPS" --warmup "${WARMUP:-20}" --repeats 3 \
  --workers "${WORKERS:-2}" --data "$DATA"
train s7-compile architectures/s7.yaml --compile
step s7-seed0-tta6 $PY -m convcli eval --weights "$OUT/s7-seed0/best.pt" --device "$DEVICE" --tta-translate 1 --json

# Phase 2: accuracy only, JOBS at a time on the same GPU, in this order (what matters most first).
queue=(
  "step pytest-train-dist env CONVCLI_SHARED_DATA=$DATA $PY -m pytest -x -q -p no:cacheprovider tests/test_train.py tests/test_distributed.py"
  "train resume-cuda architectures/s7.yaml --subset 4096 --test-subset 1000 --epochs 3 --stop-after 1; step resume-cuda-2 $PY -m convcli train --resume $OUT/resume-cuda"
  "train s7-seed1 architectures/s7.yaml --seed 1"
  "train s7-seed2 architectures/s7.yaml --seed 2"
  "train s7_strided-seed0 architectures/s7_strided.yaml --seed 0"
  "train s7_strided-seed1 architectures/s7_strided.yaml --seed 1"
  "train s7_strided-seed2 architectures/s7_strided.yaml --seed 2"
  "step ref-airbench93 $PY benchmarks/reference_airbench.py --net airbench93 --device $DEVICE --data $DATA --epochs ${REF_EPOCHS:-15} --out $OUT/ref-airbench93"
  "step torchrun-1 $PY -m torch.distributed.run --standalone --nproc-per-node 1 -m convcli train architectures/s7.yaml --device $DEVICE --data $DATA --subset 4096 --test-subset 1000 --epochs 2 --out $OUT/torchrun-1"
  "train s7_strided-fwd-seed0 architectures/s7_strided.yaml --freeze-whiten --dirac --seed 0"
  "train s7_strided-fwd-seed1 architectures/s7_strided.yaml --freeze-whiten --dirac --seed 1"
  "train s7_strided-fwd-seed2 architectures/s7_strided.yaml --freeze-whiten --dirac --seed 2"
  "train s7-fp32 architectures/s7.yaml --no-amp"
  "train s7-nchw architectures/s7.yaml --no-channels-last"
  "train ab93-recipe benchmarks/specs/airbench93.yaml --recipe recipes/airbench.yaml"
  "train s7-lr0.6 architectures/s7.yaml --lr 0.6"
  "train s7-lr0.25 architectures/s7.yaml --lr 0.25"
  "train s7-wd1e-3 architectures/s7.yaml --weight-decay 1e-3"
  "train s7-wd2.5e-3 architectures/s7.yaml --weight-decay 2.5e-3"
  "train s7-ls0.1 architectures/s7.yaml --label-smoothing 0.1"
  "train s7-nolookahead architectures/s7.yaml --no-lookahead"
  "train s7-seed3 architectures/s7.yaml --seed 3"
  "train s7-seed4 architectures/s7.yaml --seed 4"
)
for job in "${queue[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "${JOBS:-6}" ]; do wait -n; done
  [ "$(left)" -le 30 ] && { echo "== not started, out of time: $job" | tee -a "$OUT/steps.txt"; continue; }
  eval "$job" &
done
wait

# One table row per finished run, from its summary.json and metrics.csv.
$PY - "$OUT" > "$OUT/rows.md" <<'PYEOF'
import csv, json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| run | epochs | best test acc (epoch) | per epoch | first epoch >= target | train s/epoch | s to best from first step | s from command start | data s | device |")
print("|---|---|---|---|---|---|---|---|---|---|")
for summary in sorted(out.glob("*/summary.json")):
    s = json.loads(summary.read_text())
    rows = list(csv.DictReader(open(summary.parent / "metrics.csv")))
    target = 0.90 if "strided" in summary.parent.name else 0.93
    hit = next((r for r in rows if float(r["test_acc"]) >= target), None)
    secs = [float(r["seconds"]) for r in rows]
    accs = ", ".join(f"{100 * float(r['test_acc']):.2f}" for r in rows)
    print(f"| {summary.parent.name} | {s.get('epochs_done')} | {100 * (s.get('best_acc') or 0):.2f}% ({s.get('best_epoch')}) | {accs} | "
          f"{hit['epoch'] if hit else 'not reached'} ({100 * target:.0f}%) | {sum(secs) / max(len(secs), 1):.2f} | "
          f"{s.get('total_seconds')} | {s.get('command_seconds')} | {s.get('data_seconds')} | {s.get('device')} |")
print()
for result in sorted(out.glob("ref-*/result.json")):
    print(result.parent.name, json.dumps(json.loads(result.read_text())))
PYEOF
cat "$OUT/rows.md"
cat "$OUT/steps.txt"
