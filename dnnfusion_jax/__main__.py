"""``python -m dnnfusion_jax``: see ``dnnfusion_jax.cli``."""
import sys

from .cli import main

sys.exit(main())
