"""The compiled train and eval steps, on one device or under a `tf.distribute` strategy.

TensorFlow does the distributing: `MirroredStrategy` (the devices of one
machine) and `MultiWorkerMirroredStrategy` (machines described by `TF_CONFIG`).
The global batch is split across replicas, the loss is averaged over the
global batch, and evaluation gathers every replica's predictions (with their
example indices, so the order is the data set's) before any metric is computed.
Only the chief writes summaries and keeps checkpoints.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from tbkit.datasets.pipeline import without_autotune
from tbkit.errors import TbkitError

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


def make_train_step(strategy, model, optimizer, loss_fn, window: tf.Variable, classifier: bool):
    """A compiled step: forward, backward, update; returns (loss, batch accuracy).

    The loss is averaged over the global batch (every replica's examples) plus
    the model's regularisation losses. `window` accumulates (sum of losses,
    correct predictions, examples, batches) so the host never syncs on a step
    it does not log. The graph groups the step's ops as `loss`, `metrics` and
    `optimizer` next to the model's own layer scopes.
    """

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            with tf.name_scope("loss"):
                per = per_example_loss(loss_fn, y, y_pred)
                if per.shape.rank == 0:  # already a mean over this replica's batch
                    loss = per / strategy.num_replicas_in_sync
                else:
                    loss = tf.nn.compute_average_loss(per)
                if model.losses:
                    loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        with tf.name_scope("optimizer"):
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        with tf.name_scope("metrics"):
            correct = _correct(y, y_pred) if classifier else tf.constant(0.0)
            count = tf.cast(tf.shape(tf.nest.flatten(y)[0])[0], tf.float32)
        return loss, correct, count

    @tf.function(reduce_retracing=True)
    def train_step(x, y):
        loss, correct, count = strategy.run(replica_step, args=(x, y))
        with tf.name_scope("metrics/"):  # absolute: the same group as the replica's metrics
            loss = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
            correct = strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None)
            count = strategy.reduce(tf.distribute.ReduceOp.SUM, count, axis=None)
            window.assign_add(tf.stack([loss, correct, count, 1.0]))
            return loss, correct / count

    return train_step


def with_indices(ds: tf.data.Dataset) -> tf.data.Dataset:
    """`(x, y)` batches -> `(x, y, i)` with each example's position in the data set."""

    def number(n, batch):
        x, y = batch
        size = tf.cast(tf.shape(tf.nest.flatten(y)[0])[0], tf.int64)
        return n + size, (x, y, n + tf.range(size, dtype=tf.int64))

    return ds.scan(tf.constant(0, tf.int64), number)


def make_evaluator(strategy, model, dataset: tf.data.Dataset, loss_fn, classifier: bool):
    """Returns `evaluate() -> (mean loss, labels, predictions)` over a batched `(x, y)` data set.

    Labels and predicted classes come back in data-set order, gathered from
    every replica; for a model that is not a classifier both are None.
    """
    ds = distribute(strategy, without_autotune(with_indices(dataset).prefetch(2)))

    def replica_eval(x, y, i):
        y_pred = model(x, training=False)
        loss = tf.reduce_sum(per_example_loss(loss_fn, y, y_pred))
        if classifier:
            pred = tf.reshape(tf.argmax(y_pred, axis=-1), [-1])
            labels = tf.cast(tf.reshape(y, [-1]), tf.int64)
        else:
            pred = labels = tf.zeros_like(i)
        return loss, labels, pred, i

    @tf.function(reduce_retracing=True)
    def eval_step(x, y, i):
        loss, labels, pred, idx = strategy.run(replica_eval, args=(x, y, i))
        loss = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        gather = lambda t: strategy.gather(t, axis=0)  # noqa: E731
        return loss, gather(labels), gather(pred), gather(idx)

    def evaluate():
        total, labels, preds, order = 0.0, [], [], []
        for x, y, i in ds:
            loss, lab, pred, idx = eval_step(x, y, i)
            total += float(loss)
            labels.append(lab.numpy())
            preds.append(pred.numpy())
            order.append(idx.numpy())
        if not order:
            raise ValueError("the evaluation data set is empty")
        idx = np.concatenate(order)
        n = len(idx)
        if not classifier:
            return total / n, None, None
        out_labels, out_pred = np.empty(n, np.int64), np.empty(n, np.int64)
        out_labels[idx], out_pred[idx] = np.concatenate(labels), np.concatenate(preds)
        return total / n, out_labels, out_pred

    return evaluate
