"""EfficientNet-B0 (Tan & Le, 2019) for ImageNet classification, in plain JAX.

The network is the B0 baseline: a 3x3 stride-2 stem (32 channels), the 16 MBConv blocks of
the seven stages below (1x1 expansion, depthwise k x k convolution, squeeze-and-excitation
with a quarter of the block's input channels, 1x1 linear projection, identity skip when the
stride is 1 and the widths match), a 1x1 head to 1280 channels, global average pooling and
a 1000-way classifier. Every convolution is followed by inference-mode batch norm
(eps 1e-3) and, except the projections, swish. Input: one 224x224 RGB image (NHWC), the
resolution B0 was designed for; a forward pass takes well under a second on two CPU cores,
so nothing is scaled down. Left out: dropout and stochastic depth (identity at inference).
Parameters come from the seeded ``Params``; outputs are logits of shape (1, 1000).

Example:
    >>> import jax
    >>> fn, args = example()
    >>> jax.jit(fn)(*args).shape
    (1, 1000)
"""
from __future__ import annotations

from collections.abc import Callable

import jax

from .layers import (Params, batch_norm, conv2d, conv_bn_params, dense, dense_params,
                     global_avg_pool)

BN_EPS = 1e-3
STAGES = (  # (expansion, kernel, stride, output channels, repeats)
    (1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1),
)
"""B0's stages; the first block of each stage has the stage's stride."""


def _block_configs() -> list[tuple[int, int, int, int, int]]:
    """(expansion, kernel, stride, in channels, out channels) for each of the 16 blocks."""
    configs, cin = [], 32
    for expand, kernel, stride, cout, repeats in STAGES:
        for i in range(repeats):
            configs.append((expand, kernel, stride if i == 0 else 1, cin, cout))
            cin = cout
    return configs


BLOCKS = tuple(_block_configs())


def init_params(seed: int = 0, num_classes: int = 1000) -> dict:
    """EfficientNet-B0 parameters as a nested dict pytree from ``Params(seed)``."""
    gen = Params(seed)
    blocks = []
    for expand, kernel, _, cin, cout in BLOCKS:
        mid, squeezed = cin * expand, max(1, cin // 4)
        block = {} if expand == 1 else {"expand": conv_bn_params(gen, 1, 1, cin, mid)}
        block["depthwise"] = conv_bn_params(gen, kernel, kernel, mid, mid, groups=mid)
        block["se_reduce"] = dense_params(gen, mid, squeezed)
        block["se_expand"] = dense_params(gen, squeezed, mid)
        block["project"] = conv_bn_params(gen, 1, 1, mid, cout)
        blocks.append(block)
    return {"stem": conv_bn_params(gen, 3, 3, 3, 32), "blocks": blocks,
            "head": conv_bn_params(gen, 1, 1, 320, 1280),
            "classifier": dense_params(gen, 1280, num_classes)}


def _conv_bn(p: dict, x: jax.Array, stride: int = 1, groups: int = 1,
             act: Callable | None = jax.nn.swish) -> jax.Array:
    """Convolution, batch norm with EfficientNet's epsilon, then swish (or ``act``)."""
    y = batch_norm(p["bn"], conv2d(p["conv"], x, stride, "SAME", groups), BN_EPS)
    return act(y) if act is not None else y


def squeeze_excite(p: dict, x: jax.Array) -> jax.Array:
    """Channel attention: pool, reduce + swish, expand + sigmoid, rescale ``x``."""
    s = jax.nn.swish(dense(p["se_reduce"], global_avg_pool(x)))
    return x * jax.nn.sigmoid(dense(p["se_expand"], s))[:, None, None, :]


def mbconv(p: dict, x: jax.Array, config: tuple[int, int, int, int, int]) -> jax.Array:
    """One MBConv block: expand, depthwise, squeeze-excite, project, identity skip."""
    expand, _, stride, cin, cout = config
    h = _conv_bn(p["expand"], x) if expand != 1 else x
    h = _conv_bn(p["depthwise"], h, stride, groups=h.shape[-1])
    h = _conv_bn(p["project"], squeeze_excite(p, h), act=None)
    return x + h if stride == 1 and cin == cout else h


def efficientnet_b0(params: dict, images: jax.Array) -> jax.Array:
    """Logits (N, classes) for NHWC float images (N, H, W, 3)."""
    x = _conv_bn(params["stem"], images, stride=2)
    for p, config in zip(params["blocks"], BLOCKS):
        x = mbconv(p, x, config)
    x = _conv_bn(params["head"], x)
    return dense(params["classifier"], global_avg_pool(x))


def example(resolution: int = 224, batch: int = 1) -> tuple[Callable, tuple]:
    """``(efficientnet_b0, (params, images))`` at 224x224, batch 1, seed 0."""
    images = Params(1).normal((batch, resolution, resolution, 3), 1.0)
    return efficientnet_b0, (init_params(0), images)
