"""What a traced computation holds: its equations, those of its sub-jaxprs (jit, scan, cond,
custom rules) too."""

from __future__ import annotations

from collections.abc import Iterator


def equations(jaxpr) -> Iterator:
    """Every equation of ``jaxpr`` (a ``Jaxpr`` or ``ClosedJaxpr``), sub-jaxprs included."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in (value if isinstance(value, (tuple, list)) else (value,)):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from equations(inner)


def primitives(jaxpr) -> set[str]:
    """The names of every primitive ``jaxpr`` runs."""
    return {eqn.primitive.name for eqn in equations(jaxpr)}


# primitives that only call their one sub-jaxpr on their operands: what of it reaches the
# outputs is read inside (a custom_jvp's forward shows where its rule's kinks are:
# jax.nn.relu's max)
_CALLS = frozenset({"pjit", "jit", "closed_call", "core_call", "remat", "checkpoint",
                    "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"})
# primitives whose result is >= 0 when their operands are (exp, abs and the like always)
_NONNEG_ALWAYS = frozenset({"exp", "abs", "sqrt", "rsqrt", "logistic", "exp2"})
_NONNEG_KEEPS = frozenset({"add", "mul", "div", "reduce_sum", "reduce_max",
                           "broadcast_in_dim", "reshape", "convert_element_type", "squeeze",
                           "expand_dims", "transpose", "copy", "stop_gradient", "slice"})


def live_equations(jaxpr, *, derivative: bool) -> list:
    """The equations of ``jaxpr`` (sub-jaxprs included) whose results reach its outputs.
    ``derivative``: only through real values and not only through ``stop_gradient`` (those
    a derivative goes through: softmax's stabilising max is not one, ReLU's is), with an
    ``abs`` or ``max`` that is the identity on what it gets (logsumexp's ``abs`` of a sum of
    exponentials) and a ``select_n`` by a mask no real number sets (a causal mask) left
    out. Inside control flow (scan, cond, while) every equation
    counts."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    return _live(jaxpr, [True] * len(jaxpr.outvars), derivative,
                 [is_real(v) for v in jaxpr.invars])[0]


def differentiable_primitives(jaxpr) -> set[str]:
    """The names of the primitives a derivative of ``jaxpr`` goes through
    (``live_equations(..., derivative=True)``)."""
    return {e.primitive.name for e in live_equations(jaxpr, derivative=True)}


def is_real(v) -> bool:
    """Whether a jaxpr variable (or Literal) holds real numbers (not integers, booleans or
    PRNG keys)."""
    import jax.numpy as jnp

    dtype = getattr(getattr(v, "aval", None), "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jnp.inexact)  # PRNG keys are not


def _from_reals(jaxpr, invars_from_reals: list[bool]) -> set:
    """The variables of ``jaxpr`` whose values depend on real numbers (a forward pass): the
    reals, and what is computed from one (``x > 0``'s mask; not a causal mask of integer
    positions, nor an attention mask given as input)."""
    out = {v for v, real in zip(jaxpr.invars, invars_from_reals) if real}
    for eqn in jaxpr.eqns:
        if any(not hasattr(v, "val") and (v in out or is_real(v)) for v in eqn.invars):
            out.update(eqn.outvars)
    return out


def _carries(v, derivative: bool) -> bool:
    """A variable (not a Literal, which holds its value); for a derivative, a real-valued
    one (integer indices and boolean masks carry none)."""
    if hasattr(v, "val"):
        return False
    return not derivative or is_real(v)


def _subs(eqn) -> list:
    out = []
    for value in eqn.params.values():
        for sub in (value if isinstance(value, (tuple, list)) else (value,)):
            inner = getattr(sub, "jaxpr", sub)
            if hasattr(inner, "eqns"):
                out.append(inner)
    return out


def _scalar(v) -> float | None:
    """The value of a scalar Literal, else None."""
    return float(v.val) if hasattr(v, "val") and getattr(v.val, "ndim", 0) == 0 else None


def _nonnegative(jaxpr) -> set:
    """The variables of ``jaxpr`` that are >= 0 by construction (a forward pass)."""
    def known(v):
        return _scalar(v) >= 0 if _scalar(v) is not None else not hasattr(v, "val") and v in out
    out: set = set()
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        ok = (name in _NONNEG_ALWAYS
              or (name in _NONNEG_KEEPS and all(known(v) for v in eqn.invars))
              or (name == "max" and any(known(v) for v in eqn.invars))
              or (name == "integer_pow" and eqn.params.get("y", 1) % 2 == 0)
              or name == "square")
        if ok:
            out.update(eqn.outvars)
    return out


def _no_kink(eqn, nonneg: set, from_reals: set) -> bool:
    """Whether ``eqn``, a kink by its primitive, is none here: an ``abs`` or a ``max`` with
    0 that is the identity on a non-negative operand (``nonneg``), a ``select_n`` by a mask
    no real number sets (a causal or attention mask; ``from_reals``)."""
    def held(v, where):
        return not hasattr(v, "val") and v in where
    name, ins = eqn.primitive.name, eqn.invars
    if name == "abs":
        return held(ins[0], nonneg)
    if name == "select_n":
        return not held(ins[0], from_reals)
    if name == "max":  # max(x, c) with x >= 0 >= c (ReLU's 0)
        return (all(held(v, nonneg) or (_scalar(v) is not None and _scalar(v) <= 0)
                    for v in ins) and any(held(v, nonneg) for v in ins))
    return False


def _live(jaxpr, out_live: list[bool], derivative: bool, invars_from_reals: list[bool]
          ) -> tuple[list, list[bool]]:
    """(the live equations, which inputs are live), walking the equations backwards;
    ``invars_from_reals``: which inputs depend on real numbers."""
    live = {v for v, keep in zip(jaxpr.outvars, out_live) if keep and _carries(v, derivative)}
    nonneg = _nonnegative(jaxpr) if derivative else set()
    from_reals = _from_reals(jaxpr, invars_from_reals)
    found: list = []
    for eqn in reversed(jaxpr.eqns):
        outs = [_carries(v, derivative) and v in live for v in eqn.outvars]
        if not any(outs) or (derivative and eqn.primitive.name == "stop_gradient"):
            continue
        subs = _subs(eqn)
        if (eqn.primitive.name in _CALLS and len(subs) == 1
                and len(subs[0].invars) == len(eqn.invars)
                and len(subs[0].outvars) == len(eqn.outvars)):
            inner, ins = _live(subs[0], outs, derivative, [
                not hasattr(v, "val") and v in from_reals for v in eqn.invars])
            found += inner
            live |= {v for v, keep in zip(eqn.invars, ins) if keep and _carries(v, derivative)}
            continue
        if not (derivative and _no_kink(eqn, nonneg, from_reals)):
            found.append(eqn)
            for sub in subs:
                found += list(equations(sub))
        live |= {v for v in eqn.invars if _carries(v, derivative)}
    return found, [v in live for v in jaxpr.invars]


def float32_results(jaxpr) -> list[str]:
    """The primitives of ``jaxpr`` that produce float32 values (in a float64 computation:
    the parts that run at float32's precision)."""
    return [eqn.primitive.name for eqn in equations(jaxpr)
            if any(str(getattr(v.aval, "dtype", "")) == "float32" for v in eqn.outvars)]


__all__ = ["differentiable_primitives", "equations", "float32_results", "is_real",
           "live_equations", "primitives"]
