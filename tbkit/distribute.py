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


def make_train_step(strategy, model, optimizer, window: tf.Variable, global_batch: int):
    """A compiled step: forward, backward, update; returns (loss, batch accuracy).

    `window` accumulates (sum of loss, sum of accuracy, count) so the host never
    syncs on a step it does not log.
    """

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        correct = tf.reduce_sum(
            tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32), y), tf.float32)
        )
        return loss, correct

    @tf.function(reduce_retracing=True)
    def train_step(x, y):
        loss, correct = strategy.run(replica_step, args=(x, y))
        loss = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        acc = strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None) / global_batch
        window.assign_add(tf.stack([loss, acc, 1.0]))
        return loss, acc

    return train_step


def make_evaluator(strategy, model, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000):
    """Returns `evaluate() -> (mean loss, predictions in data-set order)`."""
    n = len(images)
    ds = tf.data.Dataset.from_tensor_slices(
        (images, labels.astype(np.int32), np.arange(n, dtype=np.int64))
    )
    ds = ds.batch(batch_size).map(
        lambda x, y, i: (tf.cast(x, tf.float32)[..., tf.newaxis] / 255.0, y, i)
    )
    ds = distribute(strategy, without_autotune(ds.cache().prefetch(2)))

    def replica_eval(x, y, i):
        logits = model(x, training=False)
        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        return loss, tf.argmax(logits, 1, output_type=tf.int32), i

    @tf.function(reduce_retracing=True)
    def eval_step(x, y, i):
        loss, pred, idx = strategy.run(replica_eval, args=(x, y, i))
        loss = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        return loss, strategy.gather(pred, axis=0), strategy.gather(idx, axis=0)

    def evaluate():
        total, preds, order = 0.0, [], []
        for x, y, i in ds:
            loss, pred, idx = eval_step(x, y, i)
            total += float(loss)
            preds.append(pred.numpy())
            order.append(idx.numpy())
        out = np.empty(n, dtype=np.int64)
        out[np.concatenate(order)] = np.concatenate(preds)
        return total / n, out

    return evaluate
