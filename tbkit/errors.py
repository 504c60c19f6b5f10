"""Exceptions that tbkit raises for expected failures.

The CLI turns every `TbkitError` into one line on stderr and a non-zero exit;
anything else is a bug and keeps its traceback.
"""


class TbkitError(Exception):
    """Base class for expected, user-facing failures (bad data, bad run dir, ...)."""


class DataError(TbkitError):
    """A data source is missing, unreachable, corrupt or of the wrong shape."""


class CheckpointError(TbkitError):
    """A checkpoint is unreadable or belongs to a different architecture."""


class RunDirError(TbkitError):
    """The run directory cannot be created, written or locked."""


class ArchitectureError(CheckpointError):
    """A checkpoint holds another model: a variable is missing or has another shape."""


class TrainingError(TbkitError):
    """Training cannot go on: the loss or the weights became non-finite."""


def reason(e: BaseException, limit: int = 240) -> str:
    """One line saying why `e` happened, without TensorFlow's `{{function_node ...}}` prefix.

    TensorFlow's file errors read `{{function_node ...}} /path/file.tempstate123; File too
    large`; this gives `File too large (/path/file.tempstate123)`.
    """
    import re

    text = (getattr(e, "message", None) or str(e)).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if lines and lines[0].startswith("Graph execution error"):
        # "Graph execution error:" says nothing by itself: the reason is the first
        # unindented line after the op's stack.
        meaningful = [
            ln for ln in lines[1:] if not ln[0].isspace() and not ln.startswith("Detected at")
        ]
    else:
        meaningful = lines
    line = (meaningful or lines or [type(e).__name__])[0].strip()
    line = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", line)
    if "; " in line:
        where, why = line.rsplit("; ", 1)
        line = f"{why} ({where})"
    return line[:limit]
