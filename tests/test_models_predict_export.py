"""Models by name, predictions on people's own digit images, and the export for serving (#24).

Each network (`--model cnn|lenet|mlp`) trains through the whole pipeline on the fixture;
`predict` agrees with the model's own prediction on the original 28x28 digit for people-made
pictures of the same digits (dark on light, larger, off-centre, JPEG); the exported SavedModel,
loaded in an interpreter that never imports tbkit, gives the restored checkpoint's
probabilities; bad input is one line, a non-zero exit, and nothing half-written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import FIXTURE, ROOT, decode_image_events, load_events, scalars
from helpers import person_made, subprocess_env

pytestmark = pytest.mark.slow

MODELS = ("cnn", "lenet", "mlp")


def cli(*args, cwd=None, timeout=600):
    return subprocess.run([sys.executable, os.path.join(ROOT, "train_mnist.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd or ROOT,
                          env=subprocess_env())  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One short fixture run of each network: `{model: run directory}`."""
    logdir = tmp_path_factory.mktemp("models")
    out = {}
    for model in MODELS:
        r = cli("--logdir", logdir, "--run-name", model, "--model", model, "--data-dir", FIXTURE,
                "--validation-size", 100, "--num-iterations", 150, "--eval-every", 50,
                "--summary-every", 50, "--image-every", 50, "--projector-examples", 40,
                "--seed", 1)  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        out[model] = logdir / model
    return out


def fixture_test_images():
    from tbkit.datasets import mnist

    return mnist.load(FIXTURE, validation_size=100, log=lambda _: None).test_images


@pytest.mark.parametrize(
    "model, tags, filters",
    [
        ("lenet", {"layer_conv1/weights/mean", "layer_fc3/biases/histogram",
                   "layer_fc2/activations/dead_fraction"}, ["layer_conv1", "layer_conv2"]),
        ("mlp", {"hidden1/weights/stddev", "hidden2/biases/histogram", "softmax_linear/weights/max",
                 "hidden1/activations/dead_fraction"}, []),
    ],
)  # fmt: skip
def test_each_network_runs_through_the_pipeline(runs, model, tags, filters):
    run = runs[model]
    config = json.loads((run / "config.json").read_text())
    assert config["flags"]["model"] == model
    train = load_events(str(run / "train"))
    assert tags <= set(train.Tags()["tensors"])
    for layer in filters:  # a filter grid for each convolution, none for the MLP
        assert decode_image_events(train, f"{layer}/filters")
    assert not [t for t in train.Tags()["tensors"] if t.endswith("/filters")][len(filters) :]
    val = load_events(str(run / "validation"))
    assert list(scalars(val, "accuracy")) == [50, 100, 150]
    assert max(scalars(val, "accuracy").values()) > 0.5  # chance is 0.1
    assert (run / "checkpoints" / "best").is_dir() and (run / "test").is_dir()
    # The projector embeds the input of the output layer: 84 values for LeNet, 32 for the MLP.
    embedding = (run / "validation" / "projector_config.pbtxt").read_text()
    assert f"tensor_shape: {84 if model == 'lenet' else 32}" in embedding
    # The network is part of the run's trajectory: a resume with another is refused.
    other = "cnn" if model != "cnn" else "mlp"
    r = cli("--logdir", run.parent, "--run-name", model, "--model", other, "--data-dir", FIXTURE,
            "--validation-size", 100, "--num-iterations", 200)  # fmt: skip
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and f"model={model}" in lines[0], r.stderr


def test_the_network_is_a_searchable_setting():
    from tbkit.app import settings

    assert "model" not in settings.search_space()  # not searched unless asked
    space = settings.search_space({"model": "cnn,mlp"})
    assert space["model"].values == ("cnn", "mlp")
    with pytest.raises(ValueError, match="--domain model: 'vgg' is not one of cnn, lenet, mlp"):
        settings.search_space({"model": "cnn,vgg"})


def test_predict_agrees_with_the_model_on_people_made_pictures(runs, tmp_path):
    from tbkit.app.predict import probabilities
    from tbkit.app.restore import load_best

    images = fixture_test_images()[:200]
    rng = np.random.default_rng(7)
    files = []
    for i, image in enumerate(images):
        data, ext = person_made(image, rng)
        path = tmp_path / f"digit{i:03d}.{ext}"
        path.write_bytes(data)
        files.append(path)
    r = cli("predict", runs["cnn"], *files, "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert doc["model"] == "cnn" and [p["file"] for p in doc["predictions"]] == list(
        map(str, files)
    )
    assert all(
        len(p["top"]) == 3 and p["top"][0]["digit"] == p["digit"] for p in doc["predictions"]
    )
    own = probabilities(load_best(runs["cnn"]).model, images).argmax(axis=1)
    agree = np.mean([p["digit"] == o for p, o in zip(doc["predictions"], own, strict=True)])
    assert agree >= 0.97, agree
    # The plain output: one line per file with its digit and the top-3 probabilities.
    plain = cli("predict", runs["cnn"], files[0])
    assert plain.returncode == 0 and plain.stdout.startswith(f"{files[0]}: {own[0]}  (")


def test_predict_reads_idx_and_npy_arrays_and_names_each_bad_file(runs, tmp_path):
    from PIL import Image

    from tbkit.app.predict import probabilities
    from tbkit.app.restore import load_best
    from tbkit.datasets import idx

    images = fixture_test_images()[:5]
    np.save(tmp_path / "five.npy", images.astype(np.float32) / 255.0)
    (tmp_path / "five-idx3-ubyte").write_bytes(idx.encode_idx(images))
    Image.new("L", (60, 60), 245).save(tmp_path / "empty.png")
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    np.save(tmp_path / "wrong.npy", np.zeros((2, 32, 32)))
    bad = ["empty.png", "junk.jpg", "wrong.npy", "missing.png"]
    r = cli("predict", runs["mlp"], "five.npy", *bad, "five-idx3-ubyte", cwd=tmp_path)
    assert r.returncode == 1
    errors = r.stderr.strip().splitlines()
    assert len(errors) == len(bad) and all(b in e for b, e in zip(bad, errors, strict=True))
    assert "no digit" in errors[0] and "cannot read" in errors[1] and "(n, 28, 28)" in errors[2]
    own = probabilities(load_best(runs["mlp"]).model, images).argmax(axis=1)
    lines = r.stdout.strip().splitlines()
    want = [f"five.npy[{i}]: {d}" for i, d in enumerate(own)]
    want += [f"five-idx3-ubyte[{i}]: {d}" for i, d in enumerate(own)]
    assert [ln.split("  (")[0] for ln in lines] == want


def test_a_run_without_best_or_of_another_network_is_one_line(runs, tmp_path):
    import shutil

    empty = tmp_path / "empty-run"
    shutil.copytree(runs["mlp"], empty)
    shutil.rmtree(empty / "checkpoints" / "best")
    (empty / "checkpoints" / "best").mkdir()
    liar = tmp_path / "liar"
    shutil.copytree(runs["lenet"], liar)
    config = json.loads((liar / "config.json").read_text())
    config["flags"]["model"] = "cnn"
    (liar / "config.json").write_text(json.dumps(config))
    img = tmp_path / "d.png"
    from PIL import Image

    Image.fromarray(255 - fixture_test_images()[0]).save(img)
    cases = [(("predict", empty, img), "no best checkpoint"),
             (("export", liar, tmp_path / "out"), "different architecture"),
             (("predict", tmp_path / "nowhere", img), "not a tbkit run directory")]  # fmt: skip
    for args, words in cases:
        r = cli(*args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1 and len(lines) == 1 and words in lines[0], r.stderr
        assert r.stdout == "" and not (tmp_path / "out").exists()


FRESH = textwrap.dedent(
    """
    import json, sys
    import numpy as np, tensorflow as tf, keras
    images = np.load(sys.argv[1])
    out = {}
    for path in sys.argv[2:]:
        loaded = tf.saved_model.load(path)
        one = out[path] = {}
        for name in ("serving_default", "serving_channels"):
            sig = loaded.signatures[name]
            spec = sig.structured_input_signature[1]["images"]
            x = images if name == "serving_default" else images[..., None]
            res = sig(images=tf.constant(x))
            one[name] = {"shape": spec.shape.as_list(), "dtype": spec.dtype.name,
                         "outputs": sorted(sig.structured_outputs),
                         "probabilities": res["probabilities"].numpy().tolist(),
                         "classes": res["classes"].numpy().tolist()}
        one["keras"] = keras.saving.load_model(path + "/model.keras").predict(
            images, verbose=0).tolist()
    out["tbkit_imported"] = any(m.split(".")[0] == "tbkit" for m in sys.modules)
    print(json.dumps(out))
    """
)


def test_the_exports_serve_the_checkpoints_probabilities_without_tbkit(runs, tmp_path):
    from tbkit.app.export import export_run
    from tbkit.app.predict import probabilities
    from tbkit.app.restore import load_best
    from tbkit.loop.export import ExportError

    outs = {m: tmp_path / f"served-{m}" for m in MODELS}
    r = cli("export", runs["lenet"], outs["lenet"])  # the command, once
    assert r.returncode == 0, r.stderr[-3000:]
    assert "uint8 [batch, 28, 28] -> probabilities float32 [batch, 10]" in r.stdout
    for m in ("cnn", "mlp"):  # the same function the command calls
        assert export_run(runs[m], outs[m])["model"] == m
    images = fixture_test_images()
    np.save(tmp_path / "test.npy", images)
    fresh = subprocess.run([sys.executable, "-c", FRESH, str(tmp_path / "test.npy"),
                            *map(str, outs.values())],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path,
                           env=dict(subprocess_env(), PYTHONPATH=""))  # fmt: skip
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    got = json.loads(fresh.stdout.strip().splitlines()[-1])
    assert got["tbkit_imported"] is False
    for m, out_dir in outs.items():
        want = probabilities(load_best(runs[m]).model, images)
        one = got[str(out_dir)]
        for name, shape in (("serving_default", [None, 28, 28]),
                            ("serving_channels", [None, 28, 28, 1])):  # fmt: skip
            sig = one[name]
            assert sig["shape"] == shape and sig["dtype"] == "uint8"
            assert sig["outputs"] == ["classes", "probabilities"]
            np.testing.assert_allclose(sig["probabilities"], want, atol=1e-5)
            assert sig["classes"] == want.argmax(axis=1).tolist()
        np.testing.assert_allclose(one["keras"], want, atol=1e-5)
    # A second export into the same directory is refused; the first is untouched.
    listing = sorted(os.listdir(outs["mlp"]))
    with pytest.raises(ExportError, match="exists and is not empty"):
        export_run(runs["mlp"], outs["mlp"])
    assert sorted(os.listdir(outs["mlp"])) == listing
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".served")]  # no temp left
    # A target that cannot be written (under a file): refused, nothing written anywhere.
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ExportError, match="cannot write"):
        export_run(runs["mlp"], tmp_path / "a-file" / "out")
    assert (tmp_path / "a-file").read_text() == "x"


def test_trainer_export_of_any_model(tmp_path):
    """The library door: `Trainer.export(path)` writes the best checkpoint with the training
    data's signature; a float-input model of two inputs' worth of features, not MNIST."""
    import keras
    import tensorflow as tf

    import tbkit

    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 6)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32")
    train = tf.data.Dataset.from_tensor_slices((x[:384], y[:384])).repeat().batch(32)
    val = tf.data.Dataset.from_tensor_slices((x[384:], y[384:])).batch(128)
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(
        keras.layers.Dense(8, activation="relu", name="hidden")(inputs)))  # fmt: skip
    trainer = tbkit.Trainer(model, keras.optimizers.Adam(1e-2),
                            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                            str(tmp_path / "run"), eval_every=20, projector_examples=0,
                            progress=False, log=lambda _: None)  # fmt: skip
    result = trainer.fit(train, val, steps=60)
    path = trainer.export(tmp_path / "export")
    assert path == str(tmp_path / "export")
    loaded = tf.saved_model.load(path)
    sig = loaded.signatures["serving_default"]
    [spec] = sig.structured_input_signature[1].values()
    assert spec.shape.as_list() == [None, 6] and spec.dtype == tf.float32
    [name] = sig.structured_input_signature[1]
    probs = sig(**{name: tf.constant(x[384:])})["probabilities"].numpy()
    restored = keras.models.clone_model(model)
    tf.train.Checkpoint(model=restored).read(result.best_checkpoint).expect_partial()
    np.testing.assert_allclose(probs, tf.nn.softmax(restored(x[384:])).numpy(), atol=1e-6)
    with pytest.raises(tbkit.ExportError, match="exists and is not empty"):
        trainer.export(tmp_path / "export")
    # signature= and outputs= change what is served: a named input, the raw logits.
    named = tf.TensorSpec([None, 6], tf.float32, name="features")
    raw = tf.saved_model.load(trainer.export(tmp_path / "raw", named, outputs="raw"))
    sig = raw.signatures["serving_default"]
    assert list(sig.structured_input_signature[1]) == ["features"]
    assert list(sig.structured_outputs) == ["outputs"]
    logits = sig(features=tf.constant(x[384:]))["outputs"].numpy()
    np.testing.assert_allclose(logits, restored(x[384:]).numpy(), atol=1e-6)
