"""Property tests (hypothesis): for any shape, dtype and scale an initialiser given valid
arguments returns a finite array of that shape and dtype, and given an invalid one raises
a ValueError or TypeError whose one-line message names that argument -- never NaN/inf,
never an error from inside XLA. Validity is derived from the documented contract."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import winit_jax as wj
from winit_jax.activations import ACTIVATIONS
from winit_jax.schemes import SCHEMES

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

shapes = st.lists(st.integers(0, 24), min_size=0, max_size=4).map(tuple)
dtypes = st.sampled_from(["float16", "bfloat16", "float32", "float64", "int32", "uint8", "bool",
                          "complex64"])
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0, -1, 1e-30, 1e-8, 1e4, 1e6, 1e30, 1e300]),
    st.integers(-3, 10**6), st.just("0.1"), st.none(), st.booleans())
axes = st.one_of(st.integers(-6, 6), st.lists(st.integers(-6, 6), max_size=2))


def factories():
    """(name, factory(scale, axes), scale argument's name or None, axis argument's name)."""
    def axes_kw(a):
        return {} if a is None else {"in_axis": a}
    return [
        ("symmetric_uniform", lambda s, a: wj.symmetric_uniform(s), "sigma", None),
        ("variance_scaling", lambda s, a: wj.variance_scaling(s, "fan_in", "normal", **axes_kw(a)),
         "scale", "in_axis"),
        ("variance_scaling_uniform",
         lambda s, a: wj.variance_scaling(s, "fan_avg", "uniform", **axes_kw(a)), "scale",
         "in_axis"),
        ("orthogonal", lambda s, a: wj.orthogonal(s, **({} if a is None else {"column_axis": a})),
         "scale", "column_axis"),
        ("torch_linear_bias", lambda s, a: wj.torch_linear_bias(s), "fan_in", None),
        *[(f"gain_normal/{act}", lambda s, a, act=act: wj.gain_normal(act, **axes_kw(a)), None,
           "in_axis") for act in ACTIVATIONS],
        *[(f"scheme/{name}", lambda s, a, name=name: SCHEMES[name].jax_init(), None, None)
          for name in SCHEMES],
    ]


FACTORIES = factories()
SHAPE_FREE = {"symmetric_uniform", "torch_linear_bias", "scheme/uniform", "scheme/standard_normal"}


def _dtype(name):
    return jnp.bfloat16 if name == "bfloat16" else np.dtype(name)


def _positive_number(v) -> bool:
    return (not isinstance(v, bool) and isinstance(v, (int, float, np.number))
            and math.isfinite(v) and v > 0)


def refusals(name, scale_arg, axis_arg, scale, ax, shape, dtype) -> set[str]:
    """What a correct initialiser must refuse, derived from the documented contract (not
    from the code): the names of the invalid arguments; empty when every one is valid."""
    bad = set()
    if scale_arg == "fan_in":
        if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
            bad.add("fan_in")
    elif scale_arg is not None and not _positive_number(scale):
        bad.add(scale_arg)
    complex_ok = name not in ("torch_linear_bias", "scheme/torch_default")  # torch: no complex
    if dtype not in ("float16", "bfloat16", "float32") and not (complex_ok and dtype == "complex64"):
        bad.add("dtype")  # float64 needs x64, off here
    rank = len(shape)
    if name not in SHAPE_FREE and rank < 2:
        bad.add("shape")
    if axis_arg == "column_axis" and ax is not None and not isinstance(ax, int):
        bad.add(axis_arg)  # refused when the factory is built, whatever the shape
    elif axis_arg is not None and ax is not None and rank >= 2:
        axes = [ax] if isinstance(ax, int) else list(ax)
        if any(not -rank <= a < rank for a in axes):
            bad.add(axis_arg)
        elif axis_arg == "in_axis" and ((rank - 1) in {a % rank for a in axes}
                                        or len({a % rank for a in axes}) < len(axes)):
            bad.add(axis_arg)  # overlaps out_axis=-1, or names an axis twice
    return bad


def may_overflow(scale_arg, scale, dtype) -> bool:
    """Weights of a valid scale may still not fit the dtype: the largest |w| is below
    8 std for a normal and 2 sqrt(3) std for a uniform (std <= sqrt(scale), sigma or gain)."""
    if scale_arg not in ("scale", "sigma", "gain") or not _positive_number(scale):
        return False
    magnitude = math.sqrt(scale) if scale_arg == "scale" else scale
    return 8 * magnitude > float(jnp.finfo(_dtype(dtype)).max)


def check(entry, scale, ax, shape, dtype):
    name, factory, scale_arg, axis_arg = entry
    bad = refusals(name, scale_arg, axis_arg, scale, ax, shape, dtype)
    try:
        out = factory(scale, ax)(jax.random.key(0), shape, _dtype(dtype))
    except (ValueError, TypeError) as e:
        msg = str(e)
        assert msg and "\n" not in msg, (name, msg)
        overflow = may_overflow(scale_arg, scale, dtype) and "overflow" in msg and scale_arg in msg
        if bad:  # the message names one of the arguments that are wrong (or the overflow)
            assert any(arg in msg for arg in bad) or overflow, (name, bad, msg)
        else:  # only a scale too large for the dtype may be refused
            assert may_overflow(scale_arg, scale, dtype) and "overflow" in msg, (name, msg)
            assert scale_arg in msg, (name, msg)
        return
    assert not bad, (name, bad, "accepted")
    assert out.shape == shape and out.dtype == _dtype(dtype), (name, shape, out.dtype)
    assert bool(jnp.all(jnp.isfinite(out))), (name, scale, shape, dtype)


@pytest.mark.slow
@SETTINGS
@given(idx=st.integers(0, len(FACTORIES) - 1), scale=numbers, ax=st.one_of(st.none(), axes),
       shape=shapes, dtype=dtypes)
def test_every_call_returns_finite_or_raises_cleanly(idx, scale, ax, shape, dtype):
    check(FACTORIES[idx], scale, ax, shape, dtype)


@pytest.mark.slow
@SETTINGS
@given(scale=st.floats(1e-6, 1e300), dtype=st.sampled_from(["float16", "bfloat16", "float32"]))
def test_large_scales_in_small_dtypes(scale, dtype):
    # U(-sigma, sigma) with sigma beyond the dtype's range must not come back as inf.
    check(FACTORIES[0], scale, None, (16, 8), dtype)


def test_the_property_fails_on_an_initialiser_that_always_refuses():
    """Negative control: a copy in which every initialiser raised ValueError("broken on
    purpose") passed the old property; this one fails on the first valid input."""
    broken = ("broken", lambda s, a: (_ for _ in ()).throw(ValueError("broken on purpose")),
              "scale", "in_axis")
    with pytest.raises(AssertionError):
        check(broken, 2.0, None, (4, 3), "float32")
