"""Kernel emitters: one module per backend, each turning a fusion block into a runnable kernel.

``codegen.xla.backend`` is the reference backend: it replays a block's primitives as lax operations
inside the surrounding ``jax.jit``. Every other backend is checked against it and falls back to
it for blocks it cannot compile.
"""
