"""PyTorch reference for winit_jax: the two notebooks' code, kept close to line for line.

Needs the ``torch`` extra (``pip install winit-jax[torch]``).
"""
