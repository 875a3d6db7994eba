"""Mask R-CNN (ResNet-50-FPN) inference in plain JAX, with seeded random weights.

Mask R-CNN is Faster R-CNN (``examples/faster_rcnn.py``: ResNet-50 3-4-6-3 with inference
batch norm, FPN P2-P6, RPN with 3 anchors per location, multi-level RoIAlign, box head with
two FC-1024 layers and 81-way class / 81x4 box outputs) plus a mask branch, as in
Detectron2's ``mask_rcnn_R_50_FPN``: the detections' boxes are RoIAligned at 14x14 from
P2-P5 (level chosen by box size), then go through four 3x3 conv-256 + ReLU layers, a 2x2
stride-2 transposed conv-256 + ReLU and a 1x1 conv to 81 mask logits of 28x28; each
detection keeps the mask of its class, through a sigmoid.

Static-shape simplifications, so that everything is one ``jax.jit`` function:

* input is one 320x320 RGB image (batch 1), already normalised; the real model uses ~800 px
  (at 320 px no box is large enough for RoIAlign level P5);
* proposals: the 20 top-objectness anchors of each of the five RPN levels (100 in all,
  ``lax.top_k``), with NO non-maximum suppression;
* detections: the ``NUM_DETECTIONS`` = 32 highest (proposal, foreground class) scores
  (``lax.top_k`` over 100 x 80 softmax probabilities) with their class-specific boxes; this
  replaces Detectron2's score threshold + per-class NMS + top-100; the mask head runs on
  these 32 (not 100, to keep the forward under ~2 s on two CPU cores);
* masks are returned as 28x28 probabilities per detection, not pasted into the image;
  anchor matching, sampling and the training losses are left out.

Example:
    >>> import jax
    >>> fn, args = example()
    >>> boxes, scores, classes, masks = jax.jit(fn)(*args)
    >>> boxes.shape, scores.shape, classes.shape, masks.shape
    ((32, 4), (32,), (32,), (32, 28, 28))
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from .faster_rcnn import (FPN_DIM, IMAGE_SIZE, NUM_CLASSES, box_head, features,
                          init_params as faster_rcnn_params, roi_align, rpn_proposals)
from .layers import Params, conv2d, conv_params

NUM_DETECTIONS = 32
MASK_CONVS = 4


def mask_head_params(gen: Params) -> dict:
    """Four 3x3 conv-256 layers, a 2x2 transposed conv-256 and the 1x1 mask predictor."""
    return {"convs": [conv_params(gen, 3, 3, FPN_DIM, FPN_DIM, bias=True)
                      for _ in range(MASK_CONVS)],
            "upsample": conv_params(gen, 2, 2, FPN_DIM, FPN_DIM, bias=True),
            "predictor": {"w": gen.normal((1, 1, FPN_DIM, NUM_CLASSES), 0.001),
                          "b": jnp.zeros((NUM_CLASSES,), jnp.float32)}}


def init_params(gen: Params) -> dict:
    """Faster R-CNN parameters plus ``mask_head``, as a nested dict."""
    return {**faster_rcnn_params(gen), "mask_head": mask_head_params(gen)}


def select_detections(probs: jax.Array, boxes: jax.Array, k: int = NUM_DETECTIONS):
    """The ``k`` best (proposal, foreground class) pairs: boxes (k, 4), scores, classes."""
    fg = probs[:, 1:].reshape(-1)
    ramp = jnp.arange(fg.shape[0], dtype=jnp.float32) * -1e-9  # no exact ties
    _, top = lax.top_k(fg + ramp, k)  # replaces score threshold + per-class NMS
    roi, cls = top // (NUM_CLASSES - 1), top % (NUM_CLASSES - 1) + 1
    return boxes[roi, cls], fg[top], cls


def mask_head(p: dict, pyramid: list[jax.Array], boxes: jax.Array,
              classes: jax.Array) -> jax.Array:
    """RoIAlign 14x14, the mask convs, and each box's class mask: (k, 28, 28) probabilities."""
    x = roi_align(pyramid, boxes, 14)
    for conv in p["convs"]:
        x = jax.nn.relu(conv2d(conv, x))
    x = lax.conv_transpose(x, p["upsample"]["w"], (2, 2), "VALID",
                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
    logits = conv2d(p["predictor"], jax.nn.relu(x + p["upsample"]["b"]))  # (k, 28, 28, 81)
    picked = jnp.take_along_axis(logits, classes[:, None, None, None], axis=-1)[..., 0]
    return jax.nn.sigmoid(picked)


def mask_rcnn(params: dict, image: jax.Array):
    """Mask R-CNN on a (1, H, W, 3) image: boxes (k, 4), scores, classes, masks (k, 28, 28)."""
    pyramid = features(params, image)
    proposals = rpn_proposals(params["rpn"], pyramid)
    probs, class_boxes = box_head(params["box_head"], pyramid, proposals)
    boxes, scores, classes = select_detections(probs, class_boxes)
    return boxes, scores, classes, mask_head(params["mask_head"], pyramid, boxes, classes)


def example() -> tuple[Callable, tuple]:
    """``(mask_rcnn, (params, image))``: seed-0 weights, a seed-1 320x320 random image."""
    image = Params(1).normal((1, IMAGE_SIZE, IMAGE_SIZE, 3), 1.0)
    return mask_rcnn, (init_params(Params(0)), image)
