"""Port a torch model to ``flax.nnx`` and prove it: the pairing of layers (``pair``),
weights across both ways (``from_torch``, ``to_torch``), torch's optimiser as optax
(``translate_optimizer``), and ``check`` (init, forward, gradients, training steps,
BatchNorm statistics, a held-out metric).

What each layer kind is lives in ``winit_jax.kinds``, below this package; a porter builds
their own layer pair with ``layer_kind`` and passes ``kinds=[kind]`` (or uses ``with
registered(kind):``, or ``register(kind)`` for the process). Pairing and weights are the
subpackage ``pairing``; the parts of ``check`` are the ``stage_*`` modules. torch and scipy
are imported only when a function needs them.
"""

import sys as _sys

from winit_jax.kinds import Kind as Kind
from winit_jax.kinds import ParityError as ParityError
from winit_jax.kinds import kinds as kinds
from winit_jax.kinds import register as register
from winit_jax.kinds import registered as registered
from winit_jax.kinds import unregister as unregister
from winit_jax.parity.checkpoint import LoadReport as LoadReport
from winit_jax.parity.checkpoint import Plan as Plan
from winit_jax.parity.checkpoint import load_checkpoint as load_checkpoint
from winit_jax.parity.checkpoint import make_plan as make_plan
from winit_jax.parity.harness import check as check
from winit_jax.parity.inference import InitRecipe as InitRecipe
from winit_jax.parity.inference import infer_recipe as infer_recipe
from winit_jax.parity.io import nchw as nchw
from winit_jax.parity.io import nhwc as nhwc
from winit_jax.parity.losses import accuracy as accuracy
from winit_jax.parity.losses import cross_entropy as cross_entropy
from winit_jax.parity.optimizer import translate_optimizer as translate_optimizer
from winit_jax.parity.optimizer import translate_schedule as translate_schedule
from winit_jax.parity.pairing import Pair as Pair
from winit_jax.parity.pairing import Pairing as Pairing
from winit_jax.parity.pairing import pair as pair
from winit_jax.parity.pairing.registration import layer_kind as layer_kind
from winit_jax.parity.pairing.registration import register_layer as register_layer
from winit_jax.parity.pairing.transfer import from_torch as from_torch
from winit_jax.parity.pairing.transfer import to_torch as to_torch
from winit_jax.parity.report import TOLERANCES as TOLERANCES
from winit_jax.parity.report import Check as Check
from winit_jax.parity.report import Outcome as Outcome
from winit_jax.parity.report import ParityReport as ParityReport
from winit_jax.parity.saving import save_checkpoint as save_checkpoint
from winit_jax.parity.stats import rel_gap as rel_gap

__all__ = ["TOLERANCES", "Check", "InitRecipe", "Kind", "LoadReport", "Outcome", "Pair",
           "Pairing", "ParityError", "ParityReport", "Plan", "accuracy", "check", "cross_entropy",
           "from_torch", "infer_recipe", "kinds", "layer_kind", "load_checkpoint", "make_plan",
           "nchw", "nhwc", "pair", "register", "register_layer", "registered", "rel_gap",
           "save_checkpoint", "to_torch", "translate_optimizer", "translate_schedule",
           "unregister"]

# Modules that moved into ``pairing`` keep their old import paths (``import
# winit_jax.parity.transfer`` is ``winit_jax.parity.pairing.transfer``).
from winit_jax.parity.pairing import call_order as _call_order  # noqa: E402
from winit_jax.parity.pairing import layers as _layers  # noqa: E402
from winit_jax.parity.pairing import registration as _registration  # noqa: E402
from winit_jax.parity.pairing import ties as _ties  # noqa: E402
from winit_jax.parity.pairing import transfer as _transfer  # noqa: E402

for _module in (_call_order, _layers, _registration, _ties, _transfer):
    _sys.modules.setdefault(f"{__name__}.{_module.__name__.rsplit('.', 1)[1]}", _module)
