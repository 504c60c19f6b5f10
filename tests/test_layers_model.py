"""Name-scoped layers and the Model base: in custom loops, in Keras models, under fit."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tbkit
from conftest import FIXTURE, load_events, scalars
from tbkit.app.cnn import MnistCNN

LAYERS = ("layer_conv1", "layer_conv2", "layer_fc1", "layer_fc2")
STATS = ("mean", "stddev", "min", "max", "histogram")


def contract_tags(layers=LAYERS, activations=True):
    tags = {f"{L}/{V}/{s}" for L in layers for V in ("weights", "biases") for s in STATS}
    if activations:
        tags |= {f"{L}/activations" for L in layers}
    return tags


def test_layers_compute_what_keras_computes():
    x = tf.random.stateless_normal((2, 8, 8, 3), seed=(1, 2))
    ours = tbkit.layers.Conv2D(4, 3, activation="relu", name="c")
    ref = keras.layers.Conv2D(4, 3, padding="same", activation="relu")
    ours.build(x.shape)
    ref.build(x.shape)
    ref.set_weights([ours.kernel.numpy(), ours.bias.numpy()])
    np.testing.assert_allclose(ours(x), ref(x), atol=1e-6)
    assert [v.name for v in ours.weights] == ["weights", "biases"]
    dense = tbkit.layers.Dense(5, name="d")
    assert dense(tf.ones((2, 3))).shape == (2, 5)
    assert dense.kernel.path.endswith("d/weights")
    with pytest.raises(ValueError, match="Received: units=0"):
        tbkit.layers.Dense(0)


def test_mnist_cnn_structure():
    model = MnistCNN()
    logits = model(tf.zeros((3, 28, 28, 1)))
    assert model.name == "mnistcnn" and logits.shape == (3, 10)
    assert [layer.name for layer in model.layers] == [
        "layer_conv1",
        "pool1",
        "layer_conv2",
        "pool2",
        "flatten",
        "layer_fc1",
        "layer_fc2",
    ]
    shapes = {k: tuple(v.shape) for k, v in model.vars.items()}
    assert shapes == {
        "layer_conv1/weights": (5, 5, 1, 16), "layer_conv1/biases": (16,),
        "layer_conv2/weights": (5, 5, 16, 36), "layer_conv2/biases": (36,),
        "layer_fc1/weights": (7 * 7 * 36, 128), "layer_fc1/biases": (128,),
        "layer_fc2/weights": (128, 10), "layer_fc2/biases": (10,),
    }  # fmt: skip
    assert model.activations["layer_conv2"].shape == (3, 14, 14, 36)
    assert model.activations["layer_fc2"] is not None


def test_summarize_writes_the_contract_tags(tmp_path):
    model = MnistCNN()
    model(tf.zeros((1, 28, 28, 1)))
    writer = tf.summary.create_file_writer(str(tmp_path))
    x = tf.random.stateless_uniform((4, 28, 28, 1), seed=(0, 1))
    with writer.as_default():
        assert bool(model.summarize(5, x))
        assert bool(model.summarize(10))
    writer.close()
    acc = load_events(str(tmp_path))
    assert set(acc.Tags()["tensors"]) == contract_tags()
    assert list(scalars(acc, "layer_fc1/weights/max")) == [5, 10]
    w = model.layer_fc1.kernel.numpy()
    assert scalars(acc, "layer_fc1/weights/stddev")[10] == pytest.approx(float(w.std()), abs=1e-6)
    assert [e.step for e in acc.Tensors("layer_conv1/activations")] == [5]


def test_logging_off_means_no_histograms(tmp_path):
    model = MnistCNN(logging=False)
    model(tf.zeros((1, 28, 28, 1)))
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        model.summarize(1, tf.zeros((2, 28, 28, 1)))
    writer.close()
    tags = set(load_events(str(tmp_path)).Tags()["tensors"])
    assert tags == {t for t in contract_tags(activations=False) if not t.endswith("histogram")}


def test_save_load_and_architecture_mismatch(tmp_path):
    model = MnistCNN()
    x = tf.random.stateless_uniform((2, 28, 28, 1), seed=(3, 4))
    y = model(x)
    path = model.save(str(tmp_path / "cnn"))
    other = MnistCNN()
    other(x)
    other.load(path)
    np.testing.assert_allclose(other(x), y, atol=1e-6)

    class Wider(tbkit.Model):
        def __init__(self):
            super().__init__(
                [
                    tbkit.layers.Conv2D(32, 5, name="layer_conv1"),
                    tbkit.layers.Flatten(),
                    tbkit.layers.Dense(10, name="layer_fc2"),
                ]
            )

    wide = Wider()
    wide(x)
    assert wide.name == "wider"
    with pytest.raises(tbkit.CheckpointError) as info:
        wide.load(path)
    assert (
        "layer_conv1/weights" in str(info.value)
        and "[5, 5, 1, 16]" in str(info.value)
        and "[5, 5, 1, 32]" in str(info.value)
    )


def test_custom_loop_summaries_stay_out_of_the_train_step():
    model = MnistCNN()
    opt = keras.optimizers.Adam()

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(y, model(x, training=True))
            )
        opt.apply_gradients(
            zip(
                tape.gradient(loss, model.trainable_variables),
                model.trainable_variables,
                strict=True,
            )
        )
        return loss

    graph = step.get_concrete_function(
        tf.TensorSpec((8, 28, 28, 1)), tf.TensorSpec((8,), tf.int32)
    ).graph
    op_types = {op.type for op in graph.get_operations()}
    assert not {t for t in op_types if "Summary" in t}
    # Layer name scopes show in the graph (what TensorBoard's Graphs tab groups by).
    names = [op.name for op in graph.get_operations()]
    assert any("layer_conv1" in n for n in names)


def fixture_data():
    data = tbkit.datasets.mnist.load(FIXTURE, validation_size=500, log=lambda _: None)
    x = data.train_images[..., None].astype("float32") / 255.0
    return x, data.train_labels


@pytest.mark.parametrize("kind", ["sequential", "functional"])
def test_model_fit_with_tbkit_layers_writes_per_layer_tags(tmp_path, kind):
    stack = [
        tbkit.layers.Conv2D(8, 5, activation="relu", name="layer_conv1"),
        tbkit.layers.MaxPool2D(2),
        tbkit.layers.Flatten(),
        tbkit.layers.Dense(10, name="layer_fc2"),
    ]
    if kind == "sequential":
        model = keras.Sequential([keras.Input((28, 28, 1)), *stack])
    else:
        inputs = keras.Input((28, 28, 1))
        h = inputs
        for layer in stack:
            h = layer(h)
        model = keras.Model(inputs, h)
    x, y = fixture_data()
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    cb = tbkit.LayerSummaries(str(tmp_path), every_n_batches=5, inputs=x[:16])
    history = model.fit(x, y, batch_size=100, epochs=1, callbacks=[cb], verbose=0)
    assert history.history["accuracy"][0] > 0.3  # it did learn on real digits
    acc = load_events(str(tmp_path / "train"))
    assert set(acc.Tags()["tensors"]) == contract_tags(("layer_conv1", "layer_fc2"))
    assert list(scalars(acc, "layer_conv1/weights/mean")) == [5, 10, 15]


def test_the_library_does_not_import_the_mnist_application():
    """`import tbkit` and its engine modules never load `tbkit.app`; the old `tbkit.MnistCNN`
    still works, with a deprecation warning."""
    import subprocess
    import sys

    code = (
        "import sys, warnings, tbkit, tbkit.keras, tbkit.loop.trainer, tbkit.hooks\n"
        "assert not any(m.startswith('tbkit.app') for m in sys.modules), 'app imported'\n"
        "assert 'MnistCNN' not in tbkit.__all__\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    cls = tbkit.MnistCNN\n"
        "assert cls.__module__ == 'tbkit.app.cnn'\n"
        "assert any(issubclass(x.category, DeprecationWarning) for x in w)\n"
        "import tbkit.recorder, tbkit.model.recorder\n"
        "assert tbkit.recorder is tbkit.model.recorder  # old names import the moved module\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")
