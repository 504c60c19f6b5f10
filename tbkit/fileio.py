"""Small file helpers shared by the data cache, run state and config writers."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import IO, Any


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Opens a temporary file next to `path` and renames it over `path` on success.

    A reader never sees a half-written file: until the `with` block finishes the
    target is either absent or holds its previous content. On any exception the
    temporary file is removed and the target is left untouched.

    Args:
      path: final location of the file.
      mode: `"wb"` (default) or `"w"` for text.

    Yields:
      The open temporary file.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=directory)
    try:
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the file from other readers
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Writes `data` as indented JSON to `path` atomically."""
    with atomic_write(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
