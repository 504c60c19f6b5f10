"""Damaged run state: detected, reported in one line, an older good checkpoint used or a refusal."""

from __future__ import annotations

import os
import shutil

import pytest

from conftest import FIXTURE, damage_checkpoint, load_events, scalars
from helpers import subprocess_env
from tbkit.app import cli

pytestmark = pytest.mark.slow

ARGS = ["--data-dir", FIXTURE, "--validation-size", "500", "--num-iterations", "30", "--eval-every", "10",
        "--summary-every", "10", "--checkpoint-every", "10", "--require-improvement", "1000", "--seed", "2"]  # fmt: skip


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A finished 30-iteration run: latest-20 (mid-run) and latest-30 (finished)."""
    root = tmp_path_factory.mktemp("pristine")
    assert cli.main(["--logdir", str(root), "--run-name", "run", *ARGS]) == 0
    return root / "run"


@pytest.fixture
def run(pristine, tmp_path):
    shutil.copytree(pristine, tmp_path / "run")
    return tmp_path / "run"


def again(run, capsys):
    code = cli.main(["--logdir", str(run.parent), "--run-name", "run", *ARGS])
    out, err = capsys.readouterr()
    return code, out, err


def test_garbage_state_file_is_no_silent_fresh_start(run, capsys):
    capsys.readouterr()
    (run / "checkpoints" / "latest" / "checkpoint").write_text("garbage {{{")
    code, out, _ = again(run, capsys)
    assert code == 0 and "already finished at step 30" in out and "Iter:" not in out


@pytest.mark.parametrize("damage", ["truncated index", "flipped byte in data"])
def test_damaged_latest_falls_back_to_the_previous_one(run, capsys, damage):
    capsys.readouterr()
    latest = run / "checkpoints" / "latest"
    damage_checkpoint(latest / "latest-30", damage)
    best_before = sorted(os.listdir(run / "checkpoints" / "best"))
    code, out, _ = again(run, capsys)
    assert code == 0
    assert f"Checkpoint {latest / 'latest-30'} is damaged (" in out
    assert f"Restored the older checkpoint {latest / 'latest-20'} instead" in out
    assert "Resuming from step 20" in out and "Iter:     30" in out
    assert sorted(os.listdir(run / "checkpoints" / "best")) == best_before
    # The replayed iteration logged the same validation accuracy as the first time.
    val = scalars(load_events(str(run / "validation")), "accuracy")
    assert sorted(val) == [10, 20, 30]


def test_no_readable_latest_is_a_refusal(run, capsys):
    capsys.readouterr()
    latest = run / "checkpoints" / "latest"
    for f in latest.glob("*.index"):
        f.write_bytes(b"not an index")
    before = {p.name: p.read_bytes() for p in (run / "checkpoints" / "best").iterdir()}
    code, _, err = again(run, capsys)
    lines = err.strip().splitlines()
    assert (
        code == 1
        and lines[-1].startswith("train_mnist.py: error: ")
        and "no readable checkpoint" in lines[-1]
    )
    assert {p.name: p.read_bytes() for p in (run / "checkpoints" / "best").iterdir()} == before


def test_damaged_best_is_a_refusal(run, capsys):
    capsys.readouterr()
    best = run / "checkpoints" / "best"
    [index] = best.glob("best-*.index")
    index.write_bytes(index.read_bytes()[:30])
    code, _, err = again(run, capsys)
    lines = err.strip().splitlines()
    assert code == 1 and "the best checkpoint is damaged" in lines[-1]
    assert index.exists()


#: Kills per run of the test: 4 in the suite (half in start-up, half in training);
#: `TBKIT_KILLS=30 python -m pytest tests/test_reliability.py -k sigkill` for the long run.
KILLS = int(os.environ.get("TBKIT_KILLS", "4"))

# A kill in training lands within ~1 s of a validation line, ~10-30 iterations into the
# process's run: 20 iterations per kill leave the run unfinished until the last kill.
KILL_ARGS = ["--data-dir", FIXTURE, "--validation-size", "500",
             "--num-iterations", str(max(200, 20 * KILLS)), "--eval-every", "10",
             "--summary-every", "5", "--checkpoint-every", "5", "--require-improvement", "1000",
             "--seed", "9"]  # fmt: skip


def test_sigkill_at_random_moments_loses_nothing(tmp_path):
    """Kill -9 at random moments (start-up, training, saves and image summaries every
    5 iterations), restart each time; bounded: KILLS kills of at most 8 s each."""
    import random
    import re
    import signal
    import subprocess
    import sys
    import time

    import tensorflow as tf

    from conftest import ROOT

    env = subprocess_env()

    def command(name):
        return [
            sys.executable,
            os.path.join(ROOT, "train_mnist.py"),
            "--logdir",
            str(tmp_path),
            "--run-name",
            name,
            *KILL_ARGS,
        ]

    reference = subprocess.run(
        command("reference"), capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )
    assert reference.returncode == 0, reference.stderr[-2000:]

    rng = random.Random(1234)
    run = tmp_path / "killed"
    kills = 0
    outcomes = {
        "in start-up or restore": 0,
        "while training (saves, summaries every 5 iterations)": 0,
    }
    for _attempt in range(KILLS):
        proc = subprocess.Popen(
            command("killed"),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=ROOT,
        )
        if _attempt % 2 == 0:
            # In start-up or while restoring (start-up takes ~8 s here).
            time.sleep(rng.uniform(0.5, 7.0))
            phase = "in start-up or restore"
        else:
            # In training: after the first validation line of this process, within the
            # next second (a checkpoint save and an image summary every 5 iterations).
            for line in proc.stdout:
                if line.startswith("Iter:"):
                    break
            time.sleep(rng.uniform(0.0, 1.0))
            phase = "while training (saves, summaries every 5 iterations)"
        if proc.poll() is not None:  # it finished before the kill: start that run over
            assert proc.returncode == 0
            shutil.rmtree(run)
            continue
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        outcomes[phase] += 1
        best = tf.train.latest_checkpoint(str(run / "checkpoints" / "best"))
        if best:  # always restorable
            reader = tf.train.load_checkpoint(best)
            assert reader.get_tensor("best_step/.ATTRIBUTES/VARIABLE_VALUE") > 0
        for name in ("train", "validation"):
            if (run / name).exists():
                load_events(str(run / name))  # TensorBoard's loader reads what is there
    final = subprocess.run(
        command("killed"), capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )
    assert final.returncode == 0, final.stderr[-2000:]
    assert kills >= KILLS - 2, outcomes
    print("kill outcomes:", outcomes)
    leftovers = [
        p for p in run.rglob("*") if p.name.endswith("_temp") or p.name.startswith(".tmp-")
    ]
    assert leftovers == []
    test_line = lambda out: re.search(r"^Accuracy on Test-Set: .*$", out, re.M)[0]  # noqa: E731
    assert test_line(final.stdout) == test_line(reference.stdout)
    ref_val = scalars(load_events(str(tmp_path / "reference" / "validation")), "accuracy")
    got_val = scalars(load_events(str(run / "validation")), "accuracy")
    assert got_val == ref_val  # replayed steps log the same values (last write wins per step)


def test_file_size_limit_fails_a_save_cleanly(tmp_path):
    """RLIMIT_FSIZE lets the ~1 MB best checkpoints through and stops the ~3 MB resume checkpoint."""
    import resource
    import signal
    import subprocess
    import sys

    import tensorflow as tf

    from conftest import ROOT

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))

    args = [
        *ARGS[:4],
        "--num-iterations",
        "40",
        "--eval-every",
        "10",
        "--checkpoint-every",
        "20",
        "--seed",
        "2",
    ]
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train_mnist.py"), "--logdir", str(tmp_path), "--run-name", "full", *args],
        capture_output=True, text=True, cwd=ROOT, preexec_fn=limit, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("train_mnist.py: error: cannot write the checkpoint of step 20")
    assert "Traceback" not in proc.stderr
    best = tf.train.latest_checkpoint(str(tmp_path / "full" / "checkpoints" / "best"))
    assert best and f"Best checkpoint kept: {best}" in last
    model = __import__("tbkit").MnistCNN()
    model(tf.zeros((1, 28, 28, 1)))
    model.load(best)  # restorable
    val = scalars(load_events(str(tmp_path / "full" / "validation")), "accuracy")
    assert sorted(val) == [10, 20]
