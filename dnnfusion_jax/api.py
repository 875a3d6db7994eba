"""The user API: ``dnnfusion.jit`` and ``dnnfusion.explain``.

``jit`` wraps the function in one ``jax.jit`` whose body traces the function, optimises it and
runs the compiled plan. ``jax.jit`` therefore supplies the calling convention, argument
checking, static and donated arguments, and the per-signature executable cache; a cached call
costs what a ``jax.jit`` call costs. The optimised plan is also kept per signature (shapes,
dtypes, weak types, static values, pytree structure) for ``explain``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> import dnnfusion_jax as dnnfusion
    >>> @dnnfusion.jit
    ... def layer(x, w):
    ...     return jax.nn.gelu(x @ w)
    >>> x, w = jnp.ones((4, 8)), jnp.ones((8, 8)) / 8
    >>> bool(jnp.allclose(layer(x, w), jax.jit(layer.fun)(x, w)))
    True
    >>> layer.explain(x, w).summary()["blocks"]  # on CPU: a GEMM this small and gelu, one C kernel
    1
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any

import jax

from dnnfusion_jax.options import Options, make_options
from dnnfusion_jax.pipeline import OptimizedFunction, optimize
from dnnfusion_jax.report import Report


class DnnFusionFunction:
    """A function compiled by dnnfusion; call it like the function, or ask it to ``explain``.

    Example:
        >>> import jax.numpy as jnp
        >>> f = DnnFusionFunction(lambda x, n: x * n, make_options(), static_argnums=(1,))
        >>> f(jnp.ones(2), 3).tolist()
        [3.0, 3.0]
    """

    def __init__(self, fun: Callable, options: Options, static_argnums: Iterable[int] = (),
                 static_argnames: Iterable[str] = (), donate_argnums: Iterable[int] = (),
                 donate_argnames: Iterable[str] = (), *,
                 jit_keywords: dict[str, Any] | None = None) -> None:
        if not callable(fun):
            raise TypeError(f"dnnfusion.jit expects a callable, got {fun!r}")
        for name, value, kind in (("static_argnums", static_argnums, int),
                                  ("donate_argnums", donate_argnums, int),
                                  ("static_argnames", static_argnames, str),
                                  ("donate_argnames", donate_argnames, str)):
            if not all(isinstance(v, kind) and not isinstance(v, bool) for v in _as_tuple(value)):
                raise TypeError(f"dnnfusion.jit option {name} takes {kind.__name__}s, "
                                f"got {value!r}")
        self.fun = fun
        self.options = options
        self.static_argnums, self.static_argnames = _resolve_static(
            fun, _as_tuple(static_argnums), _as_tuple(static_argnames))
        self._plans: dict[Any, OptimizedFunction] = {}
        self._jit_keywords = dict(jit_keywords or {})
        functools.update_wrapper(self, fun)

        @functools.wraps(fun)
        def traced_body(*args, **kwargs):
            return self._run_traced(args, kwargs)

        self._jitted = jax.jit(traced_body, static_argnums=self.static_argnums,
                               static_argnames=self.static_argnames,
                               donate_argnums=_as_tuple(donate_argnums),
                               donate_argnames=_as_tuple(donate_argnames),
                               **(jit_keywords or {}))  # in_shardings etc., as given

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._jitted(*args, **kwargs)

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        # Decorating a method: bind ``self`` like a plain function would, keeping explain()
        return self if instance is None else BoundDnnFusionFunction(self, instance)

    def lower(self, *args: Any, **kwargs: Any) -> jax.stages.Lowered:
        """The ``jax.stages.Lowered`` of the optimised function (as ``jax.jit(f).lower``)."""
        return self._jitted.lower(*args, **kwargs)

    def trace(self, *args: Any, **kwargs: Any) -> jax.stages.Traced:
        """The ``jax.stages.Traced`` of the optimised function (as ``jax.jit(f).trace``)."""
        return self._jitted.trace(*args, **kwargs)

    def explain(self, *args: Any, **kwargs: Any) -> Report:
        """The report of how the function is optimised for these arguments.

        Arguments may be arrays, Python scalars or ``jax.ShapeDtypeStruct``; nothing runs.
        """
        dynamic_args, dynamic_kwargs, statics = self._split_static(args, kwargs)
        abstract = jax.tree_util.tree_map(_abstract, (dynamic_args, dynamic_kwargs))
        report = Report(self._optimized_for(*abstract, statics))
        if self._sharded_over_devices(args, kwargs):
            # XLA's partitioner decides where kernels split; compiling (not running) the
            # program records the per-device shapes it compiled them at for the report
            self._jitted.lower(*args, **kwargs).compile()
        return report

    def _sharded_over_devices(self, args: tuple, kwargs: dict) -> bool:
        """Whether an argument (or ``in_shardings``) spreads over more than one device."""
        if "in_shardings" in self._jit_keywords:
            return True
        return any(len(getattr(getattr(leaf, "sharding", None), "device_set", ())) > 1
                   for leaf in jax.tree_util.tree_leaves((args, kwargs)))

    def _run_traced(self, args: tuple, kwargs: dict) -> Any:
        """The body of the jax.jit: find or build the plan for this signature, then run it."""
        dynamic_args, dynamic_kwargs, statics = self._split_static(args, kwargs)
        optimized = self._optimized_for(dynamic_args, dynamic_kwargs, statics)
        outputs = optimized(jax.tree_util.tree_leaves((dynamic_args, dynamic_kwargs)))
        return jax.tree_util.tree_unflatten(optimized.traced.out_tree, outputs)

    def _optimized_for(self, dynamic_args: tuple, dynamic_kwargs: dict,
                       statics: tuple) -> OptimizedFunction:
        """The cached optimisation for this signature, built on a miss."""
        leaves, in_tree = jax.tree_util.tree_flatten((dynamic_args, dynamic_kwargs))
        key = (in_tree, tuple(_aval_key(x) for x in leaves), statics)
        optimized = self._plans.get(key)
        if optimized is None:
            @functools.wraps(self.fun)
            def with_statics(*dyn_args, **dyn_kwargs):
                return self.fun(*self._merge_static(dyn_args, statics[0]),
                                **dyn_kwargs, **dict(statics[1]))
            optimized = optimize(with_statics, dynamic_args, dynamic_kwargs, self.options,
                                 name=getattr(self.fun, "__name__", None))
            if optimized.cacheable:
                self._plans[key] = optimized
        return optimized

    def _split_static(self, args: tuple, kwargs: dict) -> tuple[tuple, dict, tuple]:
        positions = {i % len(args) for i in self.static_argnums if -len(args) <= i < len(args)}
        static_pos = tuple((i, a) for i, a in enumerate(args) if i in positions)
        static_kw = tuple(sorted((k, v) for k, v in kwargs.items() if k in self.static_argnames))
        dynamic_args = tuple(a for i, a in enumerate(args) if i not in positions)
        dynamic_kwargs = {k: v for k, v in kwargs.items() if k not in self.static_argnames}
        return dynamic_args, dynamic_kwargs, (static_pos, static_kw)

    @staticmethod
    def _merge_static(dynamic_args: tuple, static_pos: tuple) -> list:
        merged = list(dynamic_args)
        for index, value in static_pos:
            merged.insert(index, value)
        return merged

    def __repr__(self) -> str:
        return f"<dnnfusion.jit {getattr(self.fun, '__qualname__', self.fun)!r} {self.options}>"


_UNSET: Any = object()
"""A ``jax.jit`` keyword the caller did not give (None means something to jax.jit)."""


def jit(fun: Callable | None = None, *, backend: str = "auto",
        static_argnums: int | Iterable[int] = (), static_argnames: str | Iterable[str] = (),
        donate_argnums: int | Iterable[int] = (), donate_argnames: str | Iterable[str] = (),
        debug: bool = False, in_shardings: Any = _UNSET, out_shardings: Any = _UNSET,
        keep_unused: Any = _UNSET, **options: Any) -> Any:
    """Compile ``fun`` with DNNFusion-style fusion; same calling convention as ``jax.jit``.

    Use bare (``@dnnfusion.jit``) or with options (``@dnnfusion.jit(backend="xla")``).
    Other options: ``planner`` ("dnnfusion", the default, "greedy" or "none"), ``profile``
    (default False: time kernels to settle YELLOW fusions), ``rewrite`` (default True),
    ``fallback`` (default True: an internal optimiser error warns and runs unfused).
    ``in_shardings``, ``out_shardings`` and ``keep_unused`` are ``jax.jit``'s, passed to it
    as they are; over several devices the partitioner splits the fused kernels
    (``codegen/kernel/sharded_call.py``).

    Example:
        >>> import jax.numpy as jnp
        >>> import dnnfusion_jax as dnnfusion
        >>> @dnnfusion.jit(static_argnames="axis")
        ... def normalise(x, axis):
        ...     return x / x.sum(axis=axis, keepdims=True)
        >>> normalise(jnp.ones((2, 4)), axis=1).tolist()
        [[0.25, 0.25, 0.25, 0.25], [0.25, 0.25, 0.25, 0.25]]
    """
    checked = make_options(backend=backend, debug=debug, **options)
    jit_keywords = {name: value for name, value in (("in_shardings", in_shardings),
                                                    ("out_shardings", out_shardings),
                                                    ("keep_unused", keep_unused))
                    if value is not _UNSET}  # unset: jax.jit's own defaults
    if fun is None:
        return functools.partial(jit, backend=backend, static_argnums=static_argnums,
                                 static_argnames=static_argnames, donate_argnums=donate_argnums,
                                 donate_argnames=donate_argnames, debug=debug, **jit_keywords,
                                 **options)
    return DnnFusionFunction(fun, checked, static_argnums, static_argnames, donate_argnums,
                             donate_argnames, jit_keywords=jit_keywords)


class BoundDnnFusionFunction:
    """A ``dnnfusion.jit`` method bound to its instance: call it, ``explain`` it, ``lower``
    it, as the function with ``instance`` first.

    Example:
        >>> import jax.numpy as jnp
        >>> class Scale:
        ...     factor = 2.0
        ...     @jit(static_argnums=0)  # self is static, as with jax.jit
        ...     def __call__(self, x):
        ...         return x * self.factor
        >>> Scale()(jnp.ones(2)).tolist(), Scale().__call__.explain(jnp.ones(2)).summary()["blocks"]
        ([2.0, 2.0], 1)
    """

    def __init__(self, function: DnnFusionFunction, instance: Any) -> None:
        self.function, self.instance = function, instance
        functools.update_wrapper(self, function.fun)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(self.instance, *args, **kwargs)

    def explain(self, *args: Any, **kwargs: Any) -> Report:
        """The report for ``instance.method(*args)``."""
        return self.function.explain(self.instance, *args, **kwargs)

    def lower(self, *args: Any, **kwargs: Any) -> jax.stages.Lowered:
        """The ``jax.stages.Lowered`` of ``instance.method(*args)``."""
        return self.function.lower(self.instance, *args, **kwargs)

    def trace(self, *args: Any, **kwargs: Any) -> jax.stages.Traced:
        """The ``jax.stages.Traced`` of ``instance.method(*args)``."""
        return self.function.trace(self.instance, *args, **kwargs)


def explain(fun: Callable, *args: Any, **kwargs: Any) -> Report:
    """Report how dnnfusion optimises ``fun(*args, **kwargs)`` (nothing is executed).

    ``fun`` may be a ``dnnfusion.jit`` function (its options are used) or any function
    (default options).

    Example:
        >>> import jax.numpy as jnp
        >>> import dnnfusion_jax as dnnfusion
        >>> report = dnnfusion.explain(lambda x: jnp.exp(x) * 2.0 + 1.0, jnp.ones(8))
        >>> report.summary()["jaxpr_ops"], report.summary()["blocks"]
        (3, 1)
    """
    target = fun if isinstance(fun, DnnFusionFunction) else jit(fun)
    return target.explain(*args, **kwargs)


def _as_tuple(value: Any) -> tuple:
    if value is None:
        return ()
    if isinstance(value, (int, str)):
        return (value,)
    return tuple(value)


def _resolve_static(fun: Callable, argnums: tuple[int, ...],
                    argnames: tuple[str, ...]) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Completes static argnums from argnames and back, as jax.jit does."""
    try:
        parameters = list(inspect.signature(fun).parameters.values())
    except (TypeError, ValueError):
        return argnums, argnames
    positional = [p.name for p in parameters
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    argnums = tuple(sorted(set(argnums) | {positional.index(n) for n in argnames
                                           if n in positional}))
    names = set(argnames) | {positional[i] for i in argnums if 0 <= i < len(positional)
                             and parameters[i].kind is not inspect.Parameter.POSITIONAL_ONLY}
    return argnums, tuple(sorted(names))


def _abstract(leaf: Any) -> jax.ShapeDtypeStruct:
    aval = jax.typeof(leaf)  # raises "Argument ... is not a valid JAX type" for bad leaves
    return jax.ShapeDtypeStruct(aval.shape, aval.dtype, weak_type=aval.weak_type)


def _aval_key(leaf: Any) -> tuple:
    aval = jax.typeof(leaf)
    return (aval.shape, aval.dtype, getattr(aval, "weak_type", False))
