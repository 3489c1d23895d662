#!/usr/bin/env bash
# The GPU rows of docs/benchmarks.md in one go (issue 8): throughput (convcli / notebook loop / ceiling, with
# and without torch.compile), the airbench reference on this archive and its recipe through convcli, then s7
# over 15 epochs on 3 seeds (time to 93% from the command's start and from the first step), the precision /
# memory-format / compile ablations, and s7_strided over 30 epochs.
# Every run's directory and log land under OUT (default runs/gpu); the rows to paste are in OUT/rows.md.
#
#   DATA=path/to/cifar10-jpeg.tar.gz OUT=runs/gpu bash benchmarks/gpu_rows.sh [quick]
#
# DEVICE (default cuda), EXTRA (options added to every `convcli train`) and STEPS (timed steps of the speed
# benchmark) exist for a smoke test of this script on a CPU:
#   DEVICE=cpu STEPS=2 REF_EPOCHS=0.1 EXTRA="--subset 1000 --test-subset 500 --epochs 1 --batch-size 100" \
#     bash benchmarks/gpu_rows.sh quick
#
# `quick`: one seed and no ablations (about a third of the time). A step that fails is recorded and the
# script goes on. Written for the lent device machine: copy the archive into an ignored folder, carry it,
# and run this with OUT=$OUT.
set -u
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/cifar10-jpeg.tar.gz}
OUT=${OUT:-runs/gpu}
PY=${PY:-python}
DEVICE=${DEVICE:-cuda}
EXTRA=${EXTRA:-}
STEPS=${STEPS:-200}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1 || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" >> "$OUT/gpu.txt" 2>&1

step() {  # step NAME COMMAND...: run, log to OUT/NAME.log, note the exit code
  local name=$1; shift
  echo "== $name: $*" | tee -a "$OUT/steps.txt"
  local start=$(date +%s)
  "$@" > "$OUT/$name.log" 2>&1
  echo "   exit $? after $(( $(date +%s) - start )) s" | tee -a "$OUT/steps.txt"
}

step speed $PY benchmarks/train_speed.py --device "$DEVICE" --steps "$STEPS" --warmup "${WARMUP:-20}" --repeats 3 --data "$DATA"
step speed-compile $PY benchmarks/train_speed.py --device "$DEVICE" --steps "$STEPS" --warmup "${WARMUP:-20}" --repeats 3 --compile \
  --only convcli --data "$DATA"

# The independent reference: the published airbench recipe in plain PyTorch on the same archive (REF_EPOCHS
# shortens it for a smoke test).
for net in airbench93 airbench94; do
  step "ref-$net" $PY benchmarks/reference_airbench.py --net $net --device "$DEVICE" --data "$DATA" \
    ${REF_EPOCHS:+--epochs $REF_EPOCHS} --out "$OUT/ref-$net"
done

# The same recipe through convcli's own training path (recipes/airbench.yaml) on the reference's net.
step ab93-recipe $PY -m convcli train benchmarks/specs/airbench93.yaml --recipe recipes/airbench.yaml --device "$DEVICE" \
  --data "$DATA" $EXTRA --out "$OUT/ab93-recipe"

seeds="0 1 2"; [ "${1:-}" = quick ] && seeds="0"
for seed in $seeds; do
  step "s7-seed$seed" $PY -m convcli train architectures/s7.yaml --device "$DEVICE" --data "$DATA" $EXTRA --seed "$seed" \
    --out "$OUT/s7-seed$seed"
done
if [ "${1:-}" != quick ]; then
  step s7-fp32 $PY -m convcli train architectures/s7.yaml --device "$DEVICE" --data "$DATA" $EXTRA --no-amp --out "$OUT/s7-fp32"
  step s7-nchw $PY -m convcli train architectures/s7.yaml --device "$DEVICE" --data "$DATA" $EXTRA --no-channels-last \
    --out "$OUT/s7-nchw"
  step s7-compile $PY -m convcli train architectures/s7.yaml --device "$DEVICE" --data "$DATA" $EXTRA --compile \
    --out "$OUT/s7-compile"
  step s7-tta6 $PY -m convcli eval --weights "$OUT/s7-seed0/best.pt" --device "$DEVICE" --tta-translate 1 --json \
    --out "$OUT/s7-seed0-eval"
fi
step s7_strided $PY -m convcli train architectures/s7_strided.yaml --device "$DEVICE" --data "$DATA" $EXTRA --out "$OUT/s7_strided"

# One table row per finished run, from its summary.json and metrics.csv (the first epoch at >= 93% / 90%).
$PY - "$OUT" > "$OUT/rows.md" <<'EOF'
import csv, json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| run | epochs | best test acc (epoch) | first epoch >= target | train s/epoch | s from first step | s from command start | device |")
print("|---|---|---|---|---|---|---|---|")
for summary in sorted(out.glob("*/summary.json")):
    s = json.loads(summary.read_text())
    rows = list(csv.DictReader(open(summary.parent / "metrics.csv")))
    target = 0.90 if "strided" in s["name"] else 0.93
    hit = next((r for r in rows if float(r["test_acc"]) >= target), None)
    per_epoch = sum(float(r["seconds"]) for r in rows) / max(len(rows), 1)
    print(f"| {summary.parent.name} | {s['epochs_done']} | {100 * (s['best_acc'] or 0):.2f}% ({s['best_epoch']}) | "
          f"{hit['epoch'] if hit else 'not reached'} ({100 * target:.0f}%) | {per_epoch:.2f} | {s['total_seconds']:.1f} | "
          f"{s.get('command_seconds', float('nan')):.1f} | {s['device']} |")
print()
print("| reference | epochs | test acc no TTA / flip / 6-view | train s | s from command start | device |")
print("|---|---|---|---|---|---|")
for result in sorted(out.glob("ref-*/result.json")):
    r = json.loads(result.read_text())
    a = r["test_acc"]
    print(f"| {r['net']} | {r['epochs']} | {a['1']:.2f} / {a['2']:.2f} / {a['6']:.2f}% | {r['train_seconds']:.1f} | "
          f"{r['command_seconds']:.1f} | {r['device']} |")
EOF
cat "$OUT/rows.md"
