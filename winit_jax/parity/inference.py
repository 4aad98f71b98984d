"""A port initialised as its torch model initialises itself, with no recipe written by hand:
torch's model is built again several times (Hugging Face's ``type(m)(m.config)``,
diffusers' ``from_config``, a model's own ``init_weights()`` on a copy (timm), or the
porter's ``fresh_torch``), each tensor's law is
identified from those draws among the families real models use, and the result is a
``InitRecipe``: data (JSON), applied to the port through the checkpoint loader's ``Plan``
(so every layout, transpose, packed projection and scanned stack is handled as loading
handles it), and usable with no torch installed.

The families, in order of simplicity: a constant (every draw the same value: ones, zeros,
LayerScale's ``init_values``), a normal, a uniform, a truncated normal (its bounds the
observed range). Rows fixed at zero in every draw (``padding_idx``) are structure, kept
exactly. The choice is a tested decision: each family's parameters fitted to the pooled
draws, a Kolmogorov-Smirnov test at level ``LEVEL`` / (random tensors) (Bonferroni), the
simplest family that passes chosen; a tensor with fewer than ``MIN_VALUES`` pooled values
(too few to tell a normal from a uniform of the same variance: their KS distance is 0.05)
gets its layer kind's torch default, with a note, as does one no family fits; torch's model
is built again (up to ``MAX_DRAWS`` times) until every random tensor has that many values.
Where torch cannot be rebuilt, the one instance given is all there is: its entries are
read, and the recipe says so.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import zlib
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from winit_jax.kinds import ParityError
from winit_jax.parity import lazy

LEVEL = 1e-3        # family-wise: a true family is refused at most this often in a recipe
MIN_VALUES = 2000   # pooled values below which the family is not decided (see above)
MAX_DRAWS = 64      # builds of torch's model at most, for a small tensor to reach MIN_VALUES
KS_VALUES = 20000   # values a KS test reads (a fixed subsample of larger tensors)
RECIPE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Law:
    """One torch tensor's law: ``family`` ("constant", "normal", "uniform", "truncated
    normal", or "default": the layer kind's torch default), its ``params``, the rows fixed
    at zero (axis 0 of torch's layout), and the evidence (KS ``p``, pooled values ``n``)."""

    family: str
    params: dict
    zero_rows: tuple[int, ...] = ()
    p: float | None = None
    n: int = 0
    note: str = ""

    def describe(self) -> str:
        f, q = self.family, self.params
        text = {"constant": lambda: f"constant {q.get('value')!r}",
                "normal": lambda: f"normal(mean={q['mean']:.4g}, std={q['std']:.4g})",
                "uniform": lambda: f"uniform({q['low']:.4g}, {q['high']:.4g})",
                "truncated normal": lambda: (f"truncated normal(std={q['std']:.4g}, "
                                             f"[{q['low']:.4g}, {q['high']:.4g}])"),
                }.get(f, lambda: "the layer kind's torch default")()
        if self.zero_rows:
            text += f", rows {list(self.zero_rows)} zero"
        return text

    def draw(self, key, shape, dtype) -> np.ndarray:
        """A draw in torch's layout and ``shape``."""
        q = self.params
        if self.family == "constant":
            x = jnp.full(shape, q["value"], dtype)
        elif self.family == "normal":
            x = q["mean"] + q["std"] * jax.random.normal(key, shape, dtype)
        elif self.family == "uniform":
            x = jax.random.uniform(key, shape, dtype, q["low"], q["high"])
        elif self.family == "truncated normal":
            from winit_jax.torch_draws import trunc_normal
            x = trunc_normal(std=q["std"], a=q["low"], b=q["high"], mean=q["mean"])(
                key, shape, dtype)
        else:
            raise ParityError(f"law: {self.family!r} cannot be drawn")
        x = np.array(x)
        if self.zero_rows:
            x[list(self.zero_rows)] = 0
        return x


# --- identifying a law ---------------------------------------------------------------------

def _truncated_std(x: np.ndarray, low: float, high: float, mean: float) -> float | None:
    """The std of the normal whose cut to [low, high] has ``x``'s variance (bisection), or
    None where even an uncut normal has less (the data spread wider than any cut normal)."""
    from scipy import stats

    target = float(np.var(x))

    def cut_var(s):
        return float(stats.truncnorm.var((low - mean) / s, (high - mean) / s, loc=mean, scale=s))
    lo, hi = math.sqrt(target) * 0.5, (high - low) * 50
    if cut_var(hi) < target:
        return None
    for _ in range(80):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if cut_var(mid) < target else (lo, mid)
    return math.sqrt(lo * hi)


def _candidates(x: np.ndarray) -> list[tuple[str, dict, object]]:
    """(family, params, frozen scipy law) fitted to ``x``."""
    from scipy import stats

    n, sd = len(x), float(np.std(x))
    mean = float(np.mean(x))
    if abs(mean) < 5 * sd / math.sqrt(n):
        mean = 0.0  # no evidence of a shift: centred, as torch's draws are
    std = float(np.sqrt(np.mean((x - mean) ** 2)))
    out = [("normal", {"mean": mean, "std": std}, stats.norm(mean, std))]
    lo, hi = float(x.min()), float(x.max())
    pad = (hi - lo) / (n - 1)
    low, high = lo - pad, hi + pad
    if abs(low + high) < 5 * (high - low) / math.sqrt(12 * n):  # symmetric: +-bound
        b = max(-low, high)
        low, high = -b, b
    out.append(("uniform", {"low": low, "high": high}, stats.uniform(low, high - low)))
    cut = _truncated_std(x, low, high, mean)
    if cut is not None:
        out.append(("truncated normal", {"mean": mean, "std": cut, "low": low, "high": high},
                    stats.truncnorm((low - mean) / cut, (high - mean) / cut, loc=mean,
                                    scale=cut)))
    return out


def zero_rows(draws: list[np.ndarray]) -> tuple[int, ...]:
    """Rows (axis 0) zero in every draw of a 2-d or larger tensor, where others are not (a
    ``padding_idx``): structure, not a law."""
    if draws[0].ndim < 2:
        return ()
    zero = np.logical_and.reduce([~d.reshape(d.shape[0], -1).any(axis=1) for d in draws])
    return tuple(int(r) for r in np.flatnonzero(zero)) if not zero.all() else ()


def identify(draws: list[np.ndarray], level: float) -> Law:
    """The law of one tensor from its draws (each in torch's layout)."""
    from scipy import stats

    first = draws[0]
    if _constant(draws):
        return Law("constant", {"value": float(first.ravel()[0])}, n=first.size * len(draws))
    rows = zero_rows(draws)
    if rows:
        keep = np.ones(first.shape[0], bool)
        keep[list(rows)] = False
        draws = [d[keep] for d in draws]
    x = np.concatenate([d.ravel() for d in draws]).astype(np.float64)
    if len(x) < MIN_VALUES:
        return Law("default", {}, rows, n=len(x),
                   note=f"{len(x)} values, too few to tell the family (< {MIN_VALUES})")
    if len(x) > KS_VALUES:
        x = np.random.default_rng(0).choice(x, KS_VALUES, replace=False)
    tested = [(family, params, float(stats.kstest(x, law.cdf).pvalue))
              for family, params, law in _candidates(x)]
    for family, params, p in tested:
        if p >= level:
            return Law(family, params, rows, p=p, n=len(x))
    best = max(tested, key=lambda t: t[2])
    return Law("default", {}, rows, p=best[2], n=len(x),
               note=f"no family fits (best: {best[0]}, KS p = {best[2]:.2g})")


# --- drawing torch again -------------------------------------------------------------------

def rebuild(torch_module, fresh_torch: Callable | None = None):
    """A factory that builds ``torch_module``'s model anew (its constructor draws), and how,
    or (None, why not)."""
    if fresh_torch is not None:
        return fresh_torch, "fresh_torch"
    cls, config = type(torch_module), getattr(torch_module, "config", None)
    if config is not None and hasattr(cls, "config_class"):  # Hugging Face transformers
        return (lambda: cls(copy.deepcopy(config))), f"{cls.__name__}(config), as HF builds it"
    if config is not None and hasattr(cls, "from_config"):  # diffusers
        return (lambda: cls.from_config(config)), f"{cls.__name__}.from_config(config)"
    init_weights = getattr(torch_module, "init_weights", None)
    if callable(init_weights) and _no_required_arguments(init_weights):
        # a model whose class re-runs its own init (timm's init_weights)
        def again():
            fresh = copy.deepcopy(torch_module)
            fresh.init_weights()
            return fresh
        return again, f"{cls.__name__}.init_weights() on a copy"
    return None, "the model cannot be built again from what it holds"


def _no_required_arguments(fn) -> bool:
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(p.default is not inspect.Parameter.empty or p.kind in (p.VAR_POSITIONAL,
                                                                       p.VAR_KEYWORD)
               for p in params)


@dataclasses.dataclass
class InitRecipe:
    """Each torch tensor's law (``laws``, keyed by torch's ``state_dict`` names) and how
    torch's tensors fill the port (``plan``, the checkpoint loader's ``Plan``): data, saved
    and loaded as JSON; ``init`` needs no torch."""

    laws: dict[str, Law]
    plan: object
    source: str
    notes: list[str]

    def table(self) -> str:
        width = max(len(k) for k in self.laws)
        lines = [f"init recipe ({self.source})"]
        for k, law in self.laws.items():
            p = "" if law.p is None else f"  (KS p = {law.p:.2g}, {law.n} values)"
            lines.append(f"  {k:<{width}}  {law.describe()}{p}"
                         + (f"  [{law.note}]" if law.note else ""))
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])

    def to_json(self) -> dict:
        return {"version": RECIPE_VERSION, "source": self.source, "notes": self.notes,
                "laws": {k: dataclasses.asdict(v) for k, v in self.laws.items()},
                "plan": dataclasses.asdict(self.plan)}

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, path) -> InitRecipe:
        from winit_jax.parity.checkpoint import Plan

        try:
            raw = json.loads(Path(path).read_text())
            if raw.get("version") != RECIPE_VERSION:
                raise ValueError("another version")
            laws = {k: Law(v["family"], v["params"], tuple(v["zero_rows"]), v["p"], v["n"],
                           v["note"]) for k, v in raw["laws"].items()}
            return cls(laws, Plan.from_json(raw["plan"]), raw["source"], list(raw["notes"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ParityError(f"recipe: {path} is not an init recipe ({e})") from None

    def init(self, model: nnx.Module, key) -> nnx.Module:
        """Draws ``model``'s variables as torch's model draws its tensors (each law drawn in
        torch's layout, then converted as a checkpoint is); a variable read from a tensor
        whose law is the kind's default keeps ``torch_like.init``'s draw (``strict=False``:
        a bare parameter no kind knows keeps what it holds)."""
        from winit_jax import torch_like

        key = jax.random.key(key) if isinstance(key, int) else key
        torch_like.init(model, key, strict=False)  # what the recipe leaves to the kinds
        source = _Draws(self.laws, self.plan.torch_tensors, jax.random.fold_in(key, 1))
        by_path = {"/".join(map(str, p)): v for p, v in nnx.iter_graph(model)
                   if isinstance(v, nnx.Variable)}
        for path, node in self.plan.variables.items():
            if any(self.laws[k].family == "default" for k in lazy.keys(node)):
                continue
            var = by_path[path]
            value = lazy.read(node, lazy.full(lazy.shape_of(node)), source)
            var.set_value(jnp.asarray(value, var.get_value().dtype))
        return model


class _Draws:
    """A checkpoint source whose tensors are drawn from their laws (each once)."""

    def __init__(self, laws, tensors, key):
        self.laws, self.tensors, self.key, self.cache = laws, tensors, key, {}

    def read(self, name, spans):
        if name not in self.cache:
            shape, dtype = self.tensors[name]
            work = jnp.float64 if dtype == "float64" else jnp.float32
            k = jax.random.fold_in(self.key, zlib.crc32(name.encode()) & 0x7FFFFFFF)
            self.cache[name] = self.laws[name].draw(k, tuple(shape), work)
        return self.cache[name][tuple(slice(a, b) for a, b in spans)]


def _constant(draws: list[np.ndarray]) -> bool:
    first = draws[0].ravel()
    return all(np.array_equal(d.ravel(), first) for d in draws) and bool(np.all(first == first[0]))


def infer_recipe(torch_module, model, *, draws: int = 4, fresh_torch: Callable | None = None,
                 pairing=None, inputs=None, kwargs=None, flax_inputs=None) -> InitRecipe:
    """How ``torch_module``'s model initialises itself, as a recipe for ``model``.

    Args:
      torch_module: the torch original (its weights are not changed).
      model: the nnx port (abstract is enough).
      draws: how many times torch's model is built again (seeds 0..draws-1).
      fresh_torch: a factory for the model (where it cannot be rebuilt from itself).
      pairing: as ``from_torch``'s.
      inputs: as ``pairing`` (above).
      kwargs: as ``pairing`` (above).
      flax_inputs: as ``pairing`` (above).

    Returns:
      An ``InitRecipe``: ``recipe.init(model, key)``, ``recipe.table()``, ``recipe.save``.
    """
    import torch

    from winit_jax.parity.checkpoint import make_plan

    plan = make_plan(torch_module, model, pairing=pairing, inputs=inputs, kwargs=kwargs,
                     flax_inputs=flax_inputs)
    wanted = sorted({k for node in plan.variables.values() for k in lazy.keys(node)})
    factory, how = rebuild(torch_module, fresh_torch)
    samples: dict[str, list[np.ndarray]] = {k: [] for k in wanted}
    notes = []
    if factory is None:
        state = torch_module.state_dict()
        for k in wanted:
            samples[k].append(state[k].detach().float().cpu().numpy())
        source = "one instance: its entries"
        notes.append(f"{how}: the law of each tensor is read from this one instance")
    else:
        rng = torch.random.get_rng_state()

        def collect(seed, keys):
            torch.manual_seed(seed)
            state = factory().state_dict()
            for k in keys:
                if k not in state:
                    raise ParityError(f"fresh_torch: its model has no tensor {k!r}")
                samples[k].append(state[k].detach().float().cpu().numpy())
        try:
            for seed in range(draws):
                collect(seed, wanted)
            # a small random tensor is drawn again until it has MIN_VALUES values (one that
            # cannot reach it within MAX_DRAWS is left to its kind); only those are kept
            short = [k for k in wanted if not _constant(samples[k])
                     and samples[k][0].size * draws < MIN_VALUES
                     <= samples[k][0].size * MAX_DRAWS]
            builds = max((math.ceil(MIN_VALUES / samples[k][0].size) for k in short),
                         default=draws)
            for seed in range(draws, builds):
                collect(seed, short)
        finally:
            torch.random.set_rng_state(rng)
        source = f"{how}, {draws} draws ({builds} for the smallest random tensors)" \
            if builds > draws else f"{how}, {draws} draws"
    random = sum(1 for v in samples.values() if not _constant(v))
    level = LEVEL / max(1, random)
    laws = {k: identify(samples[k], level) for k in wanted}
    return InitRecipe(laws, plan, source, notes)


__all__ = ["LEVEL", "MIN_VALUES", "InitRecipe", "Law", "identify", "infer_recipe", "rebuild",
           "zero_rows"]
