"""`convcli eval`: test accuracy and loss, per-class accuracy, confusion matrix, misclassified gallery."""

from __future__ import annotations

from pathlib import Path

import torch

from convcli.errors import ConvcliError
from convcli.train.config import coerce, resolve_spec_path
from convcli.train.data import load_data, saved_source
from convcli.train.device import autocast, resolve_device, use_channels_last
from convcli.train.loader import EVAL_BATCH, DeviceLoader, channel_stats, match_channels, stratified_subset
from convcli.train.loop import eval_metrics, predict
from convcli.train.runs import increment_path, load_checkpoint
from convcli.train.trainer import (
    TEST_SUBSET_SEED,
    apply_model_options,
    check_spec_for_training,
    configure_backend,
    data_difference,
)
from convcli.visual.images import DATASET_REF

GALLERY = 32  # misclassified images shown, the most confident mistakes first


def spec_for_weights(spec: str | None, weights: Path, ckpt: dict) -> str:
    """SPEC if given; else the PyTorch model or the spec copy the weights were trained from; else the default
    spec."""
    if spec:
        return spec
    if ckpt.get("model_ref"):
        return ckpt["model_ref"]
    copy = ckpt.get("spec_copy")
    if copy and (weights.parent / copy).is_file():
        return str(weights.parent / copy)
    return resolve_spec_path(None)


def check_weights_match(model: torch.nn.Module, state: dict, spec_file: str, weights: Path) -> None:
    """A clear error when the checkpoint was trained from a different architecture."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {list(state[k].shape)} vs spec {list(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        details = []
        if shapes:
            details.append("shape mismatch: " + "; ".join(shapes[:3]) + (" ..." if len(shapes) > 3 else ""))
        if missing:
            details.append(f"{len(missing)} tensors missing from the checkpoint (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} tensors not in the spec's model (e.g. {unexpected[0]})")
        raise ConvcliError(f"{weights} does not match {spec_file}: " + "; ".join(details)
                           + ". Pass the spec the weights were trained from.")


def check_fingerprint(analysis, ckpt: dict, spec_file: str, weights) -> None:
    """Weights whose tensors fit a spec whose layers differ (a max-pool made an average pool, relu made tanh)
    would load silently and score nonsense: refuse them, naming the first differing layer."""
    from convcli.fingerprint import fingerprint, first_difference, layer_records

    if ckpt.get("fingerprint") and ckpt["fingerprint"] != fingerprint(analysis):
        diff = first_difference(layer_records(analysis), ckpt.get("layers") or [],
                                names=(spec_file, "the weights' network"))
        raise ConvcliError(f"{weights} does not match {spec_file}: the weights were trained on a different network"
                           + (f" ({diff})" if diff else "") + ". Pass the spec the weights were trained from.")


def evaluate(spec: str | None, weights: str, data: str | None = None, device: str | None = None,
             tta: bool | None = None, amp: bool | None = None, test_subset: int | None = None,
             tta_translate: int | None = None,
             out: str | None = None, input_text: str | None = None, erf: str | None = None,
             filters: str | None = None, activations: str | None = None, layer: str | None = None) -> dict:
    """Evaluate; returns the result dict (the --json document) and writes confusion.png, misclassified.png
    (and, when asked, the effective-RF, filter and feature-map pictures)."""
    from convcli.sources import build_for, load_analysis
    from convcli.train.plots import plot_confusion, plot_misclassified

    weights_path = Path(weights)
    ckpt = load_checkpoint(weights_path)
    cfg = ckpt.get("config", {})
    spec_file = spec_for_weights(spec, weights_path, ckpt)
    if input_text is None and ckpt.get("model_input") and spec_file == ckpt.get("model_ref"):
        input_text = ",".join(map(str, ckpt["model_input"]))
    elif input_text is None and ckpt.get("input") and not ckpt.get("model_ref"):
        input_text = ",".join(map(str, ckpt["input"]))  # a spec trained with --input: at that input
    analysis = load_analysis(spec_file, input_text)
    check_spec_for_training(analysis)
    if "input" in ckpt and list(ckpt["input"]) != list(analysis.spec.input):  # before the network's layers
        raise ConvcliError(f"{weights} was trained for input {list(ckpt['input'])}, but {spec_file} takes "
                           f"{list(analysis.spec.input)}" + (" (--input)" if input_text else ""))
    check_fingerprint(analysis, ckpt, spec_file, weights)
    check_picture_options(analysis, erf, filters, activations, layer)
    model = build_for(analysis)
    check_weights_match(model, ckpt["model"], spec_file, weights_path)
    model.load_state_dict(ckpt["model"])
    apply_model_options(model, cfg)  # e.g. the logit scale it was trained with: the same test loss

    dev = resolve_device(device or "auto")
    configure_backend(dev)
    source = data or run_data(weights_path, cfg, ckpt)
    if source != "cifar10" and not data and not Path(source).exists():
        raise ConvcliError(f"{weights} was trained on {source}, which is no longer there; pass --data PATH")
    images = load_data(source)
    check_spec_for_training(analysis, images)
    differs = data_difference(images, ckpt) if "classes" in ckpt and not data else None
    if differs:  # found by the recorded path: it must be the run's data (another is evaluated only by --data)
        raise ConvcliError(f"{source} is not the data {weights} was trained on: {differs}; pass --data to evaluate "
                           "on other data")
    if "classes" in ckpt and list(ckpt["classes"]) != list(images.classes):
        raise ConvcliError(f"{weights} was trained on classes {', '.join(ckpt['classes'])}; {source} has "
                           f"{', '.join(images.classes)}")
    channels = analysis.spec.input[0]
    mean, std = ckpt.get("mean"), ckpt.get("std")
    if mean is None:  # a bare state_dict: normalise with this data's training statistics
        mean, std = channel_stats(match_channels(images.train_x, channels, source))
    n_sub = coerce("test_subset", test_subset) if test_subset is not None else cfg.get("test_subset")
    idx = torch.arange(len(images.test_y))
    if n_sub is not None and n_sub > len(idx) and test_subset is not None:
        raise ConvcliError(f"--test-subset {n_sub}: the test set of {source} has only {len(idx)} images")
    if n_sub is not None and n_sub < len(idx):
        idx = stratified_subset(images.test_y, n_sub, TEST_SUBSET_SEED)
    ref = DATASET_REF.match(str(activations)) if activations and not Path(str(activations)).exists() else None
    if ref and int(ref.group("index")) >= len(images.test_y):  # before the evaluation, not after it
        n = len(images.test_y)
        raise ConvcliError(f"--activations {activations}: the test split of {source} has {n:,} images "
                           f"(0 to {n - 1})")
    raw = match_channels(images.test_x[idx], channels, source)
    labels = images.test_y[idx]
    channels_last = use_channels_last(dev, cfg.get("channels_last", True))
    model = model.to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader = DeviceLoader(raw.to(dev), labels.to(dev), mean, std, EVAL_BATCH, channels_last=channels_last)
    use_amp = cfg.get("amp", False) if amp is None else amp
    if tta is None:
        tta = bool(cfg.get("tta", False))
    if tta_translate and not tta:  # asked for on this command line, as train refuses it
        raise ConvcliError(f"--tta-translate {tta_translate} adds shifted views to the flip TTA: it needs --tta "
                           "(the run's default unless --no-tta)")
    if tta_translate is None:
        tta_translate = int(cfg.get("tta_translate", 0))
    tta_translate = coerce("tta_translate", tta_translate) if tta else 0
    logits, y = predict(model, loader, autocast(dev, use_amp), tta=tta, translate=tta_translate)
    metrics = eval_metrics(logits, y)

    k = len(images.classes)
    pred = logits.argmax(1)
    confusion = torch.bincount(y * k + pred, minlength=k * k).view(k, k).cpu()
    # a class with no test images (a small --test-subset) has no accuracy, not 0%
    per_class = {c: (confusion[i, i].item() / int(confusion[i].sum()) if int(confusion[i].sum()) else None)
                 for i, c in enumerate(images.classes)}

    out_dir = Path(out) if out else increment_path(Path("runs") / "eval")
    out_dir.mkdir(parents=True, exist_ok=True)
    wrong = (pred != y).nonzero().flatten()
    confidence = logits.softmax(1).max(1).values
    worst = wrong[confidence[wrong].argsort(descending=True)][:GALLERY].cpu()
    plot_confusion(confusion.tolist(), images.classes, out_dir / "confusion.png",
                   title=f"{analysis.name}: confusion matrix, test accuracy {100 * metrics['acc']:.2f}%")
    plot_misclassified(raw[worst], y[worst.to(dev)].tolist(), pred[worst.to(dev)].tolist(), images.classes,
                       out_dir / "misclassified.png",
                       title=f"{analysis.name} ({100 * metrics['acc']:.2f}% test accuracy)")
    pictures = draw_pictures(analysis, model.float().cpu().to(memory_format=torch.contiguous_format), source,
                             mean, std, metrics["acc"], weights_path, erf, filters, activations, layer, out_dir)
    partial = ckpt.get("partial")
    return {
        **pictures,
        **({"partial": {"epoch": int(partial["epoch"]), "step": int(partial["step"])}} if partial else {}),
        "spec": str(spec_file),
        "weights": str(weights_path),
        "data": source,
        "accuracy": metrics["acc"],
        "loss": metrics["loss"],
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "classes": list(images.classes),
        "tta": bool(tta),
        "tta_translate": tta_translate,
        "n": int(len(y)),
        "device": str(dev),
        "out": str(out_dir),
    }


def run_data(weights: Path, cfg: dict, ckpt: dict) -> str:
    """The data the weights were trained on, where it is now: the run directory's args.yaml follows a
    resume onto moved data (best.pt may predate it), then the checkpoint's own record."""
    import yaml

    try:
        args = yaml.safe_load((weights.parent / "args.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        args = None
    return saved_source(cfg, args, ckpt)


def check_picture_options(analysis, erf, filters, activations, layer) -> None:
    """The picture options' mistakes, before the evaluation runs (not after it, with its pictures written)."""
    from convcli.visual.rf_box import find_row

    for flag, value in (("--erf", erf), ("--filters", filters)):
        if value and Path(str(value)).suffix.lower() != ".png":
            raise ConvcliError(f"{flag} {value}: pictures are written as PNG; name the file .png")
    if layer and not erf:
        raise ConvcliError(f"--layer {layer} picks the layer --erf looks at: pass --erf FILE.png too")
    if layer:
        find_row(analysis, layer)
    if activations and not DATASET_REF.match(str(activations)) and not Path(str(activations)).is_file():
        raise ConvcliError(f"--activations {activations}: no such image file (or use cifar10:INDEX for a test image)")


def draw_pictures(analysis, model, source, mean, std, accuracy, weights, erf, filters, activations, layer,
                  out_dir) -> dict:
    """`eval --erf / --filters / --activations`: the pictures of the trained network (convcli.visual)."""
    out: dict = {}
    if erf:
        from convcli.visual import plot_erf, sample_batch

        images = sample_batch(source, 256, analysis.input_shape, mean, std)
        res = plot_erf(analysis, erf, model, images, layer=layer, accuracy=accuracy,
                       weights_label=f"trained weights ({weights})")
        out["erf"] = {"file": str(erf), "theoretical_rf": res["theoretical_rf"],
                      "region95": [p["region95"] for p in res["panels"]],
                      "panels": [p.get("title", "") for p in res["panels"]]}
    if filters:
        from convcli.visual import plot_filters

        plot_filters(model, filters, analysis, accuracy=accuracy)
        out["filters"] = str(filters)
    if activations:
        from convcli.visual import save_activations

        files = save_activations(model, analysis, activations, Path(out_dir) / "activations", data=source,
                                 mean=mean, std=std, accuracy=accuracy)
        out["activations"] = [str(f) for f in files]
    return out
