"""Which torch layer is which nnx layer, and weights across both ways.

``layers`` (what each side's layers are, and whether two fit), ``call_order`` (pairing by
what runs), ``ties`` (tensors torch holds under several names), ``rules`` (``pair``: the
rules in order), ``transfer`` (``from_torch``, ``to_torch``), ``registration``
(``layer_kind``: a porter's own layer pair as a ``Kind``). Arrows point one way: ``rules``
uses the first three, ``transfer`` uses ``rules``; nothing here imports the stages of
``check``.
"""

from winit_jax.parity.pairing.rules import Pair as Pair
from winit_jax.parity.pairing.rules import Pairing as Pairing
from winit_jax.parity.pairing.rules import pair as pair
from winit_jax.parity.pairing.rules import resolve as resolve
from winit_jax.parity.pairing.rules import stacks as stacks

__all__ = ["Pair", "Pairing", "pair", "resolve", "stacks"]
