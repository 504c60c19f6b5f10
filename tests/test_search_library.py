"""`tbkit.search(build, space, directory, ...)` (#23): a search over anyone's model with
`tbkit.Trainer` trials, with the command's guarantees: the README example runs as a script,
a trial SIGKILLed mid-run resumes from its checkpoint, every trial is an HParams session."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import event_files, load_events, scalars
from helpers import readme_block, subprocess_env

optuna = pytest.importorskip("optuna", reason="the search extra (pip install 'tbkit[search]')")

pytestmark = pytest.mark.slow


def readme_search_example() -> str:
    return readme_block("search-example")


def table(directory):
    from tbkit.search.study import load_spec, open_study, trial_table

    return trial_table(open_study(load_spec(str(directory))))


def sessions(run_dir) -> dict:
    """The HParams session a trial's run directory holds: `{hparam: value}`."""
    from tensorboard.backend.event_processing import event_file_loader
    from tensorboard.plugins.hparams import metadata

    [path] = [p for p in event_files(str(run_dir)) if ".session" in p]
    for event in event_file_loader.EventFileLoader(path).Load():
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name == metadata.PLUGIN_NAME:
                start = metadata.parse_session_start_info_plugin_data(
                    value.metadata.plugin_data.content
                )
                return {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    raise AssertionError(f"no session in {run_dir}")


def test_the_readme_search_example_runs_as_a_script(tmp_path):
    script = tmp_path / "search_waves.py"
    script.write_text(readme_search_example())
    run = lambda: subprocess.run(  # noqa: E731
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
        timeout=600, env=subprocess_env(),
    )  # fmt: skip
    out = run()
    assert out.returncode == 0, out.stderr[-3000:]
    logdir = tmp_path / "logs" / "waves"
    rows = table(logdir)
    assert [r.number for r in rows] == [0, 1, 2, 3]
    assert {r.status for r in rows} <= {"complete", "pruned"} and rows[0].status == "complete"
    for r in rows:
        assert 1e-3 <= r.params["learning_rate"] <= 3e-2 and r.params["units"] in (8, 16)
        run_dir = logdir / f"trial-{r.number:04d}"
        val = scalars(load_events(str(run_dir / "validation")), "accuracy")
        steps = list(val)
        assert steps == [30, 60, 90, 120][: len(steps)] and steps[-1] == r.steps
        if r.status == "complete":
            assert steps[-1] == 120 and max(val.values()) == pytest.approx(r.value)
        session = sessions(run_dir)
        assert session["status"] == r.status and session["units"] == r.params["units"]
        train = set(load_events(str(run_dir / "train")).Tags()["tensors"])
        assert {
            "gru/gru_cell/kernel/mean",
            "gru/gru_cell/recurrent_kernel/histogram",
            "head/bias/max",
        } <= train
    best = max((r for r in rows if r.status == "complete"), key=lambda r: r.value)
    printed = [ln for ln in out.stdout.splitlines() if ln.startswith("best:")][-1]
    assert printed.startswith(f"best: {best.value}") and f"trial-{best.number:04d}" in printed
    assert best.value > 0.6  # chance is 1/3
    assert event_files(str(logdir))  # the HParams experiment at the top
    # Again: the study holds its 4 trials; nothing is trained twice.
    again = run()
    assert again.returncode == 0, again.stderr[-3000:]
    assert [(r.number, r.status, r.value) for r in table(logdir)] == [
        (r.number, r.status, r.value) for r in rows
    ]


def test_a_trial_killed_mid_run_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    import search_kill

    import tbkit
    from tbkit.search import Choice, Uniform

    space = {"learning_rate": Uniform(3e-3, 1e-2, log=True), "units": Choice((16,))}
    kwargs = dict(trials=1, workers=1, pruner="none", seed=4, log=lambda _: None)
    reference = tbkit.search(search_kill.build, space, tmp_path / "reference", **kwargs)
    monkeypatch.setenv(search_kill.KILL_MARKER, str(tmp_path / "killed-once"))
    resumed = tbkit.search(search_kill.build, space, tmp_path / "killed", **kwargs)
    assert (tmp_path / "killed-once").exists()  # the first attempt really died
    logs = "".join(p.read_text() for p in (tmp_path / "killed" / ".workers").glob("*.log"))
    assert "Resuming from step 40" in logs, logs[-2000:]
    [row] = resumed.table
    assert row.status == "complete" and row.number == 0
    got = scalars(load_events(str(tmp_path / "killed" / "trial-0000" / "validation")),
                  "accuracy")  # fmt: skip
    want = scalars(load_events(str(tmp_path / "reference" / "trial-0000" / "validation")),
                   "accuracy")  # fmt: skip
    assert list(got) == [20, 40, 60, 80] and got == want
    assert resumed.best_value == pytest.approx(reference.best_value)
    assert resumed.best_params == reference.best_params and resumed.best_params["seed"] == 4


def test_a_pruning_decided_before_a_kill_is_kept(tmp_path, monkeypatch):
    """The process that pruned a trial dies before telling the study: the next worker tells
    it pruned, with the same reason, and trains nothing more."""
    import search_kill

    import tbkit
    from tbkit.search import Choice

    monkeypatch.setenv(search_kill.KILL_ON_END, str(tmp_path / "killed-once"))
    space = {"learning_rate": Choice((1e-2, 1e-6)), "units": Choice((16, 17))}
    first = [{"learning_rate": 1e-2, "units": 16}, {"learning_rate": 1e-2, "units": 17},
             {"learning_rate": 1e-6, "units": 16}]  # fmt: skip
    result = tbkit.search(search_kill.build, space, tmp_path / "s", trials=3, workers=1,
                          pruner="median", first=first, seed=0, log=lambda _: None)  # fmt: skip
    assert (tmp_path / "killed-once").exists()  # the pruning trial's process really died
    assert [r.status for r in result.table] == ["complete", "complete", "pruned"]
    pruned = result.table[2]
    assert "(pruner)" in pruned.reason and pruned.steps == 20
    logs = "".join(p.read_text() for p in (tmp_path / "s" / ".workers").glob("*.log"))
    assert "decided before its process died" in logs
    val = scalars(load_events(str(tmp_path / "s" / "trial-0002" / "validation")), "accuracy")
    assert list(val) == [20]  # not trained on after the decision
    assert result.best_trial in (0, 1)


def test_monitor_loss_minimises_and_fixed_settings_reach_every_trial(tmp_path):
    import search_kill

    import tbkit
    from tbkit.search import Uniform

    result = tbkit.search(search_kill.build, {"learning_rate": Uniform(3e-3, 1e-2, log=True)},
                          tmp_path / "s", trials=2, workers=2, pruner="none", monitor="loss",
                          fixed={"units": 5}, seed=1, log=lambda _: None)  # fmt: skip
    assert [r.status for r in result.table] == ["complete", "complete"]
    losses = {}
    for r in result.table:
        run = tmp_path / "s" / f"trial-{r.number:04d}"
        val = scalars(load_events(str(run / "validation")), "loss")
        assert r.value == pytest.approx(min(val.values()))  # the best is the lowest loss
        losses[r.number] = r.value
        # fixed={"units": 5} built every trial's hidden layer with 5 units.
        import tensorflow as tf

        best = tf.train.latest_checkpoint(str(run / "checkpoints" / "best"))
        shapes = [shape for key, shape in tf.train.list_variables(best)
                  if key.startswith("model/") and "kernel" in key]  # fmt: skip
        assert shapes == [[8, 5], [5, 4]], shapes  # hidden, head
        assert "best_loss" in load_events(str(run / "validation")).Tags()["tensors"]
    assert result.best_value == min(losses.values()) and result.best_params["units"] == 5
    from tbkit.search.study import load_spec

    spec = load_spec(str(tmp_path / "s"))
    assert spec.direction == "minimize" and spec.fixed == {"units": 5}


def test_bad_library_search_input_is_a_one_line_error(tmp_path):
    import search_kill

    import tbkit
    from tbkit.search import SearchError, Uniform

    space = {"learning_rate": Uniform(1e-3, 1e-2)}
    with pytest.raises(SearchError, match="top of a module"):
        tbkit.search(lambda p: None, space, tmp_path / "a")
    with pytest.raises(ValueError, match="must be a tbkit.search Uniform"):
        tbkit.search(search_kill.build, {"learning_rate": (1e-3, 1e-2)}, tmp_path / "a")
    with pytest.raises(ValueError, match="monitor must be accuracy or loss"):
        tbkit.search(search_kill.build, space, tmp_path / "a", monitor="auc")
    with pytest.raises(SearchError, match="cannot reach the storage"):
        tbkit.search(search_kill.build, space, tmp_path / "a",
                     storage="postgresql://nobody@127.0.0.1:1/none")  # fmt: skip
    assert not (tmp_path / "a").exists()
