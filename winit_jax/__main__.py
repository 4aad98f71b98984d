import sys

from winit_jax.cli import main

sys.exit(main())
