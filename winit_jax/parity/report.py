"""What ``check`` found: one ``Check`` per comparison, and the ``ParityReport`` of them all;
the tolerances they are held to, and the relative gap they measure."""

from __future__ import annotations

import dataclasses
import enum

# Tolerances, relative to the largest entry of the reference tensor (the scale of the
# tensor, not of each element: near-zero entries would otherwise dominate).
# float64: both frameworks compute the same sums in a different order; rounding alone
# leaves gaps of ~1e-15 relative, measured up to 5e-14 after 5 training steps (docs/guides/checking.md).
# float32: HF transformers' PT<->Flax forward tolerance 1e-5; measured gaps on the built-in
# models are 1e-7..4e-6 (docs/guides/checking.md), gradients up to 1e-5, steps grow them, hence 1e-4.
TOLERANCES = {
    "float64": {"forward": 1e-10, "gradient": 1e-9, "step": 1e-8},
    "float32": {"forward": 1e-5, "gradient": 1e-4, "step": 1e-3},
}
NOISE_FACTOR = 10.0  # how far beyond torch's own float32 rounding gap a port may be
KS_ALPHA = 1e-3  # per test, Bonferroni-corrected over the tensors compared


class Outcome(str, enum.Enum):
    """What one check found."""

    PASSED = "passed"
    FAILED = "failed"
    # the comparison ran, but this input cannot tell (a rounding flip at a kink of ReLU6;
    # float32 rounding larger than what training changed)
    INCONCLUSIVE = "inconclusive"
    # there was nothing to compare (zero in both frameworks; a gradient that is zero in exact
    # arithmetic; a tensor the steps barely moved)
    NOT_TESTED = "not tested"


@dataclasses.dataclass(frozen=True)
class Check:
    """One comparison: what, its figure against its threshold, and its outcome.

    Attributes:
      part: "init", "forward", "gradient", "layer", "step", "batch_stats" or "metric".
      name: the tensor, output or layer compared.
      outcome: an ``Outcome``.
      tol: the tolerance of ``gap``, or the threshold ``p_value`` must reach (init).
      gap: the relative gap (every part but init), else None.
      p_value: the KS test's p-value (init), else None.
      how: how the figure and its threshold were measured, and why a check is not tested.
    """

    part: str
    name: str
    outcome: Outcome
    tol: float
    gap: float | None = None
    p_value: float | None = None
    how: str = ""

    @property
    def ok(self) -> bool:
        """Not failed (passed, inconclusive or not tested)."""
        return self.outcome is not Outcome.FAILED

    @property
    def tested(self) -> bool:
        """Passed or failed: the comparison could tell."""
        return self.outcome in (Outcome.PASSED, Outcome.FAILED)

    @property
    def figure(self) -> float:
        """``gap``, or ``p_value`` for init."""
        return self.gap if self.gap is not None else self.p_value

    @property
    def over(self) -> bool:
        """The figure is on the wrong side of its threshold (whatever the outcome)."""
        return (self.p_value < self.tol) if self.gap is None else (self.gap > self.tol)


@dataclasses.dataclass(frozen=True)
class LayerRow:
    """One call of a paired layer in the forward pass: its input's and output's gap (in
    torch's layout, relative to torch's own scale) and the tolerance each is held to."""

    torch_name: str
    flax_path: str
    kind: str
    call: int          # 0 for the first call of the layer (an RNN cell or a shared layer: more)
    input_gap: float
    output_gap: float
    input_tol: float
    output_tol: float
    # the loss's gradient with respect to this call's output (the backward pass); NaN where
    # it is not compared (an output that is not one array)
    grad_gap: float = float("nan")
    grad_tol: float = float("nan")
    # the port never makes this call (it never calls the layer, or calls it fewer times)
    uncalled: bool = False
    # why an input or output was not compared ("not compared: torch (2, 32, 256) vs port
    # (2, 16, 16, 32)": no single reshape maps one onto the other); "" when compared
    not_compared: str = ""

    @property
    def forward_ok(self) -> bool:
        # NaN: not compared, not a failure
        return not (self.input_gap > self.input_tol or self.output_gap > self.output_tol)

    @property
    def backward_ok(self) -> bool:
        return not self.grad_gap > self.grad_tol  # NaN (not compared) is not a failure

    @property
    def ok(self) -> bool:
        return self.forward_ok and self.backward_ok


@dataclasses.dataclass(frozen=True)
class Divergence:
    """Where the port's forward pass first parts from torch's, in torch's call order."""

    torch_name: str
    flax_path: str
    kind: str
    call: int
    # "inside": its input agrees, its output not; "before": its input differs; "backward":
    # the forward agrees, and the gradient at this layer's output is the last one (in call
    # order) that is off: the backward of what follows it differs; "never called": torch
    # calls this layer here and the port never does
    where: str
    gap: float
    tol: float
    hint: str = ""
    # "": eval mode, at the check's inputs; "train": train mode (batch statistics) from the
    # training's start, where only a train-mode pass shows the slip (Flax's one-pass variance)
    mode: str = ""

    def __str__(self) -> str:
        nth = f" (call {self.call + 1})" if self.call else ""
        if self.mode == "train":
            nth += " in train mode (batch statistics), from the training's start"
        if self.where == "never called":
            what = (f"at torch {self.torch_name or '<root>'} / nnx {self.flax_path or '<root>'}"
                    f" ({self.kind}){nth}: the port never calls it (torch does, here)")
        elif self.where == "inside":
            what = (f"inside torch {self.torch_name or '<root>'} / nnx {self.flax_path or '<root>'}"
                    f" ({self.kind}){nth}: its input agrees, its output is {self.gap:.2g} off "
                    f"(tolerance {self.tol:.2g}); the layer or its weights differ")
        elif self.where == "backward":
            what = (f"in the backward pass, after torch {self.torch_name or '<root>'} / nnx "
                    f"{self.flax_path or '<root>'} ({self.kind}){nth}: the forward agrees and "
                    "so does the gradient at every later layer's output, but the gradient at "
                    f"this one's output is {self.gap:.2g} off (tolerance {self.tol:.2g})")
        else:
            what = (f"before torch {self.torch_name or '<root>'} / nnx "
                    f"{self.flax_path or '<root>'} ({self.kind}){nth}: every earlier recorded "
                    f"layer agrees, this one's input is {self.gap:.2g} off (tolerance "
                    f"{self.tol:.2g}); what runs between the previous recorded layer and this "
                    "one differs")
        return f"first divergence {what}" + (f"; check {self.hint}" if self.hint else "")


@dataclasses.dataclass
class ParityReport:
    """What ``check`` found; ``ok`` when every check passed."""

    dtype: str
    checks: list[Check]
    # per training step, the loss of each run: "torch", "flax", and (float32) "torch_float64"
    curves: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    # the metric on the held-out data after training, per run (same keys as curves)
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    # what the reader must know to read the checks (a part that cannot pass, and why)
    notes: list[str] = dataclasses.field(default_factory=list)
    # every paired layer's call in the forward pass, in torch's call order
    layers: list[LayerRow] = dataclasses.field(default_factory=list)
    first_divergence: Divergence | None = None

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.outcome is Outcome.FAILED]

    def inconclusive(self) -> list[Check]:
        return [c for c in self.checks if c.outcome is Outcome.INCONCLUSIVE]

    def not_tested(self) -> list[Check]:
        return [c for c in self.checks if c.outcome is Outcome.NOT_TESTED]

    def worst(self, part: str) -> Check | None:
        """The check of ``part`` farthest beyond (or nearest to) its threshold (among the
        conclusive ones, if any)."""
        cs = [c for c in self.checks if c.part == part]
        cs = [c for c in cs if c.tested] or cs
        if not cs:
            return None
        if part == "init":
            return min(cs, key=lambda c: c.p_value / c.tol)
        return max(cs, key=lambda c: c.gap / c.tol if c.tol else c.gap)

    def assert_ok(self) -> None:
        """Raises one readable ``AssertionError``: the first divergence (if the forward parts)
        and the worst failing check."""
        bad = self.failures()
        if bad:
            worst = max(bad, key=lambda c: (c.part != "init") * c.figure / max(c.tol, 1e-300)
                        + (c.part == "init") * c.tol / max(c.figure, 1e-300))
            lead = f"{self.first_divergence}; " if self.first_divergence else ""
            raise AssertionError(
                f"parity failed in {len(bad)} of {len(self.checks)} checks; {lead}worst: "
                f"{worst.part} {worst.name}: {'p' if worst.part == 'init' else 'gap'} "
                f"{worst.figure:.3g} vs {'threshold' if worst.part == 'init' else 'tolerance'} "
                f"{worst.tol:.3g} ({worst.how})")

    def summary(self) -> list[dict]:
        """Per part: how many checks, how many passed, the worst figure and its threshold."""
        out = []
        for part in dict.fromkeys(c.part for c in self.checks):
            cs = [c for c in self.checks if c.part == part]
            w = self.worst(part)
            count = {o: sum(c.outcome is o for c in cs) for o in Outcome}
            out.append({"part": part, "checks": len(cs), "passed": count[Outcome.PASSED],
                        "failed": count[Outcome.FAILED],
                        "inconclusive": count[Outcome.INCONCLUSIVE],
                        "not_tested": count[Outcome.NOT_TESTED],
                        "worst": w.name, "value": w.figure, "tol": w.tol})
        return out

    def __str__(self) -> str:
        """The verdict, then ``table()``: what ``print(report)`` shows."""
        verdict = "passed" if self.ok else f"FAILED ({len(self.failures())} checks)"
        return f"parity {verdict}: {len(self.checks)} checks in {self.dtype}\n{self.table()}"

    def table(self) -> str:
        """A plain-text table of ``summary()``."""
        rows = [("part", "checks", "passed", "failed", "inconclusive", "not tested",
                 "worst tensor", "figure", "threshold")]
        rows += [(s["part"], str(s["checks"]), str(s["passed"]), str(s["failed"]),
                  str(s["inconclusive"]), str(s["not_tested"]), s["worst"],
                  f"{s['value']:.3g}", f"{s['tol']:.3g}") for s in self.summary()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lead = [str(self.first_divergence)] if self.first_divergence else []
        return "\n".join(lead + lines + [f"note: {n}" for n in self.notes])

    def layer_table(self) -> str:
        """One row per paired layer call, in torch's call order."""
        rows = [("torch layer", "nnx layer", "kind", "call", "input gap", "output gap",
                 "tolerance (in / out)", "output gradient gap (tolerance)")]
        rows += [(r.torch_name or "<root>", r.flax_path or "<root>", r.kind, str(r.call + 1),
                  f"{r.input_gap:.2g}", f"{r.output_gap:.2g}",
                  f"{r.input_tol:.2g} / {r.output_tol:.2g}",
                  f"{r.grad_gap:.2g} ({r.grad_tol:.2g})" + ("" if r.ok else "  <-")
                  + (f"  ({r.not_compared})" if r.not_compared else ""))
                 for r in self.layers]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)

    def to_json(self) -> dict:
        return {"dtype": self.dtype, "ok": self.ok, "summary": self.summary(),
                "checks": [{**dataclasses.asdict(c), "outcome": c.outcome.value}
                           for c in self.checks], "curves": self.curves,
                "metrics": self.metrics, "notes": self.notes,
                "first_divergence": (None if self.first_divergence is None else
                                     {**dataclasses.asdict(self.first_divergence),
                                      "text": str(self.first_divergence)}),
                "layers": [dataclasses.asdict(r) for r in self.layers]}
