"""C3D (Tran et al., 2015) in plain JAX, with parameters generated from a seed.

C3D is a VGG-style 3-D convolutional network for video clips: eight 3x3x3 convolutions
(64-128-256-256-512-512-512-512, each with bias and ReLU, no batch norm) in five groups, each
group followed by a 3-D max pool (1x2x2 after the first, 2x2x2 after the others), then three
fully connected layers 4096-4096-487 (the Sports-1M classes). Layout is NDHWC with DHWIO
kernels; parameters are a nested dict drawn from ``Params(seed)``; nothing is downloaded.

Input: one clip of 16 frames at 56x56 (the original is 16x112x112, ~78 GFLOPs, i.e. 38.5 G
multiply-adds). Halving the spatial size cuts the cost 4x (to ~19.5 GFLOPs) so that one jitted
forward pass stays under about 2 s on two shared CPU cores (16x112x112 takes ~3.5 s); 16
frames keep every temporal pool meaningful. Max pools
use SAME padding, which reproduces the original's ``pool5`` padding (0, 1, 1) at 112x112 and
keeps every size valid at other resolutions; ``fc6`` takes whatever ``pool5`` yields
(512x1x2x2 = 2048 features here, 8192 at the original size). Left out: dropout (inference)
and the final softmax (the model returns logits).

Example:
    >>> fn, args = example(frames=8, size=32)
    >>> fn(*args).shape
    (1, 487)
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from .layers import Params, conv3d, dense, dense_params

GROUPS = ((64,), (128,), (256, 256), (512, 512), (512, 512))
"""Output widths of the 3x3x3 convolutions, by pooling group."""
POOLS = ((1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2))
"""Window (= stride) of the max pool closing each group, as (time, height, width)."""
FC = (4096, 4096)
NUM_CLASSES = 487


def max_pool3d(x: jax.Array, window: Sequence[int], stride: Sequence[int],
               padding: str = "SAME") -> jax.Array:
    """3-D max pooling over NDHWC with a (time, height, width) window and stride."""
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, *window, 1), (1, *stride, 1), padding)


def conv3d_params(gen: Params, k: Sequence[int], cin: int, cout: int, bias: bool = True) -> dict:
    """A DHWIO kernel of size ``k`` (He initialised), with a zero bias unless ``bias`` is off."""
    p = {"w": gen.fan_in((*k, cin, cout), k[0] * k[1] * k[2] * cin)}
    if bias:
        p["b"] = jnp.zeros((cout,), jnp.float32)
    return p


def _pooled_shape(frames: int, size: int) -> tuple[int, int, int]:
    t, h, w = frames, size, size
    for pt, ph, pw in POOLS:  # SAME pooling: ceil division
        t, h, w = -(-t // pt), -(-h // ph), -(-w // pw)
    return t, h, w


def init_params(seed: int = 0, frames: int = 16, size: int = 112) -> dict:
    """C3D parameters for clips of ``frames`` x ``size`` x ``size`` RGB frames."""
    gen = Params(seed)
    convs, cin = [], 3
    for widths in GROUPS:
        group = []
        for cout in widths:
            group.append(conv3d_params(gen, (3, 3, 3), cin, cout))
            cin = cout
        convs.append(group)
    t, h, w = _pooled_shape(frames, size)
    dims = (t * h * w * cin, *FC, NUM_CLASSES)
    fcs = [dense_params(gen, d_in, d_out) for d_in, d_out in zip(dims[:-1], dims[1:])]
    return {"convs": convs, "fc": fcs}


def c3d(params: dict, clip: jax.Array) -> jax.Array:
    """Runs C3D on an NDHWC clip ``(batch, frames, height, width, 3)``; returns logits."""
    x = clip
    for group, window in zip(params["convs"], POOLS):
        for p in group:
            x = jax.nn.relu(conv3d(p, x))
        x = max_pool3d(x, window, window)
    x = x.reshape(x.shape[0], -1)
    *hidden, last = params["fc"]
    for p in hidden:
        x = jax.nn.relu(dense(p, x))
    return dense(last, x)


def example(frames: int = 16, size: int = 56, batch: int = 1) -> tuple[Callable, tuple]:
    """``(c3d, (params, clip))`` for one seeded ``frames`` x ``size`` x ``size`` clip."""
    params = init_params(0, frames, size)
    clip = Params(1).normal((batch, frames, size, size, 3), 1.0)
    return c3d, (params, clip)
