"""Per-class metrics of a classifier, from the labels and predicted classes a
validation (or test) pass already has: no extra forward pass.

`per_class/accuracy/<class>` is the class's recall (the share of its examples
predicted right: the confusion matrix's row diagonal), `per_class/precision/<class>`
the share of the predictions of that class that were right (0 when the class was
never predicted, as scikit-learn's `zero_division=0`).

`pr_curves/<class>` is the class's precision-recall curve (one class against
the rest) over the softmax scores, in TensorBoard's PR Curves dashboard: the
counts at `PR_THRESHOLDS` evenly spaced thresholds, made into the plugin's
summary by TensorBoard's own `pr_curve.summary.raw_data_pb`.
"""

from __future__ import annotations

import re

import numpy as np

PR_THRESHOLDS = 51  # 0, 0.02, ..., 1: ~1.2 KB per class and validation in the event file
PR_MAX_CLASSES = 100  # more curves than anyone reads: above this, none are written
_MIN_COUNT = 1e-7  # TensorBoard's pr_curve op divides by max(1e-7, count) too


def per_class(labels, predictions, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """`(recall, precision)`, each `(num_classes,)`; NaN recall for a class with no examples."""
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    predictions = np.asarray(predictions).reshape(-1).astype(np.int64)
    right = labels == predictions
    examples = np.bincount(labels, minlength=num_classes)[:num_classes]
    predicted = np.bincount(predictions, minlength=num_classes)[:num_classes]
    hits = np.bincount(labels[right], minlength=num_classes)[:num_classes]
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(examples > 0, hits / np.maximum(examples, 1), np.nan)
        precision = np.where(predicted > 0, hits / np.maximum(predicted, 1), 0.0)
    return recall, precision


def model_classes(model, inputs=None) -> int | None:
    """The number of classes a model outputs (its first output's last dimension), or None
    when the model does not say.

    Args:
      model: a built Keras model.
      inputs: for a model without symbolic outputs (subclassed), a structure of
        `tf.TensorSpec`s (or tensors) of its inputs: the output is then found by
        Keras' symbolic `compute_output_spec`, without running the model.
    """
    outputs = getattr(model, "outputs", None)
    width = None
    try:
        width = tf_last_dim(outputs[0] if isinstance(outputs, list | tuple) else outputs)
    except (AttributeError, IndexError, TypeError, ValueError):
        width = None
    if width is None and inputs is not None:
        try:
            import keras

            symbolic = tf_nest_map(
                lambda t: keras.KerasTensor(tuple(t.shape), dtype=t.dtype.name), inputs
            )
            out = model.compute_output_spec(symbolic)
            width = tf_last_dim(out[0] if isinstance(out, list | tuple) else out)
        except Exception:  # noqa: BLE001 - a model Keras cannot trace symbolically: unknown
            width = None
    return width


def tf_nest_map(fn, structure):
    import tensorflow as tf

    return tf.nest.map_structure(fn, structure)


def tf_last_dim(tensor) -> int | None:
    shape = getattr(tensor, "shape", None)
    if shape is None or len(shape) == 0 or shape[-1] is None:
        return None
    return int(shape[-1])


def check_class_names(class_names, classes: int | None) -> list[str] | None:
    """The rule of both doors: at least one name per class the model outputs.

    Args:
      class_names: the names given (None: class numbers are used).
      classes: the model's number of classes (None when unknown: nothing to check).

    Returns:
      The names as a list of strings, or None.

    Raises:
      ValueError: fewer names than classes (said before training, never mid-run).
    """
    if class_names is None:
        return None
    if isinstance(class_names, str):
        raise ValueError(
            f"class_names must be a sequence of names, one per class. Received: class_names={class_names!r}"
        )
    names = [str(n) for n in class_names]
    if classes is not None and classes > 1 and len(names) < classes:
        raise ValueError(
            f"class_names has {len(names)} names for a model of {classes} classes (one per "
            f"class). Received: class_names={names!r}"
        )
    return names


def class_count(classes: int | None, class_names, labels=None, predictions=None) -> int:
    """How many classes the per-class pictures and scalars show: the model's, the names',
    and any label or prediction beyond both (one rule at both doors)."""
    count = max(classes or 0, len(class_names or ()))
    for values in (labels, predictions):
        if values is not None and np.size(values):
            count = max(count, int(np.max(values)) + 1)
    return count


def _names(class_names, num_classes: int) -> list[str]:
    names = [str(n) for n in class_names or ()][:num_classes]
    return names + [str(i) for i in range(len(names), num_classes)]


def class_tag(name) -> str:
    """A class name as a tag component (TensorBoard splits tags on `/`)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(name)) or "_"


def write_per_class(labels, predictions, num_classes: int, class_names=None, step=None) -> None:
    """Writes the per-class scalars to the default writer (one raw summary)."""
    from tbkit.summary.summaries import write_eagerly

    names = _names(class_names, num_classes)
    recall, precision = per_class(labels, predictions, num_classes)
    values = []
    for name, r, p in zip(names, recall, precision, strict=True):
        if not np.isnan(r):  # a class absent from the data has no accuracy to draw
            values.append((f"per_class/accuracy/{class_tag(name)}", "scalar", r))
        values.append((f"per_class/precision/{class_tag(name)}", "scalar", p))
    write_eagerly(values, step=step)


def probabilities(outputs) -> np.ndarray:
    """Class scores as probabilities: outputs that are not already rows of
    probabilities (non-negative, summing to 1) are taken for logits and softmaxed."""
    out = np.asarray(outputs, dtype=np.float64)
    out = out.reshape(-1, out.shape[-1])
    if out.size and out.min() >= 0 and np.allclose(out.sum(-1), 1.0, atol=1e-3):
        return out
    shifted = np.exp(out - out.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def pr_curve(labels, scores, cls: int, num_thresholds: int = PR_THRESHOLDS) -> np.ndarray:
    """`[tp, fp, tn, fn, precision, recall]` × thresholds for class `cls` against the rest.

    Threshold `i` is `i / (num_thresholds - 1)`; an example counts as predicted
    `cls` at threshold `i` when its score falls in bucket `i` or above
    (`floor(score * (num_thresholds - 1))`), TensorBoard's own rule.
    """
    labels = np.asarray(labels).reshape(-1)
    score = np.clip(np.asarray(scores)[:, cls], 0.0, 1.0)
    bucket = np.floor(score * (num_thresholds - 1)).astype(np.int64)
    positive = labels == cls
    tp = np.cumsum(np.bincount(bucket[positive], minlength=num_thresholds)[::-1])[::-1]
    fp = np.cumsum(np.bincount(bucket[~positive], minlength=num_thresholds)[::-1])[::-1]
    tn, fn = (~positive).sum() - fp, positive.sum() - tp
    precision = tp / np.maximum(_MIN_COUNT, tp + fp)
    recall = tp / np.maximum(_MIN_COUNT, tp + fn)
    return np.stack([tp, fp, tn, fn, precision, recall]).astype(np.float64)


def write_pr_curves(labels, scores, class_names=None, step=None) -> bool:
    """Writes `pr_curves/<class>` for every class to the default writer (one raw summary).

    `scores` are the model's outputs (logits or probabilities), `(N, classes)`.
    Returns False (writing nothing) for more than `PR_MAX_CLASSES` classes.
    """
    import tensorflow as tf
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.pr_curve import summary as pr_summary

    probs = probabilities(scores)
    classes = probs.shape[-1]
    if classes > PR_MAX_CLASSES or classes < 2:
        return False
    names = _names(class_names, classes)
    merged = summary_pb2.Summary()
    for cls, name in enumerate(names):
        tp, fp, tn, fn, precision, recall = pr_curve(labels, probs, cls)
        tag = f"pr_curves/{class_tag(name)}"
        built = pr_summary.raw_data_pb(
            tag, tp, fp, tn, fn, precision, recall, num_thresholds=PR_THRESHOLDS,
            display_name=str(name),
        )  # fmt: skip
        merged.MergeFromString(built.SerializeToString())
        merged.value[-1].tag = tag  # the builder appends "/pr_curves"; one level is enough
    tf.summary.experimental.write_raw_pb(merged.SerializeToString(), step=step)
    return True
