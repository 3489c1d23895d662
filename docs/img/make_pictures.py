"""Regenerate the README's pictures (docs/img/*.png) with convcli.visual.

    .venv/bin/python docs/img/make_pictures.py RUN_DIR DATA

RUN_DIR: a `convcli train architectures/s7.yaml` run (its best.pt and spec copy); DATA: the dataset it was
trained on (e.g. ../shared/data/cifar10-jpeg.tar.gz), for `cifar10:INDEX` and the ERF's test images.
"""

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(run_dir: str, data: str) -> None:
    import torch

    from convcli.analysis import analyze_file
    from convcli.build import build_model
    from convcli.visual import plot_erf, plot_filters, plot_rf, sample_batch, save_activations, show_rf

    run = Path(run_dir)
    ckpt = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    spec = run / ckpt.get("spec_copy", "s7.yaml")
    a = analyze_file(spec)
    model = build_model(a)
    model.load_state_dict(ckpt["model"])
    model.eval()
    acc = ckpt.get("best_acc")
    label = f"trained weights (epoch {ckpt.get('best_epoch', '?')})"

    plot_rf(a, HERE / "rf_s7.png")
    show_rf(a, "cifar10:7001", "C3", (1, 1), HERE / "rf_box_s7.png", data=data)
    torch.manual_seed(0)
    images = sample_batch(data, 256, a.input_shape, ckpt.get("mean"), ckpt.get("std"))
    for layer, name in (("C2", "erf_s7_C2.png"), ("C3", "erf_s7_C3.png")):
        result = plot_erf(a, HERE / name, model, images, layer=layer, accuracy=acc, weights_label=label,
                          images_caption="256 CIFAR-10 test images")
        print(name, [(p["title"], p["region95"]) for p in result["panels"]], result["theoretical_rf"])
    plot_filters(model, HERE / "filters_s7.png", a, accuracy=acc)
    with tempfile.TemporaryDirectory() as tmp:  # one picture per block; the README shows C1's
        files = save_activations(model, a, "cifar10:5001", tmp, data=data, mean=ckpt.get("mean"),
                                 std=ckpt.get("std"), max_channels=32, accuracy=acc)
        shutil.copy(files[0], HERE / "activations_s7_C1.png")


if __name__ == "__main__":
    main(*sys.argv[1:3])
