"""The layer recorder: what is summarised for a model, and under which tag.

One walk over the model (nested models, sub-layers, shared layers), one tag
rule, used by `tbkit.Trainer`, `tbkit.keras.TensorBoardRun`,
`tbkit.LayerSummaries` and `tbkit.Model.summarize`:

- a variable of a layer with no sub-layers is `<layer>/<variable>`, with the
  variable's own name (`kernel`, `bias`, `gamma`, ...; `weights`/`biases` for
  tbkit layers);
- a variable of a sub-layer carries the sub-layer's path inside its layer
  (`mha/query/kernel`, `lstm/lstm_cell/recurrent_kernel`), never a shortened one;
- layers of nested models are named as if they were the outer model's own,
  unless two of them share a name: then each gets its model's name in front
  (`encoder/dense/kernel`, `decoder/dense/kernel`);
- every 4-D trainable kernel (2-D convolutions) is also drawn as a filter grid,
  `<layer path>/filters`.

Recording happens when the caller asks (at its cadence), never inside the
train step: the weights, the gradients a recording step measured and the
activations (of that step's own forward pass, or of one probe pass) are read
once each and summarised on the host, and the recording is written as one
`Summary`.
"""

from __future__ import annotations

import dataclasses
import weakref

import keras
import numpy as np
import tensorflow as tf

from tbkit.model.measure import StepDynamics
from tbkit.summary import images as tbi
from tbkit.summary.dynamics import Dynamics
from tbkit.summary.summaries import (
    _buckets_numpy,
    statistics_entries,
    warn_nonfinite,
    write_eagerly,
)


@dataclasses.dataclass(frozen=True)
class _Owned:
    model_path: tuple[str, ...]  # names of the nested models around the layer
    layer_path: tuple[str, ...]  # the layer, then its sub-layers down to the owner
    variable: tf.Variable
    top_layer: object  # the top-level layer of the (innermost) model the variable belongs to


def _own_variables(layer) -> list:
    own = list(getattr(layer, "_trainable_variables", [])) + list(
        getattr(layer, "_non_trainable_variables", [])
    )
    return [v for v in own if _is_float(v)]


def _is_float(v) -> bool:
    return tf.as_dtype(getattr(v, "dtype", "float32")).is_floating


def _children(layer) -> list:
    found = getattr(layer, "_layers", None)
    if found is None:
        found = getattr(layer, "layers", [])
    return list(found)


def _walk(model) -> list[_Owned]:
    found: list[_Owned] = []
    seen: set[int] = set()

    def sub_layers(layer, model_path, layer_path, top):
        for v in _own_variables(layer):
            if id(v) not in seen:
                seen.add(id(v))
                found.append(_Owned(model_path, layer_path, v, top))
        for child in _children(layer):
            sub_layers(child, model_path, layer_path + (child.name,), top)

    def in_model(m, model_path):
        for v in _own_variables(m):  # a subclassed model's own add_weight variables
            if id(v) not in seen:
                seen.add(id(v))
                found.append(_Owned(model_path, (m.name,), v, m))
        for child in _children(m):
            if isinstance(child, keras.Model):
                in_model(child, model_path + (child.name,))
            else:
                sub_layers(child, model_path, (child.name,), child)

    in_model(model, ())
    return found


def _variable_name(v) -> str:
    name = getattr(v, "name", "") or "variable"
    return name.split(":")[0].split("/")[-1]


def variable_tags(model) -> dict[str, tf.Variable]:
    """`{tag: variable}` for every floating-point variable of `model`, by the tag rule.

    Args:
      model: any built Keras model or layer (Sequential, functional, subclassed,
        nested), tbkit layers included.

    Returns:
      An ordered dict, in the order the layers are tracked (usually build order).
    """
    return _tags(_walk(model))


def _tags(owned: list[_Owned]) -> dict[str, tf.Variable]:
    # Same-named layers in different nested models get their model path in front.
    models_of: dict[str, set] = {}
    for o in owned:
        models_of.setdefault(o.layer_path[0], set()).add(o.model_path)
    tags: dict[str, tf.Variable] = {}
    for o in owned:
        parts = o.layer_path
        if len(models_of[parts[0]]) > 1:
            parts = o.model_path + parts
        tag = "/".join(parts + (_variable_name(o.variable),))
        base, n = tag, 1
        while tag in tags:  # two variables of one layer with one name (rare): number them
            n += 1
            tag = f"{base}_{n}"
        tags[tag] = o.variable
    return tags


MAX_FILTER_WEIGHTS = 1 << 16
"""Kernels with more weights get no filter grid: drawing every weight of, say, a
3x3x512x512 kernel makes a 2,200 x 2,200 image per recording that nobody can
read; their statistics and histograms are recorded like any variable's."""


def filter_kernels(tags: dict[str, tf.Variable]) -> dict[str, tf.Variable]:
    """`{"<layer path>/filters": kernel}` for every trainable 4-D variable among
    `tags` of at most `MAX_FILTER_WEIGHTS` weights."""
    out = {}
    for tag, v in tags.items():
        size = v.shape.num_elements()
        if len(v.shape) == 4 and getattr(v, "trainable", True) and size <= MAX_FILTER_WEIGHTS:
            out[tag.rsplit("/", 1)[0] + "/filters"] = v
    return out


_PROBES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _structure(model, which: str):
    """The model's input or output structure (a Sequential has only the lists)."""
    try:
        return getattr(model, which)
    except AttributeError:
        found = getattr(model, which + "s")
        return found[0] if len(found) == 1 else found


def _calls_its_graph(model) -> bool:
    """Whether `model(x)` is its layers' graph: a tbkit `Model`, or a functional /
    Sequential model whose class keeps Keras' own `call`."""
    if getattr(model, "tbkit_forward", False):
        return True
    owner = getattr(type(model).call, "__qualname__", "")
    return owner in ("Functional.call", "Sequential.call")


class _Probe:
    """The activations of a model's top-level layers: `probe(x)` in inference mode,
    `probe.training(x) -> (y_pred, activations)` in training mode (the model's own
    output and its layers' outputs from one forward pass)."""

    def __init__(self, run):
        self._run = run

    def __call__(self, x) -> dict:
        return self._run(x, False)[1]

    def training(self, x):
        return self._run(x, True)


def _activation_probe(model, owner_names: dict[int, str]) -> _Probe | None:
    """The `_Probe` of the top-level layers that own variables.

    tbkit `Model`s use their own `forward`; functional and Sequential models
    get a Keras model over the same layers with the model's output and the
    layers' outputs; subclassed models have no graph of layers to probe and
    record no activations.
    """
    if getattr(model, "tbkit_forward", False):  # a tbkit.Model

        def forward(x, training):
            y, acts = model.forward(x, training=training)
            return y, {owner_names[id(la)]: a for la, a in _by_layer(model, acts)}

        return _Probe(forward)
    layers = [
        la
        for la in getattr(model, "layers", [])
        if id(la) in owner_names and not isinstance(la, keras.Model)
    ]
    if not getattr(model, "inputs", None) or not layers:
        return None
    try:
        outputs = [la.output for la in layers]
        model_input, model_output = _structure(model, "input"), _structure(model, "output")
    except (AttributeError, ValueError):
        return None
    structure = (model_output, outputs)
    if any(not isinstance(o, keras.KerasTensor) for o in outputs):
        return None
    probe = _PROBES.get(model)
    if probe is None:
        probe = keras.Model(model_input, structure)
        _PROBES[model] = probe  # kept outside the model so Keras does not track it
    names = [owner_names[id(la)] for la in layers]

    def run(x, training):
        y, out = probe(x, training=training)
        return y, dict(zip(names, out, strict=True))

    return _Probe(run)


def _on_host(probed: dict) -> dict:
    """`reduce_activations`' tensors as numpy arrays."""
    return {name: {k: np.asarray(v) for k, v in d.items()} for name, d in probed.items()}


def _by_layer(model, acts: dict):
    for layer in model.layers:
        if layer.name in acts:
            yield layer, acts[layer.name]


class LayerRecorder:
    """Records the summaries of every variable of a model (and its filter grids).

    Args:
      model: any built Keras model.
      histograms: write histograms (variables and activations) as well as scalars.
      images: write a filter grid for every 4-D kernel.
      activations: write `<layer>/activations` histograms when `record` gets a batch.
      gradient_histograms: write `<tag>/gradient` histograms when `record` gets dynamics.
      activation_fractions: write `<layer>/activations/zero_fraction` and
        `dead_fraction` when `record` gets a batch (default False; the
        Trainer and `TensorBoardRun` switch them on with their dynamics).

    Example:

      recorder = tbkit.LayerRecorder(model)
      with writer.as_default():
          recorder.record(step, x_batch)   # at your cadence, outside the train step
    """

    def __init__(
        self,
        model,
        *,
        histograms: bool = True,
        images: bool = True,
        activations: bool = True,
        gradient_histograms: bool = True,
        activation_fractions: bool = False,
    ):
        self.model = model
        self.activation_fractions = activation_fractions
        self.histograms, self.images, self.activations = histograms, images, activations
        self.gradient_histograms = gradient_histograms and histograms
        owned = _walk(model)
        self.tags = _tags(owned)
        if not self.tags:
            raise ValueError(
                f"{getattr(model, 'name', model)!r} has no variables to summarise (build it first)"
            )
        self.kernels = filter_kernels(self.tags) if images else {}
        # The activation of a top-level layer is tagged like its variables' layer.
        owners: dict[int, str] = {}
        for o in owned:
            if o.model_path == () and id(o.top_layer) not in owners and o.top_layer is not model:
                owners[id(o.top_layer)] = o.layer_path[0]
        wanted = (activations and histograms) or activation_fractions
        self._probe = _activation_probe(model, owners) if wanted else None
        # Trainable variables by their index in `model.trainable_variables`, which
        # is the order of a train step's gradients.
        tag_of = {id(v): tag for tag, v in self.tags.items()}
        self._trainable = [
            (i, tag_of[id(v)])
            for i, v in enumerate(getattr(model, "trainable_variables", []))
            if id(v) in tag_of
        ]
        self._compiled = None
        self.latest: Dynamics | None = None

    def reset(self) -> None:
        """Forgets the traced forward pass of the activations (the next recording traces
        it again)."""
        self._compiled = None

    @property
    def trainable_tags(self) -> dict[int, str]:
        """`{index in model.trainable_variables: tag}`, in layer order (the gradients' order)."""
        return dict(self._trainable)

    @property
    def training_forward(self):
        """`forward(x) -> (y_pred, {layer tag: activation})`: the model's training-mode
        call that also returns the activations the recorder probes (one forward pass;
        the train step's recording variant uses it), or None when the model has none
        to probe (subclassed models), the recorder records none, or the model's class
        overrides the graph's `call` (its call may not be its layers' graph)."""
        if self._probe is None or not _calls_its_graph(self.model):
            return None
        return self._probe.training

    def reduce_activations(self, acts: dict) -> dict:
        """`{layer tag: {"values"?, "zero", "dead"}}` of the probed activations: the
        zero / dead fractions reduced where the activations are (TensorFlow's threads,
        the device), the values themselves kept only for the histograms."""
        out = {}
        keep = self.histograms and self.activations
        for owner, act in acts.items():
            entry = {"values": act} if keep else {}
            if self.activation_fractions:
                zero = tf.equal(act, tf.zeros_like(act))
                axes = list(range(len(act.shape) - 1)) or None
                entry["zero"] = tf.reduce_mean(tf.cast(zero, tf.float32))
                entry["dead"] = tf.reduce_mean(tf.cast(tf.reduce_all(zero, axis=axes), tf.float32))
            out[owner] = entry
        return out

    def _probed(self, x):
        return self.reduce_activations(self._probe(x))

    def _activations(self, x, compiled: bool) -> dict[str, dict]:
        """`_probed(x)` as host values, its forward pass traced once when `compiled`."""
        if compiled:
            if self._compiled is None:
                self._compiled = tf.function(self._probed, reduce_retracing=True, autograph=False)
            acts = self._compiled(x)
        else:
            acts = self._probed(x)
        return _on_host(acts)

    def _entries(self, acts: dict, dyn) -> tuple[list, list, dict]:
        """Every summary of one recording, computed on the host from one read of each
        tensor: `([(tag, kind, value)], [(scope, nonfinite count)], fractions)`."""
        outer = tf.get_current_name_scope()
        prefix = f"{outer}/" if outer else ""
        entries, flagged = [], []
        for tag, v in self.tags.items():
            values, nonfinite = statistics_entries(
                np.asarray(v.numpy()), f"{prefix}{tag}/", self.histograms
            )
            entries += values
            if nonfinite:
                flagged.append((prefix + tag, nonfinite))
        fractions = {}
        for owner, probed in acts.items():
            if "values" in probed:
                table = _buckets_numpy(probed["values"], 30)
                entries.append((f"{prefix}{owner}/activations", "histogram", table))
            if self.activation_fractions:
                zero, dead = float(probed["zero"]), float(probed["dead"])
                fractions[owner] = (zero, dead)
                entries.append((f"{prefix}{owner}/activations/zero_fraction", "scalar", zero))
                entries.append((f"{prefix}{owner}/activations/dead_fraction", "scalar", dead))
        if dyn is not None:
            grad, weight, update = (
                np.asarray(t, np.float64)
                for t in (dyn.gradient_norm, dyn.weight_norm, dyn.update_norm)
            )
            for i, tag in self._trainable:
                ratio = update[i] / weight[i] if weight[i] != 0 else 0.0  # divide_no_nan
                entries.append((f"{prefix}{tag}/gradient_norm", "scalar", grad[i]))
                entries.append((f"{prefix}{tag}/update_ratio", "scalar", ratio))
                if self.gradient_histograms:
                    table = _buckets_numpy(np.asarray(dyn.gradients[i]), 30)
                    entries.append((f"{prefix}{tag}/gradient", "histogram", table))
            entries.append((f"{prefix}gradient_global_norm", "scalar", float(dyn.global_norm)))
            entries.append((f"{prefix}learning_rate", "scalar", float(dyn.learning_rate)))
        return entries, flagged, fractions

    def record(
        self, step=None, inputs=None, compiled: bool = True, dynamics=None, filters: bool = True
    ):
        """Writes every summary to the default writer.

        The values are read once (weights, the dynamics' gradients, the
        probed activations) and summarised on the host in numpy, one pass
        pair per tensor; everything of one recording goes out as one
        `Summary` (one write), with the tags and plugins of `tf.summary.scalar` /
        `tf.summary.histogram`; histograms are `[30, 3]` float32 tensors where
        float32 holds their counts exactly (`write_eagerly(compact=True)`).

        Args:
          step: defaults to `tf.summary.experimental.get_step()`.
          inputs: a batch for the activation histograms and the zero / dead
            fractions (optional; not probed again when `dynamics` holds the
            activations of its step's forward pass).
          compiled: run the activations' forward pass as a traced `tf.function`
            (fast when called many times; traced at the first call) or eagerly
            (no tracing: for a few calls).
          dynamics: a `tbkit.model.measure.StepDynamics` (what the Trainer's recording
            step and the callback's probe measure): writes the gradient
            summaries too (optional).
          filters: also draw the filter grids (when the recorder has `images`);
            the Trainer draws them at its image cadence only, as PNGs are most
            of a run's event-file size.

        Returns:
          True if the summaries were recorded. `self.latest` then holds the
          recording's `Dynamics` (for `tbkit.summary.dynamics.findings`).
        """
        if step is None:
            step = tf.summary.experimental.get_step()
        if step is None:
            raise ValueError("record needs a step (or tf.summary.experimental.set_step)")
        if not bool(tf.summary.should_record_summaries()):
            return False
        step = int(step)
        acts = {}
        if dynamics is not None and dynamics.activations is not None:  # the step's own pass
            acts = _on_host(dynamics.activations)
        elif inputs is not None and self._probe is not None:
            acts = self._activations(inputs, compiled)
        entries, flagged, fractions = self._entries(acts, dynamics)
        ok = write_eagerly(entries, step=step, compact=True)
        for scope, count in flagged:
            warn_nonfinite(scope, count)
        self.latest = self._host_dynamics(step, fractions, dynamics)
        for tag, kernel in self.kernels.items() if filters else ():
            tbi.filters_summary(tag, np.asarray(kernel.numpy()), step=step)
        return bool(ok)

    def _host_dynamics(self, step: int, fractions: dict, dyn: StepDynamics | None):
        if dyn is None and not fractions:
            return None
        d = Dynamics(step)
        for owner, (zero, dead) in fractions.items():
            d.zero_fraction[owner], d.dead_fraction[owner] = float(zero), float(dead)
        if dyn is not None:
            grad, weight, update = (
                np.asarray(t) for t in (dyn.gradient_norm, dyn.weight_norm, dyn.update_norm)
            )
            for i, tag in self._trainable:
                d.gradient_norm[tag] = float(grad[i])
                d.weight_norm[tag] = float(weight[i])
                d.update_norm[tag] = float(update[i])
            d.global_norm = float(dyn.global_norm)
            d.learning_rate = float(dyn.learning_rate)
            missing = dyn.no_gradient or ()
            d.no_gradient = {tag for i, tag in self._trainable if i in missing}
        return d
