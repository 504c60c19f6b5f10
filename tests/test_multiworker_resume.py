"""Two MultiWorkerMirroredStrategy workers on loopback, both killed mid-run and restarted
with the same command, finish like an uninterrupted two-worker run: for train_mnist.py
and for `model.fit` with `TensorBoardRun`.

A restarted non-chief worker resumes from a copy of the chief's checkpoints (its own
scratch copies are gone with the process), so both workers continue from one state.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import FIXTURE, ROOT, load_events, scalars
from tbkit.testing import free_ports, subprocess_env

pytestmark = pytest.mark.slow


def start_cluster(command) -> list[subprocess.Popen]:
    """Starts worker 0 (the chief) and worker 1 on fresh loopback ports."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, cwd=ROOT, env=subprocess_env(TF_CONFIG=tf_config)))  # fmt: skip
    return procs


def finish(procs) -> str:
    """Waits for both workers; returns the chief's output."""
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=300))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-2000:]
    return outputs[0][0]


def kill_after(procs, marker: re.Pattern) -> str:
    """Reads the chief's output until `marker` matches, then SIGKILLs both workers."""
    seen = []
    deadline = time.monotonic() + 240
    for line in procs[0].stdout:
        seen.append(line)
        if marker.search(line) or time.monotonic() > deadline:
            break
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait()
    return "".join(seen)


CLI_ARGS = ["--data-dir", FIXTURE, "--validation-size", "500", "--num-iterations", "40",
            "--eval-every", "10", "--summary-every", "10", "--checkpoint-every", "10",
            "--require-improvement", "1000", "--strategy", "multi-worker", "--seed", "5"]  # fmt: skip


def test_train_mnist_two_workers_killed_and_restarted(tmp_path):
    def command(name):
        return [
            sys.executable,
            "train_mnist.py",
            "--logdir",
            str(tmp_path),
            "--run-name",
            name,
            *CLI_ARGS,
        ]

    reference = finish(start_cluster(command("reference")))
    # Killed after the validation of iteration 20 (latest checkpoints at 10 and 20 exist).
    before = kill_after(start_cluster(command("killed")), re.compile(r"^Iter:\s+20,"))
    assert "Iter:     20" in before and "Accuracy on Test-Set" not in before
    resumed = finish(start_cluster(command("killed")))
    assert re.search(r"^Resuming from step (10|20)$", resumed, re.M), resumed

    test_line = lambda out: re.search(r"^Accuracy on Test-Set: .*$", out, re.M)[0]  # noqa: E731
    assert test_line(resumed) == test_line(reference)
    ref = scalars(load_events(str(tmp_path / "reference" / "validation")), "accuracy")
    got = scalars(load_events(str(tmp_path / "killed" / "validation")), "accuracy")
    assert got == ref and sorted(got) == [10, 20, 30, 40]
    best = lambda run: scalars(load_events(str(tmp_path / run / "test")), "accuracy")  # noqa: E731
    assert best("killed") == best("reference")  # same best step (the x value), same accuracy


FIT_SCRIPT = """
import sys, keras, numpy as np, tensorflow as tf
strategy = tf.distribute.MultiWorkerMirroredStrategy()
import tbkit, tbkit.keras
tf.config.experimental.enable_op_determinism()
keras.utils.set_random_seed(3)
d = tbkit.datasets.mnist.load({fixture!r}, validation_size=500, log=lambda _: None)
f = lambda a: (a[..., None] / 255.0).astype("float32")
x, y, xv, yv = f(d.train_images[:800]), d.train_labels[:800], f(d.validation_images), d.validation_labels

class Say(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        print(f"epoch {{epoch + 1}} val_accuracy {{logs['val_accuracy']:.6f}}", flush=True)

with strategy.scope():
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
                              keras.layers.Flatten(), keras.layers.Dense(10, name="out")])
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
run = tbkit.keras.TensorBoardRun(sys.argv[1], validation_data=(xv, yv), images=False)
model.fit(x, y, batch_size=100, epochs=4, shuffle=False, validation_data=(xv, yv), callbacks=[run, Say()],
          verbose=0)
print("best", run.best.best_path.rsplit("-", 1)[-1], f"{{run.state.best_value:.6f}}")
print("restored", f"{{model.evaluate(xv, yv, verbose=0, batch_size=500)[1]:.6f}}")
"""


def test_fit_with_the_callback_two_workers_killed_and_restarted(tmp_path):
    script = FIT_SCRIPT.format(fixture=FIXTURE)

    def command(name):
        return [sys.executable, "-c", script, str(tmp_path / name)]

    reference = finish(start_cluster(command("reference")))
    before = kill_after(start_cluster(command("killed")), re.compile(r"^epoch 2 "))
    assert "epoch 2 " in before and "best" not in before
    resumed = finish(start_cluster(command("killed")))
    # Only epochs 3 and 4 ran again, on both workers, from the chief's epoch-2 state.
    assert re.findall(r"^epoch (\d)", resumed, re.M) == ["3", "4"]
    final = lambda out: re.findall(r"^(?:best|restored) .*$", out, re.M)  # noqa: E731
    assert final(resumed) == final(reference) and len(final(reference)) == 2
    ref_epochs = re.findall(r"^epoch .*$", reference, re.M)
    assert re.findall(r"^epoch .*$", before + resumed, re.M) == ref_epochs
