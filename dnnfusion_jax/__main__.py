"""``python -m dnnfusion_jax``: see ``dnnfusion_jax.cli``."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
