"""RunWriters: one folder per run, shared tags, no-op when off; graph export."""

from __future__ import annotations

import os

import tensorflow as tf

import tbkit
from conftest import event_files, load_events, scalars
from tbkit.app.cnn import MnistCNN


def test_run_writers_overlay_same_tags(tmp_path):
    with tbkit.RunWriters(str(tmp_path)) as writers:
        assert os.listdir(tmp_path) == []  # created on first use only
        with writers.scope("train"):
            for step in (1, 2):
                tf.summary.scalar("loss", 1.0 / step, step=step)
                with writers.scope("validation", step=step):
                    tf.summary.scalar("loss", 2.0 / step)
    assert sorted(os.listdir(tmp_path)) == ["train", "validation"]
    assert len(event_files(str(tmp_path / "train"))) == 1
    assert scalars(load_events(str(tmp_path / "train")), "loss") == {1: 1.0, 2: 0.5}
    assert scalars(load_events(str(tmp_path / "validation")), "loss") == {1: 2.0, 2: 1.0}


def test_null_writers_write_nothing(tmp_path):
    writers = tbkit.null_writers(str(tmp_path))
    with writers.scope("train", step=0):
        tf.summary.scalar("loss", 1.0)
    writers.close()
    assert os.listdir(tmp_path) == []


def test_write_graph_exports_layer_scopes(tmp_path):
    model = MnistCNN()

    @tf.function
    def forward(x):
        return model(x)

    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        assert tbkit.write_graph(forward, tf.TensorSpec((None, 28, 28, 1)))
    writer.close()
    graph = load_events(str(tmp_path)).Graph()
    names = {node.name for node in graph.node}
    for scope in ("layer_conv1", "layer_conv2", "layer_fc1", "layer_fc2"):
        assert any(scope in n for n in names), scope


def test_train_step_graph_is_grouped_like_the_tutorials(tmp_path):
    """Top-level groups: the model (by its own name, with its layers inside), `loss`,
    `metrics`, `optimizer`, TF's gradients, the inputs; no `mnistcnn_1` or `metrics_1`."""
    import keras

    from tbkit.loop.distribute import make_train_step

    model = MnistCNN()
    model(tf.zeros((1, 28, 28, 1)))
    window = tf.Variable(tf.zeros(4))
    step = make_train_step(tf.distribute.get_strategy(), model, keras.optimizers.Adam(),
                           keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                           window, True)  # fmt: skip
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        tbkit.write_graph(step, tf.TensorSpec((8, 28, 28, 1)), tf.TensorSpec((8,), tf.int32))
    writer.close()
    nodes = load_events(str(tmp_path)).Graph().node
    top = {n.name.split("/")[0] for n in nodes if "/" in n.name}
    assert {"mnistcnn", "loss", "metrics", "optimizer"} <= top, top
    assert not {"mnistcnn_1", "metrics_1", "loss_1"} & top
    layers = {n.name.split("/")[1] for n in nodes if n.name.startswith("mnistcnn/")}
    assert {"layer_conv1", "layer_conv2", "layer_fc1", "layer_fc2"} <= layers, layers
    # Renamed consistently: every input refers to a node of the graph.
    names = {n.name for n in nodes}
    for n in nodes:
        for ref in n.input:
            assert ref.lstrip("^").split(":")[0] in names, (n.name, ref)
