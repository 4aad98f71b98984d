"""Pretrained weights across: torch checkpoints (written by torch, safetensors and the HF hub
library) loaded into abstract ports with no key map, against ``from_torch`` bit for bit;
the round trip through ``save_checkpoint`` and torch's strict loaders; refusals that leave
the model as it was; slices per device and per process."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from tests.conftest import require_torch
from winit_jax import parity as P

torch = require_torch()
st = pytest.importorskip("safetensors.torch")
transformers = pytest.importorskip("transformers")

from tests.porting.gpt2_port import CONFIG, GPT2  # noqa: E402
from tests.porting.test_gpt2 import torch_gpt2  # noqa: E402


def meta_gpt2():
    with torch.device("meta"):
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(**CONFIG))


def abstract_gpt2():
    return nnx.eval_shape(lambda: GPT2(nnx.Rngs(0)))


def params(model) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def same(a, b) -> bool:
    return all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(params(a), params(b)))


def reference_gpt2(net):
    return P.from_torch(net, GPT2(nnx.Rngs(5)))


def test_gpt2_from_every_kind_of_file_equals_from_torch_bit_for_bit(tmp_path):
    from huggingface_hub import save_torch_state_dict
    net = torch_gpt2()
    want = reference_gpt2(net)
    st.save_model(net, tmp_path / "model.safetensors")  # keeps one of the tied names
    torch.save(net.state_dict(), tmp_path / "model.pt")  # keeps both
    (tmp_path / "sharded").mkdir()
    save_torch_state_dict(net.state_dict(), tmp_path / "sharded", max_shard_size="40KB")
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    for source in ("model.safetensors", "model.pt", "sharded"):
        port = abstract_gpt2()
        report = P.load_checkpoint(tmp_path / source, port, torch_module=meta_gpt2())
        assert same(port, want), source
        assert len(report.filled) == len(params(want)) and not report.ignored
        # the tied head: read once, whichever of the two names the file kept
        assert sum("transformer/wte/embedding" in v for v in report.used.values()) == 1
    port = abstract_gpt2()
    P.load_checkpoint(net.state_dict(), port, torch_module=meta_gpt2())
    assert same(port, want)


def test_each_variable_takes_the_ports_declared_dtype(tmp_path):
    """A bfloat16 file: into a float32 port, float32 (exactly the bfloat16 values, counted
    as conversions); into a port declared bfloat16, bfloat16 with no conversion; dtype=
    overrides the port."""
    net = torch_gpt2().to(torch.bfloat16)
    st.save_model(net, tmp_path / "bf16.safetensors")
    want = net.transformer.h[0].attn.c_attn.weight.detach().float().numpy()  # Conv1D: (in, out)
    port = abstract_gpt2()
    report = P.load_checkpoint(tmp_path / "bf16.safetensors", port, torch_module=meta_gpt2())
    got = port.transformer.h[0].attn.c_attn.kernel.get_value()
    assert got.dtype == np.float32 and np.array_equal(np.asarray(got), want)
    assert set(report.converted.values()) == {"bfloat16 -> float32"}
    assert len(report.converted) == len(report.filled) and "converted: " in str(report)
    bf16 = abstract_gpt2()  # the port declared bfloat16 (as param_dtype= would)
    for _, var in nnx.iter_graph(bf16):
        if isinstance(var, nnx.Param):
            var.set_value(jax.ShapeDtypeStruct(var.get_value().shape, jax.numpy.bfloat16))
    report = P.load_checkpoint(tmp_path / "bf16.safetensors", bf16, torch_module=meta_gpt2())
    got = bf16.transformer.h[0].attn.c_attn.kernel.get_value()
    assert got.dtype == jax.numpy.bfloat16 and not report.converted
    assert np.array_equal(np.asarray(got, np.float32), want)
    port = abstract_gpt2()
    P.load_checkpoint(tmp_path / "bf16.safetensors", port, torch_module=meta_gpt2(),
                      dtype=jax.numpy.bfloat16)
    assert port.transformer.wte.embedding.get_value().dtype == jax.numpy.bfloat16


def test_a_bfloat16_resnet_keeps_a_ports_float32_batch_statistics(tmp_path):
    """Flax keeps BatchNorm statistics float32 whatever param_dtype: a bfloat16 ResNet-18 file
    leaves them float32 (before: silently bfloat16), its parameters bfloat16."""
    from torchvision.models import resnet18

    from winit_jax.models import ResNet18
    torch.manual_seed(0)
    net = resnet18(num_classes=10).to(torch.bfloat16)
    st.save_model(net, tmp_path / "r18.safetensors")
    port = nnx.eval_shape(lambda: ResNet18(num_classes=10, rngs=nnx.Rngs(0),
                                           param_dtype=jax.numpy.bfloat16))
    with torch.device("meta"):
        skeleton = resnet18(num_classes=10)
    report = P.load_checkpoint(tmp_path / "r18.safetensors", port, torch_module=skeleton,
                               ignore=["*num_batches_tracked"])
    assert port.bn1.mean.get_value().dtype == np.float32
    assert port.bn1.scale.get_value().dtype == jax.numpy.bfloat16
    assert np.array_equal(np.asarray(port.bn1.mean.get_value()),
                          net.bn1.running_mean.float().numpy())
    assert set(report.converted.values()) == {"bfloat16 -> float32"}
    assert all(path.endswith(("/mean", "/var")) for path in report.converted)


def test_a_training_checkpoint_is_unwrapped_and_the_report_says_so(tmp_path):
    net = torch_gpt2()
    torch.save({"state_dict": net.state_dict(), "epoch": 3}, tmp_path / "train.pt")
    report = P.load_checkpoint(tmp_path / "train.pt", abstract_gpt2(), torch_module=meta_gpt2())
    assert "train.pt is a training checkpoint: its 'state_dict' entry read (epoch left)" in str(
        report)


def test_the_round_trip_through_save_checkpoint_is_exact(tmp_path):
    net = torch_gpt2()
    port = reference_gpt2(net)
    out = P.save_checkpoint(port, tmp_path / "out.safetensors", torch_module=meta_gpt2())
    back = torch_gpt2()
    for p in back.parameters():
        torch.nn.init.zeros_(p)
    st.load_model(back, tmp_path / "out.safetensors", strict=True)
    assert back.lm_head.weight is back.transformer.wte.weight  # the tie survives
    for (name, a), b in zip(net.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), name
    assert out["bytes"] == os.path.getsize(tmp_path / "out.safetensors")
    sharded = P.save_checkpoint(port, tmp_path / "shards", torch_module=meta_gpt2(),
                                max_shard_bytes=30_000)
    assert len(sharded["files"]) > 1
    index = json.loads((tmp_path / "shards" / "model.safetensors.index.json").read_text())
    state = {}
    for f in sorted(set(index["weight_map"].values())):
        state.update(st.load_file(tmp_path / "shards" / f))
    state["lm_head.weight"] = state["transformer.wte.weight"]
    again = torch_gpt2()
    again.load_state_dict(state, strict=True)
    for (name, a), b in zip(net.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("slip,message", [
    ("missing", r"checkpoint: state dict does not fit this model: 1 keys the model needs are "
                r"missing \(transformer\.h\.#\.mlp\.c_fc: bias\); nothing was changed"),
    ("extra", r"checkpoint: state dict does not fit this model: 1 keys are not the model's "
              r"\(extra: weight; pass ignore=\[\.\.\.\] to skip them\); the file's top-level "
              r"names are \['extra', 'lm_head', 'transformer'\], the model's \['lm_head', "
              r"'transformer'\]"),
    ("shape", r"checkpoint: transformer\.ln_f\.weight has shape \(31,\); the torch module's "
              r"is \(32,\)"),
])
def test_a_checkpoint_that_does_not_fit_is_refused_by_name_and_changes_nothing(slip, message):
    state = dict(torch_gpt2().state_dict())
    if slip == "missing":
        del state["transformer.h.1.mlp.c_fc.bias"]
    elif slip == "extra":
        state["extra.weight"] = torch.zeros(3)
    else:
        state["transformer.ln_f.weight"] = torch.zeros(31)
    port = GPT2(nnx.Rngs(7))
    before = params(port)
    with pytest.raises(P.ParityError, match=message):
        P.load_checkpoint(state, port, torch_module=meta_gpt2())
    assert all(np.array_equal(a, b) for a, b in zip(before, params(port)))
    if slip == "extra":  # skipped on purpose, it loads
        P.load_checkpoint(state, port, torch_module=meta_gpt2(), ignore=["extra.*"])


def test_a_plan_loads_safetensors_without_torch(tmp_path):
    net = torch_gpt2()
    st.save_model(net, tmp_path / "model.safetensors")
    P.make_plan(meta_gpt2(), abstract_gpt2()).save(tmp_path / "plan.json")
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # importing torch fails from here on
        import numpy as np
        from flax import nnx
        sys.path.insert(0, {str(Path.cwd())!r})
        from winit_jax.parity.checkpoint import load_checkpoint
        from tests.porting.gpt2_port import GPT2
        port = nnx.eval_shape(lambda: GPT2(nnx.Rngs(0)))
        print(load_checkpoint({str(tmp_path / 'model.safetensors')!r}, port,
                              plan={str(tmp_path / 'plan.json')!r}))
        np.save({str(tmp_path / 'wte.npy')!r}, np.asarray(port.transformer.wte.embedding[...]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert np.array_equal(np.load(tmp_path / "wte.npy"),
                          net.transformer.wte.weight.detach().numpy())


def _write(net, tmp_path, form: str):
    """``net``'s checkpoint as torch's ecosystem writes it: ``torch.save`` (.pt),
    ``safetensors.torch.save_model``, or the HF hub's sharded safetensors."""
    from huggingface_hub import save_torch_state_dict
    if form == "pt":
        torch.save(net.state_dict(), tmp_path / "model.pt")
        return tmp_path / "model.pt"
    if form == "safetensors":
        st.save_model(net, tmp_path / "model.safetensors")
        return tmp_path / "model.safetensors"
    (tmp_path / "sharded").mkdir()
    save_torch_state_dict(net.state_dict(), tmp_path / "sharded", max_shard_size="100KB")
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    return tmp_path / "sharded"


def _mobilenet():
    from tests.porting.test_natural_ports import _models
    from winit_jax.parity import nhwc
    net, port, x = _models()
    return net, lambda: nnx.eval_shape(lambda: nnx.clone(port)), dict(inputs=x,
                                                                      flax_inputs=nhwc)


def _unet():
    from tests.porting.test_unet import UNet, data, torch_unet
    from winit_jax.parity import nhwc
    return (torch_unet(), lambda: nnx.eval_shape(lambda: UNet(nnx.Rngs(0))),
            dict(inputs=data(), flax_inputs=(nhwc, None)))


def _vit():
    from winit_jax.lab.examples import vit
    net, port, _, _ = vit()
    return net, lambda: nnx.eval_shape(lambda: nnx.clone(port)), {}


@pytest.mark.slow
@pytest.mark.parametrize("form", ["pt", "safetensors", "sharded"])
@pytest.mark.parametrize("model", ["mobilenet_v2", "unet", "vit"])
def test_cnn_unet_and_vit_load_as_from_torch_does(tmp_path, model, form):
    """torchvision's MobileNetV2 and diffusers' UNet with Flax-named ports that pair only by
    call order (the loader takes the inputs too), torchvision's ViT with its packed attention
    in-projection split into query, key and value: equal to ``from_torch`` bit for bit.
    BatchNorm statistics come across; ``num_batches_tracked`` is ignored, by name."""
    net, make_port, kw = {"mobilenet_v2": _mobilenet, "unet": _unet, "vit": _vit}[model]()
    port = make_port()
    report = P.load_checkpoint(_write(net, tmp_path, form), port, torch_module=net, **kw)
    want = P.from_torch(net, make_port(), **kw)
    assert same(port, want)
    for a, b in zip(jax.tree.leaves(nnx.state(port, nnx.BatchStat)),
                    jax.tree.leaves(nnx.state(want, nnx.BatchStat))):
        assert np.array_equal(a, b)
    assert set(report.ignored) == {k for k in net.state_dict() if "num_batches" in k}
    assert len(report.used) + len(report.ignored) == len(net.state_dict())


def _sharded_checkpoint(tmp_path) -> tuple[str, dict]:
    """A torch-written checkpoint of the MLP ``sharded_load.Port`` ports, and its plan."""
    from tests.porting.sharded_load import HIDDEN, IN, OUT, Port
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(IN, HIDDEN, bias=False), torch.nn.ReLU(),
                              torch.nn.Linear(HIDDEN, OUT))
    path = str(tmp_path / "mlp.safetensors")
    st.save_model(net, path)
    P.make_plan(net, nnx.eval_shape(lambda: Port(nnx.Rngs(0), sharded=False))).save(
        path + ".plan.json")
    sizes = {k: v.numel() * 4 for k, v in net.state_dict().items()}
    return path, sizes


def _run(args, devices, **popen):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(Path.cwd())}
    return subprocess.Popen([sys.executable, "-m", "tests.porting.sharded_load", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **popen)


@pytest.mark.slow
def test_eight_devices_get_exactly_their_slices_each_read_once(tmp_path):
    path, sizes = _sharded_checkpoint(tmp_path)
    proc = _run([path, str(tmp_path / "out.json")], 8)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["shards_checked"] == 16  # 8 devices x 2 kernels, each against torch's slice
    assert out["mesh_refused"].startswith("mesh: the model's variables are sharded")
    # a (2, 4) mesh: every slice is on two devices (the data axis) and is read once
    assert out["bytes_read"] == sum(sizes.values())


@pytest.mark.slow
def test_two_processes_each_read_half_of_a_sharded_tensor(tmp_path):
    import socket
    path, sizes = _sharded_checkpoint(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [_run([path, str(tmp_path / f"out{i}.json"), f"127.0.0.1:{port}", "2", str(i)], 4)
             for i in range(2)]
    try:
        errs = [p.communicate(timeout=300)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, err in zip(procs, errs):
        assert p.returncode == 0, err[-2000:]
    for i in range(2):
        out = json.loads((tmp_path / f"out{i}.json").read_text())
        assert out["devices"] == 8 and out["shards_checked"] == 8
        # both kernels split over 8 devices, 4 of them here: half of their bytes (the second
        # kernel transposed: torch's columns, read as such); the replicated bias whole
        kernels = sizes["0.weight"] + sizes["2.weight"]
        assert out["bytes_read"] == kernels // 2 + sizes["2.bias"], out


def test_load_checkpoint_bad_arguments(tmp_path):
    port = abstract_gpt2()
    with pytest.raises(P.ParityError, match="^torch_module: load_checkpoint needs the torch "
                                            "module"):
        P.load_checkpoint({}, port)
    with pytest.raises(P.ParityError, match=r"^source: .*nothing\.safetensors does not exist"):
        P.load_checkpoint(tmp_path / "nothing.safetensors", port, torch_module=meta_gpt2())
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(P.ParityError, match=r"^source: .*a\.txt: not a \.safetensors file"):
        P.load_checkpoint(tmp_path / "a.txt", port, torch_module=meta_gpt2())
    (tmp_path / "bad.safetensors").write_bytes(b"\x05" * 16)
    with pytest.raises(P.ParityError, match=r"^source: .*bad\.safetensors is not a "
                                            "safetensors file"):
        P.load_checkpoint(tmp_path / "bad.safetensors", port, torch_module=meta_gpt2())
    (tmp_path / "plan.json").write_text("{}")
    with pytest.raises(P.ParityError, match=r"^plan: .*plan\.json is not a checkpoint plan"):
        P.load_checkpoint({}, port, plan=tmp_path / "plan.json")


def test_a_slice_is_read_as_one_run_exactly_where_memory_is_one_run():
    """Against NumPy's own indexing of every slice of small arrays: the one-read path is
    taken only where the slice really is one run of memory, starting where it says."""
    import itertools

    from winit_jax.parity.checkpoint_files import _contiguous
    for shape in [(3, 4, 5), (1, 4, 1), (2, 1, 3), (6,)]:
        flat = np.arange(np.prod(shape)).reshape(shape)
        for spans in itertools.product(*[[(a, b) for a in range(n) for b in range(a + 1, n + 1)]
                                         for n in shape]):
            idx = flat[tuple(slice(a, b) for a, b in spans)].ravel()
            one_run = idx.size == 1 or bool(np.all(np.diff(idx) == 1))
            got = _contiguous(shape, spans)
            assert got == ((int(idx[0]), idx.size) if one_run else None), (shape, spans)
