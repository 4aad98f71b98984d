"""The variance experiments: a depth sweep over seeds, and notebook B's one layer.

``stats_over_seeds`` gives ``LayerStats`` with arrays of shape (seeds, layers) for a
scheme and a framework: the JAX side initialises and runs every seed in one
jitted, vmapped program; the torch side loops over ``torch.manual_seed``.
``summarise_depth`` and ``notebook_b`` turn them into the numbers the CLI,
the report and the tests read.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from winit_jax.lab import stats as S
from winit_jax.models import MLP, NOTEBOOK_A_SIZES, NOTEBOOK_B_SIZES
from winit_jax.schemes import SCHEMES, get_scheme

# For y ~ N(0, s^2): E[relu(y)] = s / sqrt(2 pi), Var[relu(y)] = s^2 (1/2 - 1/(2 pi)).
RELU_MEAN = 1 / math.sqrt(2 * math.pi)             # 0.399
RELU_STD = math.sqrt(0.5 - 1 / (2 * math.pi))      # 0.584
# Notebook B's printed single-seed values, shown beside ours (never asserted).
NOTEBOOK_B_PRINTS = {"standard_normal": {"std": 26.19},
                     "lecun_normal": {"std": 0.998, "relu_mean": 0.41, "relu_std": 0.59}}


@dataclasses.dataclass(frozen=True)
class DepthSummary:
    """One (scheme, framework) of the depth sweep, per layer (lists over layers; None where a
    seed's float32 activations over- or underflowed)."""

    scheme: str
    seeds: int
    layers: int
    width: int
    log10_var_median: list
    log10_var_p10: list
    log10_var_p90: list
    log_var_std: list
    ratio_mean: list      # measured / one-step predicted E[y^2], mean over seeds
    ratio_se: list
    theory_log10_var: list  # the chained closed form from the data alone
    overflow: list
    underflow: list
    framework: str = ""

    def first_fault(self) -> str:
        """'overflow from layer 36' (1-based), or '' when every layer is finite."""
        for kind in ("overflow", "underflow"):
            flags = getattr(self, kind)
            if any(flags):
                return f"{kind} from layer {flags.index(True) + 1}"
        return ""

    def worst_ratio(self) -> float | None:
        """The finite layer's measured / one-step ratio farthest from 1, or None."""
        ratios = [r for r in self.ratio_mean if r is not None]
        return max(ratios, key=lambda r: abs(r - 1)) if ratios else None


@dataclasses.dataclass(frozen=True)
class Moment:
    """A measured quantity over seeds against its closed form."""

    mean: float
    spread: float          # seed-to-seed standard deviation
    exact: float
    bias: float            # mean / exact - 1
    notebook: float | None  # the notebook's single-seed print, shown, never asserted


@dataclasses.dataclass(frozen=True)
class NotebookB:
    """Notebook B's one layer (784-50): std of t = x W, and ReLU(t)'s mean and std."""

    scheme: str
    seeds: int
    input_mean_sq: float
    std: Moment
    relu_mean: Moment
    relu_std: Moment
    framework: str = ""


@dataclasses.dataclass(frozen=True)
class ProductCheck:
    """Notebook A's net end to end: mean E[(y^L)^2] against the product formula."""

    scheme: str
    seeds: int
    first_layer: float
    predicted: float
    output_sq: float
    output_sq_se: float
    output_var: float
    ratio: float
    framework: str = ""


def depth_sizes(n_in: int, width: int, depth: int) -> tuple[int, ...]:
    """A plain MLP of ``depth`` linear layers of ``width`` units on ``n_in`` inputs."""
    return (n_in,) + (width,) * depth


def deep_net_stats(key, x, *, scheme: str | Sequence[str], width: int, depth: int,
                   activation=jax.nn.relu, index=0) -> S.LayerStats:
    """``LayerStats`` of a random ``depth``-layer net of ``width`` units on ``x``.

    The same statistics as ``forward_stats`` of ``MLP(depth_sizes(...))``, but no model
    is ever built: the hidden layers are a ``lax.scan`` whose kernels are drawn inside the
    loop, so it compiles once per layer shape and never holds more than one kernel (50
    layers x 32 seeds would not fit otherwise). ``tests/lab/test_stats.py`` checks it
    equals the model's own forward pass.

    ``scheme`` may be a tuple of schemes, with ``index`` (traced) choosing one: each layer
    then draws through a ``lax.switch`` over the schemes' own initialisers, so one
    compiled program serves all of them (the draws are those of the scheme alone).
    """
    schemes = (scheme,) if isinstance(scheme, str) else tuple(scheme)
    draws = [_layer_draw(get_scheme(name), width) for name in schemes]

    def linear(h, k):
        w, b = jax.lax.switch(index, draws, h, k)  # one branch: called as it is
        return h @ w + b

    first, rest = jax.random.split(key)
    y = linear(x, first)

    def layer(y, k):
        h = activation(y)
        y_next = linear(h, k)
        return y_next, S.layer_row(h, y_next)

    _, rows = jax.lax.scan(layer, y, jax.random.split(rest, depth - 1))
    head = S.layer_row(x, y)
    return S.LayerStats(*(jnp.concatenate([h[None], r]) for h, r in zip(head, rows)))


def _layer_draw(s, width: int):
    """``(h, key) -> (w, b)``: one dense layer of ``width`` units on the input batch ``h``,
    drawn with scheme ``s`` (and calibrated on ``h`` if it is data-dependent)."""
    init = s.jax_init()

    def draw(h, k):
        k_kernel, k_bias = jax.random.split(k)
        w = init(k_kernel, (h.shape[-1], width), h.dtype)
        b = (jnp.zeros((width,), h.dtype) if s.jax_bias_init is None
             else s.jax_bias_init(h.shape[-1])(k_bias, (width,), h.dtype))
        return s.calibrate_layer(h, w, b)  # data-dependent schemes: on this batch
    return draw


def one_at_a_time(scheme: str) -> bool:
    """Whether ``stats_over_seeds`` steps ``scheme``'s nets one at a time (chunk 1).

    XLA CPU (jaxlib 0.10.2) deadlocks -- every thread asleep, no error -- on a batched QR
    of several shapes (orthogonal notebook A nets, >= 3 seeds at a time, inside lax.map).
    One model per step does not: tests/lab/test_stats.py.
    """
    return get_scheme(scheme).distribution == "orthogonal"


def program_group(scheme: str) -> tuple[str, ...]:
    """The registered schemes whose depth sweeps share ``scheme``'s compiled program (a
    ``lax.switch`` over them): those stepped alike (``one_at_a_time``). The draws are bit for
    bit those of a program per scheme, and compiling is most of a sweep's cost on a CPU:
    the 8 schemes of the default sweep took 24.4 s to compile one program each and 3.7 s
    shared, on a 2-core CPU (``python bench/depth_compile.py``, BENCHMARKS.md)."""
    return tuple(n for n in SCHEMES if one_at_a_time(n) == one_at_a_time(scheme))


def _is_deep(sizes) -> bool:
    return len(sizes) > 3 and len(set(sizes[1:])) == 1


@functools.partial(jax.jit, static_argnames=("schemes", "sizes", "chunk"))
def jax_stats(index, keys, x, *, schemes, sizes, chunk):
    if _is_deep(sizes):
        fn = functools.partial(deep_net_stats, x=x, scheme=schemes, index=index,
                               width=sizes[1], depth=len(sizes) - 1)
    else:
        (name,) = schemes
        s = get_scheme(name)
        kwargs = s.mlp_kwargs()

        def fn(key):
            model = MLP(sizes, **kwargs, rngs=nnx.Rngs(params=key))
            s.calibrate(model, x, check=False)
            return S.forward_stats(model, x)
    return jax.lax.map(fn, keys, batch_size=chunk)  # vmap over `chunk` models at a time


def stats_over_seeds(framework: str, scheme: str, x, sizes: Sequence[int], seeds: Sequence[int],
                 *, chunk: int = 8) -> S.LayerStats:
    """Per-seed statistics of fresh ``MLP(sizes)`` nets with ``scheme`` on the batch ``x``.

    Seed ``s`` uses the key ``fold_in(key(s), 0)`` in JAX (as ``train_and_evaluate``)
    and ``torch.manual_seed(s)`` in torch. Returns NumPy arrays of shape (seeds, layers).
    A deep net (equal hidden widths) compiles one program for its ``program_group``.
    """
    sizes = tuple(int(n) for n in sizes)
    if framework == "jax":
        keys = jnp.stack([jax.random.fold_in(jax.random.key(s), 0) for s in seeds])
        chunk = 1 if one_at_a_time(scheme) else chunk
        group = program_group(scheme) if _is_deep(sizes) else (scheme,)
        out = jax_stats(jnp.int32(group.index(scheme)), keys, jnp.asarray(x), schemes=group,
                         sizes=sizes, chunk=chunk)
        return S.LayerStats(*(np.asarray(a) for a in out))
    if framework == "torch":
        from reference_torch.lab.stats import stats_over_seeds as torch_stats
        return S.LayerStats(*torch_stats(scheme, x, sizes, seeds))
    raise ValueError(f"framework must be 'jax' or 'torch', got {framework!r}")


def summarise_depth(st: S.LayerStats, scheme: str, sizes: Sequence[int]) -> DepthSummary:
    """Per layer, over seeds: median and 10-90% range of log10 Var[y], the mean ratio of
    measured to one-step-predicted Var[y], the chained theory, and float32 faults.

    "Var[y]" is the second moment E[y^2], which the closed forms predict; at width 256
    it differs from the population variance by the square of a mean of 256 units.

    Layers where any seed is not OK are left out of the statistics (``None``) and
    counted in ``overflow`` / ``underflow``.
    """
    with np.errstate(invalid="ignore"):  # nan/inf - inf in faulted layers, masked below
        return _summarise(st, scheme, sizes)


def _summarise(st, scheme, sizes):
    ok = np.asarray(st.status) == S.OK
    log_sq = np.asarray(st.pre_log_sq, np.float64)
    log10 = np.where(ok, log_sq, np.nan) / math.log(10)
    pred = S.one_step_prediction(st, scheme, sizes)  # broadcasts over the seed axis
    ratio = np.where(ok, np.exp(log_sq - pred), np.nan)
    all_ok = ok.all(axis=0)

    def per_layer(values):
        return [float(v) if ok_l else None for v, ok_l in zip(values, all_ok)]

    chained = S.chained_prediction(float(np.asarray(st.in_log_sq)[0, 0]), scheme, sizes)
    return DepthSummary(
        scheme=scheme, seeds=int(ok.shape[0]), layers=int(ok.shape[1]), width=int(sizes[1]),
        log10_var_median=per_layer(np.median(log10, axis=0)),
        log10_var_p10=per_layer(np.percentile(log10, 10, axis=0)),
        log10_var_p90=per_layer(np.percentile(log10, 90, axis=0)),
        log_var_std=per_layer(np.std(log10 * math.log(10), axis=0, ddof=1)),
        ratio_mean=per_layer(np.mean(ratio, axis=0)),
        ratio_se=per_layer(np.std(ratio, axis=0, ddof=1) / math.sqrt(ok.shape[0])),
        theory_log10_var=(chained / math.log(10)).tolist(),
        overflow=(np.asarray(st.status) == S.OVERFLOW).any(axis=0).tolist(),
        underflow=(np.asarray(st.status) == S.UNDERFLOW).any(axis=0).tolist())


def notebook_b(st: S.LayerStats, scheme: str) -> NotebookB:
    """Notebook B's one layer (784-50) from seeded stats of ``MLP(NOTEBOOK_B_SIZES)``.

    The closed form: std of t = x W is sqrt(784 Var[w] E[x^2]) with E[x^2] measured on
    the inputs; relu(t) has mean RELU_MEAN and std RELU_STD times that (Gaussian t).
    """
    n_in = NOTEBOOK_B_SIZES[0]
    e_x2 = float(np.exp(np.asarray(st.in_log_sq)[0, 0]))
    s = get_scheme(scheme)
    sd = math.sqrt(s.var_y(n_in, NOTEBOOK_B_SIZES[1], e_x2))
    measured = {"std": np.exp(0.5 * np.asarray(st.pre_log_var)[:, 0]),
                "relu_mean": np.asarray(st.in_mean)[:, 1],
                "relu_std": np.exp(0.5 * np.asarray(st.in_log_var)[:, 1])}
    exact = {"std": sd, "relu_mean": RELU_MEAN * sd, "relu_std": RELU_STD * sd}
    moments = {}
    for k, v in measured.items():
        mean = float(np.mean(v))
        moments[k] = Moment(mean=mean, spread=float(np.std(v, ddof=1)), exact=exact[k],
                            bias=mean / exact[k] - 1,
                            notebook=NOTEBOOK_B_PRINTS.get(scheme, {}).get(k))
    return NotebookB(scheme=scheme, seeds=len(measured["std"]), input_mean_sq=e_x2, **moments)


def product_formula(st: S.LayerStats, scheme: str, sizes: Sequence[int]) -> ProductCheck:
    """Notebook A's end-to-end check, over seeds: mean E[(y^L)^2] against
    mean E[(y^1)^2] * prod_{l=2..L} n_l Var[w^l] / 2 (plus the biases' variance where they
    are not zero), with the standard error of the mean."""
    sq = np.exp(np.asarray(st.pre_log_sq, np.float64))
    var_out = np.exp(np.asarray(st.pre_log_var, np.float64)[:, -1])
    chain = S.chained_prediction(0.0, scheme, sizes, log_sq_first=math.log(np.mean(sq[:, 0])))
    predicted = float(np.exp(chain[-1]))
    n = sq.shape[0]
    return ProductCheck(scheme=scheme, seeds=n, first_layer=float(np.mean(sq[:, 0])),
                        predicted=predicted, output_sq=float(np.mean(sq[:, -1])),
                        output_sq_se=float(np.std(sq[:, -1], ddof=1) / math.sqrt(n)),
                        output_var=float(np.mean(var_out)),
                        ratio=float(np.mean(sq[:, -1]) / predicted))


def run(schemes: Sequence[str], frameworks: Sequence[str], x_a: np.ndarray, x_b: np.ndarray,
        *, seeds: int = 32, width: int = 256, depth: int = 50, product_seeds: int = 128,
        notebook_b_seeds: int = 64, on_step=None) -> dict:
    """Everything ``winit-jax variance`` reports, for every scheme and framework.

    Args:
      x_a: a batch of notebook A inputs (pixels / 256) for the depth sweep and the product.
      x_b: notebook B's standardised inputs.
      seeds, width, depth: the depth sweep.
      product_seeds: seeds for notebook A's end-to-end product formula (0: skip).
      notebook_b_seeds: seeds for notebook B's one layer (0: skip).
      on_step: called with a description after each piece.

    Returns:
      ``{"sweep": [DepthSummary], "product": [ProductCheck], "notebook_b": [NotebookB]}``,
      each row with its ``framework``.
    """
    nets = {"sweep": (depth_sizes(x_a.shape[-1], width, depth), seeds, summarise_depth),
            "product": (NOTEBOOK_A_SIZES, product_seeds, product_formula),
            "notebook_b": (NOTEBOOK_B_SIZES, notebook_b_seeds,
                           lambda st, sc, _: notebook_b(st, sc))}
    out = {kind: [] for kind in nets}
    for kind, scheme, framework in plan(schemes, frameworks, seeds=seeds,
                                        product_seeds=product_seeds,
                                        notebook_b_seeds=notebook_b_seeds):
        net, n_seeds, summarise = nets[kind]
        x = x_b if kind == "notebook_b" else x_a
        st = stats_over_seeds(framework, scheme, x, net, range(n_seeds))
        out[kind].append(dataclasses.replace(summarise(st, scheme, net), framework=framework))
        if on_step is not None:
            on_step(f"{kind} {scheme} {framework}")
    return out


def plan(schemes, frameworks, *, seeds: int, product_seeds: int,
         notebook_b_seeds: int) -> list[tuple[str, str, str]]:
    """``(kind, scheme, framework)`` of every piece ``run`` computes, in its order (a part
    with 0 seeds is skipped); ``run`` calls ``on_step`` once after each."""
    parts = {"sweep": seeds, "product": product_seeds, "notebook_b": notebook_b_seeds}
    return [(kind, s, f) for kind, n in parts.items() if n for s in schemes for f in frameworks]
