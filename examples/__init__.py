"""The model zoo: the 15 models of the DNNFusion paper in plain JAX, plus shared layers.

Each module defines ``example() -> (fn, args)`` with seeded random weights (nothing is
downloaded). ``ZOO`` lists them in the paper's order; ``python -m dnnfusion_jax compare
examples`` runs them all. Load one with ``dnnfusion_jax.tools.targets.load_target``:

    >>> from dnnfusion_jax.tools.targets import load_target
    >>> fn, args, name = load_target("examples/bert.py:example_small")
    >>> name
    'bert:example_small'
"""

ZOO = (
    "efficientnet_b0", "vgg16", "mobilenet_v1_ssd", "yolo_v4", "c3d", "s3d", "unet",
    "faster_rcnn", "mask_rcnn", "tinybert", "distilbert", "albert", "bert", "mobilebert",
    "gpt2",
)
"""Zoo module names, in the order of the paper's Table 5."""
