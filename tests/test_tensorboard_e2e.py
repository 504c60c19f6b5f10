"""What TensorBoard itself shows: a real server over loopback and a real headless browser."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import urllib.parse

import numpy as np
import pytest

from conftest import FIXTURE, ROOT, load_events, scalars
from helpers import get, launch_chromium, subprocess_env, tensorboard_server

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

LAYERS = ("layer_conv1", "layer_conv2", "layer_fc1", "layer_fc2")
ARTIFACTS = os.path.join(ROOT, "test-artifacts")


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tb_logs")
    args = ["--data-dir", FIXTURE, "--validation-size", "500", "--num-iterations", "60",
            "--eval-every", "10", "--summary-every", "10", "--seed", "3",
            "--profile-steps", "20:22"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train_mnist.py"), "--logdir", str(root), "--run-name", "fx", *args],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=subprocess_env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    fit_with_the_callback(root / "fit")
    return root


COLOURS = ["red", "green", "blue"]


def colour_blobs(n: int, seed: int):
    """16x16 RGB pictures whose class is the colour of a blob at a random place."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n).astype(np.int32)
    x = rng.uniform(0, 0.3, size=(n, 16, 16, 3)).astype(np.float32)
    for i, (r, c) in enumerate(rng.integers(0, 10, size=(n, 2))):
        x[i, r : r + 6, c : c + 6, y[i]] += 0.5
    return x, y


def blob_model():
    """Not the MNIST CNN: BatchNorm, global pooling, a softmax output."""
    import keras

    keras.utils.set_random_seed(5)
    inp = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(6, 3, activation="relu")(inp)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Dense(8, activation="relu", name="features")(h)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="colour")(h))
    model.compile(
        keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    return model


def fit_with_the_callback(run_dir):
    import tbkit

    x, y = colour_blobs(240, 0)
    vx, vy = colour_blobs(90, 1)
    model = blob_model()
    callback = tbkit.keras.TensorBoardRun(
        str(run_dir), validation_data=(vx, vy), class_names=COLOURS, projector_examples=64,
        restore_best_weights=False, log=lambda _: None,
        dynamics=False,  # its Custom Scalars layout would join the fixture run's in one layout
    )  # fmt: skip
    model.fit(x, y, batch_size=30, epochs=3, validation_data=(vx, vy), verbose=0,
              callbacks=[callback])  # fmt: skip
    # The last epoch's weights (those of its validation), for the tests to predict with.
    model.save_weights(str(run_dir / "last.weights.h5"))


@pytest.fixture(scope="module")
def server(logdir):
    def has_the_runs(base):
        runs = {"fx/train", "fx/validation", "fx/test", "fit/validation"}
        return runs <= set(get(base + "/data/runs", timeout=5))

    with tensorboard_server(str(logdir), ready=has_the_runs, reload_interval=1) as base:
        yield base


def test_runs_and_scalars(server, logdir):
    tags = get(server + "/data/plugin/scalars/tags")
    for run in ("fx/train", "fx/validation"):
        assert {"loss", "accuracy"} <= set(tags[run])
    assert "accuracy" in tags["fx/test"]
    served = get(
        server
        + "/data/plugin/scalars/scalars?"
        + urllib.parse.urlencode({"run": "fx/validation", "tag": "accuracy"})
    )
    logged = scalars(load_events(str(logdir / "fx" / "validation")), "accuracy")
    assert {step: value for _, step, value in served} == pytest.approx(logged)


def test_profile_tab_lists_the_traced_run(server):
    """`--profile-steps` wrote a trace where the Profile tab (tbkit[profile]) finds it."""
    runs = get(server + "/data/plugin/profile/runs")
    assert len(runs) == 1 and runs[0].startswith("fx/train/"), runs
    tools = get(
        server + "/data/plugin/profile/run_tools?" + urllib.parse.urlencode({"run": runs[0]})
    )
    assert any(t.startswith("trace_viewer") for t in tools) and "overview_page" in tools


def test_histograms_and_distributions(server):
    tags = get(server + "/data/plugin/histograms/tags")["fx/train"]
    expected = {f"{L}/{V}/histogram" for L in LAYERS for V in ("weights", "biases")} | {
        f"{L}/activations" for L in LAYERS
    }
    assert expected <= set(tags)
    query = urllib.parse.urlencode({"run": "fx/train", "tag": "layer_fc1/weights/histogram"})
    hist = get(server + "/data/plugin/histograms/histograms?" + query)
    assert [h[1] for h in hist] == [10, 20, 30, 40, 50, 60]
    dist = get(server + "/data/plugin/distributions/distributions?" + query)
    assert len(dist) == 6


def test_images_decode_as_png(server):
    tags = get(server + "/data/plugin/images/tags")
    assert {"layer_conv1/filters", "layer_conv2/filters"} <= set(tags["fx/train"])
    assert {"confusion_matrix", "example_errors"} <= set(tags["fx/validation"])
    assert "confusion_matrix" in tags["fx/test"]
    entries = get(
        server
        + "/data/plugin/images/images?"
        + urllib.parse.urlencode({"run": "fx/validation", "tag": "confusion_matrix"})
    )
    png = get(server + "/data/plugin/images/individualImage?" + entries[-1]["query"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import io

    from PIL import Image

    assert Image.open(io.BytesIO(png)).size[0] > 200


def test_graph_of_the_train_step(server):
    info = get(server + "/data/plugin/graphs/info")
    assert info["fx/train"]["run_graph"]
    graph = get(
        server
        + "/data/plugin/graphs/graph?"
        + urllib.parse.urlencode({"run": "fx/train", "conceptual": "false"})
    )
    text = graph.decode() if isinstance(graph, bytes) else json.dumps(graph)
    for layer in LAYERS:
        assert layer in text


def test_hparams(server):
    experiment = get(server + "/data/plugin/hparams/experiment", {"experimentName": ""})
    names = {h["name"] for h in experiment["hparamInfos"]}
    assert {"batch_size", "learning_rate", "eval_every", "require_improvement", "seed"} <= names
    metrics = {(m["name"]["group"], m["name"]["tag"]) for m in experiment["metricInfos"]}
    assert {("validation", "accuracy"), ("test", "accuracy")} <= metrics
    groups = get(server + "/data/plugin/hparams/session_groups", {
        "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [], "startIndex": 0, "sliceSize": 10,
    })  # fmt: skip
    [group] = groups["sessionGroups"]
    assert group["name"] == "fx" and group["hparams"]["batch_size"] == 64


def test_training_dynamics_layout_and_health(server):
    """The Custom Scalars layout: one chart per quantity (one scale each), every layer a
    series; the Text dashboard: one `health` text per validation."""
    layout = get(server + "/data/plugin/custom_scalars/layout")
    [category] = layout["category"]
    charts = {c["title"]: c["multiline"]["tag"][0] for c in category["chart"]}
    assert list(charts)[:2] == ["gradient norms", "update ratios"]
    for title, quantity in (("gradient norms", "gradient_norm"), ("update ratios", "update_ratio")):
        query = urllib.parse.urlencode({"run": "fx/train", "tag": charts[title]})
        data = get(server + "/data/plugin/custom_scalars/scalars?" + query)
        series = data["tag_to_events"]
        assert data["regex_valid"] and set(series) == {
            f"{layer}/{v}/{quantity}" for layer in LAYERS for v in ("weights", "biases")
        }
        assert [e[1] for e in series[f"layer_fc1/weights/{quantity}"]] == list(range(10, 61, 10))
        assert all(e[2] > 0 for events in series.values() for e in events)
    assert get(server + "/data/plugin/text/tags")["fx/train"] == ["health"]
    query = urllib.parse.urlencode({"run": "fx/train", "tag": "health"})
    texts = get(server + "/data/plugin/text/text?" + query)
    assert [t["step"] for t in texts] == list(range(10, 61, 10))
    assert all("no findings" in t["text"] for t in texts)


# --- issue 16: per-class scalars, PR curves and the projector, as the plugins serve them ---


def fx_predictions(logdir, checkpoint: str):
    """The fixture run's validation images and labels, and the MNIST CNN restored from
    `checkpoints/<checkpoint>` with its outputs and `layer_fc1` activations on them."""
    import tensorflow as tf

    import tbkit
    from tbkit.app.cnn import MnistCNN

    data = tbkit.datasets.mnist.load(FIXTURE, validation_size=500, log=lambda _: None)
    model = MnistCNN()
    model(tf.zeros((1, 28, 28, 1)))
    path = tf.train.latest_checkpoint(str(logdir / "fx" / "checkpoints" / checkpoint))
    tf.train.Checkpoint(model=model).restore(path).expect_partial()
    images = data.validation_images.astype(np.float32)[..., None] / 255.0
    out, acts = model.forward(images, training=False)
    return data.validation_labels, out.numpy(), acts["layer_fc1"].numpy()


def served_curves(server, run: str, tag: str):
    query = urllib.parse.urlencode({"run": run, "tag": tag})
    return get(server + "/data/plugin/pr_curves/pr_curves?" + query)[run]


def test_scalars_plugin_lists_the_per_class_tags(server):
    tags = get(server + "/data/plugin/scalars/tags")
    for run, names in (
        ("fx/validation", range(10)),
        ("fx/test", range(10)),
        ("fit/validation", COLOURS),
    ):
        for name in names:
            assert {f"per_class/accuracy/{name}", f"per_class/precision/{name}"} <= set(
                tags[run]
            ), run


def test_pr_curves_plugin_serves_a_curve_per_class_at_its_cadence(server, logdir):
    from tbkit.summary.classes import per_class, pr_curve, probabilities

    tags = get(server + "/data/plugin/pr_curves/tags")
    assert set(tags["fx/validation"]) == {f"pr_curves/{c}" for c in range(10)}
    assert set(tags["fit/validation"]) == {f"pr_curves/{c}" for c in COLOURS}
    # Step 60 is the last validation, with the weights of the final (latest) checkpoint.
    labels, out, _ = fx_predictions(logdir, "latest")
    probs = probabilities(out)
    for c in range(10):
        curves = served_curves(server, "fx/validation", f"pr_curves/{c}")
        # At most every --image-every (500) iterations, and the last validation's.
        assert [e["step"] for e in curves] == [10, 60]
        expected = pr_curve(labels, probs, c)
        end = len(curves[-1]["precision"])  # the plugin trims thresholds nothing reaches
        np.testing.assert_allclose(curves[-1]["true_positives"], expected[0, :end])
        np.testing.assert_allclose(curves[-1]["precision"], expected[4, :end], rtol=1e-5)
        np.testing.assert_allclose(curves[-1]["recall"], expected[5, :end], rtol=1e-5)

    model = blob_model()
    model.load_weights(str(logdir / "fit" / "last.weights.h5"))
    vx, vy = colour_blobs(90, 1)
    probs = model.predict(vx, verbose=0)
    for c, name in enumerate(COLOURS):
        curves = served_curves(server, "fit/validation", f"pr_curves/{name}")
        assert [e["step"] for e in curves] == [8, 16, 24]  # one per epoch (8 batches each)
        expected = pr_curve(vy, probs, c)
        end = len(curves[-1]["recall"])
        np.testing.assert_allclose(curves[-1]["false_positives"], expected[1, :end])
        np.testing.assert_allclose(curves[-1]["recall"], expected[5, :end], rtol=1e-5)
    # The callback's per-class scalars, from the same predictions.
    recall, precision = per_class(vy, np.argmax(probs, axis=1), 3)
    for c, name in enumerate(COLOURS):
        for kind, values in (("accuracy", recall), ("precision", precision)):
            query = urllib.parse.urlencode(
                {"run": "fit/validation", "tag": f"per_class/{kind}/{name}"}
            )
            served = get(server + "/data/plugin/scalars/scalars?" + query)
            assert served[-1][1] == 24 and served[-1][2] == pytest.approx(values[c], abs=1e-6)


def projector_get(server, route: str, **query):
    return get(server + f"/data/plugin/projector/{route}?" + urllib.parse.urlencode(query))


def test_projector_plugin_serves_tensor_metadata_and_sprite(server, logdir):
    from PIL import Image

    assert {"fx/validation", "fit/validation"} <= set(projector_get(server, "runs"))
    best = max(
        (v, -s)
        for s, v in scalars(load_events(str(logdir / "fx" / "validation")), "accuracy").items()
    )
    name = f"layer_fc1 @ best step {-best[1]}"
    info = projector_get(server, "info", run="fx/validation")
    assert info["embeddings"][0]["tensorName"] == name

    tensor = np.frombuffer(
        projector_get(server, "tensor", run="fx/validation", name=name), np.float32
    )
    metadata = projector_get(server, "metadata", run="fx/validation", name=name).decode()
    rows = [line.split("\t") for line in metadata.splitlines()]
    assert rows[0] == ["label", "prediction", "correct", "index"] and len(rows) == 501  # all 500
    index = np.array([int(r[3]) for r in rows[1:]])
    labels, out, fc1 = fx_predictions(logdir, "best")
    tensor = tensor.reshape(500, 128)  # examples x embedding width
    np.testing.assert_allclose(tensor, fc1[index], rtol=1e-4, atol=1e-5)
    assert [int(r[0]) for r in rows[1:]] == labels[index].tolist()
    assert [int(r[1]) for r in rows[1:]] == np.argmax(out[index], axis=1).tolist()
    sprite = Image.open(
        io.BytesIO(projector_get(server, "sprite_image", run="fx/validation", name=name))
    )
    assert sprite.size == (23 * 28, 23 * 28)  # ceil(sqrt(500)) thumbnails a side

    # The callback's run: the best epoch's weights (training ended on the last one).
    info = projector_get(server, "info", run="fit/validation")
    (embedding,) = info["embeddings"]
    assert embedding["tensorName"].startswith("features @ best epoch ")
    assert [int(d) for d in embedding["tensorShape"]] == [64, 8]
    raw = projector_get(server, "tensor", run="fit/validation", name=embedding["tensorName"])
    assert len(raw) == 64 * 8 * 4
    sprite = projector_get(
        server, "sprite_image", run="fit/validation", name=embedding["tensorName"]
    )
    assert Image.open(io.BytesIO(sprite)).mode == "RGB"


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("Debian's chromium is not installed")
    return path


@pytest.fixture
def page(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        context = launch_chromium(p, tmp_path / "profile", chromium_path())
        try:
            yield context.new_page()
        finally:
            context.close()


def shot(page, name: str) -> None:
    os.makedirs(ARTIFACTS, exist_ok=True)
    page.screenshot(path=os.path.join(ARTIFACTS, name))


def test_browser_scalars_page_shows_accuracy_chart(server, page):
    page.goto(server + "/#scalars", wait_until="networkidle")
    card = page.locator("tf-scalar-card").filter(has=page.get_by_text("tag: accuracy", exact=True))
    card.first.wait_for(timeout=30_000)
    # The drawn lines: one path per run (train and validation) in the card's line plot.
    lines = card.first.locator(".line-plot:not(.ghost) path")
    lines.first.wait_for(timeout=30_000)
    heights = [(e.bounding_box() or {}).get("height", 0) for e in lines.all()]
    assert len([h for h in heights if h > 20]) >= 2, heights
    shot(page, "scalars.png")


def test_browser_images_page_shows_confusion_matrix(server, page):
    page.goto(server + "/#images", wait_until="networkidle")
    loader = page.locator("tf-image-loader").filter(
        has=page.get_by_text("tag: confusion_matrix", exact=True)
    )
    loader.first.wait_for(timeout=30_000)
    image = loader.first.locator("img")
    image.wait_for(timeout=30_000)
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 200", arg=image.element_handle(), timeout=30_000
    )
    shot(page, "images.png")
    assert os.path.getsize(os.path.join(ARTIFACTS, "images.png")) > 10_000


def test_browser_pr_curves_tab_draws_the_curves(server, page):
    page.goto(server + "/#pr_curves", wait_until="networkidle")
    card = page.locator("tf-pr-curve-card").filter(
        has=page.get_by_text("tag: pr_curves/7", exact=True)
    )
    card.first.wait_for(timeout=30_000)
    lines = card.first.locator(".line-plot:not(.ghost) path")
    lines.first.wait_for(timeout=30_000)
    heights = [(e.bounding_box() or {}).get("height", 0) for e in lines.all()]
    assert any(h > 20 for h in heights), heights
    shot(page, "pr_curves.png")


def test_browser_projector_tab_shows_the_embedding(server, page):
    page.goto(server + "/#projector", wait_until="networkidle")
    # The projector is a plugin page inside a plugin page (two iframes).
    frame = page.frame_locator("iframe").first.frame_locator("iframe").first
    status = frame.get_by_text("Dimension").first
    status.wait_for(timeout=60_000)
    for _ in range(120):  # "Points: 0" until the tensor has loaded
        text = " ".join(status.evaluate("e => e.parentElement.innerText").split())
        if not text.startswith("Points: 0 "):
            break
        page.wait_for_timeout(500)
    assert text in ("Points: 500 Dimension: 128", "Points: 64 Dimension: 8"), text
    frame.locator("paper-dropdown-menu").filter(has_text="Color by").first.click()
    frame.locator("paper-item").filter(has_text="label").locator("visible=true").first.click()
    # Coloured by label: the legend lists the classes (the first run: fit's colours, or digits).
    names = COLOURS if text.startswith("Points: 64 ") else ["0", "7", "9"]
    for name in names:
        frame.get_by_text(name, exact=True).locator("visible=true").first.wait_for(timeout=10_000)
    page.wait_for_timeout(1000)
    shot(page, "projector.png")
