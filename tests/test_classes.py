"""Per-class metrics (issue 16): values read back from the event files equal numpy's."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tbkit
from conftest import load_events, scalars
from tbkit.summary.classes import PR_THRESHOLDS, per_class, pr_curve, probabilities


def test_per_class_matches_the_confusion_matrix():
    labels = np.array([0, 0, 1, 1, 1, 2, 3])
    preds = np.array([0, 1, 1, 1, 0, 2, 2])
    recall, precision = per_class(labels, preds, 5)
    cm = tbkit.confusion_matrix(labels, preds, 5)
    np.testing.assert_allclose(recall[:4], np.diag(cm)[:4] / cm.sum(axis=1)[:4])
    assert np.isnan(recall[4])  # no examples of class 4
    np.testing.assert_allclose(precision, [1 / 2, 2 / 3, 1 / 2, 0.0, 0.0])  # 3, 4 never predicted


def test_trainer_writes_per_class_scalars_at_validation_and_test(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 6)).astype(np.float32)
    y = (np.argmax(x[:, :3], axis=1)).astype(np.int32)  # 3 learnable classes
    names = ["left", "mid dle", "right"]
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    trainer = tbkit.Trainer(model, keras.optimizers.SGD(0.2),
                            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                            tmp_path / "r", eval_every=10, summary_every=10, class_names=names,
                            progress=False, log=lambda _: None)  # fmt: skip
    train = tf.data.Dataset.from_tensor_slices((x[:160], y[:160])).batch(16).repeat()
    val = tf.data.Dataset.from_tensor_slices((x[160:], y[160:])).batch(32)
    trainer.fit(train, val, steps=20)

    # The last validation (step 20) saw the final weights.
    pred = np.argmax(model.predict(x[160:], verbose=0), axis=1)
    recall, precision = per_class(y[160:], pred, 3)
    acc = load_events(str(tmp_path / "r" / "validation"))
    for name, r, p in zip(["left", "mid_dle", "right"], recall, precision, strict=True):
        assert sorted(scalars(acc, f"per_class/accuracy/{name}")) == [10, 20]
        assert scalars(acc, f"per_class/accuracy/{name}")[20] == pytest.approx(r)
        assert scalars(acc, f"per_class/precision/{name}")[20] == pytest.approx(p)

    result = trainer.evaluate(val)
    recall, precision = per_class(result.labels, result.predictions, 3)
    test = load_events(str(tmp_path / "r" / "test"))
    for name, r, p in zip(["left", "mid_dle", "right"], recall, precision, strict=True):
        assert scalars(test, f"per_class/accuracy/{name}") == {result.step: pytest.approx(r)}
        assert scalars(test, f"per_class/precision/{name}") == {result.step: pytest.approx(p)}


def _pr_events(acc, tag):
    return {e.step: tf.make_ndarray(e.tensor_proto) for e in acc.Tensors(tag)}


def test_pr_curve_equals_tensorboards_reference_implementation():
    """Our counts are exactly what TensorBoard's own numpy PR-curve builder computes."""
    from tensorboard.plugins.pr_curve import summary as pr_summary

    rng = np.random.default_rng(1)
    logits = rng.normal(size=(500, 4)) * 3
    labels = rng.integers(0, 4, 500)
    probs = probabilities(logits)
    np.testing.assert_allclose(probs.sum(-1), 1.0)
    for cls in range(4):
        ours = pr_curve(labels, probs, cls, num_thresholds=PR_THRESHOLDS)
        theirs = pr_summary.pb(
            "x", labels == cls, probs[:, cls].astype(np.float32), num_thresholds=PR_THRESHOLDS
        )
        ref = tf.make_ndarray(theirs.value[0].tensor)
        np.testing.assert_allclose(ours[:4], ref[:4])  # tp, fp, tn, fn: exact counts
        np.testing.assert_allclose(ours[4:], ref[4:], rtol=1e-6)  # precision, recall
    # Outputs that are already probabilities are taken as they are.
    np.testing.assert_allclose(probabilities(probs), probs)


def test_trainer_writes_a_pr_curve_per_class_at_each_validation_and_test(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(240, 6)).astype(np.float32)
    y = (np.argmax(x[:, :3], axis=1)).astype(np.int32)
    names = ["left", "mid dle", "right"]
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    trainer = tbkit.Trainer(model, keras.optimizers.SGD(0.2),
                            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                            tmp_path / "r", eval_every=10, summary_every=10, class_names=names,
                            projector_examples=0, progress=False, log=lambda _: None)  # fmt: skip
    train = tf.data.Dataset.from_tensor_slices((x[:160], y[:160])).batch(16).repeat()
    val = tf.data.Dataset.from_tensor_slices((x[160:], y[160:])).batch(32)
    trainer.fit(train, val, steps=20)

    logits = model.predict(x[160:], verbose=0)  # the final weights: those of step 20
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    acc = load_events(str(tmp_path / "r" / "validation"))
    for cls, tag in enumerate(["left", "mid_dle", "right"]):
        curves = _pr_events(acc, f"pr_curves/{tag}")
        assert sorted(curves) == [10, 20]
        assert curves[20].shape == (6, PR_THRESHOLDS)
        positive = y[160:] == cls
        for i in (0, 10, 25, 40, 50):  # recount a few thresholds directly
            at = probs[:, cls] >= i / (PR_THRESHOLDS - 1) - 1e-7
            assert curves[20][0, i] == np.sum(at & positive)  # true positives
            assert curves[20][1, i] == np.sum(at & ~positive)  # false positives
        # Threshold 0 takes every example: recall 1, precision the class's share.
        assert curves[20][5, 0] == 1.0
        assert curves[20][4, 0] == pytest.approx(positive.mean())

    trainer.evaluate(val)
    test = load_events(str(tmp_path / "r" / "test"))
    assert {t for t in test.Tags()["tensors"] if t.startswith("pr_curves/")} == {
        "pr_curves/left", "pr_curves/mid_dle", "pr_curves/right"
    }  # fmt: skip


@pytest.mark.parametrize("image_every, steps", [(1, [10, 20, 30, 40, 50]), (20, [10, 30, 50]),
                                                (500, [10, 50])])  # fmt: skip
def test_pr_curves_follow_the_image_cadence_and_end_with_the_last_validation(
    tmp_path, image_every, steps
):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    trainer = tbkit.Trainer(model, keras.optimizers.SGD(0.1),
                            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                            tmp_path / "r", eval_every=10, summary_every=10,
                            image_every=image_every, projector_examples=0, progress=False,
                            log=lambda _: None)  # fmt: skip
    train = tf.data.Dataset.from_tensor_slices((x[:150], y[:150])).batch(16).repeat()
    trainer.fit(train, tf.data.Dataset.from_tensor_slices((x[150:], y[150:])).batch(50), steps=50)
    acc = load_events(str(tmp_path / "r" / "validation"))
    assert sorted(_pr_events(acc, "pr_curves/1")) == steps
    assert list(scalars(acc, "per_class/accuracy/1")) == [10, 20, 30, 40, 50]  # every validation
