#!/usr/bin/env bash
# bf16 autocast + channels_last against fp32 NCHW at a fixed budget (issue 8: "show that accuracy at a fixed
# epoch budget is unchanged"): s7's `train:` section, 3 epochs on 10,000 / 2,000 images, seeds 0-2 per arm,
# one after the other. About 35 min on one thread of cpu-2c (fp32 is the slow arm). Prints one line per run
# and the mean per arm; docs/benchmarks.md, "Precision and memory format on the CPU", has the results.
#
#   OMP_NUM_THREADS=1 DATA=../shared/data/cifar10-jpeg.tar.gz OUT=runs bash benchmarks/precision_ab.sh
set -eu
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/cifar10-jpeg.tar.gz}
OUT=${OUT:-runs}
CONVCLI=${CONVCLI:-convcli}
SEEDS=${SEEDS:-0 1 2}
mkdir -p "$OUT"
for s in $SEEDS; do
  for arm in bf16 fp32; do
    flags=""; [ "$arm" = fp32 ] && flags="--no-amp --no-channels-last"
    # shellcheck disable=SC2086  # flags is a list of options
    $CONVCLI train architectures/s7.yaml --data "$DATA" --subset 10000 --test-subset 2000 --epochs 3 \
      --seed "$s" $flags --out "$OUT/prec2-$arm-s$s" > "$OUT/prec2-$arm-s$s.log" 2>&1
  done
done
python - "$OUT" $SEEDS <<'PY'
import json, statistics, sys
out, seeds = sys.argv[1], sys.argv[2:]
for arm in ("bf16", "fp32"):
    accs = [100 * json.load(open(f"{out}/prec2-{arm}-s{s}/summary.json"))["best_acc"] for s in seeds]
    spread = f", s.d. {statistics.stdev(accs):.2f}" if len(accs) > 1 else ""
    print(f"{arm}: " + ", ".join(f"{a:.2f}" for a in accs) + f" -> mean {statistics.mean(accs):.2f}%{spread}")
PY
