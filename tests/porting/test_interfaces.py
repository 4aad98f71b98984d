"""Real interfaces: several positional inputs, keyword inputs, integer inputs that stay
integers, outputs that are structures (a dataclass on torch's side, a dict on the port's),
the default loss on the first compared output; and the refusals that name the argument.
A denoiser written as torch users and Flax users write them (diffusers-like
``forward(sample, timestep, mask=None)`` returning an output dataclass)."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.conftest import require_torch
from winit_jax import parity as P
from winit_jax.parity import nchw, nhwc
from winit_jax.parity.io import Data

torch = require_torch()
nn = torch.nn


def _torch_embedding(t, dim):
    """Sinusoidal timestep embedding (diffusers' get_timestep_embedding, flip_sin_to_cos off)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


def _flax_embedding(t, dim):
    half = dim // 2
    freqs = jnp.exp(-math.log(10000) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t[:, None].astype(jnp.float32) * freqs[None]
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


@dataclasses.dataclass
class DenoiserOutput:
    sample: object
    hidden: object


class TorchDenoiser(nn.Module):
    def __init__(self):
        super().__init__()
        self.time_proj = nn.Linear(16, 8)
        self.conv_in = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.conv_out = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, sample, timestep, mask=None):
        # computed in float32, then cast to the model's dtype (as diffusers' UNet2DModel does)
        emb = _torch_embedding(timestep, 16).to(sample.dtype)
        h = self.conv_in(sample) + self.time_proj(emb)[:, :, None, None]
        h = nn.functional.silu(self.norm(h))
        out = self.conv_out(h)
        if mask is not None:
            out = out * mask[:, None]
        return DenoiserOutput(sample=out, hidden=h)


class Denoiser(nnx.Module):
    """The port, NHWC, as a Flax user writes it; ``slip`` is a realistic mistake."""

    def __init__(self, rngs, slip=None):
        pad = ((1, 1), (1, 1))
        self.time_proj = nnx.Linear(16, 8, rngs=rngs)
        self.conv_in = nnx.Conv(3, 8, (3, 3), padding=pad, rngs=rngs)
        self.norm = nnx.GroupNorm(8, num_groups=2, epsilon=1e-5, rngs=rngs)
        self.conv_out = nnx.Conv(8, 3, (3, 3), padding=pad, rngs=rngs)
        self.slip = slip

    def __call__(self, sample, timestep, mask=None):
        emb = _flax_embedding(timestep, 16)
        if self.slip == "timestep as float seconds":
            emb = _flax_embedding(timestep / 1000, 16)
        h = self.conv_in(sample) + self.time_proj(emb)[:, None, None, :]
        h = nnx.silu(self.norm(h))
        out = self.conv_out(h)
        if mask is not None and self.slip != "mask ignored":
            out = out * mask[..., None]
        return {"sample": out, "hidden": h}


def _data(seed=0):
    rng = np.random.default_rng(seed)
    sample = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    timestep = np.array([10, 700], np.int64)
    mask = (rng.random((2, 8, 8)) > 0.3).astype(np.float32)
    return sample, timestep, mask


def _check(port, **kw):
    torch.manual_seed(0)
    sample, timestep, mask = _data()
    options = dict(kwargs=dict(mask=mask), flax_inputs=(nhwc, None), init_seeds=0,
                   flax_outputs=lambda out: {k: nchw(v) for k, v in out.items()})
    return P.check(TorchDenoiser(), port, (sample, timestep), **{**options, **kw})


def test_several_inputs_keyword_inputs_and_structured_outputs_pass():
    """(sample, timestep) positional, mask by keyword, the int64 timesteps kept integers;
    torch's DenoiserOutput and the port's dict compared leaf by leaf (both keys), and the
    default loss on the first of them, which a note says; steps too."""
    report = _check(Denoiser(nnx.Rngs(0)), steps=2)
    report.assert_ok()
    forward = {c.name for c in report.checks if c.part == "forward"}
    assert forward == {"output sample", "output hidden"}
    assert any("default loss is computed on the first compared output (sample)" in n
               for n in report.notes)


@pytest.mark.parametrize("slip,part", [("mask ignored", "forward"),
                                       ("timestep as float seconds", "forward")])
def test_a_slip_in_how_an_input_is_used_fails(slip, part):
    report = _check(Denoiser(nnx.Rngs(0), slip=slip))
    assert not report.ok and part in {c.part for c in report.failures()}


def test_torch_outputs_picks_what_to_compare():
    """Only ``sample`` compared (torch_outputs and flax_outputs pick it on each side)."""
    report = _check(Denoiser(nnx.Rngs(0)), torch_outputs=lambda out: out.sample,
                    flax_outputs=lambda out: nchw(out["sample"]))
    report.assert_ok()
    assert {c.name for c in report.checks if c.part == "forward"} == {"output"}


def test_a_port_that_does_not_take_a_keyword_input_is_refused_by_name():
    class NoMask(Denoiser):
        def __call__(self, sample, timestep):
            return super().__call__(sample, timestep)
    with pytest.raises(P.ParityError, match=r"inputs: 2 positional inputs .* and keyword "
                                            r"inputs \['mask'\] \(after flax_inputs\) does not "
                                            r"fit the nnx model: .*mask"):
        _check(NoMask(nnx.Rngs(0)))


def test_structures_that_differ_are_refused_naming_both():
    with pytest.raises(P.ParityError, match=r"outputs: torch gives DenoiserOutput\(sample "
                                            r"\(2, 3, 8, 8\), hidden \(2, 8, 8, 8\)\) and the "
                                            r"port gives array \(2, 3, 8, 8\); pass "
                                            r"torch_outputs="):
        _check(Denoiser(nnx.Rngs(0)), flax_outputs=lambda out: nchw(out["sample"]))


def test_probes_move_real_inputs_only():
    """The nearby-input probes move the sample, never the integer timesteps or keyword
    inputs."""
    import torch as T
    sample, timestep, mask = _data()
    data = Data(T.float32, (nhwc, None))
    batch = data((sample, timestep), dict(mask=mask), None, "inputs")
    moved = data.moved(batch, np.random.default_rng(0), np.float32(4 * np.finfo(np.float32).eps))
    assert moved.args_torch[1].dtype == T.int64
    assert T.equal(moved.args_torch[1], batch.args_torch[1])
    assert T.equal(moved.kwargs_torch["mask"], batch.kwargs_torch["mask"])
    assert not T.equal(moved.args_torch[0], batch.args_torch[0])
    assert jnp.array_equal(moved.args_flax[0], nhwc(moved.args_torch[0].numpy()))
    assert moved.args_flax[1].dtype == (jnp.int64 if jax.config.jax_enable_x64
                                        else jnp.int32)
