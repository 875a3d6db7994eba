"""MobileNetV1-SSD (Howard et al., 2017; Liu et al., 2016) object detector, in plain JAX.

Backbone: MobileNetV1 at width 1.0, a 3x3 stride-2 stem and 13 depthwise-separable blocks
(3x3 depthwise + 1x1 pointwise, each with inference batch norm and ReLU6). SSD takes the
19x19x512 map of block 11 and the 10x10x1024 map of block 13, and four extra feature
layers (1x1 reduce + 3x3 stride-2, batch norm, ReLU6) add 5x5x512, 3x3x256, 2x2x256 and
1x1x128 maps. Each of the six maps gets a 3x3 class head (anchors x 21 VOC classes) and a
3x3 box head (anchors x 4 offsets); 3 anchors per cell on the first map and 6 on the rest,
as in TF's ssd_mobilenet_v1, give 1917 anchors. Input: one 300x300 RGB image (NHWC), SSD300's
own resolution, since a forward pass takes well under the ~2 s budget on two CPU cores.
Outputs: class logits (1, 1917, 21) and box offsets (1, 1917, 4), concatenated over
anchors. Left out: anchor generation, box decoding, softmax and non-maximum suppression.

Example:
    >>> import jax
    >>> fn, args = example()
    >>> [o.shape for o in jax.jit(fn)(*args)]
    [(1, 1917, 21), (1, 1917, 4)]
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from .layers import Params, conv2d, conv_bn_act, conv_bn_params, conv_params

NUM_CLASSES = 21
BACKBONE = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
            (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
"""(pointwise output channels, depthwise stride) of the 13 depthwise-separable blocks."""
EXTRAS = ((256, 512), (128, 256), (128, 256), (64, 128))
"""(1x1 reduce channels, 3x3 stride-2 output channels) of the SSD extra feature layers."""
ANCHORS = (3, 6, 6, 6, 6, 6)
"""Anchors per cell on each of the six feature maps."""


def init_params(seed: int = 0) -> dict:
    """MobileNetV1-SSD parameters as a nested dict pytree from ``Params(seed)``."""
    gen = Params(seed)
    blocks, cin = [], 32
    for cout, _ in BACKBONE:
        blocks.append({"dw": conv_bn_params(gen, 3, 3, cin, cin, groups=cin),
                       "pw": conv_bn_params(gen, 1, 1, cin, cout)})
        cin = cout
    extras = []
    for mid, cout in EXTRAS:
        extras.append({"reduce": conv_bn_params(gen, 1, 1, cin, mid),
                       "conv": conv_bn_params(gen, 3, 3, mid, cout)})
        cin = cout
    map_channels = (512, 1024) + tuple(cout for _, cout in EXTRAS)
    heads = [{"cls": conv_params(gen, 3, 3, c, a * NUM_CLASSES, bias=True),
              "box": conv_params(gen, 3, 3, c, a * 4, bias=True)}
             for c, a in zip(map_channels, ANCHORS)]
    return {"stem": conv_bn_params(gen, 3, 3, 3, 32), "blocks": blocks, "extras": extras,
            "heads": heads}


def _relu6(x: jax.Array) -> jax.Array:
    """min(max(x, 0), 6), MobileNet's activation."""
    return jnp.clip(x, 0.0, 6.0)


def feature_maps(params: dict, images: jax.Array) -> list[jax.Array]:
    """The six SSD feature maps: blocks 11 and 13 of MobileNetV1, then the four extras."""
    x = conv_bn_act(params["stem"], images, stride=2, act=_relu6)
    maps = []
    for i, (p, (_, stride)) in enumerate(zip(params["blocks"], BACKBONE)):
        x = conv_bn_act(p["dw"], x, stride, groups=x.shape[-1], act=_relu6)
        x = conv_bn_act(p["pw"], x, act=_relu6)
        if i in (10, 12):
            maps.append(x)
    for p in params["extras"]:
        x = conv_bn_act(p["reduce"], x, act=_relu6)
        x = conv_bn_act(p["conv"], x, stride=2, act=_relu6)
        maps.append(x)
    return maps


def mobilenet_v1_ssd(params: dict, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Class logits (N, anchors, 21) and box offsets (N, anchors, 4) for NHWC images."""
    classes, boxes = [], []
    for p, x in zip(params["heads"], feature_maps(params, images)):
        n = x.shape[0]
        classes.append(conv2d(p["cls"], x).reshape(n, -1, NUM_CLASSES))
        boxes.append(conv2d(p["box"], x).reshape(n, -1, 4))
    return jnp.concatenate(classes, axis=1), jnp.concatenate(boxes, axis=1)


def example(resolution: int = 300, batch: int = 1) -> tuple[Callable, tuple]:
    """``(mobilenet_v1_ssd, (params, images))`` at 300x300, batch 1, seed 0."""
    images = Params(1).normal((batch, resolution, resolution, 3), 1.0)
    return mobilenet_v1_ssd, (init_params(0), images)
