"""The README's `tbkit.Trainer` example runs as written, and gives what the README says."""

from __future__ import annotations

import contextlib
import io
import os

import pytest

from conftest import load_events, scalars
from helpers import readme_block

pytestmark = pytest.mark.slow


def readme_example() -> str:
    return readme_block("readme-example")


def test_trainer_example_runs_and_fills_the_run_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(readme_example(), "README.md", "exec"), {"__name__": "readme"})
    best_value, best_step, best_path = out.getvalue().splitlines()[-2].split()
    test_accuracy = float(out.getvalue().splitlines()[-1])
    run = tmp_path / "logs" / "tokens"
    assert {"train", "validation", "test", "checkpoints"} <= set(os.listdir(run))
    assert best_path.startswith(str(run / "checkpoints" / "best" / "best-"))
    train = set(load_events(str(run / "train")).Tags()["tensors"])
    assert {"embed/embeddings/mean", "mha/query/kernel/histogram", "mha/attention_output/bias/max",
            "head/kernel/stddev", "loss", "accuracy"} <= train  # fmt: skip
    val = load_events(str(run / "validation"))
    assert sorted(scalars(val, "accuracy")) == list(range(50, 301, 50))
    assert float(best_value) == pytest.approx(max(scalars(val, "accuracy").values()), rel=1e-6)
    assert test_accuracy == pytest.approx(float(best_value), abs=1e-6)  # the same held-out set
    assert float(best_value) > 0.6  # chance is 0.25
