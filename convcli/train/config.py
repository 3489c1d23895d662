"""Training options, declared once in `OPTIONS` (name, type, default, range, help), in the spirit of airbench's
single hyper-parameter dict. From that list come the `TrainConfig` dataclass, the `train:`/recipe keys and
their checks, the `convcli train` command-line options and which options `--resume` may change. Values are
filled from the spec's `train:` section, a recipe YAML and the command line, in that order (the command line
wins). Also: which spec to train when none is given."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, make_dataclass
from pathlib import Path

from convcli.errors import ConvcliError, SpecError, did_you_mean

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("onecycle", "cosine", "step", "airbench")
# Per-optimizer defaults for the two options whose good value depends on the optimizer.
DEFAULT_LR = {"sgd": 0.1, "adam": 1e-3, "adamw": 1e-3}
DEFAULT_WEIGHT_DECAY = {"sgd": 5e-4, "adam": 0.0, "adamw": 0.05}
FALLBACK_SPEC = "architectures/s7.yaml"
DEVICES = ("auto", "cpu", "cuda", "cuda:0", "mps")
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"
# Names people write for an option (other tools' spellings): only for "did you mean".
OPTION_ALIASES = {"learning_rate": "lr", "wd": "weight_decay", "bs": "batch_size", "batch": "batch_size",
                  "optim": "optimizer", "opt": "optimizer", "scheduler": "schedule", "lr_schedule": "schedule",
                  "smoothing": "label_smoothing", "n_epochs": "epochs", "num_epochs": "epochs", "ema": "lookahead",
                  "max_epochs": "epochs", "dataset": "data", "data_dir": "data"}


# --- the declaration ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Option:
    """One training option, declared once: the `train:`/recipe key, the command-line option, its help
    (with the default), the type and range checks, and whether `--resume` may change it all come from here.

    `low`/`high` bound numbers (`*_open`: strictly); `choices` lists the allowed strings; `unit` names what
    a number counts in error messages; a None default means "not set" (see `note`)."""

    name: str
    kind: type  # bool | int | float | str
    default: object
    help: str
    low: float | None = None
    low_open: bool = False
    high: float | None = None
    high_open: bool = False
    choices: tuple = ()
    unit: str = ""
    short: str = ""  # a one-letter alias, e.g. "-b"
    note: str = ""  # how the default reads in --help when it is not a plain value
    resume: bool = False  # may be changed when resuming a run
    command_line: bool = False  # how this machine runs the training, not what is trained: no train:/recipe key
    panel: str = "Training options"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def default_text(self) -> str:
        if self.note:
            return self.note
        if self.kind is bool:
            return "on" if self.default else "off"
        return "none" if self.default is None else f"{self.default:g}" if self.kind is float else str(self.default)

    def expected(self) -> str:
        """What a valid value is, in words (for error messages)."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        what = {int: "an integer", float: "a number"}.get(self.kind, "a value")
        unit = f" {self.unit}" if self.unit else ""
        if self.low is not None and self.high is None:
            if self.low == 0 and self.low_open:
                return f"a positive {what.split()[-1]}{unit}"
            if self.low == 0:
                return f"0 or more{unit}"
            return f"{what}{unit} {'>' if self.low_open else '>='} {self.low:g}"
        if self.low is not None and self.high is not None:  # "a number of pixels in [0, 4]"
            what = f"a number of{unit}" if unit else what
            return (f"{what} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                    f"{')' if self.high_open else ']'}")
        return what


C, R = "Training options", "Recipe"
OPTIONS: tuple[Option, ...] = (
    Option("data", str, "cifar10", "cifar10, an ImageFolder directory with train/ and test/, or a .tar.gz of one "
           "(on --resume: where the run's data is now, if it moved).", resume=True),
    Option("epochs", int, 10, "Epochs in all (on --resume: more extends the run).", low=0, low_open=True,
           high=100_000, resume=True),
    Option("batch_size", int, 512, "Training batch size.", low=0, low_open=True, short="-b"),
    Option("lr", float, None, "Peak learning rate.", low=0, low_open=True, note="sgd 0.1, adam/adamw 1e-3", panel=R),
    Option("optimizer", str, "sgd", "sgd (Nesterov, --momentum) | adam | adamw.", choices=OPTIMIZERS, panel=R),
    Option("momentum", float, 0.9, "SGD's (Nesterov) momentum (airbench: 0.85).", low=0, high=1, high_open=True,
           panel=R),
    Option("schedule", str, "onecycle", "onecycle (linear warm-up over 25% from a tenth of the peak, then linear "
           "decay to 0) | cosine | step | airbench (from 0.2x up over 23%, then down to 0.07x).", choices=SCHEDULES,
           panel=R),
    Option("weight_decay", float, None, "Weight decay on conv/linear weights (not biases or norms).", low=0,
           note="sgd 5e-4, adam 0, adamw 0.05", panel=R),
    Option("wd_all", bool, False, "Weight decay on every parameter, biases and norms too (airbench); the BN "
           "biases get 1/--bn-bias-lr of it, so every parameter shrinks by the same fraction per step.", panel=R),
    Option("label_smoothing", float, 0.2, "Label smoothing.", low=0, high=1, high_open=True, panel=R),
    Option("device", str, "auto", "auto | cuda | cuda:N | cpu | mps.", resume=True),
    Option("seed", int, 0, "Seed for weights, subset, shuffling, augmentation."),
    Option("amp", bool, True, "bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16, AMX)."),
    Option("channels_last", bool, True, "NHWC memory format on CUDA and CPU."),
    Option("compile", bool, False, "torch.compile the model."),
    Option("cudnn_benchmark", bool, True, "CUDA: cuDNN times its algorithms for each new input shape and "
           "keeps the fastest (the first epoch pays for the timing).", resume=True),
    Option("nproc", int, 1, "Processes to train with on this node (DistributedDataParallel: gloo on the CPU, NCCL "
           "with one GPU each on CUDA); --batch-size is the global batch. Several nodes: torchrun (README).",
           low=1, high=1024, resume=True, command_line=True, panel="Distributed"),
    Option("target_acc", float, None, "Stop once test accuracy reaches this (0.93 or 93).", low=0, low_open=True,
           high=1, resume=True),
    Option("subset", int, None, "Train on N images (class-balanced, chosen by the seed).", low=0, low_open=True,
           note="all"),
    Option("test_subset", int, None, "Test on N images (class-balanced, fixed).", low=0, low_open=True, note="all"),
    Option("translate", int, 2, "Random translation in pixels (reflect padding; 0: off).", low=0, unit="pixels",
           panel=R),
    Option("flip", bool, True, "Horizontal flip.", panel=R),
    Option("alt_flip", bool, True, "Alternating flip: each image mirrored in every other epoch instead of at "
           "random (airbench).", panel=R),
    Option("cutout", int, 0, "Cutout square side in pixels (0: off).", low=0, unit="pixels", panel=R),
    Option("precise_bn", int, 4096, "Recompute BN statistics on N training images before each evaluation "
           "(0: off, keep the moving averages).", low=0, unit="images", panel=R),
    Option("bn_scale", bool, True, "Learn the BatchNorm scales (--no-bn-scale freezes them at 1, as airbench "
           "does).", panel=R),
    Option("bn_momentum", float, None, "Momentum of every BatchNorm's running statistics, torch's convention: "
           "new = (1 - m)·old + m·batch (airbench: 0.4).", low=0, low_open=True, high=1, note="the spec's (torch: "
           "0.1)", panel=R),
    Option("bn_bias_lr", float, 1.0, "LR multiplier for the BatchNorm biases (airbench: 64, with frozen scales).",
           low=0, low_open=True, high=1024, panel=R),
    Option("whiten", bool, False, "Initialise the first conv as a patch-whitening filter bank (top eigenvectors "
           "of the training patches' covariance, both signs); it stays trainable unless --freeze-whiten.", panel=R),
    Option("freeze_whiten", bool, False, "With --whiten, keep the whitening filters fixed, as airbench does (the "
           "first conv's bias, if any, still trains).", panel=R),
    Option("dirac", bool, False, "Dirac init: the first in-channels filters of each convolution pass their input "
           "through (identity), so each block starts near a pass-through (airbench).", panel=R),
    Option("logit_scale", float, 1.0, "Multiply the network's outputs by this, in training and at test: a "
           "temperature on the softmax (airbench: 1/9 = 0.111).", low=0, low_open=True, high=1000, panel=R),
    Option("lookahead", bool, True, "Lookahead: every 5 steps pull the weights towards their moving average "
           "(airbench).", panel=R),
    Option("tta", bool, True, "Test accuracy with flip test-time augmentation (the image and its mirror).", panel=R),
    Option("tta_translate", int, 0, "With --tta, also the image shifted diagonally by N pixels each way (reflect "
           "padding), each with its mirror: airbench's 6-view TTA, weights 1/2 unshifted, 1/4 per shift (0: off).",
           low=0, high=4, unit="pixels", panel=R),
)
OPTION = {o.name: o for o in OPTIONS}


TrainConfig = make_dataclass(
    "TrainConfig", [(o.name, o.kind | None if o.default is None else o.kind, field(default=o.default))
                    for o in OPTIONS],
    namespace={
        "__doc__": "Every training option and its default (generated from OPTIONS). None for lr / weight_decay "
                   "means the optimizer's default (DEFAULT_LR, DEFAULT_WEIGHT_DECAY); `resolved()` fills them in.",
        "resolved": lambda self: _resolved(self),
        "to_dict": lambda self: dataclasses.asdict(self),
    })


def _resolved(cfg):
    out = dataclasses.replace(cfg)
    if out.lr is None:
        out.lr = DEFAULT_LR[out.optimizer]
    if out.weight_decay is None:
        out.weight_decay = DEFAULT_WEIGHT_DECAY[out.optimizer]
    return out


FIELDS = {f.name: f for f in fields(TrainConfig)}
# Options that `--resume` may change: the rest come from the run's saved config.
RESUME_OPTIONS = tuple(o.name for o in OPTIONS if o.resume)


def unknown_device(name: str) -> str:
    """What is wrong with a --device value, and the device it meant: a GPU is 'cuda' (difflib would offer
    'cpu' for 'gpu'). `train` and `eval` say it alike."""
    hint = "'cuda'" if name.strip().lower() in ("gpu", "nvidia") else did_you_mean(name, DEVICES)
    return (f"unknown device {name!r}; expected auto, cpu, cuda, cuda:N or mps"
            + (f" (did you mean {hint}?)" if hint else ""))


def coerce(name: str, value, where: str | None = None) -> object:
    """Check one option value and convert YAML spellings (`1e-3` is a string in YAML 1.1). Messages name the
    key as written in YAML when `where` is given (a prefix, may be ""), else the command-line flag."""
    opt = OPTION[name]
    prefix = f"{where}{name}: " if where is not None else f"{opt.flag}: "
    if value is None:
        return None
    kind = opt.kind
    if kind is bool:
        if not isinstance(value, bool):
            raise ConvcliError(f"{prefix}expected true or false, got {value!r}")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConvcliError(f"{prefix}expected an integer, got {value!r}")
    elif kind is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ConvcliError(f"{prefix}expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConvcliError(f"{prefix}expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):  # inf passes `> 0` and nan passes every comparison
            raise ConvcliError(f"{prefix}expected a finite number, got {value!r}")
    elif kind is str:
        if not isinstance(value, str):
            raise ConvcliError(f"{prefix}expected a string, got {value!r}")
        if name == "device" and not re.fullmatch(DEVICE_PATTERN, value.strip().lower()):
            raise ConvcliError(prefix + unknown_device(value))
    return _check_range(opt, value, prefix)


def _check_range(opt: Option, value, prefix: str):
    if opt.choices and value not in opt.choices:
        hint = did_you_mean(value, opt.choices)
        raise ConvcliError(f"{prefix}unknown {opt.name} {value!r}; expected one of {', '.join(opt.choices)}"
                           + (f" (did you mean {hint}?)" if hint else ""))
    given = value
    if opt.name == "target_acc" and value > 1:  # 93 means 93 %
        value = value / 100
    if opt.kind in (int, float):
        low_bad = opt.low is not None and (value <= opt.low if opt.low_open else value < opt.low)
        high_bad = opt.high is not None and (value >= opt.high if opt.high_open else value > opt.high)
        if low_bad or high_bad:
            percent = " (or a percentage up to 100)" if opt.name == "target_acc" else ""
            raise ConvcliError(f"{prefix}expected {opt.expected()}{percent}, got {given!r}")
    return value


def _completer(o: Option):
    """Shell completion for an option with known values (its choices; devices)."""
    values = list(o.choices) or (["auto", "cpu", "cuda", "cuda:0", "mps"] if o.name == "device" else [])
    if not values:
        return None
    return lambda incomplete: [str(v) for v in values if str(v).startswith(incomplete)]


def typer_parameters() -> list:
    """The `convcli train` command-line options, one per declared option (all default to None = not given,
    so the spec's `train:` section and a recipe can fill them in)."""
    import inspect

    import typer

    params = []
    for o in OPTIONS:
        decls = [f"{o.flag}/--no-{o.flag[2:]}"] if o.kind is bool else [o.flag] + ([o.short] if o.short else [])
        info = typer.Option(None, *decls, help=f"{o.help} \\[{o.default_text()}]", rich_help_panel=o.panel,
                            show_default=False, autocompletion=_completer(o))
        params.append(inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=info,
                                        annotation=o.kind | None))
    return params


def options_from_mapping(mapping: dict, source: str, line_of=None) -> dict:
    """Options from a `train:` section or a recipe: keys may use `-` or `_`; unknown keys are errors."""
    out = {}
    for key, value in mapping.items():
        name = str(key).replace("-", "_")
        line = line_of(key) if line_of else None
        if name not in FIELDS:
            lower = name.lower()
            hint = (f"'{lower}'" if lower in FIELDS else f"'{OPTION_ALIASES[lower]}'" if lower in OPTION_ALIASES
                    else did_you_mean(name, FIELDS))
            raise SpecError(f"unknown training option '{key}'", file=source, line=line, path="train",
                            expected="one of " + ", ".join(FIELDS), suggestion=hint)
        if OPTION[name].command_line:  # a run started from the spec would ignore it, a resume would not
            raise SpecError(f"'{key}' is how a machine runs the training, not part of its recipe", file=source,
                            line=line, path="train", expected=f"{OPTION[name].flag} N on the command line (or "
                            "torchrun's --nproc-per-node)")
        try:
            out[name] = coerce(name, value, where="")
        except ConvcliError as exc:
            raise SpecError(str(exc), file=source, line=line, path="train") from None
    return out


def load_recipe(path: str) -> dict:
    return load_recipe_with_lines(path)[0]


def load_recipe_with_lines(path: str) -> tuple[dict, dict[str, int | None]]:
    """The recipe's options, and the line of each."""
    from convcli.yamlio import load_yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConvcliError(f"--recipe {path}: cannot read: {exc.strerror or exc}") from None
    raw = load_yaml(text, str(p))
    if raw is None or raw == {}:
        raise ConvcliError(f"--recipe {path}: the file holds no training options (write e.g. `lr: 0.4`)")
    if not isinstance(raw, dict):
        raise ConvcliError(f"--recipe {path}: expected a mapping of training options")
    if "layers" in raw:
        raise ConvcliError(f"--recipe {path}: this is a spec (it has layers:), not a recipe; pass it as SPEC, "
                           "or write its training options in a file of their own")
    line_of = getattr(raw, "line_of", None)
    if "train" in raw:  # a recipe may be written as a `train:` section
        if len(raw) > 1:
            other = next(k for k in raw if k != "train")
            raise SpecError(f"'{other}' beside the train section: a recipe is either a train: section or the "
                            "options themselves, not both", file=str(p), line=line_of(other) if line_of else None)
        raw = raw["train"]
        if not isinstance(raw, dict):
            raise ConvcliError(f"--recipe {path}: train: must be a mapping of training options")
        line_of = getattr(raw, "line_of", None)
    elif len(raw) == 1 and isinstance(next(iter(raw.values())), dict):  # `trian:` over the options
        key = next(iter(raw))
        raise SpecError(f"unknown section '{key}'", file=str(p), line=line_of(key) if line_of else None,
                        expected="training options, or them under train:",
                        suggestion=did_you_mean(str(key), ["train"]))
    return options_from_mapping(raw, str(p), line_of), _lines(raw)


def _lines(mapping) -> dict[str, int | None]:
    """Option name -> its line in the YAML (`batch-size:` is batch_size)."""
    line_of = getattr(mapping, "line_of", None)
    return {str(k).replace("-", "_"): line_of(k) if line_of else None for k in mapping}


def build_config(cli: dict, spec_train: dict | None, spec_file: str, recipe: str | None,
                 notes: list[str] | None = None, image_side: int | None = None) -> TrainConfig:
    """Defaults < spec `train:` < recipe < command line (options left as None on the command line are unset).
    Where an option came from names it in errors (`file:line` or the flag). `notes` gets what was decided
    for the user (an optimizer's own lr when the spec's was for another optimizer)."""
    levels: list[tuple[str | None, dict, dict]] = []  # (file or None: the command line, options, their lines)
    if spec_train:
        levels.append((spec_file, options_from_mapping(spec_train, spec_file, getattr(spec_train, "line_of", None)),
                       _lines(spec_train)))
    if recipe:
        levels.append((recipe, *load_recipe_with_lines(recipe)))
    levels.append((None, {k: coerce(k, v) for k, v in cli.items() if v is not None}, {}))
    values: dict = {}
    level: dict[str, int] = {}
    for i, (_, got, _) in enumerate(levels):
        values.update(got)
        level.update(dict.fromkeys(got, i))

    def conflict(name: str, message: str) -> ConvcliError:
        file, _, lines = levels[level[name]] if name in level else (None, None, {})
        if file is None:
            return ConvcliError(message)
        return SpecError(message, file=file, line=lines.get(name), path="train")

    # lr and weight decay are tuned for one optimizer: when the optimizer is changed above the level that set
    # them (the spec says sgd with lr 0.4, the command line --optimizer adam), they fall back to its defaults
    for k, defaults in (("lr", DEFAULT_LR), ("weight_decay", DEFAULT_WEIGHT_DECAY)):
        if k not in values:
            continue
        then = next((got["optimizer"] for _, got, _ in reversed(levels[:level[k] + 1]) if "optimizer" in got), "sgd")
        now = values.get("optimizer", "sgd")
        if then != now:
            if notes is not None:
                notes.append(f"note: {k} {values[k]:g} ({levels[level[k]][0] or 'the command line'}) is for {then}; "
                             f"{now} uses its default {defaults[now]:g} (pass --{k.replace('_', '-')} to set one)")
            del values[k]
    # An option that only refines another (freeze_whiten refines whiten): switching the other off at a higher
    # level (--no-whiten on a spec with `freeze_whiten: true`) switches it off too; at the same level or
    # below, the two conflict.
    for refine, base, off, why in (("freeze_whiten", "whiten", False, "keeps the whitening filters fixed"),
                                   ("tta_translate", "tta", 0, "adds shifted views to the flip TTA")):
        if values.get(refine) and not values.get(base, FIELDS[base].default):
            if level.get(base, -1) > level[refine]:
                if notes is not None:
                    notes.append(f"note: {refine} ({levels[level[refine]][0] or 'the command line'}) {why}: off "
                                 f"with {base} off")
                values[refine] = off
            else:
                raise conflict(refine, f"{refine} (--{refine.replace('_', '-')}) {why}: it needs {base} "
                               f"(--{base})")
    # the spec's input is the data's size (checked when the data loads); a cutout that large blanks every image
    for name in ("translate", "cutout"):
        if image_side and values.get(name) and values[name] >= image_side:
            raise conflict(name, f"{name}: {values[name]} px must be smaller than the image ({image_side} px)")
    cfg = TrainConfig(**values).resolved()
    if not cfg.flip:
        cfg.alt_flip = False  # no flip at all: the record says so (alternating applies to flips)
    return cfg


def default_spec(cwd: Path | None = None) -> tuple[str, str]:
    """(spec path, where it was named): pyproject.toml [tool.convcli] default_spec, convcli.yaml, or the fallback."""
    cwd = Path(cwd or os.getcwd())
    pyproject = cwd / "pyproject.toml"
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConvcliError(f"{pyproject}: cannot read [tool.convcli]: {exc}") from None
        name = data.get("tool", {}).get("convcli", {}).get("default_spec")
        if name:
            return str(name), "pyproject.toml [tool.convcli] default_spec"
    conf = cwd / "convcli.yaml"
    if conf.is_file():
        import yaml

        try:
            data = yaml.safe_load(conf.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConvcliError(f"{conf}: cannot read: {exc}") from None
        if isinstance(data, dict) and data.get("default_spec"):
            return str(data["default_spec"]), "convcli.yaml default_spec"
    return FALLBACK_SPEC, "the built-in default"


def resolve_spec_path(spec: str | None) -> str:
    if spec:
        return spec
    path, origin = default_spec()
    if not Path(path).is_file():
        raise ConvcliError(f"no SPEC given and the default spec {path} (from {origin}) does not exist; "
                           "pass a spec file, e.g. `convcli train architectures/NAME.yaml`")
    return path
