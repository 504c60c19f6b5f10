"""The CLI's expected failures: one clear line, non-zero exit, nothing lost."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import tbkit
from conftest import FIXTURE
from tbkit.app import cli

FLAGS = [
    "--logdir", "--run-name", "--num-iterations", "--batch-size", "--learning-rate", "--eval-every",
    "--require-improvement", "--summary-every", "--checkpoint-every", "--data-dir", "--validation-size",
    "--seed", "--no-images", "--no-histograms", "--no-deterministic", "--lr-decay", "--augment-shift",
    "--image-every", "--strategy",
]  # fmt: skip
TINY = [
    "--data-dir",
    FIXTURE,
    "--validation-size",
    "500",
    "--num-iterations",
    "20",
    "--eval-every",
    "10",
    "--summary-every",
    "10",
    "--seed",
    "1",
]


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in FLAGS:
        assert flag in out, flag
    assert "(default: 10000)" in out and "(default: 1000)" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["--batch-size", "0"],
        ["--eval-every", "-5"],
        ["--num-iterations", "ten"],
        ["--learning-rate", "0"],
        ["--learning-rate", "nan?"],
        ["--require-improvement", "1.5"],
        ["--summary-every", "0"],
        ["--checkpoint-every", "-1"],
        ["--validation-size", "0"],
        ["--image-every", "0"],
        ["--lr-decay", "1.5"],
        ["--augment-shift", "-1"],
        ["--strategy", "tpu"],
        ["--seed", "-3"],
        ["--profile-steps", "5:3"],
        ["--profile-steps", "five"],
        ["--bogus"],
    ],
)
def test_bad_flags_are_one_line_errors(capsys, argv):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("train_mnist.py: error: ")
    assert "Traceback" not in "\n".join(err)


def test_bad_data_writes_nothing(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code = cli.main(["--logdir", str(tmp_path / "logs"), "--data-dir", str(empty)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "no MNIST files" in err[0]
    assert not (tmp_path / "logs").exists()


def test_validation_size_too_large_for_data(tmp_path, capsys):
    code = cli.main(["--logdir", str(tmp_path), "--data-dir", FIXTURE, "--validation-size", "5000"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "validation_size" in err[0]
    assert os.listdir(tmp_path) == []


def test_unwritable_logdir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code = cli.main(["--logdir", str(blocker / "logs"), *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "cannot write the run directory" in err[0]
    assert blocker.read_text() == "not a directory"


def test_checkpoint_of_another_network_is_refused_and_kept(tmp_path, capsys):
    import tensorflow as tf

    class Other(tbkit.Model):
        def __init__(self):
            super().__init__(
                [
                    tbkit.layers.Flatten(),
                    tbkit.layers.Dense(64, name="layer_fc1"),
                    tbkit.layers.Dense(10, name="layer_fc2"),
                ]
            )

    other = Other()
    other(tf.zeros((1, 28, 28, 1)))
    keeper = tbkit.BestCheckpoint(str(tmp_path / "run" / "checkpoints" / "best"), model=other)
    keeper.update(0.5, 100)
    before = {
        f: os.path.getsize(os.path.join(keeper.directory, f)) for f in os.listdir(keeper.directory)
    }
    code = cli.main(["--logdir", str(tmp_path), "--run-name", "run", *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert "different architecture" in err[0] and "layer_conv1/weights" in err[0]
    assert {
        f: os.path.getsize(os.path.join(keeper.directory, f)) for f in os.listdir(keeper.directory)
    } == before


@pytest.mark.slow  # CLI runs end to end on the fixture
def test_a_live_lock_refuses_and_a_stale_one_is_taken(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".lock").write_text(str(sleeper.pid))
        code = cli.main(["--logdir", str(tmp_path), "--run-name", "run", *TINY])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and len(err) == 1 and f"in use by process {sleeper.pid}" in err[0]
    finally:
        sleeper.kill()
        sleeper.wait()
    # The holder is gone: the lock is stale and the run proceeds, releasing it at the end.
    code = cli.main(["--logdir", str(tmp_path), "--run-name", "run", *TINY])
    assert code == 0
    assert "Accuracy on Test-Set" in capsys.readouterr().out
    assert not (run / ".lock").exists()


@pytest.mark.slow  # CLI runs end to end on the fixture
def test_resume_with_a_different_batch_size_is_refused(tmp_path, capsys):
    assert cli.main(["--logdir", str(tmp_path), "--run-name", "run", *TINY]) == 0
    capsys.readouterr()
    code = cli.main(["--logdir", str(tmp_path), "--run-name", "run", *TINY, "--batch-size", "32"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "batch_size=64" in err[0]


@pytest.mark.slow  # CLI runs end to end on the fixture
def test_two_runs_in_one_logdir_keep_apart(tmp_path, capsys):
    for name in ("a", "b"):
        assert cli.main(["--logdir", str(tmp_path), "--run-name", name, *TINY]) == 0
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]
    for name in ("a", "b"):
        assert set(os.listdir(tmp_path / name)) >= {
            "train",
            "validation",
            "test",
            "checkpoints",
            "config.json",
        }


def test_diverging_loss_stops_with_one_line_and_writes_no_diverged_checkpoint(tmp_path, capsys):
    import tensorflow as tf

    # An absurd learning rate: the loss is NaN before the first checkpoint (iteration 5).
    args = ["--logdir", str(tmp_path), "--run-name", "nan", *TINY, "--learning-rate", "1e12",
            "--checkpoint-every", "5"]  # fmt: skip
    code = cli.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert re.search(
        r"the training loss became nan at step [1-5] \(first non-finite (value|gradient): layer_",
        err[0],
    )
    assert err[0].endswith("Best checkpoint kept: none yet")
    run = tmp_path / "nan"
    # Checked before each checkpoint: neither a best nor a latest one holds NaN weights.
    assert tf.train.latest_checkpoint(str(run / "checkpoints" / "best")) is None
    assert list((run / "checkpoints" / "latest").glob("*.index")) == []


@pytest.mark.parametrize(
    "name, damage, expected",
    [
        ("t10k-images-idx3-ubyte", lambda b: b[:-1] + bytes([b[-1] ^ 1]), "SHA-256 mismatch"),
        ("train-images-idx3-ubyte", lambda b: b"\x00\x00\x08\x02" + b[4:], "bad IDX magic number"),
        ("train-labels-idx1-ubyte", lambda b: b[:-7], "truncated file"),
        (
            "t10k-images-idx3-ubyte",
            lambda b: b[:8] + (30).to_bytes(4, "big") + b[12:],
            "wrong dimensions",
        ),
    ],
)
def test_bad_data_files_one_line_and_nothing_written(tmp_path, capsys, name, damage, expected):
    import gzip
    import shutil

    data_dir = tmp_path / "data"
    shutil.copytree(FIXTURE, data_dir)
    path = data_dir / (name + ".gz")
    path.write_bytes(gzip.compress(damage(gzip.decompress(path.read_bytes()))))
    code = cli.main(
        [
            "--logdir",
            str(tmp_path / "logs"),
            "--data-dir",
            str(data_dir),
            "--validation-size",
            "500",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and expected in err[0] and name in err[0]
    assert not (tmp_path / "logs").exists()
