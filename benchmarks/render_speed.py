"""How long rendering a 10,000-row table takes, per output path (issue 9: under 1 s).

Before the one-renderer rewrite a table cost about 0.75 ms a row in rich (`convcli rf` of a
10,000-layer spec: 7.36 s, against 1.28 s for `--json`). This script times the renderer alone on the
`rf` and `inspect` tables of a generated 10,000-layer spec (the analysis is done once, outside the
timing), in every path: plain text as piped (natural width, and COLUMNS=80 / 200), the terminal
(rich, with colour, at 80 and 200 columns), CSV and Markdown. Then the whole command as a user runs it,
`convcli rf SPEC` piped, against `--json`. Median of --repeat runs.

    python benchmarks/render_speed.py [--rows 10000] [--repeat 3]

Results (cpu-2c, shared with a training run; see docs/benchmarks.md for the machine):

    2025-11-23, --rows 10000 --repeat 3:  see the table at the end of this file's docstring in
    docs/benchmarks.md ("Rendering").
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
