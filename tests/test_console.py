"""What a newcomer sees: train_mnist.py prints its own lines only (issue 15).

(A whole run's stderr is checked to be empty in test_train_e2e.py's finished run.)

TensorFlow's native start-up lines (absl, CUDA stub, cuInit, CPU features) are
hidden unless `--verbose` / `TBKIT_VERBOSE=1`; a failing TensorFlow import still
shows everything. Run as a user would: no TF_CPP_MIN_LOG_LEVEL in the environment.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import FIXTURE, ROOT

SCRIPT = os.path.join(ROOT, "train_mnist.py")
NATIVE = re.compile(r"^(WARNING: All log messages before absl|[IWE]\d{4} )", re.M)


def user_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TBKIT_VERBOSE")
    }
    return dict(env, PYTHONUNBUFFERED="1", **extra)


def run(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=300,
        env=env or user_env(), cwd=ROOT,
    )  # fmt: skip


def test_help_is_clean_and_does_not_load_tensorflow():
    proc = run("--help")
    assert proc.returncode == 0 and "--verbose" in proc.stdout
    assert proc.stderr == ""
    probe = (
        "import sys, runpy; sys.argv = ['train_mnist.py', '--help']\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('tensorflow loaded:', 'tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=ROOT, env=user_env(), timeout=60)  # fmt: skip
    assert out.stdout.strip().endswith("tensorflow loaded: False"), out.stdout + out.stderr


@pytest.mark.slow  # CLI runs end to end on the fixture
def test_errors_are_one_line_and_verbose_shows_tensorflow(tmp_path):
    missing = str(tmp_path / "no-such-dir")
    quiet = run("--logdir", str(tmp_path / "a"), "--data-dir", missing)
    assert quiet.returncode == 1
    assert quiet.stderr.splitlines() == [
        f"train_mnist.py: error: --data-dir {missing}: not a directory"
    ]

    verbose = run("--logdir", str(tmp_path / "b"), "--data-dir", missing, "--verbose")
    assert verbose.returncode == 1
    assert NATIVE.search(verbose.stderr), verbose.stderr  # TensorFlow's own start-up lines
    assert verbose.stderr.splitlines()[-1].startswith("train_mnist.py: error: --data-dir")


def test_the_environment_variable_asks_for_verbose_too(monkeypatch):
    from tbkit.tools.quiet import verbose_requested

    for value, expected in (("1", True), ("yes", True), ("0", False), ("", False)):
        monkeypatch.setenv("TBKIT_VERBOSE", value)
        assert verbose_requested() is expected


def test_a_failing_tensorflow_import_is_not_hidden(tmp_path):
    """A broken TensorFlow: what it printed natively and its error both reach stderr."""
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import os\n"
        "os.write(2, b'native: libcudart.so.12: cannot open shared object file\\n')\n"
        "raise ImportError('libtensorflow_framework.so.2: undefined symbol: foo')\n"
    )
    proc = run("--logdir", str(tmp_path / "logs"), "--data-dir", FIXTURE,
               env=user_env(PYTHONPATH=str(tmp_path)))  # fmt: skip
    assert proc.returncode != 0
    assert "native: libcudart.so.12: cannot open shared object file" in proc.stderr
    assert "ImportError: libtensorflow_framework.so.2: undefined symbol: foo" in proc.stderr
    assert not (tmp_path / "logs").exists()
