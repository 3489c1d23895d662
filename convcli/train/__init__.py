"""Training and evaluation (`convcli train`, `convcli eval`), airbench-style.

- `config`  : the options (one dataclass of defaults) and where they come from: spec `train:`, recipe, CLI.
- `data`    : data sources (torchvision CIFAR-10, ImageFolder directory or .tar.gz) and the uint8 tensor cache.
- `loader`  : the dataset held on the device, batched augmentation, subsets.
- `device`  : device resolution, autocast context and a synchronising timer.
- `loop`    : optimizer, LR schedule, the per-step function, train/eval epochs.
- `runs`    : run directories, checkpoints (atomic), metrics.csv, summary.json, resume.
- `plots`   : curves.png, confusion.png, misclassified.png (matplotlib, Agg).
- `trainer` : the `train` driver that ties them together; `evaluation`: the `eval` driver.
"""
