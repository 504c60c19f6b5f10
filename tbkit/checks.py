"""Argument checks shared by the doors: fail fast, say what was received."""

from __future__ import annotations


def check_positive(name: str, value, allow_none: bool = False) -> None:
    """Raises `ValueError` unless `value` is a positive integer (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")
