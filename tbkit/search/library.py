"""The library door of the search: `tbkit.search(build, space, directory, ...)`.

A search over anyone's model, each trial a `tbkit.Trainer` run in its own run
directory and its own process, with the same resume, pruning and HParams
guarantees as `train_mnist.py search`: the study's runner is `train_trial`
below, which imports the user's `build` function by name in the worker.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from collections.abc import Callable

from tbkit.search.domains import Choice, IntRange, Uniform
from tbkit.search.study import SearchError, SearchSpec, TrialRow, run_search

#: Set in a trial's process (`tbkit.search.worker`).
WORKER_ENV = "TBKIT_SEARCH_WORKERS"


@dataclasses.dataclass
class TrialSetup:
    """What `build(params)` returns: one trial's model and data.

    Attributes:
      model: a built Keras model (called on a batch).
      optimizer: its optimizer.
      loss: a Keras loss (or callable).
      train_data: a `tf.data.Dataset` of `(x, y)` batches (or `start_step -> dataset`).
      validation_data: a finite `tf.data.Dataset`; the monitored value comes from it.
      steps: the step the trial trains up to.
      trainer: further `tbkit.Trainer` keyword arguments (`eval_every`, `patience`,
        `summary_every`, ...); `run_dir`, `monitor` and `hooks` are the search's.
      hooks: your own run-protocol hooks (`tbkit.Hook`), after the search's pruning.
    """

    model: object
    optimizer: object
    loss: object
    train_data: object
    validation_data: object
    steps: int
    trainer: dict = dataclasses.field(default_factory=dict)
    hooks: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """What a search found (validation only: no trial read a test set).

    Attributes:
      best_params: the best completed trial's settings (its sampled ones and the fixed).
      best_value: its best validation value.
      best_trial: its number; `best_run` its run directory.
      table: every trial (`TrialRow`: number, status, value, steps, reason, params).
    """

    best_params: dict | None
    best_value: float | None
    best_trial: int | None
    best_run: str | None
    table: list[TrialRow]


def _name_of(build: Callable) -> tuple[str, str]:
    """`(module:qualname, sys.path entry)` by which a worker process imports `build`."""
    if isinstance(build, str):
        if ":" not in build:
            raise SearchError(f"build must be 'module:function'. Received: {build!r}")
        return build, ""
    qualname = getattr(build, "__qualname__", "")
    module_name = getattr(build, "__module__", None)
    module = sys.modules.get(module_name or "")
    if not callable(build) or "<" in qualname or module is None:
        raise SearchError(
            "build must be a function defined at the top of a module (not a lambda or a "
            "nested function): each trial's process imports it by name"
        )
    path = getattr(module, "__file__", None)
    if module_name == "__main__":  # a script: its processes import it as a module
        if not path:
            raise SearchError(
                "build must be defined in a file (a module or a script), not typed in "
                "an interactive session: each trial's process imports it by name"
            )
        module_name = os.path.splitext(os.path.basename(path))[0]
        return f"{module_name}:{qualname}", os.path.dirname(os.path.abspath(path))
    root = ""
    if path:  # the directory a worker needs on sys.path for `import package.module`
        root = os.path.abspath(path)
        for _ in range(module_name.count(".") + 1):
            root = os.path.dirname(root)
        if os.path.basename(path) == "__init__.py":
            root = os.path.dirname(root)
    return f"{module_name}:{qualname}", root


def _import_build(name: str, path: str) -> Callable:
    if path and path not in sys.path:
        sys.path.insert(0, path)
    module, _, attr = name.partition(":")
    try:
        target = importlib.import_module(module)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as e:
        raise SearchError(f"cannot import the build function {name}: {e}") from None
    return target


def train_trial(params: dict, run_dir: str, hooks, *, build: str, path: str = "",
                monitor: str = "accuracy") -> float:  # fmt: skip
    """The runner of a library trial: `build(params)` trained by a `tbkit.Trainer`."""
    from tbkit.loop.trainer import Trainer

    setup = _import_build(build, path)(dict(params))
    if not isinstance(setup, TrialSetup):
        raise SearchError(
            f"{build} must return a tbkit.search.TrialSetup. Received: {type(setup).__name__}"
        )
    options = dict(setup.trainer)
    for taken in ("run_dir", "monitor", "hooks"):
        if taken in options:
            raise SearchError(f"TrialSetup.trainer must not set {taken}: the search sets it")
    options.setdefault("log", lambda line: print(line, flush=True))
    options.setdefault("progress", False)
    hp = {k: v for k, v in params.items() if isinstance(v, bool | int | float | str)}
    options.setdefault("config", {"search": os.path.dirname(run_dir), "trial": hp})
    trainer = Trainer(
        setup.model, setup.optimizer, setup.loss, run_dir, monitor=monitor,
        hooks=[*hooks, *setup.hooks], **options,
    )  # fmt: skip
    result = trainer.fit(setup.train_data, setup.validation_data, steps=setup.steps)
    return result.best_value


def search(
    build,
    space: dict,
    directory: str,
    *,
    trials: int = 10,
    workers: int = 1,
    pruner: str = "median",
    storage: str | None = None,
    monitor: str = "accuracy",
    fixed: dict | None = None,
    first=(),
    seed: int | None = None,
    log: Callable[[str], None] = print,
) -> SearchResult:
    """Searches `space` for the settings `build` trains best (Optuna underneath).

    Each trial is a `tbkit.Trainer` run in `directory/trial-NNNN/` (every guarantee
    of a run: lock, best and latest checkpoints, early stopping, dynamics, health),
    trained in a process of its own, `workers` at once. Every validation reports the
    monitored value to the trial; the `pruner` and a diagnosis of the run's health
    (non-finite values, dead layers, a learning rate that moves nothing) prune.
    Calling it again with the same arguments continues the search: a trial killed
    mid-run resumes from its latest checkpoint. TensorBoard's HParams tab on
    `directory` shows every trial with its status.

    Args:
      build: `build(params) -> TrialSetup`, a function at the top of a module or
        script (each trial's process imports it by name), or `"module:function"`.
      space: `{name: domain}` with `tbkit.search.Uniform`, `IntRange`, `Choice`.
      directory: the search directory.
      trials: trials in all (counting those the directory already holds).
      workers: trial processes at once on this machine.
      pruner: "median", "halving", "hyperband" or "none".
      storage: an Optuna RDB URL (e.g. `postgresql://...`) for several machines;
        None: a journal file in `directory`.
      monitor: "accuracy" (maximized) or "loss" (minimized), on the validation data.
      fixed: settings every trial's `params` also holds, as they are.
      first: settings (`{name: value}` dicts) tried before any sampled ones.
      seed: seeds the sampler (trial n with seed + n); `params["seed"]` is seed + n.
      log: where each finished trial's line goes.

    Returns:
      A `SearchResult`.

    Raises:
      SearchError: a build that cannot be imported by name, an unreachable storage, a
        directory holding another search. ValueError: a bad argument.
    """
    if os.environ.get(WORKER_ENV):
        raise SearchError(
            "tbkit.search was called while a trial's process imported the build module: "
            'call it under `if __name__ == "__main__":`'
        )
    for key, domain in dict(space).items():
        if not isinstance(domain, Uniform | IntRange | Choice):
            raise ValueError(
                f"space[{key!r}] must be a tbkit.search Uniform, IntRange or Choice. "
                f"Received: {domain!r}"
            )
    if monitor not in ("accuracy", "loss"):
        raise ValueError(f"monitor must be accuracy or loss. Received: monitor={monitor!r}")
    name, path = _name_of(build)
    spec = SearchSpec(
        directory=os.path.abspath(os.fspath(directory)),
        runner="tbkit.search.library:train_trial",
        space=dict(space),
        fixed=dict(fixed or {}),
        metric=monitor,
        direction="maximize" if monitor == "accuracy" else "minimize",
        trials=trials,
        workers=workers,
        pruner=pruner,
        storage=storage,
        seed=seed,
        options={"build": name, "path": path, "monitor": monitor},
        first=tuple(dict(p) for p in first),
    )
    rows = run_search(spec, log=log)
    done = [r for r in rows if r.status == "complete" and r.value is not None]
    if not done:
        return SearchResult(None, None, None, None, rows)
    pick = max if spec.direction == "maximize" else min
    best = pick(done, key=lambda r: r.value)
    params = dict(spec.fixed, **best.params)
    if seed is not None:
        params.setdefault("seed", seed + best.number)
    run = os.path.join(spec.directory, f"trial-{best.number:04d}")
    return SearchResult(params, best.value, best.number, run, rows)
