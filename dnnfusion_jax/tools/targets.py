"""Loading a model named on the command line: ``path/to/file.py[:attr]`` or ``module:attr``.

The named attribute (default ``example``) is called with no arguments and must return
``(fn, args)``: the function to optimise and a tuple of its arguments.

A file inside a package (a folder with ``__init__.py``, like ``examples/``) is imported under
its package name, so that it can import its siblings (``from .layers import conv2d``).

Example:
    >>> fn, args, name = load_target("examples/bert.py:example_small")
    >>> name, len(args)
    ('bert:example_small', 4)
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def load_target(target: str) -> tuple[Callable, tuple[Any, ...], str]:
    """Returns ``(fn, args, name)`` for a TARGET string; raises ValueError with a hint."""
    location, _, attr = target.partition(":")
    if location.endswith(".py") or Path(location).is_file():
        module = _load_file(Path(location))
    else:
        try:
            module = importlib.import_module(location)
        except ImportError as error:
            raise ValueError(f"cannot import {location!r} ({error}); TARGET is "
                             "path/to/file.py[:attr] or module:attr") from error
    attr = attr or "example"
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"{location} has no callable {attr!r}; it should define "
                         f"{attr}() -> (fn, args)")
    import inspect
    try:
        inspect.signature(factory).bind()
    except TypeError as error:  # the model itself, or a factory that needs arguments
        raise ValueError(f"{target}: {attr} must be callable with no arguments and return "
                         f"(fn, args); calling {attr}() fails: {error}") from None
    except ValueError:
        pass  # a builtin without a signature: try the call
    result = factory()
    if not (isinstance(result, tuple) and len(result) == 2 and callable(result[0])):
        got = (f"a tuple of {len(result)}" if isinstance(result, tuple) else
               type(result).__name__)
        raise ValueError(f"{target}: {attr}() must return (fn, args), got {got}")
    fn, args = result
    if not isinstance(args, (tuple, list)):
        raise ValueError(f"{target}: {attr}() must return (fn, args) with args a tuple of "
                         f"the arguments, got {type(args).__name__} (for one argument: (x,))")
    name = f"{Path(location).stem}" + (f":{attr}" if attr != "example" else "")
    return fn, tuple(args), name


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    path = path.resolve()
    package_parts, folder = [], path.parent
    while (folder / "__init__.py").is_file():
        package_parts.insert(0, folder.name)
        folder = folder.parent
    if package_parts:  # import as package.module so that relative imports work
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
        return importlib.import_module(".".join([*package_parts, path.stem]))
    module_name = f"_dnnfusion_target_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
    return module
