"""Budgeted equality saturation: one iteration at a time, budgets checked after each.

Each iteration first runs the analysis to a fixpoint (shapes, dtypes, value facts), then one
pass of the rule library. Associativity/commutativity rules (``ac=True``) join only the first
``ac_iterations`` passes (bounded AC: a 12-term sum under full AC grows without bound). The
loop stops when nothing changes ("saturated") or a budget runs out: "iterations", "enodes"
or "time"; extraction then runs on what exists.

Example:
    >>> budget = SaturationBudget(iterations=3)
    >>> budget.iterations, budget.enodes, budget.seconds
    (3, 60000, 4.0)
"""
from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dnnfusion_jax.rewrite.egraph_terms import ANALYSIS, FINITE_MATH
from dnnfusion_jax.rewrite.rules_api import Rule, compile_rule


@dataclass(frozen=True)
class SaturationBudget:
    """Limits of one saturation; defaults keep 12-layer BERT-base under 10 s on 2 cores.

    iterations:    rule passes at most;
    enodes:        stop once the e-graph holds more e-nodes than this;
    seconds:       stop once saturation has run this long (checked after each pass);
    ac_iterations: passes in which associativity/commutativity rules run;
    ac_match_limit, match_limit: at most this many matches of one AC rule (of any other
                   rule) per pass: egglog's back-off scheduler bans a rule that exceeds it for
                   a few passes, so that one pass cannot explode.
    """

    iterations: int = 8
    enodes: int = 60_000
    seconds: float = 4.0
    ac_iterations: int = 2
    ac_match_limit: int = 500
    match_limit: int = 1_000


@dataclass
class SaturationResult:
    iterations: int
    stop: str
    enodes: int
    seconds: float
    matches: Counter = field(default_factory=Counter)
    sizes: list[int] = field(default_factory=list)


_RULESETS: dict[tuple, tuple[Any, Any]] = {}
_names = itertools.count()


def rulesets(rules: tuple[Rule, ...]) -> tuple[Any, Any]:
    """The (main, AC) egglog rulesets of these rules, compiled once per rule tuple."""
    key = tuple(id(r) for r in rules)
    if key not in _RULESETS:
        from egglog import ruleset
        n = next(_names)
        main = ruleset(*[compile_rule(r) for r in rules if not r.ac], name=f"rewrite_{n}")
        ac = ruleset(*[compile_rule(r) for r in rules if r.ac], name=f"rewrite_ac_{n}")
        _RULESETS[key] = (main, ac, rules)  # keep the rules alive: ids are the key
    return _RULESETS[key][:2]


def enode_count(egraph: Any) -> int:
    """E-nodes of the term language (rows of the Term and Args constructors)."""
    return sum(size for fn, size in egraph.all_function_sizes()
               if str(fn).startswith(("Term.", "Args.")))


def _run(egraph: Any, schedule: Any, rules: tuple[Rule, ...], trusted: frozenset[str]) -> Any:
    """``egraph.run(schedule)``; egglog's panic at a rule that equated terms of different
    shapes becomes an error that says so and names the suspects (the rules not ``trusted``)."""
    try:
        return egraph.run(schedule)
    except Exception as error:
        if "Illegal merge" not in str(error):
            raise
        suspects = [r.name for r in rules if r.name not in trusted] or [r.name for r in rules]
        raise ValueError(
            "a rewrite rule equated terms of different shapes (egglog: Illegal merge), such as "
            "x/x -> 1 for a non-scalar x; suspects (rules not from the library): "
            f"{', '.join(suspects)}. `python3 -m dnnfusion_jax rules check FILE` shows which "
            "one and on what shapes.") from error


def saturate(egraph: Any, rules: tuple[Rule, ...], budget: SaturationBudget,
             finite_math: bool = False, trusted: frozenset[str] = frozenset()) -> SaturationResult:
    """Runs the rules on ``egraph`` within ``budget``; returns why it stopped and the counts.
    ``trusted``: names of rules known to keep shapes (the library's), left out of the
    suspects when a rule breaks saturation."""
    from egglog import back_off, run
    main, ac = rulesets(rules)
    ac_run = run(ac, scheduler=back_off(match_limit=budget.ac_match_limit))
    main_run = run(main, scheduler=back_off(match_limit=budget.match_limit))
    analysis = ANALYSIS.saturate()
    if finite_math:
        analysis = (run(ANALYSIS) + run(FINITE_MATH)).saturate()
    start = time.perf_counter()
    matches: Counter = Counter()
    sizes = [enode_count(egraph)]
    stop, done = "iterations", 0
    for i in range(budget.iterations):
        _run(egraph, analysis, rules, trusted)
        changed = False
        for rs in ((main_run, ac_run) if i < budget.ac_iterations else (main_run,)):
            report = _run(egraph, rs, rules, trusted)
            changed |= report.updated
            for decl, count in report.num_matches_per_rule.items():
                name = getattr(decl, "name", None)
                if name and count:
                    matches[name] += count
        done = i + 1
        sizes.append(enode_count(egraph))
        if not changed:
            stop = "saturated"
            break
        if sizes[-1] > budget.enodes:
            stop = "enodes"
            break
        if time.perf_counter() - start > budget.seconds:
            stop = "time"
            break
    _run(egraph, analysis, rules, trusted)
    return SaturationResult(done, stop, enode_count(egraph), time.perf_counter() - start,
                            matches, sizes)
