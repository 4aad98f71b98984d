"""Moved: the ported examples are the lab's, ``winit_jax.lab.examples`` (``pip install
'winit-jax[lab]'``); ``nhwc`` and ``nchw`` are ``winit_jax.parity.nhwc`` / ``nchw``."""

raise ImportError("winit_jax.parity.examples moved: the ported examples are "
                  "winit_jax.lab.examples (the lab extra); nhwc and nchw are "
                  "winit_jax.parity.nhwc and winit_jax.parity.nchw")
