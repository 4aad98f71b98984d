"""The twin of ``winit_jax.activations`` and of the exact-gain depth study, in torch.

Its own Gauss-Hermite rule (the physicists' nodes of ``numpy.polynomial.hermite``,
changed to the unit normal: z = sqrt(2) x, weights / sqrt(pi)), not the library's
probabilists' rule, on ``torch.nn.functional``'s activations in float64: the two
frameworks' gains then agree only if both integrate correctly.
"""

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from numpy.polynomial.hermite import hermgauss

NODES = 200
LEAKY_SLOPE = 0.01  # torch.nn.LeakyReLU's default

# The library's activation names -> torch's functions.
ACTIVATIONS = {
    "identity": lambda x: x,
    "relu": F.relu,
    "leaky_relu": functools.partial(F.leaky_relu, negative_slope=LEAKY_SLOPE),
    "elu": F.elu,
    "selu": F.selu,
    "tanh": torch.tanh,
    "gelu": F.gelu,  # the erf form (torch's default)
    "silu": F.silu,
    "mish": F.mish,
}
# The library's names -> the arguments of torch.nn.init.calculate_gain (no entry: torch has none).
CALCULATE_GAIN_ARGS = {"identity": ("linear",), "relu": ("relu",), "tanh": ("tanh",),
                       "selu": ("selu",), "leaky_relu": ("leaky_relu", LEAKY_SLOPE)}
HE_GAIN_SQ = 2.0  # He et al. 2015: Var[w] = 2 / fan_in


def activation(name):
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; the twin knows {', '.join(ACTIVATIONS)}"
                         ) from None


def calculate_gain(name):
    """``torch.nn.init.calculate_gain`` for a library activation name; None where torch has no
    entry (it raises for GELU, SiLU, Mish, ELU)."""
    args = CALCULATE_GAIN_ARGS.get(name)
    return None if args is None else torch.nn.init.calculate_gain(*args)


@functools.lru_cache(maxsize=4)
def _rule(nodes):
    x, w = hermgauss(nodes)  # weight exp(-x^2)
    return math.sqrt(2.0) * x, w / math.sqrt(math.pi)


def second_moment(fn, q: float = 1.0, *, nodes: int = NODES) -> float:
    """E[f(sqrt(q) z)^2], z ~ N(0, 1), for a registered name or a torch function."""
    fn = activation(fn) if isinstance(fn, str) else fn
    z, w = _rule(nodes)
    with torch.no_grad():
        fx = fn(torch.from_numpy(math.sqrt(q) * z)).numpy()
    return float(np.sum(w * fx * fx))


def gain(name, **kwargs) -> float:
    """1 / sqrt(E[f(z)^2]), as ``winit_jax.activations.gain``."""
    return 1.0 / math.sqrt(second_moment(name, **kwargs))


def gain_sq(name, which: str) -> float:
    """n Var[w] for ``which`` "exact" (1 / E[f(z)^2]) or "he" (2)."""
    return 1.0 / second_moment(name) if which == "exact" else HE_GAIN_SQ


@torch.no_grad()
def seeded_sweep(configs, z, seeds, *, depth):
    """The twin of ``winit_jax.lab.gain_depth.seeded_sweep``: ``configs`` lists
    (activation, "exact" | "he"); per seed one ``torch.randn`` matrix per layer, shared by
    every net; moments in float64. Returns log Var and log E[y^2], (seeds, configs, depth)."""
    fns = [activation(a) for a, _ in configs]
    width = z.shape[1]
    scale = torch.tensor([math.sqrt(gain_sq(a, g) / width) for a, g in configs])[:, None, None]
    log_var = np.empty((len(seeds), len(configs), depth))
    log_sq = np.empty_like(log_var)
    for i, seed in enumerate(seeds):
        torch.manual_seed(seed)
        y = torch.from_numpy(z).expand(len(configs), *z.shape)
        for layer in range(depth):
            w = torch.randn(width, width)
            h = torch.stack([f(yc) for f, yc in zip(fns, y)])
            y = (h @ w) * scale
            yd = y.double().flatten(1)
            log_var[i, :, layer] = torch.log(yd.var(dim=1, unbiased=False)).numpy()
            log_sq[i, :, layer] = torch.log((yd * yd).mean(dim=1)).numpy()
    return log_var, log_sq
