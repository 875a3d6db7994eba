"""Sharded over host devices: fused kernels split by XLA's SPMD partitioner, as jax.jit's ops.

Each model runs with its data input sharded along the batch over 2 or 4 host CPU devices
(``--xla_force_host_platform_device_count``, which must be set before jax is imported: the
cases run in one subprocess, ``python3 tests/test_sharding.py``, and print one JSON line
each) and weights replicated. For each: (1) the output sharding is jax.jit's, (2) the compiled
program has no more collectives than jax.jit's, (3) our kernels are still in it, (4) the
results are jax.jit's (rtol = atol = 1e-5). Also: ``in_shardings``/``out_shardings``,
``jax.set_mesh``, ``jax.shard_map``, ``with_sharding_constraint``, GSPMD (Shardy off),
``vmap`` over several devices, and the per-device shapes ``explain`` reports.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DEVICES = 4
COLLECTIVE = re.compile(r"\b(all-gather|all-reduce|reduce-scatter|collective-permute|"
                        r"all-to-all)(-start)?\(")
KERNEL_TARGET = "dnnfusion_c_kernel"


@pytest.fixture(scope="module")
def results() -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES}",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]),
                                           os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {line["case"]: line for line in lines}


MODEL_CASES = ["softmax", "layer_norm", "rms_norm", "transformer", "cnn", "mobilenet",
               "gpt_block", "data_parallel_step"]


@pytest.mark.parametrize("case", MODEL_CASES)
def test_model_sharded_like_jax_jit(results, case):
    r = results[case]
    assert r["error"] is None, r["error"]
    assert r["sharding_ours"] == r["sharding_jit"]  # (1)
    assert r["collectives_ours"] <= r["collectives_jit"], r  # (2)
    assert r["kernels"] > 0  # (3) no silent fallback to XLA
    assert r["max_error_ok"], r  # (4)
    assert r["per_device"], "the partitioner split no kernel"


@pytest.mark.parametrize("case", ["in_out_shardings", "set_mesh", "shard_map",
                                  "sharding_constraint", "gspmd", "vmap", "pallas",
                                  "grad_outside", "two_axis_mesh", "replicated"])
def test_sharding_features(results, case):
    r = results[case]
    assert r["error"] is None, r["error"]
    assert r["ok"], r


def test_explain_reports_per_device_shapes(results):
    r = results["explain"]
    assert r["error"] is None, r["error"]
    assert r["per_device_shapes"] and "per device: [16,256]" in r["text"], r


def test_adversarial_programs_are_right(results):
    """Programs whose batch axis is reduced, reversed, shifted, indexed, mixed by a reshape
    or transpose, or read through iota: whatever the partitioner does, the results are
    jax.jit's."""
    r = results["adversarial"]
    assert r["error"] is None, r["error"]
    assert not r["wrong"], r["wrong"]
    assert r["split"] >= 6, r  # the one-to-one ones are still split


# -- two processes: jax.distributed on localhost, CPU collectives ------------------------------

def _mlp_data():
    import numpy as np
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 16)).astype(np.float32)
    y = rng.standard_normal((8, 4)).astype(np.float32)
    p = {"w1": rng.standard_normal((16, 32)).astype(np.float32) * 0.3,
         "b1": rng.standard_normal(32).astype(np.float32) * 0.1,
         "w2": rng.standard_normal((32, 4)).astype(np.float32) * 0.3,
         "b2": rng.standard_normal(4).astype(np.float32) * 0.1}
    return x, y, p


def _mlp_step(x, y, p):
    import jax
    import jax.numpy as jnp

    def loss(p):
        h = jnp.tanh(x @ p["w1"] + p["b1"])
        return jnp.mean((h @ p["w2"] + p["b2"] - y) ** 2)
    value, grads = jax.value_and_grad(loss)(p)
    return value, jax.tree_util.tree_map(lambda a, g: a - 0.1 * g, p, grads)


def test_two_processes_data_parallel_step(tmp_path):
    """Two processes (one host device each) run a data-parallel step under dnnfusion.jit,
    batch split between them, building their kernels at once into one fresh compile cache;
    both get a single-process jax.jit's results, and the cache holds the kernels."""
    import socket
    import jax
    import numpy as np
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    cache = tmp_path / "cache"
    env = dict(os.environ, DNNFUSION_CACHE_DIR=str(cache), XLA_FLAGS="",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]),
                                           os.environ.get("PYTHONPATH", "")]))
    workers = [subprocess.Popen([sys.executable, __file__, "--process", str(i), str(port)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for i in range(2)]
    outputs = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err[-3000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    x, y, p = _mlp_data()
    want_loss, want_p = jax.jit(_mlp_step)(x, y, p)
    for got in outputs:
        assert got["devices"] == 2 and got["split"], got
        np.testing.assert_allclose(got["loss"], float(want_loss), rtol=1e-5, atol=1e-5)
        for name, value in want_p.items():
            np.testing.assert_allclose(np.asarray(got["params"][name]), np.asarray(value),
                                       rtol=1e-5, atol=1e-5)
    assert list(cache.rglob("*.so")), "the shared cache holds no kernel"


def _process(index: int, port: str):  # pragma: no cover - runs in the subprocess
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2,
                               process_id=index)
    import numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    import dnnfusion_jax as dnnfusion

    mesh = jax.make_mesh((jax.device_count(),), ("batch",), axis_types=(AxisType.Auto,))
    x, y, p = _mlp_data()

    def global_array(a, spec):
        return jax.make_array_from_callback(a.shape, NamedSharding(mesh, spec),
                                            lambda index: a[index])
    args = (global_array(x, P("batch")), global_array(y, P("batch")),
            jax.tree_util.tree_map(lambda a: global_array(a, P()), p))
    step = dnnfusion.jit(_mlp_step)
    loss, params = step(*args)
    kernels = next(iter(step._plans.values())).executable.kernels
    local = lambda a: np.asarray(a.addressable_data(0)).tolist()  # noqa: E731 (replicated)
    print(json.dumps({"devices": jax.device_count(), "loss": local(loss),
                      "split": any(k.per_device for k in kernels),
                      "params": {k: local(v) for k, v in params.items()}}), flush=True)


# -- the factor analysis, on one device -------------------------------------------------------

def _factors(fn, *shapes):
    import jax.numpy as jnp
    from dnnfusion_jax.frontend.trace import trace_function
    from dnnfusion_jax.fusion.plan import whole_graph_block
    from dnnfusion_jax.fusion.shard_factors import block_factors
    graph = trace_function(fn, [jnp.ones(s) for s in shapes]).graph
    factors = block_factors(whole_graph_block(graph))
    return factors, graph


@pytest.mark.parametrize("fn, shape, inputs, outputs", [
    (lambda x: x * 2.0, (8, 16), [(0, 1)], [(0, 1)]),
    (lambda x: x.max(0), (8, 16), [(1,)], [(0,)]),                 # reduced axis blocked
    (lambda x: x.sum(0), (8, 16), [(0, 1)], [(0,)]),               # summed: partial sums
    (lambda x: jnp_sqrt(x.sum(0)) * x, (8, 16), [(0, 1)], [(0, 1)]),  # two phases
    (lambda x: x.T + 1.0, (8, 16), [(0, 1)], [(0, 1)]),            # a transpose permutes
    (lambda x: x + x.T, (8, 8), [()], [()]),                       # one factor twice
    (lambda x: x[::-1] * 2.0, (8, 16), [(1,)], [(1,)]),            # rev: positions move
    (lambda x: jnp_cumsum(x, 0), (8, 16), [(1,)], [(1,)]),         # scanned axis blocked
    (lambda x: x + jnp_arange(8)[:, None], (8, 16), [(1,)], [(1,)]),  # iota: global index
    (lambda x: x[1:] - x[:-1], (8, 16), [(1,)], [(1,)]),           # shifted rows
    (lambda x: x.reshape(128) * 2.0, (8, 16), [(0,)], [(0,)]),     # merged: major axis only
    (lambda x: x.reshape(4, 32) * 2.0, (8, 16), [()], [()]),       # regrouped: not split
])
def test_block_factors(fn, shape, inputs, outputs):
    factors, graph = _factors(fn, shape)
    assert [factors.splittable_dims(v) for v in graph.inputs] == inputs
    assert [factors.splittable_dims(v) for v in graph.outputs] == outputs


def test_merged_axis_is_a_compound_factor():
    factors, graph = _factors(lambda x: (x * 2.0).reshape(32, 64), (8, 4, 64))
    (x,), (y,) = graph.inputs, graph.outputs
    assert factors.dims(x)[0] == factors.dims(y)[0] is not None
    assert factors.multiples(y)[0] == 4 and factors.sizes[factors.dims(x)[0]] == 8
    from dnnfusion_jax.fusion.shard_block import shard_block
    shard, values = shard_block(whole_graph_block_of(graph), factors, {factors.dims(x)[0]: 2})
    assert values[x].shape == (2, 4, 64) and values[y].shape == (8, 64)


def jnp_cumsum(x, axis):
    import jax.numpy as jnp
    return jnp.cumsum(x, axis)


def jnp_sqrt(x):
    import jax.numpy as jnp
    return jnp.sqrt(x)


def jnp_arange(n):
    import jax.numpy as jnp
    return jnp.arange(n, dtype=jnp.float32)


def whole_graph_block_of(graph):
    from dnnfusion_jax.fusion.plan import whole_graph_block
    return whole_graph_block(graph)


# -- the subprocess ---------------------------------------------------------------------------

def _cases():  # pragma: no cover - runs in the subprocess
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

    import dnnfusion_jax as dnnfusion
    sys.path.insert(0, str(Path(__file__).parent))
    import models

    assert jax.device_count() == DEVICES
    mesh4 = jax.make_mesh((4,), ("x",), axis_types=(AxisType.Auto,))
    mesh2 = jax.make_mesh((2,), ("x",), axis_types=(AxisType.Auto,),
                          devices=jax.devices()[:2])
    rng = np.random.default_rng(0)

    def normal(*shape):
        return jnp.asarray(rng.standard_normal(shape), jnp.float32)

    def batch(mesh, x):
        return jax.device_put(x, NamedSharding(mesh, P("x")))

    def replicate(mesh, tree):
        return jax.device_put(tree, NamedSharding(mesh, P()))

    def collectives(compiled_text):
        return len(COLLECTIVE.findall(compiled_text))

    def close(a, b):
        return all(np.allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-5)
                   for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))

    def specs(tree):
        return [str(leaf.sharding.spec) if hasattr(leaf.sharding, "spec") else
                str(leaf.sharding) for leaf in jax.tree_util.tree_leaves(tree)]

    def compare(name, fn, args):
        ours, ref = dnnfusion.jit(fn), jax.jit(fn)
        got, want = ours(*args), ref(*args)
        text = ours.lower(*args).compile().as_text()
        optimized = next(iter(ours._plans.values()))
        return {"sharding_ours": specs(got), "sharding_jit": specs(want),
                "collectives_ours": collectives(text),
                "collectives_jit": collectives(ref.lower(*args).compile().as_text()),
                "kernels": text.count(KERNEL_TARGET), "max_error_ok": close(got, want),
                "per_device": [k.per_device for k in optimized.executable.kernels
                               if k.per_device]}

    # -- models: data sharded along the batch, weights replicated --------------------------
    def softmax():
        return compare("softmax", lambda x: jax.nn.softmax(x, axis=-1),
                       (batch(mesh4, normal(64, 256)),))

    def layer_norm():
        return compare("layer_norm", models.layer_norm,
                       (batch(mesh4, normal(8, 16, 64)), *replicate(mesh4, (normal(64),
                                                                            normal(64)))))

    def rms_norm():
        return compare("rms_norm", models.rms_norm,
                       (batch(mesh4, normal(32, 128)), replicate(mesh4, normal(128))))

    def transformer():
        fn, (x, mask, params) = models._encoder_builder(False)()
        x = jnp.concatenate([x, x[::-1] * 0.5])  # batch 4
        mask = jnp.concatenate([mask, mask[::-1]])
        return compare("transformer", fn, (batch(mesh2, x), *replicate(mesh2, (mask, params))))

    def cnn():
        fn, (params, images) = models.build_cnn()
        images = jnp.concatenate([images, images[:, ::-1] * 0.5])  # batch 4
        return compare("cnn", lambda images, params: fn(params, images),
                       (batch(mesh2, images), replicate(mesh2, params)))

    def mobilenet():
        fn, (x, params) = models.build_mobilenet_block()
        x = jnp.concatenate([x, x * -0.5])
        return compare("mobilenet", fn, (batch(mesh4, x), replicate(mesh4, params)))

    def gpt_block():
        # tokens sharded: the embedding gather keeps the batch; the mean loss is a partial
        # sum per device and one all-reduce, as jax.jit does
        fn, (params, tokens) = models.build_gpt_block()
        tokens = jnp.concatenate([tokens, tokens[::-1]])
        return compare("gpt_block", lambda tokens, params: fn(params, tokens),
                       (batch(mesh2, tokens), replicate(mesh2, params)))

    def data_parallel_step():
        # a training step with the gradient inside (the multi-process test's step): batch sums
        # and the weight gradient's contraction over the batch run in kernels as partial sums
        # plus an all-reduce
        p = {"w1": normal(16, 32) * 0.3, "b1": normal(32) * 0.1, "w2": normal(32, 4) * 0.3,
             "b2": normal(4) * 0.1}
        return compare("data_parallel_step", _mlp_step,
                       (batch(mesh4, normal(8, 16)), batch(mesh4, normal(8, 4)),
                        replicate(mesh4, p)))

    # -- features ----------------------------------------------------------------------------
    def rms(x, w):
        return models.rms_norm(x, w)

    x_host, w_host = normal(32, 128), normal(128)
    want = jax.jit(rms)(x_host, w_host)

    def in_out_shardings():
        ours = dnnfusion.jit(rms, in_shardings=(NamedSharding(mesh4, P("x")),
                                                NamedSharding(mesh4, P())),
                             out_shardings=NamedSharding(mesh4, P("x")), keep_unused=True)
        got = ours(x_host, w_host)
        text = ours.lower(x_host, w_host).compile().as_text()
        return {"ok": close(got, want) and specs(got) == [str(P("x"))]
                and collectives(text) == 0 and KERNEL_TARGET in text}

    def set_mesh():
        explicit = jax.make_mesh((4,), ("x",))  # Explicit axes, jax 0.10's default
        with jax.set_mesh(explicit):
            x = jax.device_put(x_host, P("x"))
            w = jax.device_put(w_host, P())
            ours = dnnfusion.jit(rms)
            got = ours(x, w)
            text = ours.lower(x, w).compile().as_text()
            ref = jax.jit(rms)(x, w)
        return {"ok": close(got, want) and specs(got) == specs(ref)
                and collectives(text) == 0 and KERNEL_TARGET in text}

    def shard_map():
        inner = dnnfusion.jit(rms)
        mapped = jax.jit(jax.shard_map(inner, mesh=mesh4, in_specs=(P("x"), P()),
                                       out_specs=P("x")))
        x, w = batch(mesh4, x_host), replicate(mesh4, w_host)
        got = mapped(x, w)
        text = mapped.lower(x, w).compile().as_text()
        return {"ok": close(got, want) and collectives(text) == 0 and KERNEL_TARGET in text}

    def sharding_constraint():
        def fn(x, w):
            h = jax.lax.with_sharding_constraint(jnp.tanh(x), NamedSharding(mesh4, P(None)))
            return models.rms_norm(h, w)
        ours, ref = dnnfusion.jit(fn), jax.jit(fn)
        x = batch(mesh4, x_host)
        got = ours(x, w_host)
        report = ours.explain(x, w_host)
        # the constraint asks for a replicated value: both gather once, ours no more
        text_ours = ours.lower(x, w_host).compile().as_text()
        text_ref = ref.lower(x, w_host).compile().as_text()
        return {"ok": close(got, ref(x, w_host)) and specs(got) == specs(ref(x, w_host))
                and "sharding_constraint" in report.summary()["opaque_primitives"]
                and collectives(text_ours) <= collectives(text_ref)}

    def gspmd():
        jax.config.update("jax_use_shardy_partitioner", False)
        try:
            ours = dnnfusion.jit(rms)
            x, w = batch(mesh4, x_host), replicate(mesh4, w_host)
            got = ours(x, w)
            text = ours.lower(x, w).compile().as_text()
            return {"ok": close(got, want) and specs(got) == [str(P("x"))]
                    and collectives(text) == 0 and KERNEL_TARGET in text}
        finally:
            jax.config.update("jax_use_shardy_partitioner", True)

    def vmap():
        stacked = jnp.stack([x_host, x_host * 2])
        got = jax.vmap(dnnfusion.jit(rms), in_axes=(0, None))(stacked, w_host)
        return {"ok": close(got, jax.vmap(rms, in_axes=(0, None))(stacked, w_host))}

    def pallas():
        ours = dnnfusion.jit(rms, backend="pallas")  # interpret mode on CPU
        x, w = batch(mesh4, x_host), replicate(mesh4, w_host)
        got = ours(x, w)
        text = ours.lower(x, w).compile().as_text()
        kernels = next(iter(ours._plans.values())).executable.kernels
        return {"ok": close(got, want) and specs(got) == [str(P("x"))]
                and collectives(text) == 0 and any(k.per_device for k in kernels)}

    def grad_outside():
        # jax.grad of a dnnfusion function: the fused forward and backward kernels split too
        def loss(w, x):
            return jnp.mean(models.rms_norm(jnp.tanh(x), w) ** 2)
        ours = jax.jit(jax.value_and_grad(dnnfusion.jit(loss)))
        ref = jax.jit(jax.value_and_grad(loss))
        x, w = batch(mesh4, x_host), replicate(mesh4, w_host)
        text = ours.lower(w, x).compile().as_text()
        return {"ok": close(ours(w, x), ref(w, x)) and KERNEL_TARGET in text
                and collectives(text) <= collectives(ref.lower(w, x).compile().as_text())}

    def two_axis_mesh():
        # batch over "data", the normalised axis over "model": the sum over the model axis is
        # a partial sum per device, completed by one all-reduce between two kernel phases
        mesh = jax.make_mesh((2, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
        x = jax.device_put(x_host, NamedSharding(mesh, P("data", "model")))
        w = jax.device_put(w_host, NamedSharding(mesh, P()))
        ours, ref = dnnfusion.jit(rms), jax.jit(rms)
        text = ours.lower(x, w).compile().as_text()
        return {"ok": close(ours(x, w), want) and specs(ours(x, w)) == specs(ref(x, w))
                and KERNEL_TARGET in text
                and collectives(text) <= collectives(ref.lower(x, w).compile().as_text())}

    def replicated():
        # no sharded input: the program is jax.jit's single-device one, no partitioning op
        ours = dnnfusion.jit(rms)
        text = ours.lower(x_host, w_host).as_text()
        return {"ok": close(ours(x_host, w_host), want) and "CustomSPMDPartitioning" not in text}

    def explain():
        report = dnnfusion.explain(lambda x: jax.nn.softmax(x, axis=-1),
                                   batch(mesh4, normal(64, 256)))
        return {"per_device_shapes": report.summary()["per_device_shapes"],
                "text": str(report)}

    def adversarial():
        x = batch(mesh4, normal(16, 64))
        x3 = batch(mesh4, normal(8, 4, 64))
        square = batch(mesh4, normal(16, 16))
        idx = jnp.asarray(rng.integers(0, 16, (16,)), jnp.int32)
        programs = {
            "iota": (lambda x: jnp.tanh(x) + jnp.arange(16.0)[:, None], (x,)),
            "iota_full_batch": (lambda x: jnp.tanh(x) + jax.lax.broadcasted_iota(
                jnp.float32, (16, 64), 0), (x,)),
            "iota_full_rows": (lambda x: jnp.tanh(x) * jax.lax.broadcasted_iota(
                jnp.float32, (16, 64), 1), (x,)),
            "cumsum_batch": (lambda x: jnp.cumsum(jnp.exp(x), axis=0), (x,)),
            "cumsum_last": (lambda x: jnp.cumsum(jnp.exp(x), axis=1), (x,)),
            "x_plus_xT": (lambda s: jnp.tanh(s) + jnp.tanh(s).T, (square,)),
            "rev": (lambda x: jnp.exp(x)[::-1] * 2, (x,)),
            "mean_batch": (lambda x: jnp.exp(x).mean(0), (x,)),
            "merge": (lambda x: jnp.exp(x).reshape(32, 64) * 2, (x3,)),
            "merge_transposed": (lambda x: jnp.exp(x).transpose(1, 0, 2).reshape(32, 64),
                                 (x3,)),
            "split": (lambda x: jnp.exp(x).reshape(4, 4, 64).sum(1), (x,)),
            "split_small_major": (lambda x: jnp.exp(x).reshape(2, 8, 64) * 2, (x,)),
            "transpose": (lambda x: jnp.exp(x).T * 3, (x,)),
            "concat_batch": (lambda x: jnp.concatenate([jnp.exp(x), jnp.sin(x)], 0), (x,)),
            "concat_last": (lambda x: jnp.concatenate([jnp.exp(x), jnp.sin(x)], 1), (x,)),
            "gather": (lambda x, i: jnp.exp(x)[i] * 2, (x, idx)),
            "slice": (lambda x: jnp.exp(x)[2:10] + 1, (x,)),
            "pad": (lambda x: jnp.pad(jnp.exp(x), ((1, 1), (0, 0))), (x,)),
            "roll": (lambda x: jnp.roll(jnp.exp(x), 1, axis=0), (x,)),
            "shift": (lambda x: jnp.exp(x)[1:] - jnp.exp(x)[:-1], (x,)),
            "argmax": (lambda x: jnp.argmax(jnp.exp(x), axis=1), (x,)),
            "softmax_batch_axis": (lambda x: jax.nn.softmax(x, axis=0), (x,)),
            "center_batch": (lambda x: x - x.mean(0), (x,)),
            "variance_batch": (lambda x: ((x - x.mean(0)) ** 2).mean(0), (x,)),
            "sqrt_of_sum": (lambda x: jnp.sqrt(jnp.exp(x).sum(0)), (x,)),
            "sum_plus_one": (lambda x: jnp.exp(x).sum(0) + 1.0, (x,)),
            "sum_and_rows": (lambda x: (jnp.exp(x) * 2, jnp.exp(x).sum(0) / 16.0), (x,)),
            "gram": (lambda x: jnp.tanh(x).T @ jnp.tanh(x), (x,)),
            "outer_batch": (lambda x: (jnp.tanh(x[:, :1]) * jnp.tanh(x[:, 1])).sum(1),
                            (x,)),
        }
        wrong, split = [], 0
        for name, (fn, args) in programs.items():
            ours = dnnfusion.jit(fn)
            if not close(ours(*args), jax.jit(fn)(*args)):
                wrong.append(name)
            split += any(k.per_device for k in next(iter(ours._plans.values())).executable.kernels)
        return {"wrong": wrong, "split": split}

    for case in (adversarial, softmax, layer_norm, rms_norm, transformer, cnn, mobilenet,
                 gpt_block, data_parallel_step, in_out_shardings,
                 set_mesh, shard_map, sharding_constraint, gspmd, vmap, pallas, grad_outside,
                 two_axis_mesh, replicated, explain):
        try:
            result = {"error": None, **case()}
        except Exception as error:  # reported per case by the tests
            import traceback
            result = {"error": f"{type(error).__name__}: {error}\n{traceback.format_exc()}"}
        print(json.dumps({"case": case.__name__, **result}, default=str), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--process"]:
        _process(int(sys.argv[2]), sys.argv[3])
    else:
        _cases()
