"""convcli: design, analyse and train convolutional networks from YAML specs or PyTorch modules.

`convcli.summary(model_or_spec, input_size=(3, 32, 32), rules="s7")` is the notebook API (see
`convcli.api`); importing convcli loads no torch until a model is passed.
"""

import time as _time

from convcli.errors import ConvcliError  # what the API raises for anything the user can fix

__version__ = "0.1.0"
# When convcli was first imported: a command's start (the interpreter's own start-up, ~50 ms, is before it).
# `convcli train` reports the time from here to its end, data loading included (time to a target accuracy).
STARTED = _time.perf_counter()


def summary(model_or_spec, input_size=None, rules=None, accuracy=None):
    """The inspect table and rule verdicts of a model or spec as a `Report` (see `convcli.api.summary`)."""
    from convcli.api import summary as _summary

    return _summary(model_or_spec, input_size=input_size, rules=rules, accuracy=accuracy)


__all__ = ["ConvcliError", "summary", "__version__"]
