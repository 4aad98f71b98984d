"""Bare parameters: an ``nn.Parameter`` registered directly on a module that is no known
layer (torchvision ViT's ``class_token`` on the model, ``pos_embedding`` on its encoder)
pairs with the ``nnx.Param`` of the same name on the corresponding nnx module, same layout.

The pairing sees each such module's own parameters as one pseudo-layer (a
``TorchParameters`` / ``FlaxParameters`` view that shares the tensors, never copies them),
named like its owner, so the rules that pair layers pair these too. torch draws what the
module's constructor draws, which no rule can know: ``torch_like.init`` takes an override
by the parameter's path (``overrides={"class_token": constant(0.0)}``).
"""

from __future__ import annotations

from flax import nnx

from winit_jax.kinds._base import Kind, flax_variables, np_copy, register, value


class TorchParameters:
    """The parameters a torch module holds itself (not through submodules), as a layer."""

    def __init__(self, owner):
        self.owner = owner
        self._params = dict(owner.named_parameters(recurse=False))

    def named_parameters(self, *args, **kwargs):
        return iter(self._params.items())

    def parameters(self):
        return iter(self._params.values())

    def named_buffers(self, *args, **kwargs):
        return iter(())

    def __getattr__(self, name):
        params = self.__dict__.get("_params", {})
        if name in params:
            return params[name]
        raise AttributeError(name)

    def __repr__(self):
        return f"TorchParameters({type(self.owner).__name__}: {', '.join(self._params)})"


class FlaxParameters(nnx.Module):
    """The ``nnx.Param``s an nnx module holds itself, as a layer (the same variables)."""

    def __init__(self, owner):
        self.owner_type = type(owner).__name__
        for k, v in vars(owner).items():
            if isinstance(v, nnx.Param):
                setattr(self, k, v)


def _names(t, f) -> dict[str, str]:
    """torch parameter name -> nnx variable path: the same names; or, where each side holds
    exactly one parameter (ConvNeXt's ``layer_scale`` and a port's ``gamma``), those two."""
    theirs = [n for n, _ in t.named_parameters()]
    mine = list(flax_variables(f))
    if set(theirs) != set(mine) and len(theirs) == len(mine) == 1:
        return {theirs[0]: mine[0]}
    return {n: n for n in theirs}


def _reshaped(array, shape):
    """``array`` in ``shape`` where the one reshape that keeps its values in order fits
    (torch's ``(dim, 1, 1)`` for a port's ``(dim,)``: the same sizes but for axes of 1)."""
    if tuple(array.shape) == tuple(shape):
        return array
    if [d for d in array.shape if d != 1] == [d for d in shape if d != 1]:
        return array.reshape(shape)
    return array  # left as it is: the pairing's shape check names the misfit


def _to_flax(t, f):
    mine = flax_variables(f)
    return {m: _reshaped(np_copy(p), mine[m].get_value().shape) if m in mine else np_copy(p)
            for (n, p), m in zip(t.named_parameters(), _names(t, f).values())}


def _to_torch(f, t):
    mine, theirs = flax_variables(f), dict(t.named_parameters())
    back = {m: n for n, m in _names(t, f).items()}
    return {back.get(k, k): _reshaped(value(v), tuple(theirs[back[k]].shape))
            if back.get(k) in theirs else value(v) for k, v in mine.items()}


PARAMETERS = register(Kind("Parameter", (TorchParameters,), (FlaxParameters,), _to_flax,
                           _to_torch, init=None))

__all__ = ["FlaxParameters", "PARAMETERS", "TorchParameters"]
