"""train_mnist.py end to end on the real-MNIST fixture: contract, early stop, best, resume."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import FIXTURE, ROOT, decode_image_events, load_events, scalars
from helpers import subprocess_env

pytestmark = pytest.mark.slow

LAYERS = ("layer_conv1", "layer_conv2", "layer_fc1", "layer_fc2")
FAST = [
    "--data-dir", FIXTURE, "--validation-size", "500", "--num-iterations", "300",
    "--eval-every", "10", "--require-improvement", "40", "--summary-every", "20",
    "--checkpoint-every", "20", "--seed", "7",
]  # fmt: skip


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = subprocess_env()
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "train_mnist.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def iter_lines(stdout: str) -> list[tuple[int, float, bool]]:
    pattern = re.compile(
        r"^Iter:\s+(\d+), Train-Batch Accuracy:\s+[\d.]+%, Validation Acc:\s+([\d.]+)%( \*)?$"
    )
    return [
        (int(m[1]), float(m[2]), bool(m[3])) for m in map(pattern.match, stdout.splitlines()) if m
    ]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("logs")
    proc = run_cli("--logdir", str(logdir), "--run-name", "fx", *FAST)
    assert proc.returncode == 0, proc.stderr
    return logdir / "fx", proc


def test_a_run_prints_only_its_own_lines(finished_run):
    """No TensorFlow start-up lines (absl, CUDA stub, cuInit) on stderr: tbkit/quiet.py."""
    _, proc = finished_run
    assert proc.stderr == ""
    assert not re.search(r"^[IWE]\d{4} |absl::InitializeLog", proc.stdout, re.M)


def test_run_directory_layout(finished_run):
    run, _ = finished_run
    entries = set(os.listdir(run))
    events_at_root = {e for e in entries if e.startswith("events.out.tfevents.")}
    assert len(events_at_root) == 1  # the HParams session summary
    assert entries - events_at_root == {"train", "validation", "test", "checkpoints", "config.json"}
    assert set(os.listdir(run / "checkpoints")) == {"best", "latest"}
    assert not [f for f in os.listdir(run) if f.startswith((".lock", ".tmp"))]


def test_early_stop_follows_the_logged_validation_sequence(finished_run):
    run, proc = finished_run
    acc = load_events(str(run / "validation"))
    logged = scalars(acc, "accuracy")
    printed = iter_lines(proc.stdout)
    assert [s for s, _, _ in printed] == sorted(logged)
    # Replay the rule on the logged values: a new best is marked, patience counts from it.
    best, last, stop = None, 0, None
    for step in sorted(logged):
        improved = best is None or logged[step] > best
        if improved:
            best, last = logged[step], step
        assert improved == dict((s, star) for s, _, star in printed)[step]
        if step - last >= 40:
            stop = step
            break
    assert stop is not None, "fixture run did not stop early within 300 iterations"
    assert max(logged) == stop
    assert "No improvement found in a while, stopping optimization." in proc.stdout
    assert scalars(acc, "best_accuracy")[stop] == pytest.approx(best)
    out = proc.stdout
    assert re.search(r"^Time usage: \d+:\d\d:\d\d$", out, re.M)
    # The start-up paid inside the run: the first step and the first recorded step, each
    # longer than the run's train steps on average (they trace the step's functions).
    first = re.search(r"^Start-up inside the run \(tracing\): first step ([\d.]+) s, "
                      r"first recorded step ([\d.]+) s$", out, re.M)  # fmt: skip
    steps_s = float(re.search(r"train steps \d+% \(([\d.]+) s\)", out)[1])
    assert first and min(float(first[1]), float(first[2])) > steps_s / max(logged)
    m = re.search(r"^Accuracy on Test-Set: ([\d.]+)% \((\d+) / 500\)$", out, re.M)
    assert m and abs(float(m[1]) - 100 * int(m[2]) / 500) < 0.051
    test_acc = scalars(load_events(str(run / "test")), "accuracy")
    assert list(test_acc.values())[0] == pytest.approx(int(m[2]) / 500)


def test_every_contract_tag_with_expected_steps(finished_run):
    run, _ = finished_run
    train = load_events(str(run / "train"))
    val_steps = sorted(scalars(load_events(str(run / "validation")), "accuracy"))
    last = val_steps[-1]
    tags = set(train.Tags()["tensors"])
    for L in LAYERS:
        for V in ("weights", "biases"):
            for s in ("mean", "stddev", "min", "max"):
                assert list(scalars(train, f"{L}/{V}/{s}")) == list(range(20, last + 1, 20)), (
                    L,
                    V,
                    s,
                )
            assert f"{L}/{V}/histogram" in tags
        assert f"{L}/activations" in tags
    for L in ("layer_conv1", "layer_conv2"):
        images = decode_image_events(train, f"{L}/filters")
        # At the image cadence (--image-every, 500 here): the first summary step and
        # the first at or after each multiple of 500.
        expected = [s for s in range(20, last + 1, 20) if s == 20 or s // 500 != (s - 20) // 500]
        assert [s for s, _ in images] == expected
    assert (
        sorted(scalars(train, "loss")) == val_steps
        and sorted(scalars(train, "accuracy")) == val_steps
    )
    assert train.Graph() is not None and any("layer_conv1" in n.name for n in train.Graph().node)

    val = load_events(str(run / "validation"))
    assert {"loss", "accuracy", "best_accuracy", "confusion_matrix", "example_errors"} <= set(
        val.Tags()["tensors"]
    )
    assert decode_image_events(val, "confusion_matrix")[0][1].ndim == 3
    test = load_events(str(run / "test"))
    assert {"accuracy", "confusion_matrix"} <= set(test.Tags()["tensors"])


def test_best_checkpoint_reproduces_best_validation_accuracy(finished_run):
    run, _ = finished_run
    best_logged = max(scalars(load_events(str(run / "validation")), "accuracy").values())
    script = f"""
import numpy as np, tensorflow as tf, tbkit
from tbkit.app.cnn import MnistCNN
data = tbkit.datasets.mnist.load({FIXTURE!r}, validation_size=500, log=lambda _: None)
model = MnistCNN(); model(tf.zeros((1, 28, 28, 1)))
path = tf.train.latest_checkpoint({str(run / "checkpoints" / "best")!r})
tf.train.Checkpoint(model=model).restore(path).expect_partial()
preds = np.concatenate([np.argmax(model(x), 1) for x, _ in tbkit.datasets.eval_dataset(data.validation_images, data.validation_labels)])
print(repr(float(np.mean(preds == data.validation_labels))), path)
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    value, path = out.stdout.split()
    # Summaries store float32: compare the count of correct images exactly.
    assert round(float(value) * 500) == round(best_logged * 500)
    best_step = max(
        (v, -s) for s, v in scalars(load_events(str(run / "validation")), "accuracy").items()
    )[1]
    assert path.endswith(f"best-{-best_step}")


def test_config_json_round_trips(finished_run):
    from tbkit.app.settings import TrainConfig

    run, _ = finished_run
    config = json.loads((run / "config.json").read_text())
    restored = TrainConfig(**config["flags"])
    assert (
        restored.seed == 7 == config["seed"]
        and restored.eval_every == 10
        and restored.data_dir == FIXTURE
    )
    assert set(config["versions"]) >= {"tensorflow", "tensorboard", "tbkit"}
    assert (
        config["data"]["sha256"]["t10k-labels-idx1-ubyte"]
        == pathlib.Path(FIXTURE, "SHA256SUMS").read_text().split()[6]
    )


def test_finished_run_is_evaluated_not_retrained(finished_run):
    run, first = finished_run
    proc = run_cli("--logdir", str(run.parent), "--run-name", "fx", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert "already finished" in proc.stdout and not iter_lines(proc.stdout)
    line = lambda out: re.search(r"^Accuracy on Test-Set: .*$", out, re.M)[0]  # noqa: E731
    assert line(proc.stdout) == line(first.stdout)


def wait_for(proc, pattern: str, timeout: float = 120) -> str:
    seen = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if re.search(pattern, line):
            return "".join(seen)
    proc.kill()
    raise AssertionError("never saw " + pattern + ":\n" + "".join(seen))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_resumes_to_the_same_result(finished_run, tmp_path, sig):
    run, first = finished_run
    env = subprocess_env()
    cmd = [
        sys.executable,
        os.path.join(ROOT, "train_mnist.py"),
        "--logdir",
        str(tmp_path),
        "--run-name",
        "r",
        *FAST,
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    before = wait_for(proc, r"^Iter:\s+50,")
    proc.send_signal(sig)
    rest, err = proc.communicate(timeout=120)
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM
        assert re.search(r"SIGTERM received: stopped at step \d+, saved .*latest-\d+", err)
    else:
        assert proc.returncode == -signal.SIGKILL
        report = subprocess.run(
            [sys.executable, "-m", "tbkit.report", str(tmp_path)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        assert re.search(r"^r\s+\d+\s+[\d.]+%\s+\d+\s+-\s+interrupted\s", report.stdout, re.M), (
            report.stdout
        )
    resumed = run_cli("--logdir", str(tmp_path), "--run-name", "r", *FAST)
    assert resumed.returncode == 0, resumed.stderr
    m = re.search(r"^Resuming from step (\d+)$", resumed.stdout, re.M)
    assert m and int(m[1]) >= 40
    # The same trajectory: identical validation sequence, early stop and best.
    combined = {
        s: (v, star) for s, v, star in iter_lines(before + rest) + iter_lines(resumed.stdout)
    }
    assert combined == {s: (v, star) for s, v, star in iter_lines(first.stdout)}
    line = lambda out: re.search(r"^Accuracy on Test-Set: .*$", out, re.M)[0]  # noqa: E731
    assert line(resumed.stdout) == line(first.stdout)
    assert "No improvement found in a while" in resumed.stdout


def test_report_table(finished_run):
    run, proc = finished_run
    out = subprocess.run(
        [sys.executable, "-m", "tbkit.report", str(run.parent)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    table, health = out.split("\n\nHealth")
    header, row = table.splitlines()
    assert header.split()[:2] == ["run", "iterations"]
    # Below the table: the run's latest health text, as the Text dashboard shows it.
    last = max(scalars(load_events(str(run / "validation")), "accuracy"))
    assert f"\n  fx: step {last} (dynamics of step " in health
    cells = row.split()
    val = scalars(load_events(str(run / "validation")), "accuracy")
    best_value, neg_step = max((v, -s) for s, v in val.items())
    test_line = re.search(r"^Accuracy on Test-Set: ([\d.]+)% \((\d+) / 500\)$", proc.stdout, re.M)
    assert cells[0] == "fx" and int(cells[1]) == max(val)
    assert cells[2] == f"{best_value:.2%}" and int(cells[3]) == -neg_step
    assert cells[4] == f"{int(test_line[2]) / 500:.2%}"
    assert cells[5] == "early-stopped" and cells[6].endswith(f"best-{-neg_step}")


def test_report_on_finished_early_stopped_and_interrupted_runs(tmp_path):
    base = ["--data-dir", FIXTURE, "--validation-size", "500", "--eval-every", "10", "--summary-every", "10", "--checkpoint-every", "10", "--seed", "4"]  # fmt: skip
    finished = run_cli(
        "--logdir",
        str(tmp_path),
        "--run-name",
        "a-finished",
        *base,
        "--num-iterations",
        "20",
        "--require-improvement",
        "1000",
    )
    early = run_cli(
        "--logdir",
        str(tmp_path),
        "--run-name",
        "b-early",
        *base,
        "--num-iterations",
        "300",
        "--require-improvement",
        "10",
    )
    assert finished.returncode == 0 and early.returncode == 0
    env = subprocess_env()
    cmd = [sys.executable, os.path.join(ROOT, "train_mnist.py"), "--logdir", str(tmp_path), "--run-name", "c-interrupted", *base, "--num-iterations", "300", "--require-improvement", "1000"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT
    )
    wait_for(proc, r"^Iter:\s+30,")
    proc.kill()
    proc.wait()
    out = subprocess.run(
        [sys.executable, "-m", "tbkit.report", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    rows = {line.split()[0]: line.split() for line in out.split("\n\nHealth")[0].splitlines()[1:]}
    assert rows["a-finished"][1] == "20" and rows["a-finished"][5] == "finished"
    assert rows["b-early"][5] == "early-stopped" and int(rows["b-early"][1]) < 300
    assert rows["c-interrupted"][5] == "interrupted" and rows["c-interrupted"][4] == "-"
    assert int(rows["c-interrupted"][1]) >= 20
    for name in ("a-finished", "b-early"):
        assert rows[name][4].endswith("%") and "best-" in rows[name][6]
