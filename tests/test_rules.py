"""The rule library proves itself: every rule and graph pass passes ``rules check``; wrong
rules and unguarded passes are caught."""
import re

import numpy as np
import pytest

import dnnfusion_jax as dnnfusion
from dnnfusion_jax.tools.cli import main
from dnnfusion_jax.rules_api import (Moderate, Nonneg, Rule, V, binary, compile_rule, exp, log,
                                     sqrt)
from dnnfusion_jax.rewrite.gemm_factor import factor_gemm_sums
from dnnfusion_jax.rewrite.passes_check import PASSES, check_pass
from dnnfusion_jax.rewrite.rules_check import check_rule
from egraph_rules import FAMILIES, default_rules

RULES = default_rules()
a, b = V("a"), V("b")


@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_library_rule_is_sound(rule):
    result = check_rule(rule, trials=12)
    assert result.ok, result.message


def test_library_has_every_family_and_the_named_rules():
    names = {r.name for r in RULES}
    assert len(names) == len(RULES) and {r.family for r in RULES} == set(FAMILIES)
    for name in ("dot-factor-rhs", "dot-factor-lhs", "matmul-assoc-right", "matmul-assoc-left",
                 "dot-scale-lhs", "conv-scale", "matmul-col-scale-fold", "exp-mul", "recip-mul",
                 "div-div", "sqrt-pair", "mul-recip", "reduce-prod-exp", "transpose-inverse",
                 "reshape-reshape", "reduce_max-broadcast", "factor-right", "add-mul-one",
                 "square-sub", "sqrt-mul-sqrt", "abs-mul"):
        assert name in names, name
    for rule in RULES:
        assert "->" in rule.law and rule.name == rule.name.lower()
        compile_rule(rule)


@pytest.mark.parametrize("wrong", [
    Rule("log-mul-unguarded", "user", "log(a)+log(b) -> log(a*b)", log(a) + log(b), log(a * b)),
    # positive and guarded, but a*b overflows where log(a)+log(b) is fine
    Rule("log-mul-positive", "user", "log(a)+log(b) -> log(a*b) for a, b >= 0",
         log(a) + log(b), log(a * b), (Nonneg(a), Nonneg(b)), values={"a": "nonneg", "b": "nonneg"}),
    Rule("sqrt-pair-unguarded", "user", "sqrt(a)*sqrt(a) -> a", sqrt(a) * sqrt(a), a),
    Rule("div-self", "user", "a/a -> 1", a / a, a * 0.0 + 1.0),
    Rule("exp-add-wrong", "user", "exp(a)*exp(b) -> exp(a*b)", exp(a) * exp(b), exp(a * b)),
])
def test_wrong_rules_get_a_counterexample(wrong):
    result = check_rule(wrong, trials=30)
    assert not result.ok and "counterexample" in result.message, result.message


def test_the_library_guard_makes_log_mul_sound():
    guarded = Rule("log-mul", "user", "log(a)+log(b) -> log(a*b) for moderate a, b",
                   log(a) + log(b), log(a * b), (Moderate(a), Moderate(b)),
                   values={"a": "moderate", "b": "moderate"})
    assert check_rule(guarded, trials=30).ok


def test_cli_lists_and_checks_rule_files(tmp_path, capsys):
    path = tmp_path / "mine.py"
    path.write_text("from dnnfusion_jax.rules_api import Rule, V, exp, log\n"
                    "a, b = V('a'), V('b')\n"
                    "good = Rule('exp-mul-mine', 'mine', 'exp(a)*exp(b) -> exp(a+b)', "
                    "exp(a) * exp(b), exp(a + b), in_range=True)\n"
                    "bad = Rule('log-mul-mine', 'mine', 'log(a)+log(b) -> log(a*b)', "
                    "log(a) + log(b), log(a * b))\n")
    assert main(["rules", "list", str(path)]) == 0
    out = capsys.readouterr().out
    assert "exp-mul-mine" in out and "log(a)+log(b) -> log(a*b)" in out and "2 rules" in out
    assert main(["rules", "check", "--trials", "12", str(path)]) == 1
    out = capsys.readouterr().out
    assert "ok    exp-mul-mine" in out and "FAIL  log-mul-mine: counterexample" in out
    assert main(["rules", "list"]) == 0
    assert f"{len(RULES)} rules" in capsys.readouterr().out
    assert main(["rules", "check", str(tmp_path / "missing.py")]) == 2


# Mistakes a rule author makes are said plainly, where they are made.

A_ = V("a")
BAD_RULES = {
    "a guard on an unbound variable": (lambda: Rule("r", "f", "l", exp(log(A_)), A_,
                                                    guard=(Nonneg(V("b")),)),
                                       "Nonneg(b) names ['b']"),
    "finite on an unbound variable": (lambda: Rule("r", "f", "l", exp(A_) * 2, exp(A_) * 2,
                                                   finite=(V("z"),)), "finite=z names ['z']"),
    "a misspelt value kind": (lambda: Rule("r", "f", "l", exp(A_), exp(A_),
                                           values={"a": "nonnegative"}), "one of nonneg"),
    "an unknown operation": (lambda: binary("foo", A_, A_), "unknown binary operation 'foo'"),
    "an empty name": (lambda: Rule("", "f", "l", exp(A_), A_), "non-empty name"),
    "a string for a term": (lambda: Rule("r", "f", "l", "exp(a)", A_), "left side must be a term"),
}


@pytest.mark.parametrize("name", BAD_RULES)
def test_bad_rules_are_refused_with_the_reason(name):
    build, message = BAD_RULES[name]
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        build()


def test_numbers_and_single_guards_are_accepted():
    r = Rule("r", "f", "sqrt(a)*sqrt(a) -> a", sqrt(A_) * sqrt(A_), A_, guard=Nonneg(A_))
    assert r.guard == (Nonneg(A_),)
    assert str(Rule("one", "f", "x/x -> 1", A_ / A_, 1.0).rhs) == "1.0"


@pytest.mark.parametrize("text, message", [
    ("RULES = [Rule('x', 'f', 'l', exp(V('a')), V('a'))\n", "SyntaxError"),
    ("import no_such_module\n", "ModuleNotFoundError"),
    ("RULES = [Rule('x', 'f', 'l', exp(V('a')), V('a'), guard=(Nonneg(V('b')),))]\n",
     "names ['b']"),
    ("RULES = [1, 2]\n", "RULES must be a list"),
    ("x = 1\n", "defines no rules"),
])
def test_broken_rule_files_are_one_line_errors(tmp_path, capsys, text, message):
    path = tmp_path / "mine.py"
    path.write_text("from dnnfusion_jax.rules_api import *\n" + text)
    assert main(["rules", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    with pytest.raises(ValueError, match="option 'rules'"):  # refused when the jit is made
        dnnfusion.jit(lambda x: x, rules=str(path))


def test_a_shape_changing_rule_is_named_when_it_breaks_saturation(tmp_path):
    path = tmp_path / "shapes.py"
    path.write_text("from dnnfusion_jax.rules_api import *\n"
                    "RULES = [Rule('x-div-x', 'mine', 'x/x -> 1', V('a') / V('a'), 1.0)]\n")
    fused = dnnfusion.jit(lambda x: x / x + 1, rules=["default", str(path)], fallback=False)
    with pytest.raises(ValueError, match="different shapes.*suspects.*x-div-x"):
        fused(np.ones((2, 2), np.float32))


@pytest.mark.parametrize("name", sorted(PASSES))
def test_graph_pass_is_sound(name):
    """The guarded rewrites and merges after the e-graph, on random programs of the shapes they
    rewrite, with special and out-of-range values (``rewrite/passes_check.py``)."""
    result = check_pass(name, trials=9)
    assert result.ok and result.samples >= 3, result.message


def test_an_unguarded_graph_pass_is_caught(monkeypatch):
    """GEMM factoring without its guard: ``x@a + x@b`` with an inf in a meeting a -inf in b
    (NaN) is x@(inf) after factoring."""
    monkeypatch.setitem(PASSES, "dot-factor-guarded", (PASSES["dot-factor-guarded"][0], lambda g:
                        factor_gemm_sums(g, finite_math=True, pays=lambda *_: True)[0]))
    result = check_pass("dot-factor-guarded")
    assert not result.ok and "counterexample" in result.message, result.message
