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

import dataclasses

import numpy as np

from winit_jax.parity.report import NOISE_FACTOR, Check, Outcome


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


# A parameter whose float64 gradient is below this times the model's largest is zero in
# exact arithmetic (rounding leaves ~1e-16..1e-14 of the terms summed; real gradients that
# small are not seen in practice): 100x above the noise, far below any signal.
ZERO_GRADIENT = 1e-12


def _nonzero(float64_grads: dict) -> tuple[float, dict]:
    """(the model's largest float64 gradient entry, ``{tensor: mask}`` of the entries above
    ``ZERO_GRADIENT`` times it: not zero in exact arithmetic), for the non-empty tensors."""
    top = max((float(np.max(np.abs(g))) for g in float64_grads.values() if np.size(g)),
              default=0.0)
    return top, {k: np.abs(g) > ZERO_GRADIENT * top for k, g in float64_grads.items()
                 if np.size(g)}


def exact_zeros(float64_grads: dict) -> dict[str, str]:
    """``{tensor: how it was measured}`` for the gradients that are zero in exact arithmetic
    (a conv bias before a BatchNorm, attention key biases): the largest entry of the float64
    gradient below ``ZERO_GRADIENT`` times the model's largest."""
    top, nonzero = _nonzero(float64_grads)
    largest = {k: np.max(np.abs(float64_grads[k])) for k in nonzero}
    return {k: f"float64 gradient {g:.1e} vs the model's largest {top:.1e}"
            for k, g in largest.items() if top > 0 and g <= ZERO_GRADIENT * top}


def moving_entries(float64_grads: dict) -> dict:
    """``{tensor: mask}`` of the entries whose float64 gradient is not zero in exact
    arithmetic, for the tensors where only some are (a packed in-projection's key-bias
    third)."""
    _, nonzero = _nonzero(float64_grads)
    return {k: m for k, m in nonzero.items() if m.any() and not m.all()}


def judge(gap: float, tol: float) -> Outcome:
    """Passed when ``gap <= tol``, else failed (a NaN gap fails)."""
    return Outcome.PASSED if gap <= tol else Outcome.FAILED


def compared(part: str, name: str, gap: float, tol: float, how: str) -> Check:
    """A gap check, judged."""
    return Check(part, name, judge(gap, tol), tol, gap=gap, how=how)


def demoted(check: Check, outcome: Outcome, why: str) -> Check:
    """``check`` marked inconclusive or not tested, ``why`` added to how it was measured."""
    return dataclasses.replace(check, outcome=outcome,
                               how=f"{check.how}; {why}" if check.how else why)


__all__ = ["ZERO_GRADIENT", "compared", "demoted", "exact_zeros", "judge", "measured",
           "moving_entries", "rounding_dominates"]
