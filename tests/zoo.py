"""Models nobody wrote for tbkit, each with small synthetic data and the tags the rule gives.

The expected tags are written out by hand from the documented rule (not computed
by tbkit), so a change of the rule or of the walk shows up as a test failure.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

N, CLASSES = 96, 4


def _labels(rng):
    return rng.integers(0, CLASSES, N).astype("int32")


def _stats(*tags):
    return set(tags)


def sequential(rng):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.Flatten(),
            keras.layers.Dense(CLASSES, name="out"),
        ],
        name="seq",
    )
    x = rng.random((N, 8, 8, 1), dtype=np.float32)
    tags = {"conv/kernel", "conv/bias", "out/kernel", "out/bias"}
    return model, x, tags, {"conv/filters"}


def two_inputs(rng):
    image = keras.Input((8, 8, 1), name="image")
    tokens = keras.Input((5,), dtype="int32", name="tokens")
    a = keras.layers.Flatten()(keras.layers.Conv2D(3, 3, name="img_conv")(image))
    b = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 4, name="emb")(tokens))
    out = keras.layers.Dense(CLASSES, name="head")(keras.layers.Concatenate()([a, b]))
    model = keras.Model([image, tokens], out, name="two_inputs")
    x = (rng.random((N, 8, 8, 1), dtype=np.float32), rng.integers(0, 20, (N, 5)).astype("int32"))
    tags = {"img_conv/kernel", "img_conv/bias", "emb/embeddings", "head/kernel", "head/bias"}
    return model, x, tags, {"img_conv/filters"}


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="subclassed")
        self.hidden = keras.layers.Dense(6, activation="relu", name="hidden")
        self.out = keras.layers.Dense(CLASSES, name="logits")

    def call(self, x, training=False):
        return self.out(self.hidden(x))


def subclassed(rng):
    model = _Subclassed()
    model(tf.zeros((1, 7)))
    x = rng.random((N, 7), dtype=np.float32)
    return model, x, {"hidden/kernel", "hidden/bias", "logits/kernel", "logits/bias"}, set()


def shared_submodel(rng):
    def encoder(name):
        return keras.Sequential(
            [keras.Input((6,)), keras.layers.Dense(5, activation="relu", name="dense")], name=name
        )

    left, right = keras.Input((6,)), keras.Input((6,))
    shared = encoder("shared")  # one sub-model used on both inputs
    other = encoder("other")  # another sub-model whose layer is also called "dense"
    merged = keras.layers.Concatenate()([shared(left), shared(right), other(left)])
    out = keras.layers.Dense(CLASSES, name="out")(merged)
    model = keras.Model([left, right], out, name="siamese")
    x = (rng.random((N, 6), dtype=np.float32), rng.random((N, 6), dtype=np.float32))
    tags = {"shared/dense/kernel", "shared/dense/bias", "other/dense/kernel", "other/dense/bias",
            "out/kernel", "out/bias"}  # fmt: skip
    return model, x, tags, set()


def batchnorm(rng):
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, name="dense"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dense(CLASSES, name="out"),
        ],
        name="bn_model",
    )
    x = rng.random((N, 6), dtype=np.float32)
    tags = {"dense/kernel", "dense/bias", "bn/gamma", "bn/beta", "bn/moving_mean",
            "bn/moving_variance", "out/kernel", "out/bias"}  # fmt: skip
    return model, x, tags, set()


def attention(rng):
    tokens = keras.Input((5,), dtype="int32")
    h = keras.layers.Embedding(20, 8, name="emb")(tokens)
    h = keras.layers.MultiHeadAttention(2, 4, name="mha")(h, h)
    out = keras.layers.Dense(CLASSES, name="out")(keras.layers.GlobalAveragePooling1D()(h))
    model = keras.Model(tokens, out, name="attention")
    x = rng.integers(0, 20, (N, 5)).astype("int32")
    tags = {"emb/embeddings", "out/kernel", "out/bias"} | {
        f"mha/{part}/{v}"
        for part in ("query", "key", "value", "attention_output")
        for v in ("kernel", "bias")
    }
    return model, x, tags, set()


def recurrent(rng):
    model = keras.Sequential(
        [keras.Input((5, 3)), keras.layers.LSTM(6, name="lstm"), keras.layers.Dense(CLASSES, name="out")],
        name="recurrent",
    )  # fmt: skip
    x = rng.random((N, 5, 3), dtype=np.float32)
    tags = {"lstm/lstm_cell/kernel", "lstm/lstm_cell/recurrent_kernel", "lstm/lstm_cell/bias",
            "out/kernel", "out/bias"}  # fmt: skip
    return model, x, tags, set()


ZOO = {
    "sequential": sequential,
    "two_inputs": two_inputs,
    "subclassed": subclassed,
    "shared_submodel": shared_submodel,
    "batchnorm": batchnorm,
    "attention": attention,
    "recurrent": recurrent,
}


def make(kind: str, seed: int = 0):
    """`(model, x, y, expected variable tags, expected filter tags)` for one zoo member."""
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    model, x, tags, filters = ZOO[kind](rng)
    return model, x, _labels(np.random.default_rng(seed + 100)), tags, filters


def dataset(x, y, batch: int = 16) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
