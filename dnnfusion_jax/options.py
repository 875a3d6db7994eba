"""User options of ``dnnfusion.jit``: the valid names and values, checked up front.

Backends and planners are looked up by name in small registries so that later stages add
entries without touching the API. A wrong name is rejected with the list of valid ones.

Example:
    >>> make_options(backend="xla").backend
    'xla'
    >>> make_options(colour="red")
    Traceback (most recent call last):
    ...
    TypeError: dnnfusion.jit got an unknown option 'colour'; valid options: backend, debug, fallback, finite_math, planner, profile, rewrite, rules, saturation
"""
from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jax

from egraph_rules import default_rules
from dnnfusion_jax.rewrite.rules_api import Rule, load_rules_file
from dnnfusion_jax.rewrite.egraph_saturate import SaturationBudget
from dnnfusion_jax.fusion.backend import Backend
from dnnfusion_jax.fusion.greedy_planner import GreedyPlanner
from dnnfusion_jax.fusion.plan import Planner
from dnnfusion_jax.fusion.unfused_planner import UnfusedPlanner

if TYPE_CHECKING:
    from dnnfusion_jax.fusion.profitability import ProfilingDatabase


def _xla_backend() -> Backend:
    from codegen.xla.backend import XlaBackend
    return XlaBackend()


def _c_backend() -> Backend:
    from codegen.c.backend import CBackend
    return CBackend()


def _pallas_backend() -> Backend:
    from codegen.pallas.backend import PallasBackend
    return PallasBackend()


BACKENDS: dict[str, Callable[[], Backend]] = {"xla": _xla_backend, "c": _c_backend,
                                              "pallas": _pallas_backend}
"""Backend name → factory. "auto" picks the best one for the default device: c on CPU, pallas
on GPU. "pallas" on a CPU runs Pallas's interpret mode (for checking, not for speed)."""

def _dnnfusion_planner(backend: Backend, options: "Options") -> Planner:
    from dnnfusion_jax.fusion.dnnfusion_planner import DnnFusionPlanner
    profitability = None
    if options.profile:
        from dnnfusion_jax.fusion.profitability import MeasuredProfitability, profiling_database
        database = profiling_database(backend)
        profitability = lambda graph: MeasuredProfitability(graph, backend, database)  # noqa: E731
        _measure_gemms(backend, database)
    return DnnFusionPlanner(fusible=backend.fusible,
                            profitability=profitability)


def _measure_gemms(backend: Backend, database: ProfilingDatabase) -> None:
    """Lets a backend that renders GEMMs take those it timed no slower than XLA's."""
    if not backend.renders_gemms:
        return
    from codegen.kernel.gemm_profitability import MeasuredGemmChoice
    backend.gemm_choice = MeasuredGemmChoice(backend, _xla_backend(), database,
                                             fallback=backend.unmeasured_gemm_choice)


PLANNERS: dict[str, Callable[[Backend, "Options"], Planner]] = {
    "dnnfusion": _dnnfusion_planner,
    "greedy": lambda backend, options: GreedyPlanner(),
    "none": lambda backend, options: UnfusedPlanner(),
}
"""Planner name → factory(backend, options). "dnnfusion" is the paper's planner (Table 3,
refined, with YELLOW cells settled by a cost model, or by measurements with ``profile=True``);
"greedy" fuses GREEN cells only; "none" leaves every operation in its own block."""


@dataclass(frozen=True)
class Options:
    """Everything that changes how a function is optimised (hashable: part of cache keys).

    backend:  "auto", or a name in BACKENDS.
    planner:  a name in PLANNERS.
    profile:  with the dnnfusion planner, settle its YELLOW decisions, and which GEMMs run
              inside kernels, by timing kernels on this device (kept in a profiling database
              next to the compile cache) instead of the cost model and FLOP limits.
    rewrite:  simplify, then rewrite by algebra in an e-graph, before planning.
    rules:    the e-graph's rules: None (the library's defaults), a Rule, a path to a rule
              file, "default", or a tuple of those (``("default", my_rule)`` adds to the
              defaults; lists are accepted and stored as tuples).
    saturation: a ``SaturationBudget`` (iterations, e-nodes, seconds, AC iterations).
    finite_math: assume no tensor holds ±inf, so that factoring rules (``x@a + x@b →
              x@(a+b)``, batch-norm folding) may fire on operands not proved finite; with
              ±inf inputs such a rewrite may give ±inf where the original gave NaN. False
              keeps IEEE inf/NaN results exact (only provably finite operands are factored).
    fallback: if an optimiser stage fails internally, warn and run the function unfused
              through XLA instead of raising (tests turn it off to see such bugs).
    debug:    print every stage: jaxpr, IR, e-graph, blocks, generated code.
    """

    backend: str = "auto"
    planner: str = "dnnfusion"
    rewrite: bool = True
    profile: bool = False
    rules: Any = None
    saturation: SaturationBudget = SaturationBudget()
    finite_math: bool = False
    fallback: bool = True
    debug: bool = False

    def resolved_backend(self) -> str:
        """The backend that "auto" stands for on this machine."""
        if self.backend != "auto":
            return self.backend
        preferred = {"cpu": ["c", "xla"], "gpu": ["pallas", "xla"]}
        for name in preferred.get(program_platform(), ["xla"]):
            if name in BACKENDS:
                return name
        return "xla"


def program_platform() -> str:
    """The JAX platform ("cpu", "gpu", ...) a jitted program runs on here: the default device's
    (``jax.default_device``), else the default backend's.

    Example:
        >>> with jax.default_device(jax.devices("cpu")[0]):
        ...     program_platform()
        'cpu'
    """
    device = jax.config.jax_default_device
    if device is None:
        return jax.default_backend()
    return device if isinstance(device, str) else device.platform


OPTION_NAMES = tuple(sorted(field.name for field in dataclasses.fields(Options)))


def make_options(**options: Any) -> Options:
    """Validates option names and values; raises TypeError/ValueError naming the valid ones."""
    for name in options:
        if name not in OPTION_NAMES:
            raise TypeError(f"dnnfusion.jit got an unknown option {name!r}; "
                            f"valid options: {', '.join(OPTION_NAMES)}")
    if isinstance(options.get("rules"), list):
        options["rules"] = tuple(options["rules"])
    result = Options(**options)
    _check_choice("backend", result.backend, ["auto", *BACKENDS])
    _check_choice("planner", result.planner, list(PLANNERS))
    if not isinstance(result.saturation, SaturationBudget):
        raise TypeError("dnnfusion.jit option 'saturation' must be a SaturationBudget, got "
                        f"{result.saturation!r}")
    _check_rules(result.rules)
    flags = {"rewrite": result.rewrite, "fallback": result.fallback, "debug": result.debug,
             "profile": result.profile, "finite_math": result.finite_math}
    for flag, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"dnnfusion.jit option {flag!r} must be True or False, "
                            f"got {value!r}")
    return result


def _check_choice(option: str, value: Any, valid: list[str]) -> None:
    if value not in valid:
        raise ValueError(f"dnnfusion.jit got an unknown {option} {value!r}; "
                         f"valid {option}s: {', '.join(map(repr, valid))}")


def _check_rules(rules: Any) -> None:
    items = rules if isinstance(rules, tuple) else (rules,)
    for item in items:
        if item is not None and not isinstance(item, (Rule, str, os.PathLike)):
            raise TypeError("dnnfusion.jit option 'rules' takes Rule objects, rule file paths "
                            f"or 'default', got {item!r}")
    if rules is not None:  # a missing or broken rule file is the caller's error, said now
        try:
            resolve_rules(rules)
        except (ValueError, OSError) as error:
            raise ValueError(f"dnnfusion.jit option 'rules': {error}") from None


_FILE_RULES: dict[tuple, list[Rule]] = {}


def resolve_rules(rules: Any = None) -> tuple[Rule, ...]:
    """The Rule objects the ``rules`` option names: None means the library's defaults
    (``egraph_rules.default_rules()``); otherwise a Rule, a path to a rule file, the string
    "default", or a sequence of those (so ``["default", my_rule]`` adds to the defaults and
    ``[my_rule]`` replaces them).

        >>> len(resolve_rules()) == len(resolve_rules("default")) > 0
        True
    """
    if rules is None:
        return tuple(default_rules())
    items = [rules] if isinstance(rules, (Rule, str, os.PathLike)) else list(rules)
    resolved: list[Rule] = []
    for item in items:
        if isinstance(item, Rule):
            resolved.append(item)
        elif item == "default":
            resolved += default_rules()
        elif isinstance(item, (str, os.PathLike)):
            path = Path(item)
            key = (str(path.resolve()), path.stat().st_mtime if path.exists() else None)
            if key not in _FILE_RULES:
                _FILE_RULES[key] = load_rules_file(path)
            resolved += _FILE_RULES[key]
        else:
            raise TypeError(f"rules: expected a Rule, a rule file path or 'default', got {item!r}")
    names = [r.name for r in resolved]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"rules: duplicate rule names {duplicates}")
    return tuple(resolved)


@functools.cache
def library_rule_names() -> frozenset[str]:
    """Names of the library's rules (``egraph_rules``), which saturation trusts to keep shapes."""
    return frozenset(r.name for r in default_rules())
