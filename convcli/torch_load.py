"""Loading a PyTorch model for analysis: `FILE.py:NAME` or `package.module:NAME` and its `--input` shape,
with errors at the user's `file:line` (a typo in `__init__`, a syntax error, a failing import) and a
record of where each submodule was made, which the tracer's messages cite.

Loading `FILE.py:NAME` runs that file's code (as importing it would).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import re
import sys
import sysconfig
import types
import weakref
from pathlib import Path

from convcli.errors import ConvcliError, did_you_mean

MODEL_REF = re.compile(r"^(?P<where>[^:]+):(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")


def is_model_ref(arg: str) -> bool:
    """`model.py:Net` or `package.module:factory` (a spec path never has a `:NAME` tail)."""
    m = MODEL_REF.match(str(arg))
    return bool(m) and (m.group("where").endswith(".py") or re.fullmatch(r"[A-Za-z_][\w.]*", m.group("where")))


def parse_input(text: str | None, ref: str, option: str = "--input") -> tuple[int, ...]:
    if text is None:
        raise ConvcliError(f"{ref}: a PyTorch model needs --input C,H,W (or C,L / C,D,H,W), e.g. --input 3,32,32")
    try:  # 3,32,32 or 3x32x32; every piece must be a number (3,x,32 is an error, not [3, 32])
        shape = tuple(int(x) for x in re.split(r"[,x×]", str(text).strip()))
    except ValueError:
        shape = ()
    if not 2 <= len(shape) <= 4 or any(n < 1 for n in shape):
        raise ConvcliError(f"{option} must be C,L or C,H,W or C,D,H,W with positive integers, got '{text}'")
    return shape


def load_module(ref: str):
    """Instantiate `FILE.py:NAME` / `package.module:NAME`: an nn.Module subclass built with no arguments,
    or a zero-argument function returning a module."""
    import torch.nn as nn

    m = MODEL_REF.match(ref)
    where, name = m.group("where"), m.group("name")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise ConvcliError(f"{where}: no such file")
        mod_name = f"_convcli_user_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(spec)
        folder = path.resolve().parent
        sys.path.insert(0, str(folder))  # so the file's own `import helpers` works
        before = set(sys.modules)
        try:
            sys.modules[mod_name] = module
            with contextlib.redirect_stdout(sys.stderr):  # its print()s must not mix into --json, CSV or YAML
                spec.loader.exec_module(module)
        except SyntaxError as exc:  # the compiler's own file and line, not the import machinery's
            loc = f"{relative_path(exc.filename)}:{exc.lineno}" if exc.filename and exc.lineno else where
            raise ConvcliError(f"{loc}: {type(exc).__name__}: {exc.msg}") from None
        except SystemExit as exc:  # argparse's parse_args() or sys.exit() at the top of a training script
            raise ConvcliError(f"{failed_at(exc, where)}: the file exits while it loads (SystemExit: {exc.code}); "
                               "put its script code under `if __name__ == \"__main__\":`") from None
        except Exception as exc:
            raise ConvcliError(f"{failed_at(exc, where)}: running the file failed: {_reason(exc)}") from None
        finally:
            sys.path.pop(0)
            # The file's own helpers (`import blocks`) leave with it: the next student's blocks.py is not this one.
            for key in set(sys.modules) - before:
                if key != mod_name and _inside(getattr(sys.modules[key], "__file__", None), folder):
                    del sys.modules[key]
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:
            raise ConvcliError(f"{failed_at(exc, where)}: cannot import {where}: {_reason(exc)}") from None
    obj = getattr(module, name, None)
    if obj is None:
        found = [k for k, v in vars(module).items() if not k.startswith("_") and
                 (isinstance(v, type) and issubclass(v, nn.Module) or callable(v))]
        hint = did_you_mean(name, found)
        raise ConvcliError(f"{ref}: {where} has no '{name}'" + (f"; did you mean {hint}?" if hint else ""))
    if not callable(obj) or isinstance(obj, types.ModuleType):  # `net.py:F` (the functional import), a constant
        classes = [k for k, v in vars(module).items() if isinstance(v, type) and issubclass(v, nn.Module)
                   and v.__module__ == module.__name__]
        kind = "module" if isinstance(obj, types.ModuleType) else type(obj).__name__
        what = f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
        raise ConvcliError(f"{ref}: '{name}' is {what}, not an nn.Module class or a function that returns one"
                           + (f"; the file's nn.Module classes: {', '.join(classes)}" if classes else ""))
    try:
        with _recording_where_modules_are_made(), contextlib.redirect_stdout(sys.stderr):
            model = obj()
    except SystemExit as exc:
        raise ConvcliError(f"{failed_at(exc, ref)}: building '{name}' exits (SystemExit: {exc.code})") from None
    except TypeError as exc:
        raise ConvcliError(f"{ref}: '{name}' must be built with no arguments ({exc}); write a zero-argument "
                           "factory function that returns the model") from None
    except Exception as exc:
        raise ConvcliError(f"{failed_at(exc, ref)}: building '{name}' failed: {_reason(exc)}") from None
    if not isinstance(model, nn.Module):
        raise ConvcliError(f"{ref}: '{name}' returned {type(model).__name__}, not an nn.Module")
    return model


def _inside(file: str | None, folder: Path) -> bool:
    try:
        return file is not None and Path(file).resolve().is_relative_to(folder)
    except (OSError, ValueError):
        return False


def failed_at(exc: BaseException, fallback: str) -> str:
    """`net.py:22`: the innermost frame of the user's code in the traceback (not torch's, not convcli's)."""
    found, tb = None, exc.__traceback__
    while tb is not None:
        file = tb.tb_frame.f_code.co_filename
        if not (file.startswith((_CONVCLI_DIR, _STDLIB_DIR, "<")) or "/torch/" in file or "site-packages" in file
                or "importlib" in file):
            found = f"{relative_path(file)}:{tb.tb_lineno}"
        tb = tb.tb_next
    return found or fallback


def _reason(exc: BaseException) -> str:
    """The exception in one line, with a did-you-mean for a misspelt module attribute (nn.Linaer)."""
    text = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    m = re.fullmatch(r"module '([\w.]+)' has no attribute '(\w+)'", str(exc)) if isinstance(exc, AttributeError) \
        else None
    if m and m.group(1) in sys.modules:
        hint = did_you_mean(m.group(2), [k for k in dir(sys.modules[m.group(1)]) if not k.startswith("_")])
        text += f"; did you mean {hint}?" if hint else ""
    return text


# Where each of the user's modules was made: the user's frames (innermost first) when it was registered
# as a submodule. A forward that fails names the call; the bad argument is usually here (blk(16, 64)).
_MADE_AT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _recording_where_modules_are_made:
    def __enter__(self):
        from torch.nn.modules.module import register_module_module_registration_hook

        def hook(module, name, submodule):
            if submodule is not None and submodule not in _MADE_AT:
                frames, f = [], sys._getframe(1)
                while f is not None and len(frames) < 3:
                    file = f.f_code.co_filename
                    if not (file.startswith((_CONVCLI_DIR, "<")) or "/torch/" in file or "site-packages" in file):
                        frames.append((file, f.f_lineno))
                    f = f.f_back
                _MADE_AT[submodule] = frames
            return None

        self.handle = register_module_module_registration_hook(hook)

    def __exit__(self, *exc):
        self.handle.remove()


_CONVCLI_DIR = str(Path(__file__).resolve().parent)
_STDLIB_DIR = sysconfig.get_paths()["stdlib"]  # argparse's parse_args() is not where the user's file failed


def made_at(module, call_line: int | None = None) -> str:
    """`, made at net.py:8 (called from net.py:24)` for a module of the user's, or '' when unknown."""
    frames = [(f, n) for f, n in _MADE_AT.get(module, []) if n != call_line] if module is not None else []
    if not frames:
        return ""
    (file, line), *outer = frames
    text = f"; the module is made at {relative_path(file)}:{line}"
    return text + "".join(f" (called from {relative_path(f)}:{n})" for f, n in outer[:1] if f == file)


def relative_path(file: str) -> str:
    try:
        return str(Path(file).resolve().relative_to(Path.cwd()))
    except ValueError:
        return file


__all__ = ["MODEL_REF", "failed_at", "is_model_ref", "load_module", "made_at", "parse_input", "relative_path"]
