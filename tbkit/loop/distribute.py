"""The compiled train and eval steps, on one device or under a `tf.distribute` strategy.

TensorFlow does the distributing: `MirroredStrategy` (the devices of one
machine) and `MultiWorkerMirroredStrategy` (machines described by `TF_CONFIG`).
The global batch is split across replicas, the loss is averaged over the
global batch, and evaluation gathers every replica's predictions (with their
example indices, so the order is the data set's) before any metric is computed.
Only the chief writes summaries and keeps checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading

import numpy as np
import tensorflow as tf

from tbkit.datasets.pipeline import without_autotune
from tbkit.errors import TbkitError
from tbkit.model.measure import StepDynamics, dense_gradients, measure

STRATEGIES = ("default", "mirrored", "multi-worker")


def make_strategy(name: str) -> tf.distribute.Strategy:
    """Returns TensorFlow's strategy for `name` (one of `STRATEGIES`).

    Create it before any other TensorFlow work: multi-worker collectives must
    be configured at program start-up.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        if not os.environ.get("TF_CONFIG"):
            raise TbkitError(
                "--strategy multi-worker needs TF_CONFIG describing the cluster and this task"
            )
        try:
            json.loads(os.environ["TF_CONFIG"])["task"]
        except (ValueError, KeyError, TypeError):
            raise TbkitError("TF_CONFIG must be JSON with 'cluster' and 'task' entries") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(
        f"strategy must be one of {', '.join(STRATEGIES)}. Received: strategy={name!r}"
    )


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """True unless this process is a non-chief worker of a multi-worker strategy."""
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not strategy.extended._in_multi_worker_mode():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    spec = resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and "chief" not in spec


def first_replica(strategy: tf.distribute.Strategy, value) -> tf.Tensor:
    """The first local replica's part of a per-replica value (the value itself otherwise)."""
    return strategy.experimental_local_results(value)[0]


def distribute(strategy: tf.distribute.Strategy, ds: tf.data.Dataset):
    """Distributes a batched dataset; each global batch is split across replicas."""
    if strategy is tf.distribute.get_strategy() and strategy.num_replicas_in_sync == 1:
        return ds
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(ds.with_options(options))


def per_example_loss(loss_fn, y_true, y_pred) -> tf.Tensor:
    """The loss of each example: a Keras `Loss` unreduced, or what a callable returns.

    Per-element losses of higher rank (per time step, per pixel) are averaged
    per example; a callable that already reduces to a scalar gives that scalar.
    """
    import keras

    if isinstance(loss_fn, keras.losses.Loss):
        values = loss_fn.call(y_true, y_pred)
    else:
        values = loss_fn(y_true, y_pred)
    values = tf.cast(tf.convert_to_tensor(values), tf.float32)
    if values.shape.rank is not None and values.shape.rank > 1:
        values = tf.reduce_mean(values, axis=list(range(1, values.shape.rank)))
    return values


def _correct(y_true, y_pred) -> tf.Tensor:
    labels = tf.cast(tf.reshape(y_true, [-1]), tf.int64)
    pred = tf.reshape(tf.argmax(y_pred, axis=-1), [-1])
    return tf.reduce_sum(tf.cast(tf.equal(pred, labels), tf.float32))


def make_train_step(
    strategy,
    model,
    optimizer,
    loss_fn,
    window: tf.Variable,
    classifier: bool,
    *,
    jit_compile: bool = False,
    probe=None,
) -> TrainStep:
    """The compiled train step (see `TrainStep`): forward, backward, update."""
    return TrainStep(
        strategy, model, optimizer, loss_fn, window, classifier, jit_compile, probe=probe
    )


def _any_nonfinite(t) -> tf.Tensor:
    if isinstance(t, tf.IndexedSlices):
        t = t.values  # the rows it holds are the only values it has
    return tf.logical_not(
        tf.reduce_all(tf.math.is_finite(tf.cast(tf.convert_to_tensor(t), tf.float32)))
    )


class TrainStep:
    """A compiled step: forward, backward, update; `step(x, y)` -> (loss, batch accuracy).

    The loss is averaged over the global batch (every replica's examples) plus
    the model's regularisation losses. `window` accumulates (sum of losses,
    correct predictions, examples, batches) so the host never syncs on a step
    it does not log. The graph groups the step's ops as `loss`, `metrics` and
    `optimizer` next to the model's own layer scopes.

    `step.recording(x, y)` is a second compiled variant for the steps that
    record training dynamics: it also returns the gradients (summed over
    replicas: the gradient of the global batch's loss), their norms, each
    variable's norm before the update and the norm of the update, the global
    gradient norm and the learning rate used. Other steps pay nothing for it.

    The non-finite guard: every step checks its loss (one scalar); the first
    step of a window whose loss is not finite notes, in a branch that runs only
    then, which variables held non-finite values and which got non-finite
    gradients. No `check_numerics`, so it works in XLA-compiled steps.
    `first_nonfinite()` reads it on the host; `reset_guard()` starts a new window.

    Args:
      jit_compile: compile each replica's step with XLA (one replica only).
      probe: what the recording variant's forward pass is (a `LayerRecorder`:
        `probe.training_forward(x) -> (y_pred, activations)`, then
        `probe.reduce_activations(activations)`): the recorded batch's activations
        come from the step's own forward pass instead of a second one. None, or a
        probe whose `training_forward` is None: the model's own call.
    """

    def __init__(
        self, strategy, model, optimizer, loss_fn, window, classifier, jit_compile, probe=None
    ):
        if jit_compile and strategy.num_replicas_in_sync > 1:
            raise ValueError(
                "jit_compile=True runs one replica; this strategy has "
                f"{strategy.num_replicas_in_sync}"
            )
        self.strategy, self.model, self.optimizer = strategy, model, optimizer
        self.variables = list(model.trainable_variables)
        n = len(self.variables)
        # The guard's state is not part of any checkpoint: a diverged run never saves.
        with tf.init_scope():
            # (batches since the last check, the first non-finite batch among them or 0)
            self._guard = tf.Variable(tf.zeros(2, tf.int64), trainable=False, name="guard")
            # per variable: value non-finite, gradient non-finite (at that batch)
            self._guard_flags = tf.Variable(
                tf.zeros([2, max(n, 1)]), trainable=False, name="guard_flags"
            )
        self.no_gradient: set[int] = set()  # indices of variables the loss does not reach
        variables = self.variables

        forward = getattr(probe, "training_forward", None)

        def replica_step(x, y, record: bool):
            with tf.GradientTape() as tape:
                if record and forward is not None:
                    y_pred, acts = forward(x)
                else:
                    y_pred, acts = model(x, training=True), None
                with tf.name_scope("loss"):
                    per = per_example_loss(loss_fn, y, y_pred)
                    if per.shape.rank == 0:  # already a mean over this replica's batch
                        loss = per / strategy.num_replicas_in_sync
                    else:
                        loss = tf.nn.compute_average_loss(per)
                    if model.losses:
                        loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            with tf.name_scope("optimizer"):
                grads = tape.gradient(loss, variables)
                with tf.name_scope("guard"):

                    def which():
                        return tf.stack(
                            [
                                tf.stack(
                                    [tf.cast(_any_nonfinite(v), tf.float32) for v in variables]
                                ),
                                tf.stack(
                                    [
                                        tf.cast(_any_nonfinite(g), tf.float32)
                                        if g is not None
                                        else tf.constant(0.0)
                                        for g in grads
                                    ]
                                ),
                            ]
                        )

                    flags = tf.cond(
                        tf.math.is_finite(loss),
                        lambda: tf.zeros([2, len(variables)]),
                        which,
                    )
                dyn = None
                if record:
                    dyn = self._before(grads)
                optimizer.apply_gradients(zip(grads, variables, strict=True))
                if record:
                    dyn = self._after(dyn)
                    if acts is not None:
                        dyn = dyn._replace(activations=probe.reduce_activations(acts))
            with tf.name_scope("metrics"):
                correct = _correct(y, y_pred) if classifier else tf.constant(0.0)
                count = tf.cast(tf.shape(tf.nest.flatten(y)[0])[0], tf.float32)
            return loss, correct, count, flags, dyn

        if jit_compile:
            compiled = {
                record: tf.function(lambda x, y, r=record: replica_step(x, y, r), jit_compile=True)
                for record in (False, True)
            }
            run_replica = lambda x, y, record: compiled[record](x, y)  # noqa: E731
        else:
            run_replica = replica_step

        def step(x, y, record: bool):
            loss, correct, count, flags, dyn = strategy.run(run_replica, args=(x, y, record))
            with tf.name_scope("metrics/"):  # absolute: the same group as the replica's metrics
                reduce = lambda v: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)  # noqa: E731
                loss, correct, count = reduce(loss), reduce(correct), reduce(count)
                window.assign_add(tf.stack([loss, correct, count, 1.0]))
            with tf.name_scope("guard/"):
                # The first replica's flags: values are the same on every replica,
                # and a reduction would add a collective to every step.
                flags = strategy.experimental_local_results(flags)[0] if n else tf.zeros([2, 1])
                seen = self._guard[0] + 1
                first = tf.logical_and(
                    tf.equal(self._guard[1], 0), tf.logical_not(tf.math.is_finite(loss))
                )
                self._guard.assign(tf.stack([seen, tf.where(first, seen, self._guard[1])]))
                self._guard_flags.assign(tf.where(first, flags, self._guard_flags))
            if record:
                return loss, correct / count, dyn
            return loss, correct / count

        self._plain = tf.function(lambda x, y: step(x, y, False), reduce_retracing=True)
        self._recording = tf.function(lambda x, y: step(x, y, True), reduce_retracing=True)

    def _before(self, grads):
        """Dynamics of a recording step, before the update (replica context)."""
        grads, missing = dense_gradients(grads, self.variables)
        self.no_gradient.update(missing)
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        before = [tf.identity(tf.convert_to_tensor(v)) for v in self.variables]
        lr = self.optimizer.learning_rate
        lr = tf.cast(lr() if callable(lr) else lr, tf.float32)
        return grads, before, lr

    def _after(self, dyn) -> StepDynamics:
        grads, before, lr = dyn
        return measure(grads, before, self.variables, lr)

    @property
    def python_function(self):
        return self._plain

    def get_concrete_function(self, *args):
        return self._plain.get_concrete_function(*args)

    def __call__(self, x, y):
        return self._plain(x, y)

    def trace_recording(self, *specs) -> threading.Thread:
        """Traces the recording variant for `specs` in a thread, while the first plain
        steps run; returns the thread (join it before the step is dropped).

        A trace that fails is left to the first recorded step, which traces again and
        raises what it raises.
        """

        def trace():
            with contextlib.suppress(Exception):
                self._recording.get_concrete_function(*specs)

        thread = threading.Thread(target=trace, name="tbkit-trace-recording", daemon=True)
        thread.start()
        return thread

    def recording(self, x, y):
        """The step, plus its dynamics (first replica's copy; every replica holds the same)."""
        loss, acc, dyn = self._recording(x, y)
        dyn = tf.nest.map_structure(lambda t: self.strategy.experimental_local_results(t)[0], dyn)
        return loss, acc, dyn._replace(no_gradient=frozenset(self.no_gradient))

    def first_nonfinite(self) -> tuple[int, list[int], list[int]] | None:
        """`(batch, value indices, gradient indices)` of the window's first non-finite loss."""
        first = int(self._guard.numpy()[1])
        if not first:
            return None
        flags = self._guard_flags.numpy()
        n = len(self.variables)
        values = [i for i in range(n) if flags[0, i] > 0]
        grads = [i for i in range(n) if flags[1, i] > 0]
        return first, values, grads

    def reset_guard(self) -> None:
        self._guard.assign(tf.zeros(2, tf.int64))


def with_indices(ds: tf.data.Dataset) -> tf.data.Dataset:
    """`(x, y)` batches -> `(x, y, i)` with each example's position in the data set."""

    def number(n, batch):
        x, y = batch
        size = tf.cast(tf.shape(tf.nest.flatten(y)[0])[0], tf.int64)
        return n + size, (x, y, n + tf.range(size, dtype=tf.int64))

    return ds.scan(tf.constant(0, tf.int64), number)


def make_evaluator(strategy, model, dataset: tf.data.Dataset, loss_fn, classifier: bool):
    """Returns `evaluate() -> (mean loss, labels, predictions, scores)` over a batched `(x, y)` data set.

    Labels, predicted classes and the model's class scores (its outputs, `(N,
    classes)` float32) come back in data-set order, gathered from every
    replica; for a model that is not a classifier all three are None.
    """
    ds = distribute(strategy, without_autotune(with_indices(dataset).prefetch(2)))

    def replica_eval(x, y, i):
        y_pred = model(x, training=False)
        loss = tf.reduce_sum(per_example_loss(loss_fn, y, y_pred))
        if classifier:
            pred = tf.reshape(tf.argmax(y_pred, axis=-1), [-1])
            labels = tf.cast(tf.reshape(y, [-1]), tf.int64)
            scores = tf.reshape(tf.cast(y_pred, tf.float32), [-1, tf.shape(y_pred)[-1]])
        else:
            pred = labels = tf.zeros_like(i)
            scores = tf.zeros([tf.shape(i)[0], 1])
        return loss, labels, pred, scores, i

    @tf.function(reduce_retracing=True)
    def eval_step(x, y, i):
        loss, labels, pred, scores, idx = strategy.run(replica_eval, args=(x, y, i))
        loss = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        gather = lambda t: strategy.gather(t, axis=0)  # noqa: E731
        return loss, gather(labels), gather(pred), gather(scores), gather(idx)

    def evaluate():
        total, labels, preds, scores, order = 0.0, [], [], [], []
        for x, y, i in ds:
            loss, lab, pred, score, idx = eval_step(x, y, i)
            total += float(loss)
            labels.append(lab.numpy())
            preds.append(pred.numpy())
            scores.append(score.numpy())
            order.append(idx.numpy())
        if not order:
            raise ValueError("the evaluation data set is empty")
        idx = np.concatenate(order)
        n = len(idx)
        if not classifier:
            return total / n, None, None, None
        out_labels, out_pred = np.empty(n, np.int64), np.empty(n, np.int64)
        out_labels[idx], out_pred[idx] = np.concatenate(labels), np.concatenate(preds)
        all_scores = np.concatenate(scores)
        out_scores = np.empty_like(all_scores)
        out_scores[idx] = all_scores
        return total / n, out_labels, out_pred, out_scores

    return evaluate
