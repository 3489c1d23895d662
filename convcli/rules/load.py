"""Finding rule sets: `--rules NAME|PATH`, or the spec's `rules:` (a profile name, a path, or inline rules).

Profiles are the files `architectures/rules/NAME.yaml`. A profile name is looked up in
  1. `architectures/rules/` in the spec file's directory and each of its parents,
  2. the same from the current directory upwards,
  3. the `architectures/rules/` of the source checkout convcli runs from (editable installs).
A value is a path rather than a name when it contains a `/` or ends in `.yaml`/`.yml`; a path in a
spec is relative to the spec file, a `--rules` path to the current directory. `--rules none` turns
the checks off for that run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from convcli.errors import SpecError, did_you_mean
from convcli.rules.engine import parse_ruleset
from convcli.rules.model import RuleSet
from convcli.yamlio import load_yaml

PROFILE_DIR = Path("architectures") / "rules"
_CACHE: dict[tuple[str, float], RuleSet] = {}


def load_rules(path: str | Path) -> RuleSet:
    """Read and validate a rules YAML file (errors: SpecError with file:line)."""
    path = Path(path)
    file = str(path)
    try:
        stamp = path.stat().st_mtime
    except FileNotFoundError:
        raise SpecError("no such rules file", file=file) from None
    except OSError as exc:
        raise SpecError(f"cannot read: {exc}", file=file) from None
    key = (str(path.resolve()), stamp)
    if key in _CACHE:
        return _CACHE[key]
    try:
        text = path.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise SpecError("is a directory, not a rules file", file=file) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read: {exc}", file=file) from None
    data = load_yaml(text, file)
    if data is None:
        raise SpecError("the rules file is empty", file=file, line=1,
                        expected="name: ..., rules: [- max_params: {lt: 1000000}, ...]")
    ruleset = parse_ruleset(data, file, default_name=path.stem)
    _CACHE[key] = ruleset
    return ruleset


def profile_dirs(spec_file: str | Path | None = None) -> list[Path]:
    """Where profile names are looked up, in order (existing directories only, no duplicates)."""
    starts = []
    if spec_file:
        starts.append(Path(spec_file).resolve().parent)
    starts.append(Path.cwd().resolve())
    dirs = []
    for start in starts:
        for anc in (start, *start.parents):
            dirs.append(anc / PROFILE_DIR)
    dirs.append(Path(__file__).resolve().parents[2] / PROFILE_DIR)
    out = []
    for d in dirs:
        if d.is_dir() and d not in out:
            out.append(d)
    return out


def list_profiles(spec_file: str | Path | None = None) -> list[str]:
    names = []
    for d in profile_dirs(spec_file):
        for f in sorted([*d.glob("*.yaml"), *d.glob("*.yml")]):
            if f.stem not in names:
                names.append(f.stem)
    return names


def find_profile(name: str, spec_file: str | Path | None = None) -> Path | None:
    for d in profile_dirs(spec_file):
        for ext in (".yaml", ".yml"):
            if (d / f"{name}{ext}").is_file():
                return d / f"{name}{ext}"
    return None


def _looks_like_path(ref: str) -> bool:
    return "/" in ref or "\\" in ref or ref.endswith((".yaml", ".yml"))


def load_ref(ref: str, *, base: Path, spec_file: str | Path | None, file: str | None = None,
             line: int | None = None) -> RuleSet:
    """A rule set from a profile name or a path (relative to `base`); errors point at file:line."""
    if _looks_like_path(ref):
        path = Path(ref).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise SpecError(f"no such rules file '{ref}'", file=file, line=line, path="rules",
                            expected=f"a rules YAML file (looked for {path})")
        return load_rules(path)
    found = find_profile(ref, spec_file)
    if found is None:
        names = sorted(list_profiles(spec_file))
        raise SpecError(f"unknown rules profile '{ref}'", file=file, line=line, path="rules",
                        expected=("one of " + ", ".join(names) if names else "a profile")
                        + f" (files in {PROFILE_DIR}/), or a path to a rules YAML file",
                        suggestion=did_you_mean(ref, names))
    return load_rules(found)


def resolve_rules(spec, override: str | None = None, option: str = "--rules") -> RuleSet | None:
    """The rule set for a spec: `override` (the `--rules NAME|PATH` option; "none" = no rules) wins over
    the spec's own `rules:`; None when neither names one. `option` names the override in errors."""
    spec_file = getattr(spec, "file", None)
    if override is not None:
        ref = str(override).strip()
        if ref.lower() == "none":
            return None
        if Path(ref).is_file():
            return load_rules(ref)
        return load_ref(ref, base=Path.cwd(), spec_file=spec_file, file=option)
    value = getattr(spec, "rules", None)
    if value is None:
        return None
    raw = getattr(spec, "raw", None)
    line = raw.line_of("rules") if hasattr(raw, "line_of") else None
    if isinstance(value, str):
        if value.strip().lower() == "none":
            return None
        base = Path(spec_file).parent if spec_file else Path.cwd()
        return load_ref(value.strip(), base=base, spec_file=spec_file, file=spec_file, line=line)
    if isinstance(value, (dict, list)):
        return parse_ruleset(value, spec_file, line=line, default_name=f"{getattr(spec, 'name', 'spec')} (inline)",
                             path="rules")
    raise SpecError("rules must be a profile name, a path to a rules file, or inline rules", file=spec_file,
                    line=line, path="rules", expected="rules: s7, rules: ../my-rules.yaml, or rules: {rules: [...]}",
                    got=value)


def accuracy_from_run(run) -> float | None:
    """The accuracy an `accuracy` rule checks, from a training run: a run directory, its summary.json, or
    the summary dict `convcli train` returns. Uses `best_acc` (a fraction), else `final_test_acc`."""
    summary = run if isinstance(run, dict) else read_run(run).summary
    for key in ("best_acc", "final_test_acc"):
        value = summary.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


# --------------------------------------------------------------------------- training runs


@dataclass
class Run:
    """A finished training run (`convcli train` writes runs/NAME/summary.json and args.yaml)."""

    dir: Path
    summary: dict
    args: dict = field(default_factory=dict)

    @property
    def accuracy(self) -> float | None:
        return accuracy_from_run(self.summary)

    @property
    def test_subset(self) -> int | None:
        for source in (self.summary, self.args):
            value = source.get("test_subset")
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return None

    @property
    def spec(self) -> str | None:
        return self.args.get("spec") or self.summary.get("spec")

    def spec_paths(self) -> list[Path]:
        """Where the spec it was trained from may be: the absolute path the summary records, else the
        recorded (perhaps relative) path resolved against the directory training ran in, which the
        recorded run_dir reveals (`runs/x` of /home/u/runs/x: /home/u), else against this directory."""
        out = [Path(p) for p in (self.summary.get("spec_path"),) if p]
        spec = self.spec
        if spec:
            spec_p = Path(spec)
            if spec_p.is_absolute():
                out.append(spec_p)
            else:
                recorded = Path(str(self.args.get("run_dir") or self.summary.get("run_dir") or ""))
                here, tail = self.dir.resolve().parts, recorded.parts
                if tail and not recorded.is_absolute() and here[-len(tail):] == tail:
                    out.append(Path(*here[:-len(tail)]) / spec_p)
                out.append(Path.cwd() / spec_p)
        return out

    def whole_test_set(self) -> bool:
        """Scored on every test image: no --test-subset, or one at least as large as the test split."""
        n = self.test_subset
        if n is None:
            return True
        full, used = self.summary.get("data_n_test"), self.summary.get("n_test")
        if isinstance(full, int):
            return n >= full
        return isinstance(used, int) and n > used  # older runs: asked for more than there were

    def source(self) -> str:
        """`runs/s7: 10,000 test images of ../shared/data/cifar10-jpeg.tar.gz`: where the accuracy was measured."""
        n, data = self.summary.get("n_test"), self.summary.get("data")
        return f"{self.dir}" + (f": {n:,} test images" if isinstance(n, int) else "") + (f" of {data}" if data else "")


def read_run(run) -> Run:
    """A run directory (or its summary.json); SpecError when it has no readable summary.json."""
    path = Path(run)
    summary_path = path / "summary.json" if path.is_dir() or not path.suffix else path
    run_dir = summary_path.parent
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        what = "no summary.json (has this run finished?)" + ("" if run_dir.exists() else "; no such run directory")
        raise SpecError(what, file=str(summary_path if run_dir.exists() else path)) from None
    except (OSError, ValueError) as exc:
        raise SpecError(f"cannot read the run summary: {exc}", file=str(summary_path)) from None
    if not isinstance(summary, dict):
        raise SpecError("not a run summary (expected a JSON object)", file=str(summary_path))
    args = {}
    if (run_dir / "args.yaml").is_file():
        import yaml

        try:
            loaded = yaml.safe_load((run_dir / "args.yaml").read_text(encoding="utf-8"))
            args = loaded if isinstance(loaded, dict) else {}
        except (OSError, yaml.YAMLError):
            args = {}
    return Run(run_dir, summary, args)


def check_run(run: Run, analysis, allow_subset: bool = False) -> tuple[str | None, list[str]]:
    """Whether a run's accuracy may stand for this network: (why not, or None; warnings)."""
    from convcli.fingerprint import VERSION, fingerprint, first_difference, layer_records

    warnings: list[str] = []
    theirs = run.summary.get("fingerprint")
    if not theirs:
        warnings.append(f"{run.dir}: the run has no fingerprint (trained by an older convcli); "
                        "cannot check that it trained this network")
    elif theirs != fingerprint(analysis):
        layers = run.summary.get("layers")
        same_version = str(theirs).split(":", 1)[0] == VERSION
        diff = None
        if isinstance(layers, list) and layers:
            diff = first_difference(layer_records(analysis), layers, analysis.input_shape, run.summary.get("input"))
        if diff is None and not same_version and layers is None:
            warnings.append(f"{run.dir}: the run's fingerprint comes from another convcli version; "
                            "cannot check that it trained this network")
        elif diff is not None or same_version:
            return (f"{run.dir} trained a different network ("
                    + (f"first difference: {diff}" if diff else "the fingerprints differ") + ")"), warnings
    if run.summary.get("finished") is False:
        done, total, why = (run.summary.get(k) for k in ("epochs_done", "epochs", "stop_reason"))
        return (f"{run.dir} did not finish (epoch {done} of {total}" + (f"; {why}" if why else "") + "): "
                f"continue it with `convcli train --resume {run.dir}`"), warnings
    classes = run.summary.get("classes")
    if isinstance(classes, list) and classes and classes != CIFAR10_CLASSES:
        warnings.append(f"{run.dir}: trained and tested on {run.summary.get('data')} ({len(classes)} classes), "
                        "not CIFAR-10: its accuracy is on that test set")
    n = run.test_subset
    if not run.whole_test_set():
        if not allow_subset:
            return (f"{run.dir} was scored on a {n:,}-image test subset (--test-subset {n}), not the whole test "
                    "set; retrain without --test-subset, or pass --allow-subset to use it anyway"), warnings
        warnings.append(f"{run.dir}: its accuracy comes from a {n:,}-image test subset (--allow-subset)")
    return None, warnings


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _same_file(a, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, TypeError, ValueError):
        return False


def find_run(runs_dir, spec_ref, analysis, allow_subset: bool = False) -> tuple[Run | None, str, list[str]]:
    """The training run of a spec in a runs directory: the newest run trained from this very spec file
    first (its args.yaml names it), else `DIR/<file name>` or `DIR/<spec name>` (two students' s7.yaml
    are told apart by their files, not their names); a run of another network (fingerprint), an unfinished
    one or one on a test subset is passed over. Returns (run or None, what was found or why none, warnings)."""
    root = Path(runs_dir)
    ref = str(spec_ref)
    is_file = ":" not in ref or Path(ref).exists()
    stem = Path(ref).stem if is_file else ref.rpartition(":")[2]
    names = list(dict.fromkeys([stem, getattr(analysis, "name", stem)]))
    by_name = [root / n for n in names if (root / n).is_dir()]
    own = []
    if root.is_dir() and is_file:
        for d in root.iterdir():
            r = _peek(d) if d.is_dir() else None
            if r is not None and any(_same_file(p, ref) for p in r.spec_paths()):
                own.append(d)
        own.sort(key=lambda d: _mtime(d), reverse=True)
    candidates = list(dict.fromkeys(own + by_name))
    passed, warnings = [], []
    for d in candidates:
        try:
            run = read_run(d)
        except SpecError:
            passed.append(f"{d} has no summary.json (not finished?)")
            continue
        if d not in own and is_file:
            # Found by name only: a run whose spec file is here and is another file belongs to that file
            # (every copy of s7.yaml keeps `name: s7`, and must not share one student's runs/s7).
            other = next((p for p in run.spec_paths() if p.is_file() and not _same_file(p, ref)), None)
            if other is not None and not any(_same_file(p, ref) for p in run.spec_paths()):
                passed.append(f"{d} was trained from {other}, not from {ref} (name it with --run {d} "
                              "to use it anyway)")
                continue
        problem, warns = check_run(run, analysis, allow_subset)
        if problem:
            passed.append(problem)
            continue
        return run, f"accuracy from {run.dir}", warnings + warns
    looked = " or ".join(str(root / n) for n in names)
    hint = (f"no finished training run of this spec in {root}/ (looked for {looked}"
            + (" and runs trained from " + ref if is_file else "") + ")")
    if passed:
        hint += "; passed over: " + "; ".join(passed)
    return None, hint, warnings


def _peek(d: Path) -> Run | None:
    import yaml

    args = {}
    try:
        loaded = yaml.safe_load((d / "args.yaml").read_text(encoding="utf-8"))
        args = loaded if isinstance(loaded, dict) else {}
    except (OSError, yaml.YAMLError):
        pass
    summary = {}
    try:
        loaded = json.loads((d / "summary.json").read_text(encoding="utf-8"))
        summary = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        pass
    return Run(d, summary, args) if args or summary else None


def _mtime(d: Path) -> float:
    for name in ("summary.json", "args.yaml"):
        try:
            return (d / name).stat().st_mtime
        except OSError:
            continue
    return 0.0


__all__ = ["accuracy_from_run", "Run", "read_run", "check_run", "find_run", "resolve_rules", "load_rules",
           "load_ref", "find_profile", "list_profiles", "profile_dirs"]
