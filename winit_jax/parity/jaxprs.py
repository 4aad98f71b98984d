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


def float32_results(jaxpr) -> list[str]:
    """The primitives of ``jaxpr`` that produce float32 values (in a float64 computation:
    the parts that run at float32's precision)."""
    return [eqn.primitive.name for eqn in equations(jaxpr)
            if any(str(getattr(v.aval, "dtype", "")) == "float32" for v in eqn.outvars)]


__all__ = ["equations", "float32_results", "primitives"]
