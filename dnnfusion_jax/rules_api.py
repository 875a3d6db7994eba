"""The rule API as rule files import it: ``from dnnfusion_jax.rules_api import Rule, V, exp``.

The implementation lives with the rewrite stage (``dnnfusion_jax/rewrite/rules_api.py``); this
module is its public name, the one user rule files and ``egraph_rules/`` use.

    >>> from dnnfusion_jax.rules_api import Rule, V, exp, log
    >>> Rule("log-exp", "mine", "log(exp(x)) -> x", log(exp(V("x"))), V("x")).law
    'log(exp(x)) -> x'
"""
from dnnfusion_jax.rewrite.rules_api import *  # noqa: F401,F403
from dnnfusion_jax.rewrite.rules_api import __all__  # noqa: F401 (the same public names)
