"""How long rendering a 10,000-row table takes, per output path (issue 9: under 1 s).

Before the one-renderer rewrite a table cost about 0.75 ms a row in rich (`convcli rf` of a
10,000-layer spec: 7.36 s, against 1.28 s for `--json`). This script times the renderer alone on the
`rf` and `inspect` tables of a generated 10,000-layer spec (the analysis is done once, outside the
timing), in every path: plain text as piped (natural width, and COLUMNS=80 / 200), the terminal
(rich, with colour, at 80 and 200 columns), CSV and Markdown. Then the whole command as a user runs it,
`convcli rf SPEC` piped, against `--json`. Median of --repeat runs.

    python benchmarks/render_speed.py [--rows 10000] [--repeat 3]

Results: cpu-2c (2 shared cores, a training run on the other; Python 3.11.7, rich 15.0.0), 2026-11-23,
`python benchmarks/render_speed.py --repeat 3` (10,002 rows):

    table    path                          seconds   ms/row    lines
    rf       plain, natural width            0.074   0.0074   10,008
    rf       plain, COLUMNS=80               0.075   0.0075   10,010
    rf       plain, COLUMNS=200              0.072   0.0072   10,008
    rf       terminal (rich), 80 cols        0.092   0.0092   10,011
    rf       terminal (rich), 200 cols       0.093   0.0093   10,009
    rf       csv                             0.050   0.0050   10,002
    rf       markdown                        0.058   0.0058   10,002
    inspect  plain, natural width            0.044   0.0044   10,013
    inspect  plain, COLUMNS=80               0.054   0.0054   20,019   (Type folded under each row)
    inspect  plain, COLUMNS=200              0.045   0.0045   10,013
    inspect  terminal (rich), 80 cols        0.105   0.0105   20,020
    inspect  terminal (rich), 200 cols       0.058   0.0058   10,014
    inspect  csv                             0.036   0.0036   10,002
    inspect  markdown                        0.032   0.0032   10,002
    slowest render: 0.105 s (under the 1 s target)

    whole command (fresh process, output piped to a file):
      convcli rf deep.yaml                    1.39 s
      convcli rf deep.yaml --json             1.49 s
      convcli inspect deep.yaml               1.18 s

Before and after on the same machine, the same day, `convcli rf` of a 10,000-conv spec
(`repeat: {times: 10000, layers: [{conv: {out: 8, k: 3}}]}` on [8, 16, 16]), piped, `/usr/bin/time`:
before (commit d2358c5, rich tables) 7.19 s table vs 1.26 s `--json`; after 1.34 s table vs 1.43 s
`--json`. What remains is the analysis and the process start, not the rendering.
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from convcli.analysis import analyze_file  # noqa: E402
from convcli.commands.common import totals  # noqa: E402
from convcli.render import Output, emit, render_to_string  # noqa: E402
from convcli.views import inspect_table, rf_table  # noqa: E402

SPEC = """name: deep
input: [8, 16, 16]
layers:
  - seq:
      name: C1
      layers:
        - repeat: {{times: {n}, layers: [{{conv: {{out: 8, k: 3, d: 2}}}}]}}
"""


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "deep.yaml"
        spec.write_text(SPEC.format(n=args.rows))
        t = time.perf_counter()
        a = analyze_file(spec)
        analysis_s = time.perf_counter() - t
        tables = {"rf": rf_table(a), "inspect": inspect_table(a, totals(a))}
        print(f"{len(a.rows):,} rows (analysis {analysis_s:.2f} s, not timed below); median of {args.repeat}")
        print(f"{'table':<8} {'path':<28} {'seconds':>8} {'ms/row':>8} {'lines':>8}")
        worst = 0.0
        for name, table in tables.items():
            out = Output([table], records=table)
            paths = {
                "plain, natural width": lambda: render_to_string(out, "table"),
                "plain, COLUMNS=80": lambda: render_to_string(out, "table", width=80),
                "plain, COLUMNS=200": lambda: render_to_string(out, "table", width=200),
                "terminal (rich), 80 cols": lambda: render_to_string(out, "table", width=80, color=True),
                "terminal (rich), 200 cols": lambda: render_to_string(out, "table", width=200, color=True),
                "csv": lambda: emit(out, "csv", io.StringIO()),
                "markdown": lambda: emit(out, "markdown", io.StringIO()),
            }
            for label, fn in paths.items():
                s = median_time(fn, args.repeat)
                lines = fn().count("\n") if label.startswith(("plain", "terminal")) else table.row_count
                worst = max(worst, s)
                print(f"{name:<8} {label:<28} {s:>8.3f} {1000 * s / len(a.rows):>8.4f} {lines:>8,}")
        print(f"slowest render: {worst:.3f} s ({'under' if worst < 1 else 'OVER'} the 1 s target)")

        print("\nwhole command (fresh process, output piped to a file):")
        for argv in (["rf", str(spec)], ["rf", str(spec), "--json"], ["inspect", str(spec)]):
            def run(argv=argv):
                with open(Path(tmp) / "out.txt", "w") as f:
                    subprocess.run([sys.executable, "-m", "convcli", *argv], stdout=f, stderr=subprocess.DEVNULL,
                                   cwd=ROOT)
            s = median_time(run, args.repeat)
            print(f"  convcli {' '.join(argv).replace(str(spec), 'deep.yaml'):<28} {s:>7.2f} s")


if __name__ == "__main__":
    main()
