"""How long the analysis commands take on a YAML spec, against `import torch` alone.

Issue 7's target: every analysis of a YAML spec (rf, params, inspect) in at most 0.25x the time of
`python -c "import torch"`, since none of them needs torch. Each command runs as a fresh process
(as a user runs it); the median of --repeat runs is reported.

    python benchmarks/analysis_speed.py [--repeat 5] [SPEC ...]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(argv: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("specs", nargs="*", default=["architectures/s7.yaml", "architectures/resnet50.yaml",
                                                   "architectures/googlenet.yaml"])
    args = ap.parse_args()
    torch_s = timed([sys.executable, "-c", "import torch"], args.repeat)
    print(f"import torch: {torch_s:.3f} s (median of {args.repeat})")
    print(f"{'spec':<32} {'command':<8} {'seconds':>8} {'x import torch':>15}")
    worst = 0.0
    for spec in args.specs:
        for cmd in ("rf", "params", "inspect"):
            s = timed([sys.executable, "-m", "convcli", cmd, spec], args.repeat)
            worst = max(worst, s / torch_s)
            print(f"{spec:<32} {cmd:<8} {s:>8.3f} {s / torch_s:>15.2f}")
    print(f"worst ratio: {worst:.2f}")


if __name__ == "__main__":
    main()
