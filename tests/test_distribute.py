"""tf.distribute without GPUs: 2 logical CPU devices, and two real worker processes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import FIXTURE, ROOT, event_files, load_events, scalars
from helpers import subprocess_env

pytestmark = pytest.mark.slow

ARGS = ["--data-dir", FIXTURE, "--validation-size", "500", "--num-iterations", "40",
        "--eval-every", "10", "--summary-every", "10", "--checkpoint-every", "20", "--seed", "5"]  # fmt: skip

TWO_CPUS = """
import sys, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tbkit.app.cli import main
sys.exit(main(sys.argv[1:]))
"""


def tags_of(run_dir):
    return {
        name: set(load_events(str(run_dir / name)).Tags()["tensors"])
        for name in ("train", "validation", "test")
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("dist")
    single = subprocess.run(
        [sys.executable, "train_mnist.py", "--logdir", str(logdir), "--run-name", "single", *ARGS],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=subprocess_env(),
        timeout=300,
    )
    assert single.returncode == 0, single.stderr
    mirrored = subprocess.run(
        [
            sys.executable,
            "-c",
            TWO_CPUS,
            "--logdir",
            str(logdir),
            "--run-name",
            "mirrored",
            "--strategy",
            "mirrored",
            *ARGS,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=subprocess_env(),
        timeout=300,
    )
    assert mirrored.returncode == 0, mirrored.stderr
    return logdir


def test_mirrored_has_the_single_device_picture(runs):
    assert tags_of(runs / "mirrored") == tags_of(runs / "single")
    for name in ("train", "validation", "test"):
        assert (
            len(event_files(str(runs / "mirrored" / name))) == 1
        )  # one writer, not one per replica
    val = scalars(load_events(str(runs / "mirrored" / "validation")), "accuracy")
    assert sorted(val) == [10, 20, 30, 40] and max(val.values()) > 0.5


def test_mirrored_best_checkpoint_restores_on_one_device(runs):
    best = max(scalars(load_events(str(runs / "mirrored" / "validation")), "accuracy").values())
    script = f"""
import numpy as np, tensorflow as tf, tbkit
from tbkit.app.cnn import MnistCNN
data = tbkit.datasets.mnist.load({FIXTURE!r}, validation_size=500, log=lambda _: None)
model = MnistCNN(); model(tf.zeros((1, 28, 28, 1)))
tf.train.Checkpoint(model=model).restore(tf.train.latest_checkpoint({str(runs / "mirrored" / "checkpoints" / "best")!r})).expect_partial()
x = data.validation_images[..., None].astype("float32") / 255.0
print(int(np.sum(np.argmax(model(x), 1) == data.validation_labels)))
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env=subprocess_env(),
        cwd=ROOT,
    )
    assert int(out.stdout.split()[-1]) == round(best * 500)


# Two real worker processes (chief-only writes, kill and resume): test_multiworker_resume.py.


def test_keras_callback_under_mirrored_strategy(tmp_path):
    script = f"""
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np, tbkit, tbkit.keras
d = tbkit.datasets.mnist.load({FIXTURE!r}, validation_size=500, log=lambda _: None)
f = lambda a: (a[..., None] / 255.0).astype("float32")
strategy = tf.distribute.MirroredStrategy()
assert strategy.num_replicas_in_sync == 2
with strategy.scope():
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
                              keras.layers.Flatten(), keras.layers.Dense(10, name="out")])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
cb = tbkit.keras.TensorBoardRun({str(tmp_path)!r}, validation_data=(f(d.validation_images), d.validation_labels))
h = model.fit(f(d.train_images), d.train_labels, batch_size=100, epochs=2,
              validation_data=(f(d.validation_images), d.validation_labels), callbacks=[cb], verbose=0)
print(max(h.history["val_accuracy"]), cb.best.best_path)
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    best, path = out.stdout.split()[-2:]
    train = set(load_events(str(tmp_path / "train")).Tags()["tensors"])
    assert {
        "conv/kernel/mean",
        "conv/kernel/histogram",
        "out/bias/max",
        "conv/filters",
        "accuracy",
    } <= train
    assert {"accuracy", "confusion_matrix"} <= set(
        load_events(str(tmp_path / "validation")).Tags()["tensors"]
    )
    assert len(event_files(str(tmp_path / "train"))) == 1
    assert os.path.basename(path).startswith("best-") and float(best) > 0.5
