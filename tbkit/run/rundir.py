"""The run directory: its layout, its lock and its `config.json`.

ROOT/NAME/train/ validation/ test/    event files, one writer each
ROOT/NAME/checkpoints/best/           a checkpoint on each new best validation score
ROOT/NAME/checkpoints/latest/         periodic checkpoints for resuming
ROOT/NAME/config.json                 flags, seed, versions, data checksums
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import shutil

from tbkit.errors import RunDirError
from tbkit.fileio import write_json_atomic

LOCK_NAME = ".lock"


def default_run_name() -> str:
    """A sortable timestamp such as `20261122-103201`."""
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


class RunDir:
    """Paths of one run directory, created (and checked writable) on `create()`."""

    def __init__(self, logdir: str, name: str):
        if not name or os.sep in name or name in (".", ".."):
            raise RunDirError(f"a run's name must be a plain directory name. Received: {name!r}")
        self.logdir, self.name = logdir, name
        self.path = os.path.join(logdir, name)
        self.best_dir = os.path.join(self.path, "checkpoints", "best")
        self.latest_dir = os.path.join(self.path, "checkpoints", "latest")
        self.config_path = os.path.join(self.path, "config.json")
        self._lock_fd = None

    def exists(self) -> bool:
        return os.path.isdir(self.path)

    def create(self) -> None:
        """Creates the directory tree; raises `RunDirError` if it cannot be written."""
        try:
            for d in (self.best_dir, self.latest_dir):
                os.makedirs(d, exist_ok=True)
            probe = os.path.join(self.path, ".write-test")
            with open(probe, "w") as f:
                f.write("ok")
            os.unlink(probe)
        except OSError as e:
            raise RunDirError(
                f"cannot write the run directory {self.path}: {e.strerror or e}"
            ) from None

    def lock(self) -> None:
        """Takes the run's lock file; refuses if a live process holds it.

        A lock left by a process that no longer exists (a crash, SIGKILL) is
        recognised as stale and taken over.
        """
        path = os.path.join(self.path, LOCK_NAME)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid = _read_pid(path)
                if pid is not None and pid != os.getpid() and _alive(pid):
                    raise RunDirError(
                        f"run {self.path} is in use by process {pid}; wait for it or use another --run-name"
                    ) from None
                os.unlink(path)  # stale
                continue
            except OSError as e:
                raise RunDirError(
                    f"cannot lock the run directory {self.path}: {e.strerror or e}"
                ) from None
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            self._lock_fd = path
            return
        raise RunDirError(f"cannot take the lock {path}")

    def remove_stale_temporaries(self) -> list[str]:
        """Deletes what a killed process left half-written (call with the lock held).

        TensorFlow writes a checkpoint into `<prefix>_temp/` and renames it when
        complete; tbkit's own files go through `.tmp-*` files. Either left over
        means the write never finished, so nothing valid is lost.
        """
        removed = []
        for d in (self.best_dir, self.latest_dir, self.path):
            if not os.path.isdir(d):
                continue
            for name in os.listdir(d):
                if name.endswith("_temp") or "_temp/" in name or name.startswith(".tmp-"):
                    target = os.path.join(d, name)
                    if os.path.isdir(target):
                        shutil.rmtree(target, ignore_errors=True)
                    else:
                        with contextlib.suppress(OSError):
                            os.unlink(target)
                    removed.append(target)
        return removed

    def holder(self) -> int | None:
        """The pid of the live process that holds this run's lock, or None."""
        pid = _read_pid(os.path.join(self.path, LOCK_NAME))
        return pid if pid is not None and _alive(pid) else None

    def unlock(self) -> None:
        if self._lock_fd:
            try:
                if _read_pid(self._lock_fd) == os.getpid():
                    os.unlink(self._lock_fd)
            except OSError:
                pass
            self._lock_fd = None

    def read_config(self) -> dict | None:
        if not os.path.exists(self.config_path):
            return None
        try:
            with open(self.config_path) as f:
                return json.load(f)
        except (OSError, ValueError) as e:
            raise RunDirError(f"{self.config_path}: unreadable ({e})") from None

    def write_config(self, config: dict) -> None:
        write_json_atomic(self.config_path, config)


def _read_pid(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    # A killed process whose parent died too stays a zombie until init reaps it (in a
    # container, maybe never): it holds nothing.
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")
