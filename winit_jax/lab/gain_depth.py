"""Exact gains through depth: unit-variance nets for any activation, next to He's ReLU gain.

A net of ``depth`` layers of ``width`` units, zero biases, Gaussian weights with
``Var[w] = g^2 / width``, on inputs z ~ N(0, 1) that it treats as layer 0's
pre-activations (so y^1 = f(z) W^1, and every layer sees the same kind of input).
``g^2`` is the exact ``1 / E[f(z)^2]`` or He's 2. Each seed draws one N(0, 1) matrix
per layer and every (activation, gain) net scales the same draw, so the nets differ only
in what is being compared. The infinite-width theory is ``activations.variance_map``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from winit_jax import activations as A
from winit_jax.lab import stats as S

GAINS = {"exact": "1 / E[f(z)^2]", "he": "2 (He's ReLU gain)"}


@dataclasses.dataclass(frozen=True)
class GainRow:
    """One (activation, gain, framework) of the exact-gain depth study (lists over layers)."""

    activation: str
    gain: str          # "exact" or "he"
    gain_sq: float     # n Var[w]
    seeds: int
    width: int
    map_slope: float   # of the exact gain's variance map at q = 1
    mean_var: list     # mean over seeds of Var[y^l]
    p10: list
    p90: list
    theory: list       # the infinite-width map
    framework: str = ""

    def worst_factor(self) -> float:
        """max over layers of max(v, 1/v) for the mean variance v: 1 is perfect."""
        v = np.asarray(self.mean_var)
        return float(np.max(np.maximum(v, 1 / v)))


def gain_sq(activation: str, gain: str) -> float:
    """n Var[w] for ``gain`` "exact" or "he"."""
    if gain not in GAINS:
        raise ValueError(f"gain must be one of {', '.join(GAINS)}, got {gain!r}")
    return 1.0 / A.second_moment(activation) if gain == "exact" else 2.0


def configs(activations: Sequence[str]) -> list[tuple[str, str]]:
    return [(a, g) for a in activations for g in GAINS]


def inputs(rows: int, width: int) -> np.ndarray:
    """The fixed N(0, 1) inputs both frameworks use (NumPy seed 0)."""
    return np.random.default_rng(0).standard_normal((rows, width)).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("activations", "depth", "chunk"))
def _jax_sweep(keys, z, *, activations, depth, chunk):
    cfgs = configs(activations)
    fns = [A.get_activation(a).jax_fn for a, _ in cfgs]
    scale = jnp.asarray([math.sqrt(gain_sq(a, g) / z.shape[1]) for a, g in cfgs], z.dtype)

    def one_seed(key):
        def layer(y, k):
            h = jnp.stack([f(yc) for f, yc in zip(fns, y)])        # (configs, rows, width)
            w = jax.random.normal(k, (z.shape[1], z.shape[1]), z.dtype)
            y = (h @ w) * scale[:, None, None]
            _, log_var, log_sq = jax.vmap(S._moments)(y)
            return y, (log_var, log_sq)

        y0 = jnp.broadcast_to(z, (len(cfgs),) + z.shape)
        _, (log_var, log_sq) = jax.lax.scan(layer, y0, jax.random.split(key, depth))
        return log_var.T, log_sq.T                                 # (configs, depth)

    return jax.lax.map(one_seed, keys, batch_size=chunk)


def seeded_sweep(framework: str, activations: Sequence[str], seeds: Sequence[int], *,
                 width: int = 512, depth: int = 50, rows: int = 64, chunk: int = 4):
    """log Var[y^l] and log E[(y^l)^2], arrays (seeds, configs, depth), for every
    (activation, gain) of ``configs(activations)``; seed ``s`` is ``key(s)`` in JAX and
    ``torch.manual_seed(s)`` in torch."""
    activations = tuple(A.get_activation(a).name for a in activations)
    z = inputs(rows, width)
    if framework == "jax":
        keys = jnp.stack([jax.random.key(s) for s in seeds])
        log_var, log_sq = _jax_sweep(keys, jnp.asarray(z), activations=activations,
                                     depth=depth, chunk=chunk)
        return np.asarray(log_var, np.float64), np.asarray(log_sq, np.float64)
    if framework == "torch":
        from reference_torch.gain import seeded_sweep as torch_sweep
        return torch_sweep(configs(activations), z, seeds, depth=depth)
    raise ValueError(f"framework must be 'jax' or 'torch', got {framework!r}")


def summarise(log_var: np.ndarray, activations: Sequence[str], *, width: int) -> list[GainRow]:
    """Per (activation, gain): mean over seeds of Var[y^l] per layer, the 10-90 % range,
    the infinite-width prediction, and the exact gain's map slope (stability)."""
    out = []
    depth = log_var.shape[-1]
    for c, (act, gain) in enumerate(configs(activations)):
        v = np.exp(log_var[:, c, :])
        g2 = gain_sq(act, gain)
        out.append(GainRow(
            activation=act, gain=gain, gain_sq=g2, seeds=int(v.shape[0]), width=width,
            map_slope=A.map_slope(act), mean_var=np.mean(v, axis=0).tolist(),
            p10=np.percentile(v, 10, axis=0).tolist(), p90=np.percentile(v, 90, axis=0).tolist(),
            theory=A.variance_map(act, g2, 1.0, depth).tolist()))
    return out


def run(activations: Sequence[str], frameworks: Sequence[str], *, seeds: int = 32,
        width: int = 512, depth: int = 50, rows: int = 64, on_step=None) -> list[GainRow]:
    """``summarise`` of every framework, each row with its ``framework``."""
    rows_out = []
    for framework in frameworks:
        log_var, _ = seeded_sweep(framework, activations, range(seeds), width=width,
                                  depth=depth, rows=rows)
        rows_out += [dataclasses.replace(r, framework=framework)
                     for r in summarise(log_var, activations, width=width)]
        if on_step is not None:
            on_step(f"gain sweep {framework}")
    return rows_out


def noise_horizon(map_slope: float, width: int, *, max_log_std: float = 0.5) -> int:
    """Layers for which finite-width noise should leave the exact gain near q = 1.

    Each layer's E[y^2] over ``width`` Gaussian units carries a relative error of about
    sqrt(2 / width); near the fixed point a deviation d of log q becomes ``map_slope * d``
    in the next layer. So after l layers the log deviation has a std of about
    sqrt(2 / width * sum_{k<l} slope^(2k)). Returns the last l where that is <= ``max_log_std``
    (0.5: a factor 1.65) -- all layers up to 10,000 when the slope is <= 1 and the sum stays small.
    """
    total, layer = 0.0, 0
    while layer < 10_000:
        total += map_slope ** (2 * layer)
        if math.sqrt(2 / width * total) > max_log_std:
            break
        layer += 1
    return layer


def exact_and_he(rows: list[GainRow]):
    """Yields (exact, he) row pairs of the same activation and framework, in ``rows``' order."""
    by = {(r.activation, r.framework, r.gain): r for r in rows}
    for (act, fw, gain), r in by.items():
        if gain == "exact":
            yield r, by.get((act, fw, "he"))
