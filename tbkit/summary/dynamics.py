"""Training dynamics: how a network is learning, and what looks wrong with it.

At the summary cadence tbkit records, for every trainable variable `L/V`, the
norm of its gradient (`L/V/gradient_norm`), the gradient's histogram
(`L/V/gradient`) and the size of the optimizer's update relative to the
variable (`L/V/update_ratio`); for every layer it can probe, the fraction of
zero outputs (`L/activations/zero_fraction`) and of units that are zero for
every example of the batch (`L/activations/dead_fraction`); and for the whole
model `gradient_global_norm` and `learning_rate`.

`findings(dynamics)` turns the latest recording into one line per problem,
the text written as `health` at each validation and printed by
`python -m tbkit.report`. The thresholds below are the rules of thumb
practitioners use, each with its reason.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

# A layer whose units are zero for every example of the batch is not learning
# from that batch: a ReLU unit that is dead stays dead (its gradient is zero).
# A few dead units are normal; more than half of a layer is a dead layer.
DEAD_FRACTION = 0.5

# The update:weight ratio |dW| / |W| per step: ~1e-3 is the classic healthy
# value (CS231n). Two orders of magnitude above it, a layer's weights are
# rewritten in a few dozen steps (the learning rate is too high); two below it
# (1e-5), they take ~100,000 steps to change by their own size (too low).
UPDATE_RATIO_HIGH = 1e-1
UPDATE_RATIO_LOW = 1e-5
UPDATE_RATIO_HEALTHY = 1e-3

# The relative gradient |dL/dW| / |W| of a layer against the median over
# layers: a thousand times smaller and the layer barely learns next to the
# others (vanishing); a thousand times larger and it dominates every update
# (exploding). Relative, because a gradient's scale depends on the loss.
VANISHING_FACTOR = 1e-3
EXPLODING_FACTOR = 1e3

NO_FINDINGS = "no findings"


@dataclasses.dataclass
class Dynamics:
    """One recording of the training dynamics (host values, by summary tag).

    Attributes:
      step: the step recorded.
      gradient_norm, weight_norm, update_norm: `{variable tag: value}`; the
        weight norm is taken before the update.
      global_norm: the norm of all gradients together.
      learning_rate: the optimizer's learning rate at that step.
      zero_fraction, dead_fraction: `{layer tag: value}` for the layers probed.
      no_gradient: variable tags the loss does not reach.
    """

    step: int
    gradient_norm: dict[str, float] = dataclasses.field(default_factory=dict)
    weight_norm: dict[str, float] = dataclasses.field(default_factory=dict)
    update_norm: dict[str, float] = dataclasses.field(default_factory=dict)
    global_norm: float | None = None
    learning_rate: float | None = None
    zero_fraction: dict[str, float] = dataclasses.field(default_factory=dict)
    dead_fraction: dict[str, float] = dataclasses.field(default_factory=dict)
    no_gradient: set[str] = dataclasses.field(default_factory=set)

    def update_ratio(self, tag: str) -> float:
        w = self.weight_norm.get(tag, 0.0)
        return self.update_norm.get(tag, 0.0) / w if w else 0.0

    def layers(self) -> dict[str, list[str]]:
        """`{layer tag: [variable tags]}` of the variables with gradients, in order."""
        out: dict[str, list[str]] = {}
        for tag in self.gradient_norm:
            out.setdefault(layer_of(tag), []).append(tag)
        return out


def layer_of(tag: str) -> str:
    """The layer part of a variable tag: `mha/query/kernel` -> `mha/query`."""
    return tag.rsplit("/", 1)[0] if "/" in tag else tag


def _combined(values: dict[str, float], tags: list[str]) -> float:
    return math.sqrt(sum(values.get(t, 0.0) ** 2 for t in tags))


def _fmt(x: float) -> str:
    return f"{x:.1e}" if x and (abs(x) < 1e-2 or abs(x) >= 1e3) else f"{x:.3g}"


def layer_update_ratios(d: Dynamics, skip=()) -> dict[str, float]:
    """`{layer: |update| / |weights|}` over each layer's variables together (so a bias
    that starts at zero does not dominate its layer), for the layers with weights."""
    ratios = {}
    for layer, tags in d.layers().items():
        w = _combined(d.weight_norm, tags)
        if w > 0 and layer not in skip:
            ratios[layer] = _combined(d.update_norm, tags) / w
    return ratios


def findings(d: Dynamics | None) -> list[str]:
    """What looks wrong in one recording, one line per finding (empty: nothing).

    Signals (thresholds are this module's constants): non-finite values or
    gradients; dead layers; layers the loss does not reach; vanishing or
    exploding gradients by layer relative to the median layer; update ratios
    far above ~1e-3 in a layer, far below it in a layer, or in every layer
    (a learning rate that no longer moves anything).
    """
    if d is None:
        return []
    out: list[str] = []
    # Non-finite values first: every other signal is meaningless after them.
    bad_values = [t for t, w in d.weight_norm.items() if not math.isfinite(w)]
    bad_grads = [
        t for t, g in d.gradient_norm.items() if not math.isfinite(g) and t not in bad_values
    ]
    for t in bad_values:
        out.append(f"{t}: non-finite values (NaN or Inf) at step {d.step}")
    for t in bad_grads:
        out.append(f"{t}: non-finite gradient at step {d.step}")
    if bad_values or bad_grads:
        return out

    dead = set()
    for layer, frac in d.dead_fraction.items():
        if frac >= DEAD_FRACTION:
            dead.add(layer)
            out.append(
                f"{layer}: dead units, {frac:.0%} of its units output zero for every "
                f"example of the batch (threshold {DEAD_FRACTION:.0%})"
            )
    layers = d.layers()
    unreached = {layer_of(t) for t in d.no_gradient}
    for layer in unreached:
        out.append(f"{layer}: no gradient, the loss does not depend on its variables")

    # Relative gradient by layer, against the median layer.
    rel = {}
    for layer, tags in layers.items():
        w = _combined(d.weight_norm, tags)
        if w > 0 and layer not in unreached:
            rel[layer] = _combined(d.gradient_norm, tags) / w
    if len(rel) >= 2:
        median = float(np.median(list(rel.values())))
        for layer, r in rel.items():
            if median > 0 and r < median * VANISHING_FACTOR:
                what = "zero" if r == 0 else f"{median / r:.0e}x smaller than the median layer's"
                out.append(f"{layer}: vanishing gradient, |grad|/|W| = {_fmt(r)} ({what})")
            elif median > 0 and r > median * EXPLODING_FACTOR:
                out.append(
                    f"{layer}: exploding gradient, |grad|/|W| = {_fmt(r)} "
                    f"({r / median:.0e}x the median layer's)"
                )

    ratios = layer_update_ratios(d, skip=unreached)
    if ratios:
        low = [la for la, r in ratios.items() if r < UPDATE_RATIO_LOW]
        lr = (
            f"learning rate {_fmt(d.learning_rate)}"
            if d.learning_rate is not None
            else "the optimizer"
        )
        if len(low) == len(ratios):
            top = max(ratios, key=ratios.get)
            out.append(
                f"{lr} barely moves the weights: every layer's update ratio is below "
                f"{UPDATE_RATIO_LOW:.0e} (largest {top}: {_fmt(ratios[top])}; healthy ~{UPDATE_RATIO_HEALTHY:.0e})"
            )
        else:
            for layer in low:
                if layer in dead:  # the cause is already named
                    continue
                out.append(
                    f"{layer}: update ratio {_fmt(ratios[layer])}, far below ~{UPDATE_RATIO_HEALTHY:.0e} "
                    "(the layer barely changes)"
                )
        for layer, r in ratios.items():
            if r > UPDATE_RATIO_HIGH:
                out.append(
                    f"{layer}: update ratio {_fmt(r)}, far above ~{UPDATE_RATIO_HEALTHY:.0e} "
                    f"(each step rewrites the weights: {lr} too high?)"
                )
    return out


def health_text(step: int, lines: list[str], recorded: int | None = None) -> str:
    """The `health` text: the findings as a Markdown list, or "no findings"."""
    head = f"step {step}" + (f" (dynamics of step {recorded})" if recorded is not None else "")
    if not lines:
        return f"{head}: {NO_FINDINGS}"
    return head + ":\n\n" + "\n".join(f"- {line}" for line in lines)


def write_health(step: int, lines: list[str], recorded: int | None = None) -> None:
    """Writes the `health` text summary to the default writer."""
    import tensorflow as tf

    tf.summary.text("health", health_text(step, lines, recorded), step=step)


def write_findings(d: Dynamics | None, step: int) -> list[str]:
    """Writes the `health` text of recording `d` at `step`; returns its findings."""
    if d is None:
        import tensorflow as tf

        tf.summary.text("health", f"step {step}: no training dynamics recorded yet", step=step)
        return []
    lines = findings(d)
    write_health(step, lines, d.step)
    return lines


#: The Custom Scalars charts of the dynamics: one chart per quantity, so each chart
#: holds values of one scale (gradient norms ~0.1-1 and update ratios ~1e-3 on one
#: linear axis would flatten the ratios); TensorBoard tells the series apart by marker.
LAYOUT_CHARTS = (
    ("gradient norms", r"^.+/gradient_norm$"),
    ("update ratios", r"^.+/update_ratio$"),
    ("dead fractions", r"^.+/activations/dead_fraction$"),
    ("zero fractions", r"^.+/activations/zero_fraction$"),
    ("gradient global norm", r"^gradient_global_norm$"),
    ("learning rate", r"^learning_rate$"),
)


def write_layout(tags=None) -> None:
    """Writes the Custom Scalars layout of the training dynamics (`LAYOUT_CHARTS`).

    Args:
      tags: the variable tags whose dynamics are recorded (unused by the layout,
        whose charts match every layer's tags by pattern; kept for callers).
    """
    import tensorflow as tf
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.plugins.custom_scalar import summary as cs_summary

    charts = [
        layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=[pattern]))
        for title, pattern in LAYOUT_CHARTS
    ]
    layout = layout_pb2.Layout(
        category=[layout_pb2.Category(title="training dynamics", chart=charts)]
    )
    tf.summary.experimental.write_raw_pb(
        cs_summary.pb(layout).SerializeToString(), step=0, name="custom_scalars_layout"
    )
