"""`train_mnist.py search` (#23): a search killed mid-trial resumes that trial from its
checkpoint; two machines share one study on a real PostgreSQL server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from test_search import FIX, search, table

from conftest import ROOT, load_events, scalars
from helpers import subprocess_env

optuna = pytest.importorskip("optuna", reason="the search extra (pip install 'tbkit[search]')")

pytestmark = pytest.mark.slow


def test_a_killed_search_resumes_its_running_trial_from_the_checkpoint(tmp_path):
    flags = ["--trials", "1", "--seed", "5", "--pruner", "none", "--fix", "num_iterations=80",
             "--fix", "checkpoint_every=10", "--fix", "require_improvement=10000",
             "--domain", "learning_rate=1e-3:2e-3"]  # fmt: skip
    reference = tmp_path / "reference"
    assert search(reference, *flags).returncode == 0
    killed = tmp_path / "killed"
    cmd = [sys.executable, os.path.join(ROOT, "train_mnist.py"), "search", "--logdir",
           str(killed), *FIX, *flags]  # fmt: skip
    proc = subprocess.Popen(cmd, env=subprocess_env(), cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    latest = killed / "trial-0000" / "checkpoints" / "latest"
    deadline = time.time() + 300
    while time.time() < deadline and not list(latest.glob("latest-[2-9]0.index")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole search: orchestrator and worker
    proc.wait()
    assert list(latest.glob("*.index")), "killed before the first checkpoint"
    assert [r.status for r in table(killed)] == ["running"]
    out = search(killed, *flags)
    assert out.returncode == 0, out.stderr[-3000:]
    [row] = table(killed)
    assert row.status == "complete" and row.number == 0
    logs = "".join(p.read_text() for p in (killed / ".workers").glob("*.log"))
    assert "Resuming from step" in logs
    # The resumed trial's validations are those of the uninterrupted one.
    got = scalars(load_events(str(killed / "trial-0000" / "validation")), "accuracy")
    want = scalars(load_events(str(reference / "trial-0000" / "validation")), "accuracy")
    assert got == want
    assert row.value == pytest.approx(table(reference)[0].value)


@pytest.fixture
def postgres_url():
    """A fresh database on the PostgreSQL server that .ci/run starts (skips without one)."""
    base = os.environ.get("TBKIT_TEST_POSTGRES")
    if not base:
        pytest.skip("no PostgreSQL server (.ci/run starts one and sets TBKIT_TEST_POSTGRES)")
    psycopg = pytest.importorskip("psycopg", reason="psycopg (the test extra)")
    name = f"tbkit_{os.getpid()}_{int(time.time() * 1000)}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return base.rsplit("/", 1)[0] + "/" + name


def test_two_machines_share_one_study_on_postgresql(tmp_path, postgres_url):
    """Two search commands, each with a search directory of its own (two machines), on one
    study: every trial runs exactly once, on one of them, and the study reaches --trials."""
    flags = ["--trials", "4", "--seed", "2", "--pruner", "none", "--fix", "num_iterations=20",
             "--domain", "learning_rate=1e-3:3e-3", "--storage", postgres_url]  # fmt: skip
    machines = [tmp_path / "a", tmp_path / "b"]
    procs = [
        subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "train_mnist.py"), "search", "--logdir",
             str(m), *FIX, *flags],
            env=subprocess_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        for m in machines
    ]  # fmt: skip
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    rows = table(machines[0])  # the same study, read through the server
    numbers = [r.number for r in rows]
    # Each machine checks the count before it asks: at most one extra trial per other machine.
    assert 4 <= len(rows) <= 5 and numbers == list(range(len(rows)))
    assert {r.status for r in rows} == {"complete"}
    ran = {m.name: {p.name for p in m.glob("trial-*")} for m in machines}
    assert not ran["a"] & ran["b"], "a trial ran on both machines"
    assert ran["a"] | ran["b"] == {f"trial-{n:04d}" for n in numbers}
    for m in machines:
        for trial in ran[m.name]:
            assert list((m / trial / "checkpoints" / "best").glob("*.index"))
