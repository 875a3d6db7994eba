"""dnnfusion_jax: DNNFusion-style operator fusion for JAX.

Decorate a function with ``@dnnfusion.jit``: it is traced to a jaxpr, imported into a graph IR
whose operators carry DNNFusion mapping types, rewritten, planned into fusion blocks, and each
block is compiled as one kernel, all inside one ``jax.jit`` executable. ``dnnfusion.explain``
reports what happened.

Example:
    >>> import jax, jax.numpy as jnp
    >>> import dnnfusion_jax as dnnfusion
    >>> f = dnnfusion.jit(lambda x: jax.nn.softmax(x, axis=-1))
    >>> x = jnp.arange(6.0).reshape(2, 3)
    >>> bool(jnp.allclose(f(x), jax.nn.softmax(x, axis=-1)))
    True
"""
from dnnfusion_jax.api import DnnFusionFunction, explain, jit
from dnnfusion_jax.tools.compare import compare_xla
from dnnfusion_jax.ops.mapping_types import MappingType
from dnnfusion_jax.report import Report

__version__ = "0.1.0"
__all__ = ["jit", "explain", "compare_xla", "DnnFusionFunction", "MappingType", "Report",
           "__version__"]
