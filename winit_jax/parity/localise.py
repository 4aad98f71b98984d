"""Where a port first parts from torch: the first layer call whose input or output is off
(or, the forward agreeing, the last whose output gradient is off), with what to check."""

from __future__ import annotations

from winit_jax.parity.report import (
    Divergence,
)


def first_divergence(rows: list, paired: list) -> Divergence | None:
    """The first call, in torch's order, whose input or output is off; with none, the last
    call whose output gradient is off (the backward pass runs in reverse)."""
    kinds = {p.torch_name: p.kind for p in paired}
    layers = {p.torch_name: (p.torch_module, p.flax_layer) for p in paired}
    recorded = {r.torch_name for r in rows}
    unrecorded = [n for n in kinds if n not in recorded]
    for i, r in reversed(list(enumerate(rows)) if all(r.forward_ok for r in rows) else []):
        if not r.backward_ok:
            after = rows[i + 1].torch_name if i + 1 < len(rows) else "the loss"
            return Divergence(r.torch_name, r.flax_path, r.kind, r.call, "backward", r.grad_gap,
                              r.grad_tol, f"the backward of the code after this layer (up to "
                              f"{after or '<root>'}'s output): a stop_gradient, a custom_vjp, "
                              "an op whose derivative differs at a kink (jnp.maximum vs ReLU at "
                              "0), the loss")
    for i, r in enumerate(rows):
        if r.forward_ok:
            continue
        if r.uncalled:
            return Divergence(r.torch_name, r.flax_path, r.kind, r.call, "never called",
                              r.output_gap, r.output_tol, "the port's __call__: a layer built "
                              "but left out of the forward pass (a final norm, a head)")
        kind = kinds[r.torch_name]
        if r.input_gap > r.input_tol:
            before = rows[i - 1].torch_name if i else "the model's input"
            hint = (f"the code between {before or '<root>'} and this layer: an activation "
                    "(GELU's tanh approximation? ReLU for ReLU6?), a residual, padding, a "
                    "reshape or flatten order, the inputs' layout")
            if unrecorded:  # pairs with no per-call record may sit in between
                hint += ("; or a pair not recorded layer by layer (a stacked RNN's layers, "
                         "scanned blocks, bare parameters): " + ", ".join(unrecorded[:4])
                         + (" ..." if len(unrecorded) > 4 else ""))
            return Divergence(r.torch_name, r.flax_path, r.kind, r.call, "before", r.input_gap,
                              r.input_tol, hint)
        return Divergence(r.torch_name, r.flax_path, r.kind, r.call, "inside", r.output_gap,
                          r.output_tol, kind.hint_for(*layers[r.torch_name]))
    return None
