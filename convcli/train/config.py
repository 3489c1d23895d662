"""Training options: one dataclass of defaults, filled from the spec's `train:` section, a recipe YAML and
the command line, in that order (the command line wins). Also: which spec to train when none is given."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from convcli.errors import ConvcliError, SpecError, did_you_mean

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("onecycle", "cosine", "step")
# Per-optimizer defaults for the two options whose good value depends on the optimizer.
DEFAULT_LR = {"sgd": 0.1, "adam": 1e-3, "adamw": 1e-3}
DEFAULT_WEIGHT_DECAY = {"sgd": 5e-4, "adam": 0.0, "adamw": 0.05}
FALLBACK_SPEC = "architectures/s7.yaml"


@dataclass
class TrainConfig:
    """Every training option and its default. `None` for lr / weight_decay means "the optimizer's default"
    (DEFAULT_LR, DEFAULT_WEIGHT_DECAY); `resolved()` fills them in."""

    data: str = "cifar10"  # cifar10 | ImageFolder directory (train/, test/) | .tar.gz of one
    epochs: int = 10
    batch_size: int = 512
    lr: float | None = None  # peak learning rate
    optimizer: str = "sgd"  # sgd (Nesterov, momentum 0.9) | adam | adamw
    schedule: str = "onecycle"  # onecycle | cosine | step
    weight_decay: float | None = None  # not applied to biases and norm weights (1-d parameters)
    label_smoothing: float = 0.2
    device: str = "auto"  # auto | cuda | cuda:N | cpu | mps
    seed: int = 0
    amp: bool = True  # bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16, AMX)
    channels_last: bool = True  # NHWC memory format on CUDA and CPU
    compile: bool = False  # torch.compile the model
    target_acc: float | None = None  # stop after the epoch whose test accuracy reaches this (0-1)
    subset: int | None = None  # train on N images (stratified, fixed by the seed)
    test_subset: int | None = None  # evaluate on N test images (stratified, the same for every seed)
    translate: int = 2  # random translation in pixels (reflect-padded random crop); 0 turns it off
    flip: bool = True  # random horizontal flip
    alt_flip: bool = True  # flip: each image mirrored in every other epoch (airbench), not at random each time
    cutout: int = 0  # side of a random square set to the mean; 0 turns it off
    precise_bn: int = 4096  # before each evaluation, recompute BN statistics on this many training images; 0: off
    lookahead: bool = True  # every 5 steps, pull the weights towards their moving average (airbench)
    tta: bool = True  # test accuracy averages the logits of each image and its mirror image

    def resolved(self) -> TrainConfig:
        out = dataclasses.replace(self)
        if out.lr is None:
            out.lr = DEFAULT_LR[out.optimizer]
        if out.weight_decay is None:
            out.weight_decay = DEFAULT_WEIGHT_DECAY[out.optimizer]
        return out

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in fields(TrainConfig)}
# Options that `--resume` may change: the rest come from the run's saved config.
RESUME_OPTIONS = ("epochs", "device", "target_acc")


def _type_name(name: str) -> str:
    return str(FIELDS[name].type).replace(" | None", "")


def coerce(name: str, value, where: str = "") -> object:
    """Check one option value and convert YAML spellings (`1e-3` is a string in YAML 1.1)."""
    prefix = f"{where}{name}: " if where else f"--{name.replace('_', '-')}: "
    if value is None:
        return None
    kind = _type_name(name)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConvcliError(f"{prefix}expected true or false, got {value!r}")
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConvcliError(f"{prefix}expected an integer, got {value!r}")
    elif kind == "float":
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ConvcliError(f"{prefix}expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConvcliError(f"{prefix}expected a number, got {value!r}")
        value = float(value)
    elif kind == "str":
        if not isinstance(value, str):
            raise ConvcliError(f"{prefix}expected a string, got {value!r}")
    return _check_range(name, value, prefix)


def _check_range(name: str, value, prefix: str):
    bad = None
    if name in ("epochs", "batch_size", "subset", "test_subset") and value < 1:
        bad = "a positive integer"
    elif name in ("translate", "cutout", "precise_bn") and value < 0:
        bad = "0 or more pixels"
    elif name in ("lr",) and not value > 0:
        bad = "a positive number"
    elif name == "weight_decay" and value < 0:
        bad = "0 or more"
    elif name == "label_smoothing" and not 0 <= value < 1:
        bad = "a number in [0, 1)"
    elif name == "optimizer" and value not in OPTIMIZERS:
        hint = did_you_mean(value, OPTIMIZERS)
        raise ConvcliError(f"{prefix}unknown optimizer {value!r}; expected one of {', '.join(OPTIMIZERS)}"
                           + (f" (did you mean {hint}?)" if hint else ""))
    elif name == "schedule" and value not in SCHEDULES:
        hint = did_you_mean(value, SCHEDULES)
        raise ConvcliError(f"{prefix}unknown schedule {value!r}; expected one of {', '.join(SCHEDULES)}"
                           + (f" (did you mean {hint}?)" if hint else ""))
    elif name == "target_acc":
        if value > 1:  # 93 means 93 %
            value = value / 100
        if not 0 < value <= 1:
            bad = "an accuracy in (0, 1] or a percentage"
    if bad:
        raise ConvcliError(f"{prefix}expected {bad}, got {value!r}")
    return value


def options_from_mapping(mapping: dict, source: str, line_of=None) -> dict:
    """Options from a `train:` section or a recipe: keys may use `-` or `_`; unknown keys are errors."""
    out = {}
    for key, value in mapping.items():
        name = str(key).replace("-", "_")
        line = line_of(key) if line_of else None
        if name not in FIELDS:
            raise SpecError(f"unknown training option '{key}'", file=source, line=line, path="train",
                            expected="one of " + ", ".join(FIELDS), suggestion=did_you_mean(name, FIELDS))
        try:
            out[name] = coerce(name, value, where="")
        except ConvcliError as exc:
            raise SpecError(str(exc), file=source, line=line, path="train") from None
    return out


def load_recipe(path: str) -> dict:
    from convcli.yamlio import load_yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConvcliError(f"--recipe {path}: cannot read: {exc.strerror or exc}") from None
    raw = load_yaml(text, str(p))
    if raw is None:
        return {}
    if isinstance(raw, dict) and set(raw) == {"train"}:  # a recipe may be written as a `train:` section
        raw = raw["train"]
    if not isinstance(raw, dict):
        raise ConvcliError(f"--recipe {path}: expected a mapping of training options")
    return options_from_mapping(raw, str(p), getattr(raw, "line_of", None))


def build_config(cli: dict, spec_train: dict | None, spec_file: str, recipe: str | None) -> TrainConfig:
    """Defaults < spec `train:` < recipe < command line (options left as None on the command line are unset)."""
    values: dict = {}
    if spec_train:
        values.update(options_from_mapping(spec_train, spec_file, getattr(spec_train, "line_of", None)))
    if recipe:
        values.update(load_recipe(recipe))
    values.update({k: coerce(k, v) for k, v in cli.items() if v is not None})
    return TrainConfig(**values).resolved()


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
