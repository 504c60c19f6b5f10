"""`train_mnist.py search` on the fixture (#23): trials are run directories, one process each;
a search killed mid-trial resumes that trial from its checkpoint; the test set is read once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import FIXTURE, ROOT, event_files, load_events, scalars
from helpers import get, subprocess_env, tensorboard_server

optuna = pytest.importorskip("optuna", reason="the search extra (pip install 'tbkit[search]')")

pytestmark = pytest.mark.slow

FIX = ["--fix", f"data_dir={FIXTURE}", "--fix", "validation_size=100", "--fix", "eval_every=10",
       "--fix", "summary_every=10", "--fix", "projector_examples=0", "--fix", "images=false",
       "--fix", "histograms=false"]  # fmt: skip


def search(logdir, *flags, timeout=600):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "train_mnist.py"), "search", "--logdir", str(logdir),
         *FIX, *flags],
        capture_output=True, text=True, timeout=timeout, env=subprocess_env(), cwd=ROOT,
    )  # fmt: skip


def table(logdir):
    from tbkit.search.study import load_spec, open_study, trial_table

    return trial_table(open_study(load_spec(str(logdir))))


def test_a_search_trains_trials_as_runs_and_tests_the_best_once(tmp_path):
    logdir = tmp_path / "s"
    flags = ["--trials", "3", "--workers", "2", "--seed", "1", "--pruner", "none",
             "--fix", "num_iterations=30", "--domain", "learning_rate=5e-4:3e-3",
             "--baseline"]  # fmt: skip
    out = search(logdir, *flags)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = table(logdir)
    assert [r.number for r in rows] == [0, 1, 2] and {r.status for r in rows} == {"complete"}
    assert all(5e-4 <= r.params["learning_rate"] <= 3e-3 for r in rows)
    # --baseline: trial 0 trains today's defaults, the others are sampled.
    assert rows[0].params == {"learning_rate": 2e-3, "batch_size": 64, "lr_decay": 0.5,
                              "augment_shift": 2}  # fmt: skip
    assert rows[1].params != rows[0].params
    assert all(f"Trial {r.number:>3}: complete" in out.stdout for r in rows)  # each ended trial
    for r in rows:
        run = logdir / f"trial-{r.number:04d}"
        val = scalars(load_events(str(run / "validation")), "accuracy")
        assert list(val) == [10, 20, 30] and max(val.values()) == pytest.approx(r.value)
        assert not (run / "test").exists()  # trials never read the test set
        config = json.loads((run / "config.json").read_text())
        assert config["trial"] == run.name and config["flags"]["learning_rate"] == pytest.approx(
            r.params["learning_rate"]
        )
    best = max(rows, key=lambda r: r.value)
    assert f"Best: trial-{best.number:04d}" in out.stdout
    result = json.loads((logdir / "test_result.json").read_text())
    from tbkit.datasets import mnist

    test_size = len(mnist.load(FIXTURE, validation_size=100, log=lambda _: None).test_labels)
    assert result["trial"] == f"trial-{best.number:04d}" and result["total"] == test_size
    assert f"Accuracy on Test-Set: {result['accuracy']:.1%}" in out.stdout
    assert len(event_files(str(logdir / "test"))) == 1
    # A real TensorBoard's HParams tab: the searched settings with their domains, and one
    # session per trial with its settings, its status and its metrics.
    with tensorboard_server(str(logdir)) as server:
        experiment = get(server + "/data/plugin/hparams/experiment", {"experimentName": ""})
        infos = {h["name"]: h for h in experiment["hparamInfos"]}
        assert set(infos) == {"learning_rate", "batch_size", "lr_decay", "augment_shift",
                              "status", "reason", "steps"}  # fmt: skip
        assert infos["learning_rate"]["domainInterval"] == {"minValue": 5e-4, "maxValue": 3e-3}
        assert set(infos["batch_size"]["domainDiscrete"]) == {32, 64, 128}
        groups = get(server + "/data/plugin/hparams/session_groups", {
            "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS",
                                                      "STATUS_FAILURE", "STATUS_RUNNING"],
            "colParams": [], "startIndex": 0, "sliceSize": 10,
        })["sessionGroups"]  # fmt: skip
        by_name = {g["name"]: g for g in groups}
        assert set(by_name) == {f"trial-{r.number:04d}" for r in rows}
        for r in rows:
            g = by_name[f"trial-{r.number:04d}"]
            assert g["hparams"]["status"] == "complete" and g["hparams"]["steps"] == 30
            assert g["hparams"]["learning_rate"] == pytest.approx(r.params["learning_rate"])
            kept = [m for m in g["metricValues"] if m["name"]["tag"] == "best_accuracy"]
            assert kept and kept[0]["value"] == pytest.approx(r.value)
    # The report: trials best first, the best, the test result read once.
    report = subprocess.run([sys.executable, "-m", "tbkit.report", str(logdir)],
                            capture_output=True, text=True, timeout=300, env=subprocess_env(),
                            cwd=ROOT)  # fmt: skip
    assert report.returncode == 0, report.stderr[-2000:]
    lines = report.stdout.splitlines()
    assert lines[0].startswith(f"Search {logdir}: 3 of 3 trials")
    listed = [ln.split()[0] for ln in lines if ln.strip().startswith("trial-")]
    assert listed[:3] == [f"trial-{r.number:04d}" for r in sorted(rows, key=lambda r: -r.value)]
    assert f"Best: trial-{best.number:04d}" in report.stdout
    assert f"Test set (once, trial-{best.number:04d}): {result['accuracy']:.2%}" in report.stdout
    # The same command again: nothing left to do, nothing run twice, the test not redone.
    again = search(logdir, *flags)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [r.number for r in table(logdir)] == [0, 1, 2]
    assert len(event_files(str(logdir / "test"))) == 1
    assert json.loads((logdir / "test_result.json").read_text()) == result


def test_trials_with_absurd_learning_rates_are_pruned_with_a_diagnosis(tmp_path):
    logdir = tmp_path / "s"
    out = search(logdir, "--trials", "2", "--seed", "3", "--pruner", "none",
                 "--fix", "num_iterations=40", "--domain", "learning_rate=0.5:1.0")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    rows = table(logdir)
    assert [r.status for r in rows] == ["pruned", "pruned"], rows
    for r in rows:
        assert any(w in r.reason for w in ("dead", "non-finite", "update ratio")), r.reason
    assert "No trial completed" in out.stdout and not (logdir / "test").exists()


def test_bad_search_input_is_one_line_and_changes_nothing(tmp_path):
    logdir = tmp_path / "s"
    for flags, words in [
        (["--fix", "nonsense=1"], "--fix nonsense: no such setting"),
        (["--fix", "batch_size=0"], "--fix batch_size must be a positive integer"),
        (["--domain", "learning_rate=1:0.1"], "--domain learning_rate: a range must be"),
        (["--domain", "seed=1:2"], "--domain seed: not a searched setting"),
        (["--storage", "postgresql://nobody@127.0.0.1:1/none"], "cannot reach the storage"),
    ]:
        out = search(logdir, "--trials", "1", *flags, timeout=120)
        lines = out.stderr.strip().splitlines()
        assert out.returncode != 0 and len(lines) == 1 and words in lines[0], out.stderr[-2000:]
        assert not logdir.exists()


def test_a_directory_of_another_search_is_refused_unchanged(tmp_path):
    from tbkit.errors import TbkitError
    from tbkit.search.domains import Uniform
    from tbkit.search.study import SearchSpec, prepare

    d = str(tmp_path / "s")
    space = {"learning_rate": Uniform(1e-3, 1e-2, log=True)}
    prepare(SearchSpec(directory=d, runner="m:f", space=space))
    before = {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir() if p.is_file()}
    other = {"learning_rate": Uniform(1e-4, 1e-2, log=True)}
    for spec in (SearchSpec(directory=d, runner="m:f", space=other),
                 SearchSpec(directory=d, runner="m:f", space=space, direction="minimize")):  # fmt: skip
        with pytest.raises(TbkitError, match="holds a search with another") as err:
            prepare(spec)
        assert "\n" not in str(err.value)
    after = {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir() if p.is_file()}
    assert after == before
