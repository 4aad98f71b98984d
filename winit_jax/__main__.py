"""``python -m winit_jax``: the ``winit-jax`` command (``winit_jax.lab.cli``)."""

import sys

from winit_jax.lab.cli import main

sys.exit(main())
