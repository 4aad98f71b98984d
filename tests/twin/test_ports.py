"""Ports of models nobody here wrote, written the way a Flax user writes them, through every
part of ``check``, with the mistakes porters really make as mutants: torchvision's
VisionTransformer (bare parameters, numbered blocks against a list, a zero head)."""

import numpy as np
import pytest
from flax import nnx

import winit_jax.torch_like as tl
from tests.conftest import require_torch
from winit_jax import parity as P
from winit_jax.lab import parity_examples as E

torch = require_torch()


@pytest.fixture(scope="module")
def vit():
    return E.vit()


@pytest.mark.slow
def test_torchvision_vit_port_passes_every_part(vit):
    net, port, x, kwargs = vit
    names = {(p.torch_name, p.flax_path, p.kind.name) for p in P.pairs(net, port)}
    assert ("", "", "Parameter") in names  # class_token on the model itself
    assert ("encoder", "encoder", "Parameter") in names  # pos_embedding on the encoder
    assert ("encoder.layers.encoder_layer_1.mlp.3", "encoder/layers/1/mlp/1", "Linear") in names
    report = P.check(net, port, x, steps=3, momentum=0.9, **kwargs)
    report.assert_ok()
    parts = {s["part"]: s["checks"] for s in report.summary()}
    # conv stem 2, class token, pos embedding, 2 x (2 LayerNorms x 2 + attention 4 + MLP 4),
    # final LayerNorm 2, head 2
    assert parts["init"] == 32 and parts["gradient"] == 32 and parts["step"] == 32 + 3


def test_timm_recipe_and_an_unscaled_embedding_fail_the_init_part(vit):
    """torchvision's ViT is not timm's: timm's recipe fails the init part (the MLP blocks'
    xavier weights and 1e-6 biases, the patch stem); so does a position embedding drawn
    N(0, 1) instead of N(0, 0.02^2). Control: torchvision's recipe passes (test above)."""
    net, port, x, kwargs = vit
    kwargs = dict(kwargs)
    tv = tl.torchvision_vit_recipe()
    kwargs["init_overrides"] = {**tl.timm_vit_recipe(), "class_token": tv["class_token"],
                                "*pos_embedding": tv["*pos_embedding"]}
    bad = {c.name for c in P.check(net, port, x, **kwargs).failures() if c.part == "init"}
    assert "conv_proj.weight" in bad and "encoder.layers.encoder_layer_0.mlp.0.weight" in bad
    recipe = tl.torchvision_vit_recipe()
    recipe["*pos_embedding"] = tl.variance_scaling(1.0, "none", "normal")
    kwargs["init_overrides"] = recipe
    bad = {c.name for c in P.check(net, port, x, **kwargs).failures()}
    assert bad == {"encoder.pos_embedding"}


@pytest.mark.parametrize("slip", [dict(patch_order="wh"), dict(gelu_approximate=(1,))],
                         ids=["patches (w, h)", "tanh GELU in block 1"])
def test_port_mutants_fail_the_forward(vit, slip):
    net, _, x, kwargs = vit
    port = E.flax_vit(nnx.Rngs(0), **slip)
    report = P.check(net, port, x, flax_inputs=E.nhwc, init_seeds=0)
    assert "forward" in {c.part for c in report.failures()}


def test_an_override_that_matches_nothing_is_an_error(vit):
    _, port, _, _ = vit
    with pytest.raises(ValueError, match=r"overrides: 'head/head' matches no module or "
                                         r"parameter of the model \(a typo\?\)"):
        tl.init(port, np.uint32([0, 0]), overrides={**tl.torchvision_vit_recipe(),
                                                    "head/head": {"kernel": tl.constant(0.0)}})
    without = tl.torchvision_vit_recipe()
    del without["class_token"]
    with pytest.raises(ValueError, match=r"no torch rule for class_token \(ViT at <root>\); "
                                         r"pass overrides=\{'class_token': initialiser\}"):
        tl.init(port, np.uint32([0, 0]), overrides=without)
