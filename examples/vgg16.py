"""VGG-16 (Simonyan & Zisserman, 2015; configuration D) for ImageNet classification, in JAX.

Thirteen 3x3 convolutions with bias and ReLU in five stages of 64-128-256-512-512 channels,
each stage ending in a 2x2 stride-2 max pool, then the classifier: flatten, FC 4096 + ReLU,
FC 4096 + ReLU, FC 1000 (logits). Input: one RGB image of 224x224 (NHWC), VGG's own
resolution, so the first FC layer has its real 7*7*512 = 25088 inputs and the model its
real 138M parameters; a forward pass (about 31 GFLOP) stays under the ~2 s budget on two
CPU cores. ``example(resolution=112)`` gives a 4x cheaper variant (first FC then takes
3*3*512 inputs). Left out: dropout (identity at inference) and softmax. Parameters come
from the seeded ``Params`` (numpy), so building them takes about a second.

Example:
    >>> import jax
    >>> fn, args = example(resolution=64)
    >>> jax.jit(fn)(*args).shape
    (1, 1000)
"""
from __future__ import annotations

from collections.abc import Callable

import jax

from .layers import Params, conv2d, conv_params, dense, dense_params, max_pool

STAGES = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
"""(channels, number of 3x3 convolutions) per stage: configuration D."""


def init_params(seed: int = 0, resolution: int = 224, num_classes: int = 1000) -> dict:
    """VGG-16 parameters as a nested dict pytree; the first FC layer depends on resolution."""
    gen = Params(seed)
    convs, cin = [], 3
    for channels, repeats in STAGES:
        for _ in range(repeats):
            convs.append(conv_params(gen, 3, 3, cin, channels, bias=True))
            cin = channels
    side = resolution // 2 ** len(STAGES)
    return {"convs": convs,
            "fc1": dense_params(gen, side * side * cin, 4096),
            "fc2": dense_params(gen, 4096, 4096),
            "fc3": dense_params(gen, 4096, num_classes)}


def vgg16(params: dict, images: jax.Array) -> jax.Array:
    """Logits (N, classes) for NHWC float images (N, H, W, 3)."""
    x, convs = images, iter(params["convs"])
    for _, repeats in STAGES:
        for _ in range(repeats):
            x = jax.nn.relu(conv2d(next(convs), x))
        x = max_pool(x, 2, 2)
    x = x.reshape(x.shape[0], -1)
    x = jax.nn.relu(dense(params["fc1"], x))
    x = jax.nn.relu(dense(params["fc2"], x))
    return dense(params["fc3"], x)


def example(resolution: int = 224, batch: int = 1) -> tuple[Callable, tuple]:
    """``(vgg16, (params, images))`` at ``resolution`` (default 224), batch 1, seed 0."""
    images = Params(1).normal((batch, resolution, resolution, 3), 1.0)
    return vgg16, (init_params(0, resolution), images)
