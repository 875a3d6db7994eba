"""S3D (Xie et al., 2018, "Rethinking Spatiotemporal Feature Learning") in plain JAX.

S3D is I3D's Inception-v1 network with every 3-D convolution of size k>1 made *separable*: a
1xkxk spatial convolution then a kx1x1 temporal one, each followed by batch norm and ReLU.
The stem is a separable 7x7x7 convolution (stride 2, 64), a 1x3x3 max pool, a 1x1x1
convolution (64), a separable 3x3x3 convolution (192) and another 1x3x3 max pool; then the
Inception blocks mixed_3b ... mixed_5c with the paper's branch widths (1x1x1; 1x1x1 then
separable 3x3x3; 1x1x1 then separable 3x3x3; 3x3x3 max pool then 1x1x1), 3x3x3 and 2x2x2
max pools between the stages, a global average pool and a 1x1x1 convolution to 400 Kinetics
classes. ``gating=True`` gives S3D-G: each Inception branch (and the stem's last
convolution) is multiplied by ``sigmoid(W · mean(x) + b)`` per channel ("feature gating").
Layout is NDHWC with DHWIO kernels; parameters come from ``Params(seed)``, nothing downloaded.

Input: one clip of 8 frames at 112x112 (the original is 64x224x224, ~71 G multiply-adds):
32x fewer pixels (~4.6 GFLOPs), so that one jitted forward pass stays well under 2 s on two
shared CPU cores; every stride and pool still applies (the last stage sees 1x4x4, so its
temporal convolutions see one frame; 16 frames cost ~2x). Pools use SAME padding. Left
out: dropout (inference) and the softmax (the model returns logits). The average pool is
global, which equals the original 2x7x7 pool followed by a temporal mean of the logits.

Example:
    >>> fn, args = example(frames=4, size=32)
    >>> fn(*args).shape
    (1, 400)
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from .layers import Params, batch_norm, bn_params, conv3d, dense, dense_params

MIXED = {  # name: (1x1x1, (1x1x1, sep 3x3x3), (1x1x1, sep 3x3x3), pool then 1x1x1)
    "mixed_3b": (64, (96, 128), (16, 32), 32), "mixed_3c": (128, (128, 192), (32, 96), 64),
    "mixed_4b": (192, (96, 208), (16, 48), 64), "mixed_4c": (160, (112, 224), (24, 64), 64),
    "mixed_4d": (128, (128, 256), (24, 64), 64), "mixed_4e": (112, (144, 288), (32, 64), 64),
    "mixed_4f": (256, (160, 320), (32, 128), 128), "mixed_5b": (256, (160, 320), (32, 128), 128),
    "mixed_5c": (384, (192, 384), (48, 128), 128),
}
"""Branch widths of the Inception blocks (as in Inception-v1 / I3D / S3D)."""
POOL_AFTER = {"mixed_3c": (3, 3, 3), "mixed_4f": (2, 2, 2)}
"""Max pools (window = stride) between the Inception stages."""
NUM_CLASSES = 400


def max_pool3d(x: jax.Array, window: Sequence[int], stride: Sequence[int]) -> jax.Array:
    """3-D max pooling over NDHWC (SAME padding) with a (time, height, width) window."""
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, *window, 1), (1, *stride, 1), "SAME")


def _unit(gen: Params, k: Sequence[int], cin: int, cout: int) -> dict:
    w = gen.fan_in((*k, cin, cout), k[0] * k[1] * k[2] * cin)
    return {"conv": {"w": w}, "bn": bn_params(gen, cout)}


def _sep(gen: Params, k: int, cin: int, cout: int) -> dict:
    return {"spatial": _unit(gen, (1, k, k), cin, cout),
            "temporal": _unit(gen, (k, 1, 1), cout, cout)}


def _gated(gen: Params, p: dict, cout: int, gating: bool) -> dict:
    return {"layer": p, "gate": dense_params(gen, cout, cout)} if gating else {"layer": p}


def init_params(seed: int = 0, gating: bool = False) -> dict:
    """S3D parameters (S3D-G's gates too when ``gating``) as a nested dict pytree."""
    gen = Params(seed)
    params = {"conv1": _sep(gen, 7, 3, 64), "conv2": _unit(gen, (1, 1, 1), 64, 64),
              "conv3": _gated(gen, _sep(gen, 3, 64, 192), 192, gating)}
    cin = 192
    for name, (b0, (r1, b1), (r2, b2), b3) in MIXED.items():
        one = lambda c: _unit(gen, (1, 1, 1), cin, c)  # noqa: E731
        params[name] = [
            _gated(gen, {"a": one(b0)}, b0, gating),
            _gated(gen, {"a": one(r1), "b": _sep(gen, 3, r1, b1)}, b1, gating),
            _gated(gen, {"a": one(r2), "b": _sep(gen, 3, r2, b2)}, b2, gating),
            _gated(gen, {"a": one(b3)}, b3, gating),
        ]
        cin = b0 + b1 + b2 + b3
    params["logits"] = {"w": gen.fan_in((1, 1, 1, cin, NUM_CLASSES), cin),
                        "b": jnp.zeros((NUM_CLASSES,), jnp.float32)}
    return params


def unit(p: dict, x: jax.Array, stride: Sequence[int] = (1, 1, 1)) -> jax.Array:
    """A 3-D convolution, batch norm and ReLU."""
    return jax.nn.relu(batch_norm(p["bn"], conv3d(p["conv"], x, stride)))


def sep_conv(p: dict, x: jax.Array, stride: int = 1) -> jax.Array:
    """A separable 3-D convolution: 1xkxk spatial then kx1x1 temporal, each with BN + ReLU."""
    x = unit(p["spatial"], x, (1, stride, stride))
    return unit(p["temporal"], x, (stride, 1, 1))


def gate(p: dict, x: jax.Array) -> jax.Array:
    """S3D-G feature gating: scales channels by ``sigmoid(dense(mean over T, H, W))``."""
    if "gate" not in p:
        return x
    weights = jax.nn.sigmoid(dense(p["gate"], x.mean(axis=(1, 2, 3))))
    return x * weights[:, None, None, None, :]


def inception(p: list, x: jax.Array) -> jax.Array:
    """An S3D Inception block: four branches concatenated along channels."""
    b0 = unit(p[0]["layer"]["a"], x)
    b1 = sep_conv(p[1]["layer"]["b"], unit(p[1]["layer"]["a"], x))
    b2 = sep_conv(p[2]["layer"]["b"], unit(p[2]["layer"]["a"], x))
    b3 = unit(p[3]["layer"]["a"], max_pool3d(x, (3, 3, 3), (1, 1, 1)))
    return jnp.concatenate([gate(q, b) for q, b in zip(p, (b0, b1, b2, b3))], axis=-1)


def s3d(params: dict, clip: jax.Array) -> jax.Array:
    """Runs S3D on an NDHWC clip ``(batch, frames, height, width, 3)``; returns logits."""
    x = sep_conv(params["conv1"], clip, stride=2)
    x = max_pool3d(x, (1, 3, 3), (1, 2, 2))
    x = unit(params["conv2"], x)
    x = gate(params["conv3"], sep_conv(params["conv3"]["layer"], x))
    x = max_pool3d(x, (1, 3, 3), (1, 2, 2))
    for name in MIXED:
        x = inception(params[name], x)
        if name in POOL_AFTER:
            x = max_pool3d(x, POOL_AFTER[name], (2, 2, 2))
    x = x.mean(axis=(1, 2, 3), keepdims=True)  # global average pool: (N, 1, 1, 1, C)
    return conv3d(params["logits"], x).reshape(x.shape[0], NUM_CLASSES)


def example(frames: int = 8, size: int = 112, batch: int = 1,
            gating: bool = False) -> tuple[Callable, tuple]:
    """``(s3d, (params, clip))`` for one seeded ``frames`` x ``size`` x ``size`` clip."""
    clip = Params(1).normal((batch, frames, size, size, 3), 1.0)
    return s3d, (init_params(0, gating), clip)


def example_gated() -> tuple[Callable, tuple]:
    """S3D-G (feature gating on) at the default input."""
    return example(gating=True)
