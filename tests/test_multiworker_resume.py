"""Two MultiWorkerMirroredStrategy workers on loopback, both killed mid-run and restarted
with the same command, finish like an uninterrupted two-worker run: for train_mnist.py
and for `model.fit` with `TensorBoardRun`.

A restarted non-chief worker resumes from a copy of the chief's checkpoints (its own
scratch copies are gone with the process), so both workers continue from one state.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import FIXTURE, ROOT, event_files, load_events, scalars
from helpers import start_workers, wait_all

pytestmark = pytest.mark.slow


def start_cluster(command) -> list[subprocess.Popen]:
    return start_workers(command, 2, cwd=ROOT)


def finish(procs, both: bool = False):
    """Waits for both workers; returns the chief's output (or both outputs)."""
    outputs = wait_all(procs)
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-2000:]
    return (outputs[0][0], outputs[1][0]) if both else outputs[0][0]


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

    reference, worker = finish(start_cluster(command("reference")), both=True)
    # Only the chief reports and writes: one event file per writer, nothing else in the logdir.
    assert "Accuracy on Test-Set" in reference and "Iter:" not in worker
    ref_run = tmp_path / "reference"
    assert {"train", "validation", "test", "checkpoints", "config.json"} <= set(os.listdir(ref_run))
    assert all(len(event_files(str(ref_run / n))) == 1 for n in ("train", "validation", "test"))
    assert os.listdir(tmp_path) == ["reference"]

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

    # The projector (every worker loads the best weights; the chief writes): the same
    # embedding of the same best checkpoint in both runs, and nothing from the other worker.
    def embedding(run):
        folder = tmp_path / run / "validation"
        names = re.findall(r'tensor_name: "(.*)"', (folder / "projector_config.pbtxt").read_text())
        files = sorted(p.name for p in (folder / "projector").iterdir())
        tensor = np.loadtxt(
            next((folder / "projector").glob("*_best_step_*[0-9].tsv")), delimiter="\t"
        )
        return names, files, tensor

    names, files, tensor = embedding("reference")
    assert len(names) == 1 and names[0].startswith("layer_fc1 @ best step ") and len(files) == 3
    assert tensor.shape == (500, 128)
    killed = embedding("killed")
    assert killed[:2] == (names, files)
    np.testing.assert_allclose(killed[2], tensor, rtol=1e-5, atol=1e-6)


def test_a_non_chief_run_state_resumes_from_the_chiefs_checkpoints(tmp_path):
    """What a restarted non-chief worker does, for every door (the Trainer, the callback):
    its scratch directory starts as a copy of the chief's checkpoints, so it restores the
    chief's step, weights and patience; nothing it writes reaches the run directory."""
    import keras
    import numpy as np
    import tensorflow as tf

    import tbkit

    def model():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="out")])

    run = tmp_path / "run"
    chief_model = model()
    with tbkit.RunState(str(run), model=chief_model, optimizer=keras.optimizers.Adam(),
                        patience=5, log=lambda _: None) as chief:  # fmt: skip
        chief_model.get_layer("out").kernel.assign(np.full((3, 2), 0.5, "float32"))
        chief.record(0.9, 7)
        chief.save_latest(7)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}

    worker_model = model()
    worker = tbkit.RunState(str(run), model=worker_model, optimizer=keras.optimizers.Adam(),
                            patience=5, chief=False, log=lambda _: None)  # fmt: skip
    with worker:
        assert worker.resumed and int(worker.step.numpy()) == 7
        assert worker.best_value == 0.9 and worker.best_step == 7
        np.testing.assert_array_equal(worker_model.get_layer("out").kernel.numpy(), 0.5)
        worker.record(0.95, 8)  # collectives need every worker to save: into its scratch copy
        worker.save_latest(8)
        scratch = worker.latest_dir
        assert tf.train.latest_checkpoint(scratch).endswith("latest-8")
        assert not str(scratch).startswith(str(run))
    assert not os.path.exists(scratch)  # removed with the worker's state
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before  # the run dir untouched


# `model.fit` under MultiWorkerMirroredStrategy cannot be run here: Keras 3 fails before the
# first batch (`_maybe_symbolic_build` reduces a PerReplica batch eagerly;
# keras-team/keras#20585, tensorflow/tensorflow#72388), with or without tbkit's callback.
