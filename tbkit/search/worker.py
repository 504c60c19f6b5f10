"""One trial in one process: `python -m tbkit.search.worker SEARCH_DIR`.

Claims a trial (a stale one of this host first, else a new one), sizes
TensorFlow's thread pools so the search's workers share the cores, trains the
trial through the spec's runner with the `Pruning` hook, and tells the study
how it ended: complete (its best validation value), pruned (with the reason:
the pruner's, or a diagnosis of the run's health), or failed (with the error).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time

from tbkit.errors import TbkitError, TrainingError
from tbkit.search.hparams import write_session
from tbkit.search.pruning import PRUNED_ATTR, Pruning
from tbkit.search.study import (
    NOTHING_TO_DO,
    claim,
    load_spec,
    open_study,
    trial_params,
)


def _import(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _share_cores(workers: int) -> None:
    import tensorflow as tf

    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def _stored(study, trial) -> dict:
    """The trial's user attributes as the storage holds them."""
    return study._storage.get_trial(trial._trial_id).user_attrs  # noqa: SLF001


def _steps(hook) -> int:
    return max(hook.reported) if hook.reported else 0


#: The line a worker ends its log with: where its process's time went (`bench/search.py`).
SECONDS_LINE = "tbkit-worker-seconds"


def _seconds(trial, spawned: float, started: float, trained: float) -> None:
    """Prints the process's split: start-up (spawn, imports, claim) and training."""
    now = time.time()
    split = {"trial": trial.number, "startup": started - spawned, "train": trained - started,
             "end": now - trained, "total": now - spawned}  # fmt: skip
    print(SECONDS_LINE, json.dumps(split), flush=True)


def main(argv=None) -> int:
    spawned = float(os.environ.get("TBKIT_SPAWNED_AT", time.time()))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m tbkit.search.worker SEARCH_DIR", file=sys.stderr)
        return 2
    spec = load_spec(argv[0])
    optuna = __import__("optuna")
    study = open_study(spec)
    claimed = claim(study, spec)
    if claimed is None:
        return NOTHING_TO_DO
    trial, run_dir, reported = claimed
    state = optuna.trial.TrialState
    decided = _stored(study, trial).get(PRUNED_ATTR)
    if decided:  # pruned by a process that died before telling: tell it now, train nothing
        searched = {k: v for k, v in trial.params.items() if k in spec.space}
        trial.set_user_attr("reason", decided)
        write_session(run_dir, searched, "pruned", decided, max(reported, default=0))
        study.tell(trial.number, state=state.PRUNED)
        print(f"trial {trial.number}: pruned (decided before its process died): {decided}")
        return 0
    _share_cores(int(os.environ.get("TBKIT_SEARCH_WORKERS", spec.workers)))
    params = trial_params(trial, spec)
    hook = Pruning(trial, reported=reported)
    runner = _import(spec.runner)
    searched = {k: params[k] for k in spec.space}
    started = time.time()
    try:
        value = runner(params, run_dir, [hook], **spec.options)
    except TrainingError as e:  # diverged: pruned at once, with the finding
        hook.reason = hook.reason or f"non-finite values: {e}"
        value = None
    except (TbkitError, ValueError) as e:
        trial.set_user_attr("reason", str(e))
        write_session(run_dir, searched, "failed", str(e), _steps(hook))
        study.tell(trial.number, state=state.FAIL)
        print(f"trial {trial.number}: failed: {e}", flush=True)
        _seconds(trial, spawned, started, time.time())
        return 1
    trained = time.time()
    if hook.reason is not None:
        trial.set_user_attr("reason", hook.reason)
        write_session(run_dir, searched, "pruned", hook.reason, _steps(hook))
        study.tell(trial.number, state=state.PRUNED)
        print(f"trial {trial.number}: pruned: {hook.reason}", flush=True)
    else:
        write_session(run_dir, searched, "complete", "", _steps(hook))
        study.tell(trial.number, value)
        print(f"trial {trial.number}: complete: {value}", flush=True)
    _seconds(trial, spawned, started, trained)
    return 0


if __name__ == "__main__":
    sys.exit(main())
