"""Experiments: hyperparameter search on Optuna (issue 23).

`tbkit.search(build, space, directory, trials=..., workers=..., pruner=...,
storage=...)` searches any model's settings with `tbkit.Trainer` trials (the
module is callable: `tbkit.search(...)` is `tbkit.search.search(...)`); the
domains are `Uniform`, `IntRange` and `Choice`. `train_mnist.py search` is the
same machinery over the MNIST run's settings. Needs the `search` extra:
`pip install "tbkit[search]"`.

Modules: `domains` (what a searched setting may take), `pruning` (the hook that
reports each validation and prunes on the value or a diagnosis), `study` (the
study, claiming trials, resume, the orchestrator), `worker` (one trial per
process), `hparams` (the HParams experiment and sessions), `library` (this door).
"""

from __future__ import annotations

import sys
import types

from tbkit.search.domains import Choice, DomainError, IntRange, Uniform
from tbkit.search.library import SearchResult, TrialSetup, search
from tbkit.search.study import SearchError, TrialRow

__all__ = [
    "Choice",
    "DomainError",
    "IntRange",
    "SearchError",
    "SearchResult",
    "TrialRow",
    "TrialSetup",
    "Uniform",
    "search",
]


class _CallableModule(types.ModuleType):
    """`tbkit.search(...)`: the package is also its main function."""

    def __call__(self, *args, **kwargs):
        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
