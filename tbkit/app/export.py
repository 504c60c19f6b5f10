"""`train_mnist.py export RUN OUT_DIR`: a run's best checkpoint for serving, without tbkit.

Writes into `OUT_DIR` (new or empty; staged in a temporary directory renamed
into place, so nothing is ever half-written):

- a SavedModel (`tf.saved_model.load(OUT_DIR)`, TensorFlow Serving): the
  `serving_default` signature takes uint8 images `[batch, 28, 28]` in MNIST's
  form (white digit on black, 0..255) under the input name `images` and returns
  `probabilities` (float32 `[batch, 10]`) and `classes` (int64 `[batch]`); the
  signature `serving_channels` takes `[batch, 28, 28, 1]`. The scaling to
  [0, 1] is inside the graph.
- `model.keras`: the same network as a plain Keras functional model (Keras'
  own layers, no tbkit needed), uint8 `[batch, 28, 28]` in, probabilities out.
"""

from __future__ import annotations

import argparse
import os
import sys

from tbkit.app.parsing import OneLineParser

PROG = "train_mnist.py export"
KERAS_FILE = "model.keras"


def plain_keras(model):
    """`model` (a sequential `tbkit.Model`) as a Keras functional model of Keras' own
    layers with the same weights: uint8 `[batch, 28, 28]` in, probabilities out."""
    import keras

    from tbkit.model import layers as tl

    images = keras.Input((28, 28), dtype="uint8", name="images")
    x = keras.layers.Rescaling(1.0 / 255, name="scale")(images)
    x = keras.layers.Reshape((28, 28, 1), name="channels")(x)
    copies = []
    for layer in model.layers:
        config = layer.get_config()
        if isinstance(layer, tl.Conv2D):
            copy = keras.layers.Conv2D(
                config["filters"], config["kernel_size"], strides=config["strides"],
                padding=config["padding"], activation=config["activation"],
                use_bias=config["use_bias"], name=layer.name,
            )  # fmt: skip
        elif isinstance(layer, tl.Dense):
            copy = keras.layers.Dense(
                config["units"], activation=config["activation"],
                use_bias=config["use_bias"], name=layer.name,
            )  # fmt: skip
        else:
            copy = type(layer).from_config(config)
        x = copy(x)
        copies.append((layer, copy))
    probabilities = keras.layers.Softmax(name="probabilities")(x)
    plain = keras.Model(images, probabilities, name=f"{model.name}_serving")
    for layer, copy in copies:
        if isinstance(layer, tl.SummarizedLayer):
            copy.set_weights([v.numpy() for v in layer.summary_variables.values()])
    return plain


def export_run(run_dir: str, out_dir: str) -> dict:
    """Exports the run's best checkpoint into `out_dir`; returns what was written.

    Raises:
      TbkitError: no best checkpoint, a checkpoint of another network, a target that
        exists and is not empty or cannot be written.
    """
    import tensorflow as tf

    from tbkit.app.restore import load_best
    from tbkit.loop import export as tbe

    target = tbe.check_target(out_dir)  # before the restore: refuse early, write nothing
    restored = load_best(run_dir)
    plain = plain_keras(restored.model)
    signature = tf.TensorSpec([None, 28, 28], tf.uint8, name="images")
    channels = tf.TensorSpec([None, 28, 28, 1], tf.uint8, name="images")
    with tbe.staged(target) as tmp:
        tbe.write_saved_model(
            plain, tmp, signature, outputs="probabilities",
            extra_signatures={"serving_channels": (channels, lambda x: tf.squeeze(x, -1))},
        )  # fmt: skip
        plain.save(os.path.join(tmp, KERAS_FILE))
    return {"saved_model": target, "keras": os.path.join(target, KERAS_FILE),
            "model": restored.name, "step": restored.step}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=PROG,
        description="Export a run's best checkpoint as a SavedModel (uint8 [batch, 28, 28] "
        "images in, probabilities out) and a .keras file, loadable without tbkit.",
    )
    p.add_argument("run", metavar="RUN", help="a run directory (e.g. logs/RUN)")
    p.add_argument("out", metavar="OUT_DIR", help="a new (or empty) directory")
    return p


def main(argv) -> int:
    args = build_parser().parse_args(argv)
    from tbkit.errors import TbkitError
    from tbkit.tools.quiet import import_tensorflow

    import_tensorflow(False)
    try:
        written = export_run(args.run, args.out)
    except TbkitError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr, flush=True)
        return 1
    print(f"Exported {written['model']} (best checkpoint, step {written['step']}) to "
          f"{written['saved_model']}")  # fmt: skip
    print("  serving_default:  images uint8 [batch, 28, 28] -> probabilities float32 "
          "[batch, 10], classes int64 [batch]")  # fmt: skip
    print("  serving_channels: images uint8 [batch, 28, 28, 1] -> the same")
    print(f"  Keras file: {written['keras']} (uint8 [batch, 28, 28] -> probabilities)")
    return 0
