"""Search domains: what values a searched setting may take, declared once with the setting.

A domain samples a value from an Optuna trial (`suggest`), says whether a value
lies in it (`contains`), narrows or widens from the command line (`parse`:
`LOW:HIGH` for a range, `A,B,C` for a choice) and describes itself for
TensorBoard's HParams tab (`hparam_domain`).
"""

from __future__ import annotations

import dataclasses
import math


class DomainError(ValueError):
    """A domain that makes no sense (empty, reversed, non-positive for a log scale)."""


@dataclasses.dataclass(frozen=True)
class Uniform:
    """A float in `[low, high]`; `log=True` samples its logarithm uniformly."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self):
        ok = all(isinstance(v, int | float) and math.isfinite(v) for v in (self.low, self.high))
        if not ok or not self.low < self.high or (self.log and self.low <= 0):
            scale = "positive " if self.log else ""
            raise DomainError(
                f"a range must be {scale}LOW < HIGH. Received: {self.low}:{self.high}"
            )

    def suggest(self, trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def contains(self, value) -> bool:
        return isinstance(value, int | float) and self.low <= value <= self.high

    def parse(self, text: str) -> Uniform:
        low, high = _range(text, float)
        return Uniform(low, high, self.log)

    def hparam_domain(self):
        from tensorboard.plugins.hparams import summary_v2 as hp

        return hp.RealInterval(float(self.low), float(self.high))

    def describe(self) -> str:
        return f"{self.low:g}..{self.high:g}" + (" (log)" if self.log else "")


@dataclasses.dataclass(frozen=True)
class IntRange:
    """An integer in `[low, high]` (both included)."""

    low: int
    high: int

    def __post_init__(self):
        ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high))
        if not ok or not self.low <= self.high:
            raise DomainError(f"a range must be LOW <= HIGH. Received: {self.low}:{self.high}")

    def suggest(self, trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high)

    def contains(self, value) -> bool:
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and (self.low <= value <= self.high)
        )

    def parse(self, text: str) -> IntRange:
        low, high = _range(text, int)
        return IntRange(low, high)

    def hparam_domain(self):
        from tensorboard.plugins.hparams import summary_v2 as hp

        return hp.IntInterval(self.low, self.high)

    def describe(self) -> str:
        return f"{self.low}..{self.high}"


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of a few values."""

    values: tuple

    def __post_init__(self):
        if not self.values or len(set(self.values)) != len(self.values):
            raise DomainError(f"a choice needs distinct values. Received: {self.values}")

    def suggest(self, trial, name: str):
        return trial.suggest_categorical(name, list(self.values))

    def contains(self, value) -> bool:
        return value in self.values

    def parse(self, text: str) -> Choice:
        kind = type(self.values[0])
        try:
            values = tuple(kind(v.strip()) for v in text.split(",") if v.strip())
        except ValueError:
            raise DomainError(
                f"a choice is values separated by commas. Received: {text!r}"
            ) from None
        return Choice(values)

    def hparam_domain(self):
        from tensorboard.plugins.hparams import summary_v2 as hp

        return hp.Discrete(list(self.values))

    def describe(self) -> str:
        return "{" + ", ".join(map(str, self.values)) + "}"


def _range(text: str, kind):
    low, sep, high = text.partition(":")
    if not sep:
        raise DomainError(f"a range is LOW:HIGH. Received: {text!r}")
    try:
        return kind(low), kind(high)
    except ValueError:
        raise DomainError(f"a range is LOW:HIGH of numbers. Received: {text!r}") from None


Domain = Uniform | IntRange | Choice
