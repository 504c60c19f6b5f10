"""The CLI's reliability table, at the library's doors: `TensorBoardRun` and `Trainer`.

Each door trains a small classifier that knows nothing of tbkit into a run directory;
the run directory is then damaged the way test_reliability.py damages the CLI's, and
the same call is made again. The unit is the door's own: epochs for `model.fit`,
steps for the `Trainer` (a checkpoint at each of its 3 units, the last 2 kept).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tbkit
import tbkit.keras as tbk
from conftest import ROOT, damage_checkpoint

rng = np.random.default_rng(0)
X = rng.random((64, 6), dtype=np.float32)
Y = (X[:, 0] > 0.5).astype("int32")


def make_model(width: int = 8, seed: int = 0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(width, activation="relu", name="hidden"),
         keras.layers.Dense(2, name="out")]
    )  # fmt: skip


class CallbackDoor:
    name = "callback"

    def run(self, run_dir, units: int = 3, width: int = 8):
        """Fits up to `units` epochs; returns (epochs trained now, log lines)."""
        lines = []
        model = make_model(width)
        model.compile(keras.optimizers.Adam(1e-2),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])  # fmt: skip
        cb = tbk.TensorBoardRun(str(run_dir), validation_data=(X, Y), images=False,
                                log=lines.append)  # fmt: skip
        history = model.fit(X, Y, batch_size=32, epochs=units, validation_data=(X, Y),
                            callbacks=[cb], verbose=0)  # fmt: skip
        return len(history.history.get("loss", [])), lines


class TrainerDoor:
    name = "trainer"

    def run(self, run_dir, units: int = 3, width: int = 8):
        """Fits up to `units` steps; returns (steps trained now, log lines)."""
        lines = []
        trainer = tbkit.Trainer(
            make_model(width), keras.optimizers.Adam(1e-2),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_dir,
            eval_every=1, checkpoint_every=1, summary_every=1, images=False, progress=False,
            log=lines.append,
        )  # fmt: skip
        data = tf.data.Dataset.from_tensor_slices((X, Y)).batch(32)
        before = trainer.timings["train_steps"]
        result = trainer.fit(data, data, steps=units)
        trained = result.steps - (result.resumed_from or 0)
        return (trained if trainer.timings["train_steps"] > before else 0), lines


DOORS = [CallbackDoor(), TrainerDoor()]


@pytest.fixture(scope="module", params=DOORS, ids=lambda d: d.name)
def pristine(request, tmp_path_factory):
    door = request.param
    run = tmp_path_factory.mktemp(door.name) / "run"
    trained, _ = door.run(run)
    assert trained == 3
    assert sorted(os.listdir(run / "checkpoints" / "latest")) == [
        "checkpoint", "latest-2.data-00000-of-00001", "latest-2.index",
        "latest-3.data-00000-of-00001", "latest-3.index",
    ]  # fmt: skip
    return door, run


@pytest.fixture
def damaged(pristine, tmp_path):
    door, run = pristine
    shutil.copytree(run, tmp_path / "run")
    return door, tmp_path / "run"


def files(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_garbage_state_file_is_no_silent_fresh_start(damaged):
    door, run = damaged
    (run / "checkpoints" / "latest" / "checkpoint").write_text("garbage {{{")
    trained, _ = door.run(run)
    assert trained == 0  # it found latest-3 from the index files: nothing left to train


@pytest.mark.parametrize("damage", ["truncated index", "flipped byte in data"])
def test_damaged_latest_falls_back_to_the_previous_one(damaged, damage):
    door, run = damaged
    latest = run / "checkpoints" / "latest"
    damage_checkpoint(latest / "latest-3", damage)
    best = files(run / "checkpoints" / "best")
    trained, lines = door.run(run)
    assert any(line.startswith(f"Checkpoint {latest / 'latest-3'} is damaged (") for line in lines)
    assert f"Restored the older checkpoint {latest / 'latest-2'} instead" in lines
    assert trained == 1  # the third unit again, from the second one's state
    assert set(files(run / "checkpoints" / "best")) >= set(best)


def test_no_readable_latest_is_a_refusal(damaged):
    door, run = damaged
    for f in (run / "checkpoints" / "latest").glob("*.index"):
        f.write_bytes(b"not an index")
    best = files(run / "checkpoints" / "best")
    with pytest.raises(tbkit.CheckpointError) as info:
        door.run(run)
    assert "no readable checkpoint" in str(info.value) and "\n" not in str(info.value)
    assert files(run / "checkpoints" / "best") == best


def test_damaged_best_is_a_refusal(damaged):
    door, run = damaged
    [index] = (run / "checkpoints" / "best").glob("best-*.index")
    index.write_bytes(index.read_bytes()[:30])
    with pytest.raises(tbkit.CheckpointError) as info:
        door.run(run)
    assert "the best checkpoint is damaged" in str(info.value) and "\n" not in str(info.value)
    assert index.exists()


def test_checkpoint_of_another_architecture_is_refused_and_kept(damaged):
    door, run = damaged
    before = files(run / "checkpoints" / "best")
    with pytest.raises(tbkit.ArchitectureError) as info:
        door.run(run, width=5)  # a hidden layer of 5 units instead of 8
    message = str(info.value)
    assert "different architecture" in message and "hidden/kernel" in message
    assert "[6, 8] in the checkpoint, [6, 5] in the model" in message and "\n" not in message
    assert files(run / "checkpoints" / "best") == before
    # The best alone (no latest to resume from) is checked too, not taken for damage.
    shutil.rmtree(run / "checkpoints" / "latest")
    with pytest.raises(tbkit.ArchitectureError, match=r"\[6, 8\] in the checkpoint, \[6, 5\]"):
        door.run(run, width=5)
    assert files(run / "checkpoints" / "best") == before


def test_a_second_process_is_refused(damaged):
    door, run = damaged
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".lock").write_text(str(holder.pid))
        with pytest.raises(tbkit.RunDirError) as info:
            door.run(run, units=4)
        assert f"in use by process {holder.pid}" in str(info.value)
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in (run / "checkpoints" / "latest").glob("*.index")) == [
        "latest-2.index", "latest-3.index"]  # fmt: skip


WRITE_FAILURE = """
import resource, signal, sys
sys.path.insert(0, {tests!r})
import test_library_reliability as t
door = {{d.name: d for d in t.DOORS}}[{door!r}]
door.run({run!r}, units=1)  # a first unit with room to write: a best checkpoint exists
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))  # then the disk is "full"
import tbkit
try:
    door.run({run!r}, units=4)
except tbkit.TbkitError as e:
    print("ERROR:", type(e).__name__, e)
"""


@pytest.mark.parametrize("door", DOORS, ids=lambda d: d.name)
def test_a_failed_write_is_one_error_naming_the_kept_best(door, tmp_path):
    """RLIMIT_FSIZE makes every write after the first unit fail: checkpoints and event files.

    Whichever comes first, the call ends in one `TbkitError` line naming the cause, and the
    best checkpoint of the first unit stays whole and restorable.
    """
    run = tmp_path / "run"
    script = WRITE_FAILURE.format(tests=os.path.join(ROOT, "tests"), door=door.name, run=str(run))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))  # fmt: skip
    out = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and out, proc.stderr[-2000:]
    best = str(run / "checkpoints" / "best" / "best-1")
    assert out[-1].startswith(
        (
            "ERROR: CheckpointError cannot write the checkpoint of step 2: ",
            f"ERROR: RunDirError cannot write the event files of {run}/",
        )
    ), out[-1]
    assert "File too large" in out[-1] and "Traceback" not in proc.stderr
    if "CheckpointError" in out[-1]:
        assert f"Best checkpoint kept: {best} (value " in out[-1]
    restored = make_model()
    tf.train.Checkpoint(model=restored).restore(
        best
    ).expect_partial().assert_existing_objects_matched()
