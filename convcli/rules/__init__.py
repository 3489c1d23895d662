"""Assignment rules: rule sets as data, checked against an `Analysis` (torch-free).

A rule set (a profile `architectures/rules/NAME.yaml`, any YAML file, or inline under a spec's `rules:`):

    name: s7
    description: CIFAR-10 Advanced Convolutions
    rules:
      - max_params: {lt: 1000000}              # strict: < 1,000,000
      - min_rf: {gt: 44, at: before_gap}       # strict: > 44, at the last layer before GAP
      - count: {kind: maxpool, exactly: 3}
      - count: {kind: depthwise_separable, min: 1}
      - forbid: avgpool
      - gap_before_classifier: true
      - structure: [C1, C2, C3, C4, O]
      - accuracy: {min: 0.80}                  # checked only when an accuracy is given
      - {max_macs: 50000000, name: small-macs} # bare number = inclusive; `name:` sets the rule id

Limits: `lt`/`gt` are strict, `le`/`ge`/`eq` inclusive, with `max`/`min`/`exactly` as synonyms of
`le`/`ge`/`eq`. A bare number means `le` for max_* rules and `ge` for min_* and accuracy.

API (what `convcli inspect`, `train` and `eval` call):
    resolve_rules(spec, override=None) -> RuleSet | None
    run_checks(analysis, ruleset, accuracy=None) -> list[Check]   # accuracy: a fraction, or None
    accuracy_from_run(run_dir | summary.json | summary dict) -> float | None  (best_acc, else final_test_acc)
    read_run(dir) -> Run; check_run(run, analysis) -> (refusal or None, warnings); find_run(runs_dir, spec, analysis)
    verdict_table(checks) / batch_table(results) -> TableData (convcli.render prints it); tally(results);
    write_junit(path, results)
"""

from __future__ import annotations

from convcli.rules.engine import RULE_KINDS, parse_ruleset, run_checks
from convcli.rules.kinds import KINDS
from convcli.rules.load import (
    Run,
    accuracy_from_run,
    check_run,
    find_profile,
    find_run,
    list_profiles,
    load_rules,
    read_run,
    resolve_rules,
)
from convcli.rules.model import Check, Rule, RuleSet, all_ok, failed
from convcli.rules.report import (
    batch_rows,
    batch_table,
    render_batch,
    render_checks,
    summary_line,
    tally,
    verdict_line,
    verdict_rows,
    verdict_table,
    write_junit,
)

__all__ = [
    "accuracy_from_run", "Check", "Rule", "RuleSet", "KINDS", "RULE_KINDS", "resolve_rules", "run_checks", "load_rules",
    "parse_ruleset", "find_profile", "list_profiles", "render_checks", "render_batch", "write_junit",
    "verdict_rows", "batch_rows", "summary_line", "all_ok", "failed", "verdict_table", "batch_table", "tally",
    "verdict_line", "Run", "read_run", "check_run", "find_run",
]
