"""Tracing a PyTorch model for the front-end: torch.fx's symbolic trace (again with every size known when the
forward reads its input's sizes), then one forward on zeros that records each node's output shape. A node
that fails is named by its module and the user's line, with the mismatch restated (expected/got), not a
torch traceback.
"""

from __future__ import annotations

import re
from pathlib import Path

from convcli.errors import ConvcliError
from convcli.torch_load import failed_at, made_at, relative_path


def dtype_device(model) -> dict:
    """The model's own dtype and device (a .double() or CUDA model runs as it is)."""
    first = next((p for p in model.parameters() if p.is_floating_point()), None)
    return {"dtype": first.dtype, "device": first.device} if first is not None else {}


def first_user_line(exc: BaseException) -> str:
    """`net.py:12` of the innermost user frame in a trace failure, or 'its forward'."""
    found = failed_at(exc, "")
    return f"at {found}" if found else "in its forward"


def sizes_known_tracer(example):
    """An fx tracer whose proxies know their tensor's value on `example` (the input, batch first), so
    `x.shape`, `x.size(i)` and `x.dim()` are plain numbers: a branch on them is decided as it is for that
    input. Values are computed op by op as the trace goes (the model in eval mode, no grad)."""
    import torch
    import torch.fx

    def value(a):
        return a.node.meta.get("example") if isinstance(a, torch.fx.Proxy) else a

    class SizesKnown(torch.fx.Proxy):
        def _known(self):
            v = self.node.meta.get("example")
            return v if isinstance(v, torch.Tensor) else None

        @property
        def shape(self):
            v = self._known()
            return v.shape if v is not None else super().__getattr__("shape")

        def size(self, dim=None):
            v = self._known()
            if v is None:
                return self.tracer.create_proxy("call_method", "size", (self,) if dim is None else (self, dim), {})
            return v.size() if dim is None else v.size(dim)

        def dim(self):
            v = self._known()
            return v.dim() if v is not None else self.tracer.create_proxy("call_method", "dim", (self,), {})

    class Tracer(torch.fx.Tracer):
        computing = False  # while a value is computed, module attributes are the real tensors, not proxies

        def proxy(self, node):
            return SizesKnown(node, self)

        def getattr(self, attr, attr_val, parameter_proxy_cache):
            return attr_val if self.computing else super().getattr(attr, attr_val, parameter_proxy_cache)

        def create_proxy(self, kind, target, args, kwargs, *rest, **kw):
            proxy = super().create_proxy(kind, target, args, kwargs, *rest, **kw)
            args_v = torch.fx.node.map_aggregate(args, value)
            kwargs_v = torch.fx.node.map_aggregate(kwargs, value)
            self.computing = True
            try:
                with torch.no_grad():
                    if kind == "placeholder":
                        result = example if not proxy.node.args else proxy.node.args[0]
                    elif kind == "call_function":
                        result = target(*args_v, **kwargs_v)
                    elif kind == "call_method":
                        result = getattr(args_v[0], target)(*args_v[1:], **kwargs_v)
                    elif kind == "call_module":  # its forward: the traced __call__ would record it again
                        result = self.root.get_submodule(target).forward(*args_v, **kwargs_v)
                    elif kind == "get_attr":
                        result = self.root
                        for atom in str(target).split("."):
                            result = getattr(result, atom)
                    else:
                        result = None
            except Exception:
                result = None  # unknown: its sizes stay symbolic, as in a plain trace
            finally:
                self.computing = False
            if isinstance(proxy, torch.fx.Proxy):
                proxy.node.meta["example"] = result
            return proxy

    tracer = Tracer()
    tracer.record_stack_traces = True
    return tracer


def defaulted_args(model) -> dict | None:
    """forward(self, x, return_feats=False): the arguments after the input that have defaults, at their
    defaults (the call convcli analyses), so a branch on them traces as the plain call runs."""
    import inspect

    try:
        params = list(inspect.signature(model.forward).parameters.values())[1:]
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    fixed = {p.name: p.default for p in params if p.kind in kinds and p.default is not inspect.Parameter.empty}
    return fixed or None


def propagate_shapes(gm, input_shape: tuple[int, ...], source: str) -> None:
    """Run the traced graph on zeros (batch 2), recording each node's output shape in its meta; a node
    that fails is named with its module path and the user's line, in one sentence (no torch traceback)."""
    import torch
    import torch.fx

    batch_changed = []  # the first call that moves the batch axis (torch.flatten(x) without 1)

    class Shapes(torch.fx.Interpreter):
        def run_node(self, n):
            try:
                result = super().run_node(n)
            except Exception as exc:
                raise _NodeFailed(n, exc) from None
            if isinstance(result, torch.Tensor):
                n.meta["tensor_meta"] = _Meta(tuple(result.shape))
                src = n.args[0] if n.args and isinstance(n.args[0], torch.fx.Node) else None
                before = getattr(src.meta.get("tensor_meta"), "shape", None) if src is not None else None
                if not batch_changed and n.op != "call_module" and before and before[:1] == (BATCH,) and \
                        result.shape[:1] != (BATCH,):
                    batch_changed.append((n, before, tuple(result.shape)))
            elif isinstance(result, int) or (isinstance(result, tuple) and all(isinstance(v, int) for v in result)):
                n.meta["value"] = tuple(result) if isinstance(result, tuple) else result  # a size, or sizes
            return result

    # zeros in the model's own dtype and on its device (a .double() or CUDA model runs as it is)
    first = next((p for p in gm.parameters() if p.is_floating_point()), None)
    like = {"dtype": first.dtype, "device": first.device} if first is not None else {}
    try:
        with torch.no_grad():
            Shapes(gm).run(torch.zeros(BATCH, *input_shape, **like))
    except _NodeFailed as failed:
        n, exc = failed.node, failed.exc
        file, line = user_frame(n.stack_trace)
        loc = f"{relative_path(file)}:{line}" if file and line else source
        what = n.target if n.op == "call_module" else n.name
        kind = type(gm.get_submodule(n.target)).__name__ if n.op == "call_module" else None
        if batch_changed:  # the real mistake is upstream: report it, not its symptom
            moved, before, after = batch_changed[0]
            mfile, mline = user_frame(moved.stack_trace)
            mloc = f"{relative_path(mfile)}:{mline}" if mfile and mline else source
            fname = getattr(moved.target, "__name__", str(moved.target))
            hint = (" (torch.flatten(x) flattens the batch axis too: write torch.flatten(x, 1))"
                    if fname == "flatten" else " (keep the batch axis first: x.view(x.size(0), -1))")
            raise ConvcliError(f"{mloc}: {fname} changes the batch axis (on a batch of {BATCH}: "
                               f"{list(before)} -> {list(after)}){hint}, so {what}"
                               + (f" ({kind})" if kind else "") + f" fails: {_torch_reason(exc)}") from None
        rank = _rank_mismatch(gm, input_shape)
        if rank:
            raise ConvcliError(f"{source}: {rank}") from None
        made = made_at(gm.get_submodule(n.target), line) if n.op == "call_module" else ""
        raise ConvcliError(f"{loc}: {what}" + (f" ({kind})" if kind else "")
                           + f": {_torch_reason(exc)} (on an input of shape {list(input_shape)}){made}") from None


BATCH = 2  # the batch the shapes are traced with (2, so that BN in training mode and batch slips show)


def _rank_mismatch(model, input_shape: tuple[int, ...]) -> str | None:
    """When a forward fails and the first Conv/Pool/BatchNorm-Nd module wants N spatial axes where the
    input shape has another number, say that (a batch axis given, or C,L for a 2-D net), not the symptom."""
    for name, m in model.named_modules():
        found = re.search(r"([123])d$", type(m).__name__)
        if found:
            want, have = int(found.group(1)), len(input_shape) - 1
            if want == have:
                return None
            axes = {1: "C,L", 2: "C,H,W", 3: "C,D,H,W"}[want]
            batch = (" It looks like it includes the batch axis: give the shape of one sample, without it."
                     if have == want + 1 else "")
            return (f"{name} ({type(m).__name__}) needs an input of {want} spatial ax{'is' if want == 1 else 'es'} "
                    f"({axes}), but the input shape {list(input_shape)} has {have}.{batch}")
    return None


class _NodeFailed(Exception):
    def __init__(self, node, exc):
        self.node, self.exc = node, exc


class _Meta:
    """What the mapper reads of a node's output: its shape, batch axis first (fx's own `tensor_meta` key)."""

    def __init__(self, shape):
        self.shape = shape


# torch's wording of the two mismatches students hit most, restated as expected/got.
_TORCH_REASONS = (
    (re.compile(r"expected input\[[^\]]*\] to have (\d+) channels, but got (\d+) channels"),
     "expected {0} input channels, got {1}"),
    (re.compile(r"mat1 and mat2 shapes cannot be multiplied \(\d+x(\d+) and (\d+)x\d+\)"),
     "expected {1} input features, got {0}"),
)


def _torch_reason(exc: Exception) -> str:
    text = str(exc).strip()
    for pattern, template in _TORCH_REASONS:
        m = pattern.search(text)
        if m:
            return template.format(*m.groups())
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def user_frame(stack_trace: str | None) -> tuple[str | None, int | None]:
    """The user's file and line from an fx stack trace: the innermost frame outside torch (the trace runs
    outermost first, so a helper method's line wins over the forward that called it)."""
    found = None, None
    for m in re.finditer(r'File "([^"]+)", line (\d+)', stack_trace or ""):
        if f"{Path('site-packages') / 'torch'}" not in m.group(1) and "/torch/" not in m.group(1):
            found = m.group(1), int(m.group(2))
    return found


def trace_failure(model, source: str, exc: Exception) -> str:
    """Name the module and the line whose forward could not be traced (data-dependent control flow...)."""
    import torch.nn as nn

    names = {id(m): n for n, m in model.named_modules()}
    tb, culprit, line = exc.__traceback__, None, None
    while tb is not None:
        frame = tb.tb_frame
        owner = frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and id(owner) in names and "/torch/" not in frame.f_code.co_filename:
            path = names[id(owner)]
            culprit = f"{type(owner).__name__}.{frame.f_code.co_name}" + (f" (module {path})" if path else "")
            line = f"{relative_path(frame.f_code.co_filename)}:{tb.tb_lineno}"
        tb = tb.tb_next
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "cannot be iterated" in reason:  # the tutorial LeNet's num_flat_features: for s in x.size()[1:]
        reason += (" (a loop over a traced value, such as `for s in x.size()[1:]`: flatten with "
                   "torch.flatten(x, 1) or x.view(x.size(0), -1) instead)")
    elif "control flow" in reason:
        reason += " (data-dependent control flow: the forward branches on a tensor's values, such as `if x.sum() > 0:`)"
    where = f" {culprit} at {line}" if culprit else " the model"
    return (f"{source}: cannot trace{where}: {reason}. convcli analyses models torch.fx can trace; "
            "write a YAML spec for this one")


__all__ = ["BATCH", "defaulted_args", "dtype_device", "first_user_line", "propagate_shapes", "sizes_known_tracer",
           "trace_failure", "user_frame"]
