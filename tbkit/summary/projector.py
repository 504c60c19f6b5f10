"""The Embedding Projector: what a classifier's last hidden layer makes of the validation data.

`write_embedding` runs the model on up to N validation examples (a seeded
sample, in data-set order), captures the input of the model's last layer with
weights (the classifier head: its input is the representation the classes are
read from) or the output of a layer named by the caller, and writes what
TensorBoard's projector plugin reads, next to the `validation` run's event files:

    <run>/validation/projector_config.pbtxt       the plugin's config (ProjectorConfig)
    <run>/validation/projector/<key>.tsv          the activations, one example per row
    <run>/validation/projector/<key>.metadata.tsv label, prediction, correct, index
    <run>/validation/projector/<key>.sprite.png   the inputs, when they are images

`index` is each example's position in the validation data set (the sample
drawn). The embedding of the kept model is named `<layer> @ best step N`
(`tbkit.Trainer` and `tbkit.keras.TensorBoardRun` load the best checkpoint for
it); snapshots at a cadence are `<layer> @ step N`. One config holds them all,
so the projector's tensor menu switches between them.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import re

import numpy as np
import tensorflow as tf

from tbkit.errors import TbkitError
from tbkit.fileio import atomic_write

CONFIG = "projector_config.pbtxt"
FOLDER = "projector"
SPRITE_MAX = 8192  # the projector's largest sprite image, in pixels per side
SEED = 20161  # the sample is the same in every run over the same data


def check_options(examples, every) -> None:
    """Raises `ValueError` for a `projector_examples` that is not a non-negative integer
    or a `projector_every` that is neither None nor a positive integer."""

    def integer(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not integer(examples) or examples < 0:
        raise ValueError(
            f"projector_examples must be a non-negative integer. Received: projector_examples={examples!r}"
        )
    if every is not None and (not integer(every) or every <= 0):
        raise ValueError(
            f"projector_every must be a positive integer or None. Received: projector_every={every!r}"
        )


def _weighted(layer) -> bool:
    return bool(getattr(layer, "weights", None))


def _find_layer(model, name: str):
    def search(m):
        for layer in getattr(m, "layers", []):
            if layer.name == name:
                return layer
            inner = search(layer) if hasattr(layer, "layers") else None
            if inner is not None:
                return inner
        return None

    found = search(model)
    if found is None:
        names = ", ".join(la.name for la in getattr(model, "layers", []))
        raise TbkitError(f"no layer named {name!r} in model {model.name} (its layers: {names})")
    return found


def _source_name(model, head) -> str:
    """A name for what `head` reads: the layer that produced its input, when the
    model's graph (or its order, for a plain stack of layers) says so. Weightless
    one-input layers in between (`Dropout`, `Flatten`, ...) are looked through."""
    try:
        op = head
        for _ in range(16):
            inputs = tf.nest.flatten(op._inbound_nodes[0].input_tensors)
            source = inputs[0]._keras_history.operation
            if _weighted(source) or len(inputs) != 1 or not source._inbound_nodes:
                break
            op = source
            if not tf.nest.flatten(source._inbound_nodes[0].input_tensors):
                break
        return source.name
    except (AttributeError, IndexError, TypeError):
        pass
    layers = list(getattr(model, "layers", []))
    if (
        getattr(model, "tbkit_forward", False) or type(model).__name__ == "Sequential"
    ) and head in layers:
        i = layers.index(head)
        if i > 0:
            return layers[i - 1].name
    return f"input of {head.name}"


def target_layer(model, layer: str | None = None):
    """`(layer, "input"|"output")`: where the embedding is read.

    The named layer's output, or else the input of the model's last top-level
    layer with weights (the classifier head; weightless layers after it, such as
    a softmax `Activation`, are passed over).
    """
    if layer is not None:
        return _find_layer(model, layer), "output"
    weighted = [la for la in getattr(model, "layers", []) if _weighted(la)]
    if not weighted:
        raise TbkitError(f"model {model.name} has no layer with weights to read an embedding from")
    return weighted[-1], "input"


@contextlib.contextmanager
def _capturing(layer, side: str, into: list):
    """Records what `layer` receives (`side="input"`) or returns while the block runs."""
    original = layer.call

    def call(*args, **kwargs):
        out = original(*args, **kwargs)
        seen = args[0] if side == "input" else out
        into.append(tf.nest.flatten(seen)[0])
        return out

    layer.call = call
    try:
        yield
    finally:
        del layer.call


def _pairs(data):
    """Batches of `(x, y)` from a batched `tf.data.Dataset` or an `(x, y)` pair of arrays."""
    if isinstance(data, tf.data.Dataset):
        return data
    x, y = data
    if isinstance(x, list):  # several inputs: a tuple, not one stacked tensor
        x = tuple(x)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(256)


def sample(data, examples: int, seed: int = SEED):
    """`(indices, x, y)`: up to `examples` examples drawn without replacement, in data order."""
    ds = _pairs(data)
    # Batched data sets rarely know their example count: count the labels once (cheap).
    total = sum(int(tf.shape(tf.nest.flatten(y)[0])[0]) for _, y in ds)
    if total == 0:
        raise TbkitError("the validation data set is empty: no examples for the projector")
    take = min(examples, total)
    chosen = np.sort(np.random.default_rng(seed).choice(total, take, replace=False))
    xs, ys, start = [], [], 0
    for x, y in ds:
        n = int(tf.shape(tf.nest.flatten(y)[0])[0])
        rows = chosen[(chosen >= start) & (chosen < start + n)] - start
        if len(rows):
            xs.append(tf.nest.map_structure(lambda t, r=rows: tf.gather(t, r), x))
            ys.append(tf.gather(y, rows))
        start += n
        if start > chosen[-1]:
            break
    x = tf.nest.map_structure(lambda *parts: tf.concat(parts, 0), *xs)
    return chosen, x, tf.concat(ys, 0)


def embed(model, x, layer: str | None = None, batch_size: int = 256):
    """`(embedding, outputs, name)` of `model` on `x`: `(N, width)` activations, the
    model's `(N, classes)` outputs, and a name for the embedded layer."""
    target, side = target_layer(model, layer)
    n = int(tf.shape(tf.nest.flatten(x)[0])[0])
    seen, outputs = [], []
    with _capturing(target, side, seen):
        for start in range(0, n, batch_size):
            part = tf.nest.map_structure(lambda t, a=start: t[a : a + batch_size], x)
            outputs.append(np.asarray(tf.nest.flatten(model(part, training=False))[0]))
    if len(seen) != len(outputs):
        raise TbkitError(
            f"layer {target.name} ran {len(seen)} times for {len(outputs)} batches "
            "(a shared layer?): name the layer to project with projector_layer"
        )
    emb = np.concatenate([np.asarray(s).reshape(len(np.asarray(s)), -1) for s in seen])
    label = target.name if side == "output" else _source_name(model, target)
    return emb.astype(np.float32), np.concatenate(outputs), label


def sprite(images) -> tuple[np.ndarray, tuple[int, int]] | None:
    """The images in one square grid (uint8, grey or RGB) and each thumbnail's size, or None."""
    from PIL import Image

    from tbkit.summary.images import looks_like_images

    images = np.asarray(images)
    if not looks_like_images(images.shape):
        return None
    if images.ndim == 4 and images.shape[-1] == 4:
        images = images[..., :3]
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    lo, hi = float(np.nanmin(images)), float(np.nanmax(images))
    scaled = np.nan_to_num((images - lo) / (hi - lo if hi > lo else 1.0)) * 255
    pixels = np.clip(scaled, 0, 255).astype(np.uint8)
    side = math.ceil(math.sqrt(len(pixels)))
    h, w = pixels.shape[1:3]
    fit = min(1.0, SPRITE_MAX / (side * max(h, w)))
    if fit < 1.0:
        h, w = max(1, int(h * fit)), max(1, int(w * fit))
        pixels = np.stack([np.asarray(Image.fromarray(p).resize((w, h))) for p in pixels])
    grid = np.zeros((side * h, side * w) + pixels.shape[3:], np.uint8)
    for i, p in enumerate(pixels):
        r, c = divmod(i, side)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = p
    return grid, (h, w)


def _key(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "embedding"


def write_embedding(
    run_dir: str,
    model,
    data,
    *,
    step: int,
    best: bool = False,
    unit: str = "step",
    examples: int = 1000,
    layer: str | None = None,
    class_names=None,
    write: bool = True,
) -> str:
    """Writes one embedding for the projector into `run_dir/validation`; returns its name.

    Args:
      run_dir: the run directory (the files go into its `validation/`).
      model: the model, with the weights to picture.
      data: the validation data: batched `(x, y)` `tf.data.Dataset` or an `(x, y)` pair.
      step: the training step (or epoch, with `unit="epoch"`) of the weights.
      best: these are the best checkpoint's weights (replaces the previous best embedding).
      examples: how many validation examples to embed (a seeded sample).
      layer: the layer whose output to embed (default: the input of the last layer with weights).
      class_names: names for the labels and predictions in the metadata.
      write: False computes the embedding and writes nothing (the other workers of
        a multi-worker run, which must run the same operations as the chief).
    """
    from google.protobuf import text_format
    from PIL import Image
    from tensorboard.plugins import projector

    indices, x, y = sample(data, examples)
    emb, scores, layer_name = embed(model, x, layer)
    labels = np.asarray(y).reshape(-1)
    one_each = scores.ndim == 2 and len(scores) == len(emb) and scores.shape[-1] > 1
    pred = np.argmax(scores, axis=-1) if one_each else None
    name = f"{layer_name} @ {'best ' if best else ''}{unit} {step}"
    if not write:
        return name
    key = _key(f"{layer_name}_{'best_' if best else ''}{unit}_{step}")
    out = os.path.join(run_dir, "validation")
    folder = os.path.join(out, FOLDER)
    tf.io.gfile.makedirs(folder)
    # Half-written files of a process killed while writing here (atomic_write's temporaries).
    for stale in glob.glob(os.path.join(folder, ".tmp-*")) + glob.glob(
        os.path.join(out, f".tmp-{CONFIG}-*")
    ):
        with contextlib.suppress(OSError):
            os.unlink(stale)

    def label(v) -> str:
        v = int(v)
        return str(class_names[v]) if class_names and 0 <= v < len(class_names) else str(v)

    if len(labels) == len(emb):
        rows = ["label\tprediction\tcorrect\tindex"]
        for i, lab in enumerate(labels):
            p = pred[i] if pred is not None else None
            right = "" if p is None else ("yes" if p == lab else "no")
            rows.append(f"{label(lab)}\t{'' if p is None else label(p)}\t{right}\t{indices[i]}")
    else:  # not one label per example (e.g. one per time step): the sample's indices only
        rows = [str(i) for i in indices]
    with atomic_write(os.path.join(folder, key + ".metadata.tsv"), "w") as f:
        f.write("\n".join(rows) + "\n")
    with atomic_write(os.path.join(folder, key + ".tsv"), "w") as f:
        np.savetxt(f, emb, fmt="%.6g", delimiter="\t")

    info = projector.EmbeddingInfo(
        tensor_name=name,
        tensor_path=f"{FOLDER}/{key}.tsv",
        metadata_path=f"{FOLDER}/{key}.metadata.tsv",
    )
    info.tensor_shape.extend(emb.shape)
    grid = None if isinstance(x, list | tuple | dict) else sprite(np.asarray(x))
    if grid is not None:
        picture, (h, w) = grid
        with atomic_write(os.path.join(folder, key + ".sprite.png"), "wb") as f:
            Image.fromarray(picture).save(f, format="PNG")
        info.sprite.image_path = f"{FOLDER}/{key}.sprite.png"
        info.sprite.single_image_dim.extend([w, h])

    config = projector.ProjectorConfig()
    path = os.path.join(out, CONFIG)
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            text_format.Parse(f.read(), config)
    kept = [
        e for e in config.embeddings
        if e.tensor_name != name and not (best and " @ best " in e.tensor_name)
    ]  # fmt: skip
    del config.embeddings[:]
    # The kept model's embedding first: the projector opens the first one.
    config.embeddings.extend([info] + kept if best else kept + [info])
    with atomic_write(path, "w") as f:
        f.write(text_format.MessageToString(config))
    return name


def best_embedding_step(run_dir: str) -> int | None:
    """The step (or epoch) of the best embedding written into `run_dir`, if any."""
    from google.protobuf import text_format
    from tensorboard.plugins import projector

    path = os.path.join(run_dir, "validation", CONFIG)
    if not tf.io.gfile.exists(path):
        return None
    config = projector.ProjectorConfig()
    try:
        with tf.io.gfile.GFile(path) as f:
            text_format.Parse(f.read(), config)
    except text_format.ParseError:
        return None
    for e in config.embeddings:
        found = re.search(r" @ best (?:step|epoch) (\d+)$", e.tensor_name)
        if found:
            return int(found.group(1))
    return None


@contextlib.contextmanager
def best_weights(model, best_path: str, root=None):
    """Loads the best checkpoint into `model` for the block, then puts the weights back.

    `root` is what the checkpoint restores into (default `model`); pass a view without
    the optimizer (`tbkit.run.checkpoints.model_weights`) so that nothing else changes."""
    saved = [v.numpy() for v in model.weights]
    tf.train.Checkpoint(model=model if root is None else root).restore(best_path).expect_partial()
    try:
        yield
    finally:
        for v, value in zip(model.weights, saved, strict=True):
            v.assign(value)
