"""Initialise any ``flax.nnx`` model exactly as PyTorch would.

``init(model, key)`` walks the model and redraws, in place, every parameter and batch
statistic of every layer it knows, as the ``reset_parameters()`` of the matching torch
layer draws them: same distribution, same fans, same bounds. Flax's defaults are not
torch's (flax issues #3125, #3019, #4091): a ported model trained from Flax's defaults is a
different experiment.

torch's draw for each layer kind is declared once, with the kind, in the layer-kind
registry (``winit_jax.kinds``: ``linear``, ``norm``, ``attention``, ``recurrent``;
each family's docstring states torch's rules in Flax's layouts); a porter's own layer pair
comes in through ``winit_jax.parity.layer_kind``. Every rule is a plain
``init(key, shape, dtype)`` on the ``variance_scaling`` core (or a constant), usable as
``kernel_init=`` too; a recipe (torchvision's ResNet, ViT, ConvNeXt) is data:
``overrides`` keyed by layer type or path.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import math
import zlib
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from winit_jax import sampling
from winit_jax.initializers import variance_scaling
from winit_jax.kinds import at_path, init_rule, is_flax_layer
from winit_jax.kinds.stack import stack_slice
from winit_jax.torch_draws import constant as constant
from winit_jax.torch_draws import kaiming_normal as kaiming_normal
from winit_jax.torch_draws import packed_xavier_uniform as packed_xavier_uniform
from winit_jax.torch_draws import trunc_normal as trunc_normal
from winit_jax.torch_draws import uniform_sum as uniform_sum

log = logging.getLogger(__name__)


# --- recipes: data for ``init(..., overrides=...)`` ---------------------------------------

def resnet_recipe(*, zero_init_residual: bool = False, last_bn: str = "bn2") -> dict:
    """torchvision's ResNet: ``kaiming_normal_(mode="fan_out", nonlinearity="relu")`` on every
    convolution (untruncated), BatchNorm weight 1 and bias 0 (the rule's default), fc the
    Linear default; ``zero_init_residual`` zeroes each block's last BatchNorm weight, named
    ``last_bn``: "bn2" in a BasicBlock (ResNet-18/34), "bn3" in a Bottleneck (50 and up)."""
    recipe: dict = {nnx.Conv: {"kernel": kaiming_normal(mode="fan_out")}}
    if zero_init_residual:
        recipe[f"*/{last_bn}"] = {"scale": constant(0.0)}
    return recipe


def timm_vit_recipe(*, init_values: float | None = None, cls_token: str | None = "cls_token",
                    pos_embed: str | None = "pos_embed", layer_scale: str = "*/ls[0-9]/*"
                    ) -> dict:
    """timm's ViT as ``VisionTransformer.init_weights()`` draws it by default (timm 1.0,
    ``weight_init=''``): every Linear, the head included, ``trunc_normal_(std=0.02)`` with
    torch's absolute bounds (+-2: no cut in practice) and bias 0; the position embedding
    (parameters matching ``pos_embed``) ``trunc_normal_(std=0.02)``; the class token (matching
    ``cls_token``) N(0, 1e-6^2) (None for either: a model without it); LayerNorm 1/0 and the
    patch embedding's Conv torch's default (the rules' own); with ``init_values``, each LayerScale parameter (matching
    ``layer_scale``: timm's ``blocks/0/ls1/gamma``) that constant. timm's "jax" mode, which
    zeroes the head, is another recipe. Checked against timm's own model by
    ``parity.check``'s init part (``tests/porting/test_inferred_init.py``). Not
    torchvision's: see ``torchvision_vit_recipe``."""
    recipe: dict = {nnx.Linear: {"kernel": trunc_normal(std=0.02), "bias": constant(0.0)}}
    if cls_token is not None:
        recipe[cls_token] = jax.nn.initializers.normal(1e-6)
    if pos_embed is not None:
        recipe[pos_embed] = trunc_normal(std=0.02)
    if init_values is not None:
        recipe[layer_scale] = constant(init_values)
    return recipe


def _trunc_normal_fan_in():
    """``trunc_normal_(w, std=sqrt(1 / fan_in))`` with torch's absolute bounds +-2, fan_in
    from the Flax kernel's shape (every axis but the last)."""
    def init(key, shape, dtype=None, out_sharding=None):
        fan_in = math.prod(shape[:-1])
        return trunc_normal(std=math.sqrt(1.0 / fan_in))(key, shape, dtype, out_sharding)
    return init


def torchvision_vit_recipe(*, stem: str = "conv_proj", mlp: str = "*/mlp/*",
                           head: str = "heads/head", class_token: str = "class_token",
                           pos_embedding: str = "*pos_embedding") -> dict:
    """torchvision's ``VisionTransformer`` as its constructor draws it (read from
    torchvision/models/vision_transformer.py): the patch stem ``trunc_normal_(std=
    sqrt(1 / fan_in))`` (absolute bounds +-2) with bias 0; every Linear in an MLP block
    ``xavier_uniform_`` with bias N(0, 1e-6^2); the class token 0; the position embedding
    N(0, 0.02^2); the head all zero; attention and LayerNorm torch's defaults. The keyword
    arguments are the port's paths (patterns), torchvision's names by default.
    """
    return {stem: {"kernel": _trunc_normal_fan_in(), "bias": constant(0.0)},
            mlp: {"kernel": variance_scaling(1.0, "fan_avg", "uniform"),  # xavier_uniform_
                  "bias": variance_scaling(1e-12, "none", "normal")},     # normal_(std=1e-6)
            head: {"kernel": constant(0.0), "bias": constant(0.0)},
            class_token: constant(0.0),
            pos_embedding: variance_scaling(0.02 ** 2, "none", "normal")}


def mobilenet_v2_recipe() -> dict:
    """torchvision's MobileNetV2 (read from torchvision/models/mobilenetv2.py): every Conv
    ``kaiming_normal_(mode="fan_out")`` (torch's default leaky_relu gain with a = 0, i.e.
    sqrt(2); untruncated; for a depthwise conv torch's fan_out is out x k x k, as here) with
    bias 0; BatchNorm/GroupNorm 1 and 0; Linear N(0, 0.01^2), bias 0."""
    return {nnx.Conv: {"kernel": kaiming_normal(mode="fan_out"), "bias": constant(0.0)},
            nnx.Linear: {"kernel": variance_scaling(0.01 ** 2, "none", "normal"),
                         "bias": constant(0.0)}}


def efficientnet_recipe() -> dict:
    """torchvision's EfficientNet (read from torchvision/models/efficientnet.py): Conv and
    norms as MobileNetV2's; Linear U(+-1/sqrt(out_features)), bias 0."""
    return {nnx.Conv: {"kernel": kaiming_normal(mode="fan_out"), "bias": constant(0.0)},
            nnx.Linear: {"kernel": variance_scaling(1.0 / 3.0, "fan_out", "uniform"),
                         "bias": constant(0.0)}}


def convnext_recipe() -> dict:
    """torchvision's ConvNeXt: Conv and Linear weights ``trunc_normal_(std=0.02)``, biases 0."""
    rule = {"kernel": trunc_normal(std=0.02), "bias": constant(0.0)}
    return {nnx.Conv: rule, nnx.Linear: rule}


# --- the walker ------------------------------------------------------------------------

def _shape(var):
    return tuple(var.get_value().shape)


def _own_variables(module) -> dict[str, nnx.Variable]:
    """The Variables a module holds itself (not through submodules)."""
    return {k: v for k, v in vars(module).items() if isinstance(v, nnx.Variable)}


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A parametrised module ``init`` left as it was (``strict=False``)."""

    path: str
    type: str


def _path(parts) -> str:
    return "/".join(map(str, parts))


class _Overrides:
    """A recipe split into module rules (``{selector: {variable: initialiser}}``, a selector
    being a path pattern or a class) and parameter rules (``{path pattern: initialiser}``),
    remembering which selectors matched something."""

    def __init__(self, overrides: Mapping | None):
        self.modules, self.params, self.used = {}, {}, set()
        for sel, rule in (overrides or {}).items():
            if isinstance(rule, Mapping):
                self.modules[sel] = rule
            elif callable(rule) and isinstance(sel, str):
                self.params[sel] = rule
            else:
                raise ValueError(f"overrides: {sel!r} maps to {type(rule).__name__}; a path "
                                 "pattern or a class maps to {variable: initialiser}, a "
                                 "parameter's path pattern to an initialiser")

    def module(self, path: str, module) -> Mapping | None:
        """Path patterns (fnmatch) first, then the nearest class in the module's MRO."""
        for sel, rule in self.modules.items():
            if isinstance(sel, str) and fnmatch.fnmatchcase(path, sel):
                self.used.add(sel)
                return rule
        for cls in type(module).__mro__:
            if cls in self.modules:
                self.used.add(cls)
                return self.modules[cls]
        return None

    def param(self, path: str):
        for sel, fn in self.params.items():
            if fnmatch.fnmatchcase(path, sel):
                self.used.add(sel)
                return fn
        return None

    def unused(self) -> list:
        return [sel for sel in [*self.modules, *self.params] if sel not in self.used]


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def _per_block(fn, blocks: int, path: str):
    """``fn`` drawn for each block of a scanned stack (a leading axis of ``blocks``): each
    block's draw sees its own shape, so fans are the block's."""
    def init(key, shape, dtype=None, out_sharding=None):
        if not shape or shape[0] != blocks:
            raise ValueError(f"stacks: {path} has shape {tuple(shape)}, without a leading axis "
                             f"of {blocks} blocks")
        keys = jax.random.split(key, blocks)
        return jax.vmap(lambda k: fn(k, tuple(shape[1:]), dtype))(keys)
    return init


def _stack_of(stacks: Mapping[str, int], path: str):
    inside = [s for s in stacks if path == s or path.startswith(s + "/")]
    return max(inside, key=len) if inside else None


def plan(model: nnx.Module, *, overrides: Mapping | None = None,
         padding_idx: Mapping[str, int] | None = None, strict: bool = True,
         stacks: Mapping[str, int] | None = None, pairing=None):
    """What ``init`` will draw: ``(draws, skipped)`` with ``draws`` a list of
    ``(path, variable, initialiser)``. Nothing is changed.

    Raises:
      ValueError: with ``strict``, for the first parameter that no rule (nor override)
        covers, naming its path and its module's type; for an override that matches no
        module or parameter of the model (with ``strict=False``: a logged warning).
    """
    rules = _Overrides(overrides)
    paired_kinds = {id(p.flax_layer): p.kind for p in pairing or ()}
    if stacks is None and pairing is not None:
        stacks = pairing.stacks()
    modules = list(nnx.iter_modules(model))
    paths = {_path(p) for p, _ in modules}
    for path in padding_idx or {}:
        if path not in paths:
            raise ValueError(f"padding_idx: the model has no module {path!r}")
    for path in stacks or {}:
        if path not in paths:
            raise ValueError(f"stacks: the model has no module {path!r}")
    covered = set()
    for path, m in modules:  # a registered layer's rule covers its submodules
        if is_flax_layer(m):
            covered |= {id(s) for p, s in nnx.iter_modules(m) if p}
    draws, skipped = [], []
    for parts, m in sorted(modules, key=lambda pm: _path(pm[0])):
        path = _path(parts)
        if id(m) in covered:
            continue
        layer = is_flax_layer(m)
        if layer:  # every parameter and statistic under it
            names = ["/".join(map(str, p)) for p, v in nnx.iter_graph(m)
                     if isinstance(v, (nnx.Param, nnx.BatchStat))]
        else:  # the variables it holds itself
            names = list(_own_variables(m))
        if not names:
            continue
        stack = _stack_of(stacks or {}, path)
        # a scanned block's rule reads block 0's shapes (its fans), not the stacked ones
        kind = paired_kinds.get(id(m))
        if kind is not None and kind.init is not None:  # the pair's own kind (a Conv1D pair)
            rule = kind.init(m)
        else:
            rule = init_rule(stack_slice(m, 0) if stack else m) if layer else None
        spec = {} if rule is None else dict(rule)
        spec.update(rules.module(path, m) or {})
        if layer:  # module rules of its submodules
            for sub_parts, sub in nnx.iter_modules(m):
                sub_rule = rules.module(_path(parts + sub_parts), sub) if sub_parts else None
                spec.update({f"{_path(sub_parts)}/{k}": fn for k, fn in (sub_rule or {}).items()})
        for name in names:  # parameter rules win
            fn = rules.param(_join(path, name))
            if fn is not None:
                spec[name] = fn
        missing = [n for n in names if n not in spec]
        if missing:
            if strict:
                full = _join(path, missing[0])
                raise ValueError(f"torch_like.init: no torch rule for {full} ({type(m).__name__}"
                                 f" at {path or '<root>'}); pass overrides={{{full!r}: "
                                 "initialiser} (or a rule for its module) or strict=False")
            skipped.append(Skipped(path, type(m).__name__))
            continue
        if padding_idx and path in padding_idx:
            if "embedding" not in spec:
                raise ValueError(f"padding_idx: {path} is not an embedding")
            spec["embedding"] = _zero_row(spec["embedding"], padding_idx[path],
                                          _shape(m.embedding)[0])
        for name, fn in spec.items():
            try:
                var = at_path(m, name)
            except (AttributeError, IndexError, ValueError):
                var = False
            if var is None:  # e.g. a recipe's bias on a layer built with use_bias=False
                continue
            if not isinstance(var, nnx.Variable):
                raise ValueError(f"torch_like.init: {path or '<root>'} ({type(m).__name__}) has "
                                 f"no variable {name!r}")
            if stack:
                fn = _per_block(fn, stacks[stack], _join(path, name))
            draws.append((_join(path, name), var, fn))
    unused = rules.unused()
    if unused:
        what = ", ".join(repr(getattr(u, "__name__", u)) for u in unused)
        if strict:
            raise ValueError(f"overrides: {what} matches no module or parameter of the model "
                             "(a typo?); pass strict=False to allow it")
        log.warning("torch_like.init: overrides %s match nothing", what)
    return draws, skipped


def _zero_row(fn, row: int, rows: int):
    """torch's ``padding_idx``: the embedding's row ``row`` is zero."""
    if not -rows <= row < rows:
        raise ValueError(f"padding_idx {row} is out of range for {rows} embeddings")

    def init(key, shape, dtype=None, out_sharding=None):
        return fn(key, shape, dtype).at[row].set(0)
    return init


def _key_of(key) -> jax.Array:
    if isinstance(key, nnx.Rngs):
        return key.params()
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape == (2,) and key.dtype == jnp.uint32:  # a legacy PRNGKey
            return jax.random.wrap_key_data(key)
        raise TypeError(f"key must be a jax.random.key, a PRNGKey or an nnx.Rngs, got {key!r}")
    return key


def init(model: nnx.Module, key, *, overrides: Mapping | None = None,
         padding_idx: Mapping[str, int] | None = None, strict: bool = True,
         stacks: Mapping[str, int] | None = None, pairing=None) -> nnx.Module:
    """Redraws, in place, every parameter and batch statistic of ``model`` as torch would.

    Each variable's draw uses ``fold_in(key, crc32(path))``, so a variable's values do not
    depend on which other layers the model has. Works on an abstract model from
    ``nnx.eval_shape`` (each variable is created from its shape and dtype) and under
    ``nnx.jit``; dtypes are kept.

    Args:
      model: any ``nnx.Module``.
      key: a ``jax.random.key``, a legacy ``PRNGKey`` or an ``nnx.Rngs`` (its params stream).
      overrides: a recipe: ``{layer type or path pattern: {variable: initialiser}}``, e.g.
        ``{nnx.Conv: {"kernel": kaiming_normal(mode="fan_out")}}``; a path pattern (fnmatch,
        ``"head/*"``) wins over a type.
      padding_idx: ``{embedding path: row}``: torch's ``padding_idx`` (that row is zero).
      strict: raise on a parametrised module no rule covers (nothing is changed then);
        with False such modules are left as they are and their paths logged (``plan``
        returns them).
      stacks: ``{path: blocks}`` of scanned stacks (a module built with ``nnx.vmap``, every
        variable with a leading axis of ``blocks``): each block is drawn as one block of
        its own (its own fans), with its own key. ``parity.check`` finds them itself.
      pairing: ``parity.pair(torch_module, model)``: each paired layer draws as its pair's
        kind says (the ``nnx.Linear`` that ports HF's ``Conv1D`` draws Conv1D's normal(0,
        0.02) under a kind registered for that pair), and the pairing's scanned stacks are
        used; without it a layer's kind is looked up from its nnx class alone.

    Returns:
      ``model``.

    Raises:
      ValueError: ``strict`` and a module without a rule; a bad override.

    Examples:
      >>> import jax, winit_jax.torch_like as tl
      >>> from flax import nnx
      >>> layer = tl.init(nnx.Linear(784, 512, rngs=nnx.Rngs(0)), jax.random.key(1))
      >>> bool(abs(layer.kernel[...]).max() <= 1 / 28)
      True
    """
    draws, skipped = plan(model, overrides=overrides, padding_idx=padding_idx, strict=strict,
                          stacks=stacks, pairing=pairing)
    for s in skipped:
        log.info("torch_like.init: left %s (%s) as it was: no torch rule", s.path, s.type)
    key = _key_of(key)
    new = []
    for path, var, fn in draws:
        value = var.get_value()
        k = sampling.fold_in(key, zlib.crc32(path.encode()))  # on the host: no compile
        new.append(fn(k, tuple(value.shape), value.dtype))  # all drawn before any is set
    for (_, var, _), value in zip(draws, new):
        var.set_value(value)
    return model


def unsupported(model: nnx.Module) -> list[Skipped]:
    """The parametrised modules of ``model`` that no rule covers."""
    return plan(model, strict=False)[1]


__all__ = ["Skipped", "constant", "convnext_recipe", "init", "kaiming_normal",
           "packed_xavier_uniform", "plan", "resnet_recipe", "trunc_normal", "uniform_sum",
           "efficientnet_recipe", "mobilenet_v2_recipe", "timm_vit_recipe",
           "torchvision_vit_recipe", "unsupported"]
