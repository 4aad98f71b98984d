"""The one tolerance rule of ``check``: a gap may be ``NOISE_FACTOR`` times torch's own
float32-vs-float64 gap on the same computation (the noise), never below a floor.

Examples:
  >>> measured(noise=1e-6, floor=1e-5)
  1e-05
  >>> measured(noise=1e-5, floor=1e-6)
  0.0001
  >>> rounding_dominates(noise=1e-5, floor=1e-6)
  True
"""

from __future__ import annotations

from winit_jax.parity.report import NOISE_FACTOR


def measured(noise: float, floor: float) -> float:
    """The tolerance of a gap: ``max(floor, NOISE_FACTOR * noise)``.

    Args:
      noise: torch's own gap between its float32 run and its float64 one (0 in float64).
      floor: the smallest tolerance for this part (``TOLERANCES``, a layer floor).

    Returns:
      The tolerance.
    """
    return max(floor, NOISE_FACTOR * noise)


def rounding_dominates(noise: float, floor: float) -> bool:
    """Whether the tolerance comes from float32 rounding (the noise) rather than the floor."""
    return NOISE_FACTOR * noise > floor


__all__ = ["measured", "rounding_dominates"]
