"""C kernels called through the generic XLA FFI handler: jit, vmap, many buffers, bad ids."""
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codegen.c.render import C_ABI
from codegen.compile_cache import build_shared_library
from codegen.c.ffi_runtime import (TARGET_NAME, call_kernel, ensure_runtime, is_loaded,
                                 kernel_id_for, load_kernel)

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math"]
N = 1000

# Parallel through the runtime the handler passes (XLA's thread pool): every range must land.
AXPY = C_ABI + f"""
typedef struct {{ const float *x, *z; float *y; }} axpy_ctx;
static void axpy_body(void *ctx, long begin, long end) {{
  const axpy_ctx *c = ctx;
  for (long i = begin; i < end; ++i) c->y[i] = 2.0f * c->x[i] + c->z[i];
}}
void axpy(const void *const *inputs, void *const *outputs, const dnf_runtime *rt) {{
  axpy_ctx c = {{inputs[0], inputs[1], outputs[0]}};
  rt->parallel_for(rt, {N}, axpy_body, &c);
}}
"""

# Three outputs of different shapes and dtypes: x * z, and per row of 100 the count of
# positive entries and the sum.
TWO_OUT = C_ABI + """
#include <stdint.h>
void prod_rowsum(const void *const *inputs, void *const *outputs, const dnf_runtime *rt) {
  const float *x = inputs[0], *z = inputs[1];
  float *prod = outputs[0];
  int32_t *count = outputs[1];
  float *rowsum = outputs[2];
  for (int i = 0; i < 1000; ++i) prod[i] = x[i] * z[i];
  for (int r = 0; r < 10; ++r) {
    double s = 0.0;
    int32_t c = 0;
    for (int j = 0; j < 100; ++j) { s += x[r * 100 + j]; c += x[r * 100 + j] > 0.0f; }
    rowsum[r] = (float)s;
    count[r] = c;
  }
}
"""

# 70 inputs: more buffers than the handler's stack array holds.
MANY = 70
WIDE = (C_ABI + "void wide(const void *const *in, void *const *out, const dnf_runtime *rt) {\n"
        "  float *y = out[0];\n"
        "  for (int i = 0; i < 4; ++i) { float s = 0.0f;\n"
        f"    for (int k = 0; k < {MANY}; ++k) s += ((const float *)in[k])[i] * (k + 1);\n"
        "    y[i] = s; }\n}\n")


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    cache = tmp_path_factory.mktemp("kernel_cache")
    ensure_runtime(cache)  # ignored when an earlier test (a doctest) built the runtime already
    ids = {}
    for source, symbol in [(AXPY, "axpy"), (TWO_OUT, "prod_rowsum"), (WIDE, "wide")]:
        ids[symbol] = kernel_id_for(source)
        load_kernel(build_shared_library(source, flags=FLAGS, cache_dir=cache), symbol,
                    ids[symbol])
    return ids


def inputs(seed=0, shape=(N,)):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape, dtype=np.float32),
            rng.standard_normal(shape, dtype=np.float32))


def axpy(ids):
    out = [jax.ShapeDtypeStruct((N,), jnp.float32)]
    return lambda x, z: call_kernel(ids["axpy"], [x, z], out)[0]


def test_kernel_id_is_the_sha256_prefix():
    digest = hashlib.sha256(AXPY.encode()).hexdigest()
    assert kernel_id_for(AXPY) == int(digest[:16], 16) == kernel_id_for(AXPY)
    assert 0 <= kernel_id_for("x") < 2 ** 64 and kernel_id_for("x") != kernel_id_for("y")


def test_one_kernel_inside_jit_matches_numpy(kernels):
    x, z = inputs()
    f = jax.jit(lambda x, z: axpy(kernels)(x, z) + 1.0)
    np.testing.assert_allclose(f(x, z), 2 * x + z + 1, rtol=1e-6)
    hlo = jax.jit(axpy(kernels)).lower(x, z).as_text()
    assert hlo.count("stablehlo.custom_call") == 1 and f'@{TARGET_NAME}' in hlo


def test_several_outputs_of_several_dtypes(kernels):
    x, z = inputs(1)
    outs = [jax.ShapeDtypeStruct((N,), jnp.float32), jax.ShapeDtypeStruct((10,), jnp.int32),
            jax.ShapeDtypeStruct((10,), jnp.float32)]
    f = jax.jit(lambda x, z: call_kernel(kernels["prod_rowsum"], [x, z], outs))
    prod, count, rowsum = f(x, z)
    assert (prod.dtype, count.dtype, rowsum.shape) == (jnp.float32, jnp.int32, (10,))
    np.testing.assert_allclose(prod, x * z, rtol=1e-6)
    np.testing.assert_array_equal(count, (x.reshape(10, 100) > 0).sum(1))
    np.testing.assert_allclose(rowsum, x.reshape(10, 100).sum(1), rtol=1e-5, atol=1e-5)
    assert f.lower(x, z).as_text().count("stablehlo.custom_call") == 1


def test_vmap_runs_the_kernel_per_batch_element(kernels):
    x, z = inputs(2, shape=(3, N))
    f = jax.jit(jax.vmap(axpy(kernels)))
    np.testing.assert_allclose(f(x, z), 2 * x + z, rtol=1e-6)
    # Batching only one argument broadcasts the other.
    g = jax.vmap(axpy(kernels), in_axes=(0, None))
    np.testing.assert_allclose(g(x, z[0]), 2 * x + z[0], rtol=1e-6)


def test_more_buffers_than_the_stack_array(kernels):
    xs = [np.full(4, k, np.float32) + np.arange(4, dtype=np.float32) for k in range(MANY)]
    out = [jax.ShapeDtypeStruct((4,), jnp.float32)]
    (y,) = jax.jit(lambda *a: call_kernel(kernels["wide"], a, out))(*xs)
    expected = sum((k + 1) * xs[k] for k in range(MANY))
    np.testing.assert_allclose(y, expected, rtol=1e-6)


def test_ids_with_the_top_bit_set_and_idempotent_loading(kernels, tmp_path):
    # jax cannot build uint64 attributes >= 2**63; the runtime sends them as int64 bits.
    big = (1 << 63) | 12345
    library = build_shared_library(AXPY, flags=FLAGS, cache_dir=tmp_path)
    load_kernel(library, "axpy", big)
    load_kernel(library, "axpy", big)
    assert is_loaded(big) and ensure_runtime().dnnfusion_kernel_registered(big)
    x, z = inputs(3)
    out = [jax.ShapeDtypeStruct((N,), jnp.float32)]
    (y,) = jax.jit(lambda x, z: call_kernel(big, [x, z], out))(x, z)
    np.testing.assert_allclose(y, 2 * x + z, rtol=1e-6)
    for bad in (1 << 64, -1):
        with pytest.raises(ValueError, match="64 unsigned bits"):
            load_kernel(library, "axpy", bad)


def test_unloaded_id_fails_at_trace_time(kernels):
    x, z = inputs()
    with pytest.raises(KeyError, match="not loaded"):
        call_kernel(0xDEAD, [x, z], [jax.ShapeDtypeStruct((N,), jnp.float32)])


def test_handler_answers_an_unregistered_id_with_an_error_not_a_crash(kernels):
    # A fresh process, so a crash could not take pytest down: the target is registered but the
    # id never was (as when a cached executable reaches a process that did not load its kernel).
    code = """
import jax, jax.numpy as jnp, numpy as np
from codegen.c.ffi_runtime import TARGET_NAME, ensure_runtime
ensure_runtime()
call = jax.ffi.ffi_call(TARGET_NAME, jax.ShapeDtypeStruct((4,), jnp.float32))
try:
    jax.block_until_ready(jax.jit(lambda x: call(x, kernel=np.int64(77)))(jnp.ones(4)))
except Exception as e:
    print("raised", type(e).__name__, e)
"""
    # The parent's cache directory, so the child finds the handler already built.
    runtime_cache = Path(ensure_runtime()._name).parents[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DNNFUSION_CACHE_DIR": str(runtime_cache)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "raised" in done.stdout and "no kernel registered under id 77" in done.stdout


def test_parallel_kernels_called_from_many_threads_at_once():
    """Parallel loops run on XLA's intra-op pool (c_abi.h); executions from several Python
    threads at once share that pool, and every call must still finish with its own result
    (the caller claims pieces itself, so a busy pool cannot stall it)."""
    import concurrent.futures

    import dnnfusion_jax as dnnfusion
    fn = dnnfusion.jit(lambda x: jax.nn.softmax(jnp.tanh(x) * 3.0, axis=-1), backend="c",
                       fallback=False)
    inputs = [np.random.default_rng(k).standard_normal((256, 512)).astype(np.float32)
              for k in range(4)]
    want = [np.asarray(jax.nn.softmax(jnp.tanh(x) * 3.0, axis=-1)) for x in inputs]
    fn(inputs[0]).block_until_ready()  # compile once

    def worker(k):
        return all(np.allclose(np.asarray(fn(inputs[k])), want[k], rtol=1e-5, atol=1e-6)
                   for _ in range(25))

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        assert all(pool.map(worker, range(4)))
