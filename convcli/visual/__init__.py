"""Pictures of a network, drawn from the same analysis the tables print (matplotlib, Agg, PNG files), and
the gradient-support check of the RF. Works for YAML specs and traced PyTorch models alike.

- `plot_rf(analysis, path)`: receptive field and jump per layer (`convcli rf SPEC --plot`);
- `rf_box(analysis, layer, unit)` / `show_rf(analysis, image, layer, unit, path)`: one unit's RF box on
  an input image (`convcli rf SPEC --show IMAGE --layer NAME --unit Y,X`);
- `empirical_rf(analysis, model)`: the measured RF beside the analytic one (`convcli rf SPEC --empirical`);
- `effective_rf(model, images, analysis)` / `plot_erf(...)`: the effective RF (Luo et al. 2016);
- `plot_filters(model, path)`: the first-layer filters; `save_activations(model, analysis, image, dir)`:
  each block's feature maps.

Importing this package imports neither torch nor matplotlib: each function imports them when called.
"""

from convcli.visual.activations import activation_blocks, save_activations
from convcli.visual.empirical import EmpiricalRF, empirical_rf
from convcli.visual.erf import effective_rf, mass_region, plot_erf, randomised
from convcli.visual.filters import plot_filters
from convcli.visual.images import load_image, sample_batch
from convcli.visual.rf_box import find_row, parse_unit, pixel_range, rf_box
from convcli.visual.rf_plot import plot_rf, rf_series
from convcli.visual.rf_show import show_rf

__all__ = [
    "EmpiricalRF", "activation_blocks", "effective_rf", "empirical_rf", "find_row", "load_image", "mass_region",
    "parse_unit", "pixel_range", "plot_erf", "plot_filters", "plot_rf", "randomised", "rf_box", "rf_series",
    "sample_batch", "save_activations", "show_rf",
]
