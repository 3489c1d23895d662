"""convcli: design, analyse and train convolutional networks from YAML specs."""

__version__ = "0.1.0"
