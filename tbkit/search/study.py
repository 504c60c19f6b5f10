"""A search: an Optuna study whose trials are ordinary run directories, one process each.

`run_search(spec)` keeps `spec.workers` worker processes busy
(`python -m tbkit.search.worker SEARCH_DIR`); each claims one trial, trains it
through the engine (every guarantee of a run: lock, checkpoints, early stopping,
health) in `SEARCH_DIR/trial-NNNN/`, reports every validation to the study, and
tells the study how it ended. The study's storage is the truth about trials
(Optuna's journal file in the search directory by default, no server and safe
for several processes; or an RDB URL such as `postgresql://...` for several
machines); the run directory is the truth about a trial's training.

Resume: a trial left RUNNING by a killed process is recognised by its run
directory's lock (no live holder), not by waiting; the next worker on the same
host continues it in its own run directory from its latest checkpoint, with the
same trial number and settings, and the steps it already reported are not
reported again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import socket
import subprocess
import sys
import time

from tbkit.errors import TbkitError
from tbkit.run.rundir import RunDir
from tbkit.search.domains import Choice, IntRange, Uniform
from tbkit.search.hparams import write_experiment

SPEC_FILE = "search.json"
JOURNAL_FILE = "study.journal"
STUDY_NAME = "tbkit"
PRUNERS = ("median", "halving", "hyperband", "none")
#: A trial whose worker died this many times is failed instead of resumed again.
MAX_ATTEMPTS = 3
NOTHING_TO_DO = 3  # a worker's exit code when no trial was left to claim


class SearchError(TbkitError):
    """A search cannot start or go on: bad space, storage, or a directory of another search."""


def optuna_module():
    try:
        import optuna
    except ImportError:
        raise SearchError(
            "the search needs Optuna: pip install 'tbkit[search]' (optuna~=5.0)"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


@dataclasses.dataclass(frozen=True)
class SearchSpec:
    """What a search is.

    Attributes:
      directory: the search directory (trials, journal, HParams experiment, test).
      runner: `"module:function"` training one trial: `fn(params, run_dir, hooks)`
        returning the trial's best validation value.
      space: `{setting: domain}` of the searched settings.
      fixed: settings every trial gets as they are.
      metric: the name of the monitored validation value (for messages and HParams).
      direction: `"maximize"` or `"minimize"`.
      trials: how many trials the study runs in all.
      workers: trial processes at once on this machine.
      pruner: one of `PRUNERS`.
      storage: an Optuna RDB URL, or None for the journal file.
      seed: seeds the sampler (trial `n` is sampled with `seed + n`) and each trial.
      tester: `"module:function"` evaluating the best trial on the test set once:
        `fn(params, run_dir, out_dir)` returning `(accuracy, correct, total)`; None: no test.
      options: keyword arguments the runner gets after `(params, run_dir, hooks)`
        (e.g. the library door's `build` function by name).
      first: settings (`{name: value}` of the searched ones) the study tries before it
        samples, in order (e.g. today's defaults, to see whether the search beats them).
    """

    directory: str
    runner: str
    space: dict
    fixed: dict = dataclasses.field(default_factory=dict)
    metric: str = "accuracy"
    direction: str = "maximize"
    trials: int = 10
    workers: int = 1
    pruner: str = "median"
    storage: str | None = None
    seed: int | None = None
    tester: str | None = None
    options: dict = dataclasses.field(default_factory=dict)
    first: tuple = ()

    def check(self) -> None:
        for name in ("trials", "workers"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive integer. Received: {name}={v!r}")
        if self.pruner not in PRUNERS:
            raise ValueError(
                f"pruner must be one of {', '.join(PRUNERS)}. Received: pruner={self.pruner!r}"
            )
        if self.direction not in ("maximize", "minimize"):
            raise ValueError(
                f"direction must be maximize or minimize. Received: {self.direction!r}"
            )
        if not self.space:
            raise ValueError("the search space is empty: every searched setting is fixed")
        for params in self.first:
            for name, value in params.items():
                if name not in self.space or not self.space[name].contains(value):
                    raise ValueError(f"a first trial's {name}={value!r} is not in the search space")

    def identity(self) -> dict:
        """What must be the same for a search directory to be continued."""
        return {"space": space_to_json(self.space), "metric": self.metric,
                "direction": self.direction, "fixed": self.fixed, "runner": self.runner,
                "options": self.options}  # fmt: skip

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["space"] = space_to_json(self.space)
        d["first"] = [dict(p) for p in self.first]
        return d


def space_to_json(space: dict) -> dict:
    return {name: {"kind": type(d).__name__, **_plain(dataclasses.asdict(d))}
            for name, d in space.items()}  # fmt: skip


def _plain(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def space_from_json(data: dict) -> dict:
    kinds = {"Uniform": Uniform, "IntRange": IntRange, "Choice": Choice}
    out = {}
    for name, d in data.items():
        d = dict(d)
        kind = kinds[d.pop("kind")]
        if kind is Choice:
            d["values"] = tuple(d["values"])
        out[name] = kind(**d)
    return out


def load_spec(directory: str) -> SearchSpec:
    with open(os.path.join(directory, SPEC_FILE)) as f:
        d = json.load(f)
    d["space"] = space_from_json(d["space"])
    d["first"] = tuple(d.get("first", ()))
    return SearchSpec(**d)


def storage_of(spec: SearchSpec):
    optuna = optuna_module()
    if spec.storage:
        for attempt in range(8):
            try:
                return optuna.storages.RDBStorage(spec.storage)
            except Exception as e:  # noqa: BLE001 - any driver's failure is the same one line
                text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                # Two machines creating the schema of a new database at once: one wins,
                # the other finds the tables made and connects on its next try.
                if ("already exists" in text or "UniqueViolation" in text) and attempt < 7:
                    time.sleep(0.5 * (attempt + 1))
                    continue
                raise SearchError(f"cannot reach the storage {spec.storage}: {text}") from None
    from optuna.storages.journal import JournalFileBackend

    path = os.path.join(spec.directory, JOURNAL_FILE)
    return optuna.storages.JournalStorage(JournalFileBackend(path))


def pruner_of(name: str):
    optuna = optuna_module()
    return {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
        "halving": lambda: optuna.pruners.SuccessiveHalvingPruner(),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(),
        "none": lambda: optuna.pruners.NopPruner(),
    }[name]()


def open_study(spec: SearchSpec, storage=None):
    """Creates or loads the study; refuses one of another space or objective."""
    optuna = optuna_module()
    study = optuna.create_study(
        storage=storage or storage_of(spec),
        study_name=STUDY_NAME,
        direction=spec.direction,
        pruner=pruner_of(spec.pruner),
        load_if_exists=True,
    )
    stored = study.user_attrs.get("identity")
    if stored is None:
        study.set_user_attr("identity", spec.identity())
        for params in spec.first:  # a new study: these settings before any sampled
            study.enqueue_trial(params, skip_if_exists=True)
    else:
        _refuse_another(spec, stored)
    return study


def _refuse_another(spec: SearchSpec, stored: dict) -> None:
    """Raises `SearchError` when a stored search identity is not `spec`'s."""
    mine = json.loads(json.dumps(spec.identity()))  # as stored: tuples become lists
    differs = [k for k, v in mine.items() if stored.get(k) != v]
    if differs:
        raise SearchError(
            f"{spec.directory} holds a search with another {', '.join(differs)}; "
            "use another --logdir (or the same settings) to continue it"
        )


@contextlib.contextmanager
def _claim_lock(directory: str):
    """Serialises claims on this machine: choosing a trial and taking its run's lock."""
    with open(os.path.join(directory, ".claim.lock"), "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run_name(number: int) -> str:
    return f"trial-{number:04d}"


def machine_of(directory: str) -> str:
    """Who may resume a trial: the host and the search directory its run directory is in
    (several machines share one study, each with a search directory of its own)."""
    return f"{socket.gethostname()}:{os.path.abspath(directory)}"


def stale_trials(study, directory: str) -> list:
    """RUNNING trials of this machine whose run directory no live process holds."""
    optuna = optuna_module()
    host, out = machine_of(directory), []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.user_attrs.get("host") != host:
            continue
        run = RunDir(directory, t.user_attrs.get("run", _run_name(t.number)))
        if run.holder() is None:
            out.append(t)
    return out


def claim(study, spec: SearchSpec):
    """Takes one trial for this process: a stale one of this host first, else a new one
    while the study has fewer than `spec.trials`. Returns `(trial, run_dir, reported)` or
    None; the trial's run directory is locked by this process."""
    optuna = optuna_module()
    with _claim_lock(spec.directory):
        for t in stale_trials(study, spec.directory):
            attempts = int(t.user_attrs.get("attempts", 1))
            if attempts >= MAX_ATTEMPTS:
                study._storage.set_trial_user_attr(  # noqa: SLF001 - a trial of another process
                    t._trial_id, "reason", f"its process died {attempts} times"
                )
                study.tell(t.number, state=optuna.trial.TrialState.FAIL)
                continue
            trial = optuna.trial.Trial(study, t._trial_id)
            trial.set_user_attr("attempts", attempts + 1)
            run = RunDir(spec.directory, t.user_attrs["run"])
            run.lock()
            return trial, run.path, dict(t.intermediate_values)
        trials = study.get_trials(deepcopy=False)
        waiting = any(t.state == optuna.trial.TrialState.WAITING for t in trials)
        if len(trials) >= spec.trials and not waiting:  # an enqueued trial is one of them
            return None
        if spec.seed is not None:  # trial n sampled with seed + n: the same in a resumed search
            study.sampler = optuna.samplers.TPESampler(
                seed=spec.seed + len(study.get_trials(deepcopy=False))
            )
        trial = study.ask()
        name = _run_name(trial.number)
        trial.set_user_attr("host", machine_of(spec.directory))
        trial.set_user_attr("run", name)
        trial.set_user_attr("attempts", 1)
        run = RunDir(spec.directory, name)
        run.create()
        run.lock()
        return trial, run.path, {}


def trial_params(trial, spec: SearchSpec) -> dict:
    """The trial's settings: its sampled ones (the stored ones when resumed) and the fixed."""
    params = {name: domain.suggest(trial, name) for name, domain in spec.space.items()}
    out = dict(spec.fixed, **params)
    if spec.seed is not None and "seed" not in out:
        out["seed"] = spec.seed + trial.number
    return out


@dataclasses.dataclass(frozen=True)
class TrialRow:
    number: int
    status: str
    value: float | None
    steps: int | None
    reason: str | None
    params: dict


def trial_table(study) -> list[TrialRow]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        steps = max(t.intermediate_values) if t.intermediate_values else None
        rows.append(TrialRow(t.number, t.state.name.lower(), t.value, steps,
                             t.user_attrs.get("reason"), dict(t.params)))  # fmt: skip
    return rows


def _worker_command(directory: str) -> list[str]:
    return [sys.executable, "-m", "tbkit.search.worker", directory]


def prepare(spec: SearchSpec):
    """Checks `spec`, creates the search directory and its study; refuses another search's
    directory before writing anything into it."""
    spec.check()
    optuna_module()
    path = os.path.join(spec.directory, SPEC_FILE)
    if os.path.exists(path):
        _refuse_another(spec, json.loads(json.dumps(load_spec(spec.directory).identity())))
    storage = storage_of(spec) if spec.storage else None  # an unreachable server: nothing written
    try:
        os.makedirs(spec.directory, exist_ok=True)
    except OSError as e:
        raise SearchError(f"cannot create {spec.directory}: {e.strerror or e}") from None
    study = open_study(spec, storage)
    with open(path + ".tmp", "w") as f:
        json.dump(spec.to_json(), f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)
    return study


def run_search(spec: SearchSpec, log=print, poll: float = 0.5) -> list[TrialRow]:
    """Runs the search to `spec.trials` trials (continuing what the directory holds).

    Returns:
      The trial table, in trial order.
    """
    study = prepare(spec)
    write_experiment(spec)
    logs = os.path.join(spec.directory, ".workers")
    os.makedirs(logs, exist_ok=True)
    procs: list[subprocess.Popen] = []
    ended = ("complete", "pruned", "fail")
    seen: set[int] = {r.number for r in trial_table(study) if r.status in ended}
    env = dict(os.environ, TBKIT_SEARCH_WORKERS=str(spec.workers))
    try:
        while True:
            procs = [p for p in procs if p.poll() is None]
            for row in trial_table(study):
                if row.status in ended and row.number not in seen:
                    seen.add(row.number)
                    log(_row_line(row, spec.metric))
            trials = study.get_trials(deepcopy=False)
            waiting = any(t.state.name == "WAITING" for t in trials)
            claimable = (len(trials) < spec.trials or waiting
                         or bool(stale_trials(study, spec.directory)))  # fmt: skip
            if claimable and len(procs) < spec.workers:
                name = os.path.join(logs, f"worker-{len(os.listdir(logs)):04d}.log")
                with open(name, "w") as out:  # the child keeps its own copy of the file
                    env["TBKIT_SPAWNED_AT"] = repr(time.time())
                    procs.append(subprocess.Popen(_worker_command(spec.directory), stdout=out,
                                                  stderr=subprocess.STDOUT, env=env))  # fmt: skip
                time.sleep(poll)  # let it claim before counting again
                continue
            if not procs and not claimable:
                break
            time.sleep(poll)
    finally:
        for p in procs:  # interrupted: the workers' trials resume on the next run
            if p.poll() is None:
                p.terminate()
    return trial_table(study)


def _row_line(row: TrialRow, metric: str) -> str:
    value = "" if row.value is None else f" {metric} {row.value:.4f}"
    steps = "" if row.steps is None else f" at step {row.steps}"
    reason = f" ({row.reason})" if row.reason else ""
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(row.params.items()))
    return f"Trial {row.number:>3}: {row.status}{value}{steps}{reason}; {params}"


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
