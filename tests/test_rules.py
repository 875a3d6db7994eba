"""The rule library proves itself: every rule passes ``rules check``; wrong rules are caught."""
import pytest

from dnnfusion_jax.cli import main
from dnnfusion_jax.rules_api import Moderate, Nonneg, Rule, V, compile_rule, exp, log, sqrt
from dnnfusion_jax.rules_check import check_rule
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
