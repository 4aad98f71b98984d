"""Run by test_checkpoint.py in a fresh process (the device count is fixed at JAX's start):
loads a torch-written safetensors file into an abstract port whose kernels are sharded over
a mesh, checks every local device's shard against torch's tensor, and writes what this
process read as JSON.

    python -m tests.porting.sharded_load CHECKPOINT OUT.json [COORDINATOR NPROC PID]
"""

import json
import sys
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec

from winit_jax.kinds import ParityError
from winit_jax.parity.checkpoint import Plan, load_checkpoint
from winit_jax.parity.checkpoint_files import SafetensorsSource

IN, HIDDEN, OUT = 64, 256, 32


class Port(nnx.Module):
    """torch ``Sequential(Linear(64, 256, bias=False), ReLU(), Linear(256, 32))``: the first
    kernel split over its outputs, the second over its inputs (Megatron's column and row
    split), the last bias replicated."""

    def __init__(self, rngs, sharded=True):
        init = nnx.initializers.lecun_normal()

        def split(names):
            return nnx.with_partitioning(init, names) if sharded else init
        self.first = nnx.Linear(IN, HIDDEN, use_bias=False, rngs=rngs,
                                kernel_init=split((None, "model")))
        self.second = nnx.Linear(HIDDEN, OUT, rngs=rngs, kernel_init=split(("model", None)))

    def __call__(self, x):
        return self.second(jax.nn.relu(self.first(x)))


def main(argv):
    path, out = argv[:2]
    if len(argv) > 2:
        coordinator, n, pid = argv[2], int(argv[3]), int(argv[4])
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=n,
                                   process_id=pid, initialization_timeout=120)
    devices = np.array(jax.devices())
    shape = (2, len(devices) // 2) if jax.process_count() == 1 else (1, len(devices))
    mesh = jax.sharding.Mesh(devices.reshape(shape), ("data", "model"))
    with jax.set_mesh(mesh):
        port = nnx.eval_shape(lambda: Port(nnx.Rngs(0)))
    plan = Plan.load(path + ".plan.json")
    try:  # sharded over the abstract mesh nnx.eval_shape records: which devices is not known
        load_checkpoint(path, port, plan=plan)
        mesh_refused = ""
    except ParityError as e:
        mesh_refused = str(e)
    report = load_checkpoint(path, port, plan=plan, mesh=mesh)
    whole = SafetensorsSource(Path(path))
    want = {"first": whole.read("0.weight", ((0, HIDDEN), (0, IN))).T,
            "second": whole.read("2.weight", ((0, OUT), (0, HIDDEN))).T}
    shards = 0
    for name, full in want.items():
        array = getattr(port, name).kernel.get_value()
        spec = array.sharding.spec
        assert spec == PartitionSpec(*((None, "model") if name == "first" else ("model", None))), spec
        for shard in array.addressable_shards:
            assert np.array_equal(np.asarray(shard.data), full[shard.index]), (name, shard.index)
            shards += 1
    json.dump({"bytes_read": report.bytes_read, "mesh_refused": mesh_refused, "shards_checked": shards,
               "process": jax.process_index(), "devices": len(devices)}, open(out, "w"))


if __name__ == "__main__":
    main(sys.argv[1:])
