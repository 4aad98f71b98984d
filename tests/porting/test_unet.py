"""diffusers' ``UNet2DModel`` as it is (tiny config, no wrapper) against a port written the way
a Flax user writes it: NHWC throughout, ``(sample, timestep)`` as two inputs (the timestep an
integer that is never perturbed), the ``UNet2DOutput`` compared by its ``sample``, and the
attention blocks with the names of diffusers' own old Flax ``AttentionBlock`` (``query``,
``key``, ``value``, ``proj_attn``) where torch has ``to_q``, ``to_k``, ``to_v``, ``to_out.0``:
they pair by call order with no ``mapping=``. The attention's GroupNorm sees (B, C, H*W) in
diffusers and (B, H, W, C) in the port: its activations are compared all the same. Realistic
slips fail at the layer that makes them."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.conftest import require_torch
from winit_jax import parity as P
from winit_jax.parity import nchw, nhwc

torch = require_torch()
diffusers = pytest.importorskip("diffusers")

CONFIG = dict(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
              block_out_channels=(16, 32), norm_num_groups=4, attention_head_dim=8,
              down_block_types=("DownBlock2D", "AttnDownBlock2D"),
              up_block_types=("AttnUpBlock2D", "UpBlock2D"))
GROUPS, HEAD_DIM = CONFIG["norm_num_groups"], CONFIG["attention_head_dim"]


def torch_unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(**CONFIG).eval()


def conv(cin, cout, rngs, k=3, stride=1):
    return nnx.Conv(cin, cout, (k, k), strides=stride, padding=k // 2, rngs=rngs)


def norm(c, rngs):
    return nnx.GroupNorm(c, num_groups=GROUPS, epsilon=1e-5, rngs=rngs)


class Resnet(nnx.Module):
    def __init__(self, cin, cout, temb, rngs):
        self.norm1, self.conv1 = norm(cin, rngs), conv(cin, cout, rngs)
        self.time_emb_proj = nnx.Linear(temb, cout, rngs=rngs)
        self.norm2, self.conv2 = norm(cout, rngs), conv(cout, cout, rngs)
        self.conv_shortcut = conv(cin, cout, rngs, k=1) if cin != cout else None

    def __call__(self, x, temb):
        h = self.conv1(nnx.silu(self.norm1(x)))
        h = h + self.time_emb_proj(nnx.silu(temb))[:, None, None, :]
        h = self.conv2(nnx.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class AttentionBlock(nnx.Module):
    """diffusers' old Flax names; softmax attention over the H*W positions."""

    def __init__(self, c, rngs, slip=None):
        self.group_norm = norm(c, rngs)
        self.query, self.key, self.value, self.proj_attn = (
            nnx.Linear(c, c, rngs=rngs) for _ in range(4))
        self.heads, self.slip = c // HEAD_DIM, slip

    def __call__(self, x):
        b, h, w, c = x.shape
        y = self.group_norm(x).reshape(b, h * w, c)
        q, k, v = self.query(y), self.key(y), self.value(y)
        if self.slip == "swapped q/k":
            q, k = k, q

        def split(z):
            return z.reshape(b, h * w, self.heads, HEAD_DIM).transpose(0, 2, 1, 3)
        scores = split(q) @ split(k).transpose(0, 1, 3, 2) / math.sqrt(HEAD_DIM)
        out = (jax.nn.softmax(scores, axis=-1) @ split(v)).transpose(0, 2, 1, 3)
        return x + self.proj_attn(out.reshape(b, h * w, c)).reshape(b, h, w, c)


def timestep_embedding(t, dim):
    """diffusers' ``get_timestep_embedding`` (flip_sin_to_cos=True, shift 0), in float32 as
    diffusers computes it whatever the model's dtype."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10000) * jnp.arange(half, dtype=jnp.float32) / half)
    angles = t.astype(jnp.float32)[:, None] * freqs[None]
    return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


class TimestepEmbedding(nnx.Module):
    def __init__(self, cin, d, rngs):
        self.linear_1, self.linear_2 = nnx.Linear(cin, d, rngs=rngs), nnx.Linear(d, d, rngs=rngs)

    def __call__(self, x):
        return self.linear_2(nnx.silu(self.linear_1(x)))


class UNet(nnx.Module):
    def __init__(self, rngs, slip=None):
        c0, c1 = CONFIG["block_out_channels"]
        temb = 4 * c0
        self.time_embedding = TimestepEmbedding(c0, temb, rngs)
        self.conv_in = conv(3, c0, rngs)
        self.down0 = Resnet(c0, c0, temb, rngs)
        self.downsample = conv(c0, c0, rngs, stride=2)
        self.down1 = Resnet(c0, c1, temb, rngs)
        self.down1_attn = AttentionBlock(c1, rngs, slip)
        self.mid = nnx.List([Resnet(c1, c1, temb, rngs), AttentionBlock(c1, rngs),
                             Resnet(c1, c1, temb, rngs)])
        self.up0 = nnx.List([Resnet(2 * c1, c1, temb, rngs), Resnet(c1 + c0, c1, temb, rngs)])
        self.up0_attn = nnx.List([AttentionBlock(c1, rngs), AttentionBlock(c1, rngs)])
        self.upsample = conv(c1, c1, rngs)
        self.up1 = nnx.List([Resnet(c1 + c0, c0, temb, rngs), Resnet(c0 + c0, c0, temb, rngs)])
        self.conv_norm_out, self.conv_out = norm(c0, rngs), conv(c0, 3, rngs)
        self.slip, self.c0 = slip, c0

    def __call__(self, sample, timestep):
        t = jnp.broadcast_to(timestep, sample.shape[:1])
        emb = self.time_embedding(timestep_embedding(t, self.c0).astype(sample.dtype))
        x = self.conv_in(sample)
        skips = [x]
        x = self.down0(x, emb)
        skips.append(x)
        x = self.downsample(x if self.slip != "padding" else jnp.pad(
            x, ((0, 0), (1, 0), (1, 0), (0, 0)))[:, :-1, :-1])
        skips.append(x)
        x = self.down1_attn(self.down1(x, emb))
        skips.append(x)
        x = self.mid[2](self.mid[1](self.mid[0](x, emb)), emb)
        for resnet, attn in zip(self.up0, self.up0_attn):
            x = attn(resnet(jnp.concatenate([x, skips.pop()], axis=-1), emb))
        x = self.upsample(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))  # nearest, x2
        for resnet in self.up1:
            x = resnet(jnp.concatenate([x, skips.pop()], axis=-1), emb)
        return self.conv_out(nnx.silu(self.conv_norm_out(x)))


def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((2, 3, 8, 8)).astype(np.float32), np.array([3, 700])


def _check(port, **kw):
    sample, t = data()
    options = dict(flax_inputs=(nhwc, None), flax_outputs=nchw, init_seeds=0,
                   torch_outputs=lambda out: out.sample)
    return P.check(torch_unet(), port, (sample, t), **{**options, **kw})


def test_the_unet_pairs_by_names_and_call_order_with_no_mapping():
    sample, t = data()
    pairing = P.pair(torch_unet(), UNet(nnx.Rngs(0)), inputs=(sample, t),
                     flax_inputs=(nhwc, None))
    got = {p.torch_name: p.flax_path for p in pairing}
    a = "down_blocks.1.attentions.0"
    assert (got[f"{a}.to_q"], got[f"{a}.to_k"], got[f"{a}.to_v"], got[f"{a}.to_out.0"]) == (
        "down1_attn/query", "down1_attn/key", "down1_attn/value", "down1_attn/proj_attn")
    assert got["up_blocks.0.upsamplers.0.conv"] == "upsample"
    assert got["mid_block.resnets.1.conv2"] == "mid/2/conv2"
    assert got["time_embedding.linear_1"] == "time_embedding/linear_1"
    n_torch = sum(1 for m in torch_unet().modules()
                  if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.GroupNorm)))
    assert len(got) == n_torch  # every layer with weights paired


@pytest.mark.slow
def test_the_unet_port_passes_forward_gradients_layers_and_steps():
    report = _check(UNet(nnx.Rngs(0)), steps=3,
                    make_optimizer=lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3))
    report.assert_ok()
    parts = {s["part"] for s in report.summary()}
    assert {"forward", "gradient", "layer", "step"} <= parts
    rows = {r.torch_name: r for r in report.layers}
    # the attention's GroupNorm runs on (B, C, H*W) in diffusers and on NHWC in the port:
    # compared all the same (a finite gap, not "not compared")
    gn = rows["down_blocks.1.attentions.0.group_norm"]
    assert not gn.not_compared and np.isfinite(gn.output_gap), gn
    assert not [r for r in report.layers if r.not_compared or r.uncalled]


@pytest.mark.slow
@pytest.mark.parametrize("slip,where", [
    ("swapped q/k", ("down_blocks.1.attentions.0.to_out.0", "before")),
    ("padding", ("down_blocks.0.downsamplers.0.conv", "before")),
])
def test_unet_slips_are_localised(slip, where):
    report = _check(UNet(nnx.Rngs(0), slip=slip))
    assert not report.ok
    d = report.first_divergence
    assert (d.torch_name, d.where) == where, str(d)


@pytest.mark.slow
def test_swapped_inputs_fail():
    """A port that takes (timestep, sample) where diffusers takes (sample, timestep): refused
    by name (the inputs do not fit the port), before anything is changed."""
    class Swapped(UNet):
        def __call__(self, timestep, sample):
            return super().__call__(sample, timestep)
    sample, t = data()
    with pytest.raises(P.ParityError, match=r"^inputs: 2 positional inputs \[\(2, 8, 8, 3\), "
                                            r"\(2,\)\] \(after flax_inputs\) does not fit the "
                                            "nnx model"):
        P.check(torch_unet(), Swapped(nnx.Rngs(0)), (sample, t), flax_inputs=(nhwc, None),
                init_seeds=0, torch_outputs=lambda out: out.sample, flax_outputs=nchw)


def test_activations_are_aligned_by_the_one_layout_that_fits():
    from winit_jax.parity.stage_layers import _aligned
    x = np.arange(2 * 4 * 5 * 6.0).reshape(2, 4, 5, 6)  # NHWC
    nchw_ = x.transpose(0, 3, 1, 2)
    for torch_side in (nchw_, nchw_.reshape(2, 6, 20)):  # a norm on NCHW, diffusers' (B, C, HW)
        got, why = _aligned(x, torch_side)
        assert not why and np.array_equal(got, torch_side)
    heads = np.arange(2 * 5 * 3 * 4.0).reshape(2, 5, 3, 4)  # (B, T, heads, d)
    for torch_side in (heads.reshape(2, 5, 12), heads.transpose(0, 2, 1, 3)):
        got, why = _aligned(heads, torch_side)
        assert not why and np.array_equal(got, torch_side)
    # equal sizes that shapes cannot tell apart: not compared, naming both, never guessed
    got, why = _aligned(np.zeros((2, 4, 4, 4)), np.zeros((2, 4, 16)))
    assert got is None and why == "torch (2, 4, 16) vs port (2, 4, 4, 4) (3 layouts fit)"
    got, why = _aligned(np.zeros((2, 3, 7)), np.zeros((2, 5, 4)))
    assert got is None and why == "torch (2, 5, 4) vs port (2, 3, 7)"


def test_projections_pair_by_role_only_where_both_sides_name_it():
    """q, k and v take the same input: their call order proves nothing. diffusers' to_q pairs
    with the port's query by role; with names that say no role, the pairing is refused."""
    class Anonymous(nnx.Module):  # the same block, its projections named a, b, c, proj
        def __init__(self, c, rngs):
            self.group_norm = norm(c, rngs)
            self.a, self.b, self.c, self.proj = (nnx.Linear(c, c, rngs=rngs) for _ in range(4))

        def __call__(self, x):
            b, h, w, c = x.shape
            y = self.group_norm(x).reshape(b, h * w, c)
            q, k, v = self.a(y), self.b(y), self.c(y)
            attn = jax.nn.softmax(q @ k.transpose(0, 2, 1) / math.sqrt(c), axis=-1) @ v
            return x + self.proj(attn).reshape(b, h, w, c)

    class Port(UNet):
        def __init__(self, rngs):
            super().__init__(rngs)
            self.down1_attn = Anonymous(CONFIG["block_out_channels"][1], rngs)
    sample, t = data()
    with pytest.raises(P.ParityError, match=r"take the same input \(parallel branches\)"):
        P.pair(torch_unet(), Port(nnx.Rngs(0)), inputs=(sample, t), flax_inputs=(nhwc, None))


def test_weights_go_across_both_ways_with_inputs_and_no_mapping():
    sample, t = data()
    net, port = torch_unet(), UNet(nnx.Rngs(1))
    with pytest.raises(P.ParityError, match="pass the inputs"):
        P.from_torch(net, port)  # names alone cannot pair query with to_q
    P.from_torch(net, port, inputs=(sample, t), flax_inputs=(nhwc, None))
    with torch.no_grad():
        want = net(torch.as_tensor(sample), torch.as_tensor(t)).sample.numpy()
    got = np.asarray(nchw(port(jnp.asarray(nhwc(sample)), jnp.asarray(t))))
    # float32 both sides: a few ulps of the output's scale (a wrong pairing is O(1) off)
    assert np.max(np.abs(got - want)) < 1e-4 * np.max(np.abs(want))
    back = torch_unet()
    for p in back.parameters():
        torch.nn.init.zeros_(p)
    P.to_torch(port, back, inputs=(sample, t), flax_inputs=(nhwc, None))
    for (n, a), b in zip(net.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), n


def test_transfer_inputs_are_refused_when_they_cannot_be_used():
    sample, t = data()
    net, port = torch_unet(), UNet(nnx.Rngs(1))
    with pytest.raises(P.ParityError, match="^inputs: kwargs= and flax_inputs= go with inputs="):
        P.from_torch(net, port, flax_inputs=(nhwc, None))
    pairing = P.pair(net, port, inputs=(sample, t), flax_inputs=(nhwc, None))
    with pytest.raises(P.ParityError, match="^inputs: pass inputs to parity.pair, or a pairing"):
        P.to_torch(port, net, pairing=pairing, inputs=(sample, t))


class _Timesteps(torch.nn.Module):
    """diffusers' ``Timesteps``: the sinusoidal embedding, computed in float32 whatever the
    model's dtype."""

    def forward(self, t):
        half = 4
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
        angles = t.float()[:, None] * freqs[None]
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class _TorchBlock(torch.nn.Module):
    """A UNet-like block: a float32 timestep embedding, a convolution, GroupNorm and
    attention over the H*W positions with key biases (whose gradient is 0 in exact
    arithmetic: softmax ignores what every score of a row shares)."""

    def __init__(self):
        super().__init__()
        self.time_proj = _Timesteps()
        self.time_embedding = torch.nn.Linear(8, 16)
        self.conv_in = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.group_norm = torch.nn.GroupNorm(4, 16)
        self.to_q, self.to_k, self.to_v = (torch.nn.Linear(16, 16) for _ in range(3))
        self.conv_out = torch.nn.Conv2d(16, 3, 1)

    def forward(self, sample, timestep):
        emb = self.time_embedding(self.time_proj(timestep).to(sample.dtype))
        h = self.conv_in(sample) + emb[:, :, None, None]
        b, c, height, width = h.shape
        y = self.group_norm(h).view(b, c, height * width).transpose(1, 2)
        q, k, v = self.to_q(y), self.to_k(y), self.to_v(y)
        a = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(c), dim=-1) @ v
        return self.conv_out(h + a.transpose(1, 2).reshape(b, c, height, width))


class _Block(nnx.Module):
    def __init__(self, rngs, embedding_dtype=jnp.float32):
        self.time_embedding = nnx.Linear(8, 16, param_dtype=jnp.float64, rngs=rngs)
        self.conv_in = nnx.Conv(3, 16, (3, 3), padding=1, param_dtype=jnp.float64, rngs=rngs)
        self.group_norm = nnx.GroupNorm(16, num_groups=4, epsilon=1e-5,
                                        param_dtype=jnp.float64, use_fast_variance=False,
                                        rngs=rngs)
        self.query, self.key, self.value = (nnx.Linear(16, 16, param_dtype=jnp.float64,
                                                       rngs=rngs) for _ in range(3))
        self.conv_out = nnx.Conv(16, 3, (1, 1), param_dtype=jnp.float64, rngs=rngs)
        self.embedding_dtype = embedding_dtype

    def __call__(self, sample, timestep):
        half = 4  # as diffusers: in float32, then cast to the model's dtype
        d = self.embedding_dtype
        freqs = jnp.exp(-math.log(10000) * jnp.arange(half, dtype=d) / half)
        angles = timestep.astype(d)[:, None] * freqs[None]
        t = jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], -1).astype(sample.dtype)
        h = self.conv_in(sample) + self.time_embedding(t)[:, None, None, :]
        b, height, width, c = h.shape
        y = self.group_norm(h).reshape(b, height * width, c)
        q, k, v = self.query(y), self.key(y), self.value(y)
        a = jax.nn.softmax(q @ k.transpose(0, 2, 1) / math.sqrt(c), axis=-1) @ v
        return self.conv_out(h + a.reshape(b, height, width, c))


@jax.numpy_dtype_promotion("standard")  # nnx's GroupNorm promotes float64 with float32
def test_a_float32_timestep_embedding_and_key_biases_pass_in_float64(monkeypatch):
    """diffusers computes its timestep embedding in float32 whatever the model's dtype: in
    a float64 check the parts after it are judged at float32 precision, and said so; the key
    biases' gradients, 0 in exact arithmetic, are not tested in any part. Without the
    float32 part found, the same faithful port fails (the negative control)."""
    rng = np.random.default_rng(0)
    sample = rng.standard_normal((2, 3, 4, 4))
    t = np.array([3, 700])
    with jax.enable_x64(True):
        def check():
            torch.manual_seed(0)
            return P.check(_TorchBlock().double(), _Block(nnx.Rngs(0)), (sample, t),
                           dtype="float64", flax_inputs=(nhwc, None), flax_outputs=nchw,
                           init_seeds=0, steps=2)
        report = check()
        report.assert_ok()
        assert any("torch runs time_proj in float32" in n for n in report.notes)
        key_bias = [c for c in report.checks if c.name == "to_k.bias"]
        assert key_bias and all(c.outcome is P.Outcome.NOT_TESTED for c in key_bias)
        from winit_jax.parity import run as run_module
        monkeypatch.setattr(run_module, "float32_parts", lambda *a: (None, frozenset()))
        assert not check().ok
