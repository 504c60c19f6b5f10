"""Keep TensorFlow's native start-up lines off a program's console.

Importing TensorFlow and initialising its devices prints lines from C++
(absl's "WARNING: All log messages before absl::InitializeLog()", the CUDA
stub's "Could not find cuda drivers", `E0000 ... failed call to cuInit` on a
machine without a GPU, the CPU feature guard). They are written straight to
file descriptor 2, before `TF_CPP_MIN_LOG_LEVEL` applies to some of them, so
`import_tensorflow` points descriptor 2 at a temporary file while it imports
TensorFlow and lists its devices, then restores it. If anything fails in that
window, the captured lines are written back to stderr before the error
propagates: a real import error is never hidden.

`train_mnist.py --verbose` (or `TBKIT_VERBOSE=1`) skips all of it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile


def verbose_requested() -> bool:
    return os.environ.get("TBKIT_VERBOSE", "").strip().lower() not in ("", "0", "false", "no")


@contextlib.contextmanager
def native_stderr_captured():
    """Descriptor 2 goes to a temporary file inside; replayed if the body raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            os.write(2, sink.read())
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def import_tensorflow(verbose: bool = False):
    """Imports TensorFlow (and lists its devices) quietly unless `verbose`; returns it."""
    if verbose or verbose_requested():
        import tensorflow as tf

        return tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with native_stderr_captured():
        import tensorflow as tf

        tf.config.list_physical_devices()
    return tf
