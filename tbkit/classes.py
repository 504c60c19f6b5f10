"""Per-class metrics of a classifier, from the labels and predicted classes a
validation (or test) pass already has: no extra forward pass.

`per_class/accuracy/<class>` is the class's recall (the share of its examples
predicted right: the confusion matrix's row diagonal), `per_class/precision/<class>`
the share of the predictions of that class that were right (0 when the class was
never predicted, as scikit-learn's `zero_division=0`).
"""

from __future__ import annotations

import re

import numpy as np


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


def class_tag(name) -> str:
    """A class name as a tag component (TensorBoard splits tags on `/`)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(name)) or "_"


def write_per_class(labels, predictions, num_classes: int, class_names=None, step=None) -> None:
    """Writes the per-class scalars to the default writer (one raw summary)."""
    from tbkit.summaries import write_eagerly

    names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
    recall, precision = per_class(labels, predictions, num_classes)
    values = []
    for name, r, p in zip(names, recall, precision, strict=True):
        if not np.isnan(r):  # a class absent from the data has no accuracy to draw
            values.append((f"per_class/accuracy/{class_tag(name)}", "scalar", r))
        values.append((f"per_class/precision/{class_tag(name)}", "scalar", p))
    write_eagerly(values, step=step)
