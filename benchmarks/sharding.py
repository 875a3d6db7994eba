"""Sharded over host devices: collectives, per-device kernel shapes and time, ours vs jax.jit.

For a transformer encoder layer, a MobileNet-style CNN block, a data-parallel training step
of a small MLP (gradient inside), row softmax, layer norm and RMS norm, the data input is
sharded along the batch over N host CPU devices (``--xla_force_host_platform_device_count``;
each N runs in its own subprocess, since the flag must be set before jax is imported) and the
weights are replicated. For each it prints

* the collectives (all-gather, all-reduce, reduce-scatter, collective-permute, all-to-all) in
  the compiled program, ours and jax.jit's;
* the shapes our fused kernels run at on one device (the partitioner's split);
* the time ratio ours / jax.jit (median of interleaved runs). N host devices share this
  machine's cores, so times are illustrative; the counts are what carries over to a cluster.

Run from the repository root:
    python benchmarks/sharding.py              # 4 and 8 devices
    python benchmarks/sharding.py --devices 4 --repeats 5
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLLECTIVE = re.compile(r"\b(all-gather|all-reduce|reduce-scatter|collective-permute|"
                        r"all-to-all)(-start)?\(")


def cases(n: int):
    """(name, fn, args) for N devices: data sharded along the batch, weights replicated."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    sys.path.insert(0, str(ROOT / "tests"))
    import models

    mesh = jax.make_mesh((n,), ("batch",), axis_types=(AxisType.Auto,))
    rng = np.random.default_rng(0)

    def normal(*shape, scale=1.0):
        return jnp.asarray(scale * rng.standard_normal(shape), jnp.float32)

    def data(x):
        return jax.device_put(x, NamedSharding(mesh, P("batch")))

    def weights(tree):
        return jax.device_put(tree, NamedSharding(mesh, P()))

    batch = 2 * n
    d, d_ff, seq = 256, 1024, 128
    encoder = {"attn": {k: {"w": normal(d, d, scale=d ** -0.5), "b": normal(d, scale=0.02)}
                        for k in "qkvo"},
               "ln1": {"scale": 1 + normal(d, scale=0.1), "bias": normal(d, scale=0.1)},
               "ff1": {"w": normal(d, d_ff, scale=d ** -0.5), "b": normal(d_ff, scale=0.02)},
               "ff2": {"w": normal(d_ff, d, scale=d_ff ** -0.5), "b": normal(d, scale=0.02)},
               "ln2": {"scale": 1 + normal(d, scale=0.1), "bias": normal(d, scale=0.1)}}

    def transformer(x, mask, p):
        return models.encoder_block(x, mask, p, num_heads=4, approximate_gelu=False)

    mobilenet, (_, block_params) = models.build_mobilenet_block()
    yield ("transformer layer", transformer,
           (data(normal(batch, seq, d)), weights(jnp.ones((batch, seq))), weights(encoder)))
    yield ("MobileNet block", mobilenet, (data(normal(batch, 56, 56, 8)), weights(block_params)))
    mlp = {"w1": normal(64, 128, scale=0.1), "b1": normal(128, scale=0.1),
           "w2": normal(128, 16, scale=0.1), "b2": normal(16, scale=0.1)}

    def train_step(x, y, p):  # data parallel: gradients are batch sums, one all-reduce
        def loss(p):
            h = jnp.tanh(x @ p["w1"] + p["b1"])
            return jnp.mean((h @ p["w2"] + p["b2"] - y) ** 2)
        value, grads = jax.value_and_grad(loss)(p)
        return value, jax.tree_util.tree_map(lambda a, g: a - 0.1 * g, p, grads)

    yield ("MLP train step", train_step,
           (data(normal(32 * n, 64)), data(normal(32 * n, 16)), weights(mlp)))
    rows = (256 * n, 1024)
    yield ("row softmax", lambda x: jax.nn.softmax(x, axis=-1), (data(normal(*rows)),))
    yield ("layer norm", models.layer_norm,
           (data(normal(*rows)), *weights((1 + normal(1024, scale=0.1), normal(1024)))))
    yield ("RMS norm", models.rms_norm, (data(normal(*rows)), weights(normal(1024))))


def run(n: int, repeats: int) -> None:
    """The table for N devices (runs in the subprocess)."""
    import jax
    import numpy as np
    import dnnfusion_jax as dnnfusion
    print(f"\n== {n} host devices ({os.cpu_count()} cores, {platform.machine()}) ==")
    print(f"{'model':<18} {'collectives':>13} {'ours/jit':>9}  {'max |diff|':>10}  "
          "per-device kernel shapes (results)")
    for name, fn, args in cases(n):
        ours, ref = dnnfusion.jit(fn), jax.jit(fn)
        count = lambda f: len(COLLECTIVE.findall(f.lower(*args).compile().as_text()))  # noqa
        got, want = ours(*args), ref(*args)
        diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                   for a, b in zip(jax.tree_util.tree_leaves(got),
                                   jax.tree_util.tree_leaves(want)))
        times = {"ours": [], "jit": []}
        for _ in range(repeats):  # interleaved, so both see the same machine load
            for label, f in (("ours", ours), ("jit", ref)):
                start = time.perf_counter()
                jax.block_until_ready(f(*args))
                times[label].append(time.perf_counter() - start)
        ratio = statistics.median(times["ours"]) / statistics.median(times["jit"])
        kernels = next(iter(ours._plans.values())).executable.kernels
        shapes = sorted({str(list(results[0])) for k in kernels for _, results in k.per_device})
        fused = sum(k.backend != "xla" for k in kernels)
        print(f"{name:<18} {count(ours):>5} vs {count(ref):>3} {ratio:>9.2f}  {diff:>10.1e}  "
              f"{fused} kernels: {', '.join(shapes)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, nargs="*", default=[4, 8])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--run", type=int, help=argparse.SUPPRESS)  # the subprocess
    args = parser.parse_args()
    if args.run:
        run(args.run, args.repeats)
        return
    for n in args.devices:
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}",
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        subprocess.run([sys.executable, __file__, "--run", str(n), "--repeats",
                        str(args.repeats)], env=env, check=True)


if __name__ == "__main__":
    main()
