"""TensorFlow's profiler over a window of steps, into a run's `train/` directory.

`Profiler((a, b), run_dir / "train")` starts `tf.profiler.experimental` before
step `a` and stops it after step `b` (both included, 1-based like the Trainer's
steps); TensorBoard's Profile tab (the `tensorboard-plugin-profile` package,
`pip install "tbkit[profile]"`) then lists the run. Steps outside the window
cost one integer comparison.
"""

from __future__ import annotations

import re
import warnings

from tbkit.errors import TbkitError

_WINDOW = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def parse_steps(value) -> tuple[int, int] | None:
    """`"A:B"` or `(A, B)` -> `(A, B)` with 1 <= A <= B; None stays None.

    Raises `ValueError` with a one-line message otherwise.
    """
    if value is None:
        return None
    if isinstance(value, str):
        match = _WINDOW.match(value)
        if not match:
            raise ValueError(f"profile_steps must be 'A:B' (e.g. '20:25'). Received: {value!r}")
        first, last = int(match[1]), int(match[2])
    else:
        try:
            first, last = (int(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(
                f"profile_steps must be 'A:B' or a pair of integers. Received: {value!r}"
            ) from None
    if not 1 <= first <= last:
        raise ValueError(f"profile_steps must have 1 <= A <= B. Received: {first}:{last}")
    return first, last


def valid_steps_text(text) -> bool:
    try:
        return parse_steps(text) is not None
    except ValueError:
        return False


class Profiler:
    """Starts and stops TensorFlow's profiler around a window of steps.

    Args:
      steps: `(first, last)` or `"first:last"`, or None (never profiles).
      logdir: where the trace goes (`<logdir>/plugins/profile/<time>/`).
    """

    def __init__(self, steps, logdir: str):
        self.window = parse_steps(steps)
        self.logdir = str(logdir)
        self.active = False
        self.done = self.window is None

    def begin(self, step: int) -> None:
        """Call before running `step`: starts the trace at the window's first step
        (or at the first step run inside the window, after a resume)."""
        if self.done or self.active or step < self.window[0]:
            return
        if step > self.window[1]:
            self.done = True
            return
        import tensorflow as tf

        try:
            tf.profiler.experimental.start(self.logdir)
        except Exception as e:  # another profiler session is running: say so, train on
            warnings.warn(f"profile_steps: the profiler did not start: {e}", stacklevel=2)
            self.done = True
            return
        self.active = True

    def end(self, step: int) -> None:
        """Call after `step` (and its summaries): stops the trace after the window."""
        if self.active and step >= self.window[1]:
            self.stop()

    def stop(self) -> None:
        """Stops a running trace (also when training ends inside the window)."""
        if not self.active:
            return
        import tensorflow as tf

        self.active, self.done = False, True
        try:
            tf.profiler.experimental.stop()
        except Exception as e:
            raise TbkitError(f"cannot write the profile to {self.logdir}: {e}") from None
