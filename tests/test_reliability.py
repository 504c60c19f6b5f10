"""Damaged run state: detected, reported in one line, an older good checkpoint used or a refusal."""

from __future__ import annotations

import os
import shutil

import pytest

from conftest import FIXTURE, load_events, scalars
from tbkit import cli

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
    assert code == 0 and "already finished at iteration 30" in out and "Iter:" not in out


@pytest.mark.parametrize("damage", ["truncated index", "flipped byte in data"])
def test_damaged_latest_falls_back_to_the_previous_one(run, capsys, damage):
    capsys.readouterr()
    latest = run / "checkpoints" / "latest"
    if damage == "truncated index":
        f = latest / "latest-30.index"
        f.write_bytes(f.read_bytes()[:40])
    else:
        f = latest / "latest-30.data-00000-of-00001"
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    best_before = sorted(os.listdir(run / "checkpoints" / "best"))
    code, out, _ = again(run, capsys)
    assert code == 0
    assert f"Checkpoint {latest / 'latest-30'} is damaged (" in out
    assert f"Restored the older checkpoint {latest / 'latest-20'} instead" in out
    assert "Resuming from iteration 20" in out and "Iter:     30" in out
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
