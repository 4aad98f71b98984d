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


def _to_flax(t, f):
    return {n: np_copy(p) for n, p in t.named_parameters()}


def _to_torch(f, t):
    return {k: value(v) for k, v in flax_variables(f).items()}


PARAMETERS = register(Kind("Parameter", (TorchParameters,), (FlaxParameters,), _to_flax,
                           _to_torch, init=None))

__all__ = ["FlaxParameters", "PARAMETERS", "TorchParameters"]
