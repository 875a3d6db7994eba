"""``python -m dnnfusion_jax``: see ``dnnfusion_jax.tools.cli``."""
import sys

from dnnfusion_jax.tools.cli import main

if __name__ == "__main__":
    sys.exit(main())
