"""Export for serving: a SavedModel that `tf.saved_model.load` and TensorFlow Serving use
without tbkit.

`export_saved_model(model, path, input_signature)` writes, through a temporary
directory renamed into place (nothing half-written at `path`), a SavedModel
whose `serving_default` signature takes `input_signature` and returns
`{"probabilities": softmax(logits), "classes": argmax}` (or `{"outputs": ...}`
with `outputs="raw"`), with an optional `preprocess` inside the graph. Written
with Keras 3's `keras.export.ExportArchive`, so the signature's dtypes are the
ones asked for. `tbkit.Trainer.export(path)` exports a run's best checkpoint
with the signature of the data it trained on.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable

from tbkit.errors import TbkitError


class ExportError(TbkitError):
    """The export cannot be written: an existing non-empty or unwritable target."""


def check_target(path: str) -> str:
    """`path` made absolute, refused when it exists and is not an empty directory, or
    when its parent cannot be written (nothing is written)."""
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise ExportError(f"{path} exists and is not empty; export into a new directory")
    parent = os.path.dirname(path)
    probe = parent
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise ExportError(f"cannot write {path}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write {path}: {probe} is not writable")
    return path


@contextlib.contextmanager
def staged(path: str):
    """Yields a temporary directory next to `path`; renamed to `path` when the block ends
    without an error, removed otherwise."""
    path = check_target(path)
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", dir=parent)
    except OSError as e:
        raise ExportError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        yield tmp
        if os.path.isdir(path):
            os.rmdir(path)  # empty (checked)
        os.rename(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _outputs(logits, outputs: str):
    import tensorflow as tf

    if outputs == "raw":
        return {"outputs": logits}
    probs = tf.nn.softmax(logits) if outputs == "logits" else logits
    return {"probabilities": probs, "classes": tf.argmax(probs, axis=-1)}


def add_endpoint(archive, name: str, model, spec, preprocess: Callable | None, outputs: str):
    """One signature of `archive`: `spec` in, `model` (after `preprocess`) out."""

    def serve(x):
        return _outputs(model(preprocess(x) if preprocess else x, training=False), outputs)

    archive.add_endpoint(name, serve, input_signature=[spec])


def export_saved_model(
    model,
    path: str,
    input_signature,
    *,
    preprocess: Callable | None = None,
    outputs: str = "logits",
    extra_signatures: dict | None = None,
) -> str:
    """Writes `model` as a SavedModel at `path` (a new or empty directory).

    Args:
      model: a built Keras model.
      path: the SavedModel directory.
      input_signature: a `tf.TensorSpec` (e.g. `tf.TensorSpec([None, 28, 28], tf.uint8)`)
        or a dict of them for a model with named inputs.
      preprocess: applied to the input inside the graph (e.g. casting and scaling).
      outputs: "logits" (the model outputs logits: `probabilities` is their softmax),
        "probabilities" (it outputs probabilities already), or "raw" (`outputs` as is).
      extra_signatures: `{name: (spec, preprocess)}`: more signatures.

    Returns:
      `path`, absolute.

    Raises:
      ExportError: `path` exists and is not empty, or cannot be written.
    """
    with staged(path) as tmp:
        write_saved_model(model, tmp, input_signature, preprocess=preprocess, outputs=outputs,
                          extra_signatures=extra_signatures)  # fmt: skip
    return os.path.abspath(os.fspath(path))


def write_saved_model(model, directory: str, input_signature, *, preprocess=None,
                      outputs: str = "logits", extra_signatures: dict | None = None) -> None:  # fmt: skip
    """`export_saved_model`'s writing, into an existing (staged) directory."""
    from keras.export import ExportArchive

    if outputs not in ("logits", "probabilities", "raw"):
        raise ValueError(
            f"outputs must be logits, probabilities or raw. Received: outputs={outputs!r}"
        )
    archive = ExportArchive()
    archive.track(model)
    add_endpoint(archive, "serving_default", model, input_signature, preprocess, outputs)
    for name, (spec, prep) in (extra_signatures or {}).items():
        add_endpoint(archive, name, model, spec, prep, outputs)
    archive.write_out(directory, verbose=False)


def signature_of(element_spec):
    """The serving input signature of a dataset's `(x, y)` element spec: `x` with any
    batch size."""
    import tensorflow as tf

    x = element_spec[0] if isinstance(element_spec, tuple) else element_spec

    def unbatched(spec):
        if not isinstance(spec, tf.TensorSpec):
            raise ExportError(
                f"cannot derive a serving signature from {type(spec).__name__} inputs; "
                "pass signature=tf.TensorSpec(...)"
            )
        return tf.TensorSpec([None, *spec.shape[1:]], spec.dtype, name=spec.name)

    if isinstance(x, dict):
        return {k: unbatched(v) for k, v in x.items()}
    return unbatched(x)
