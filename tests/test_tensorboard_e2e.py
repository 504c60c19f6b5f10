"""What TensorBoard itself shows: a real server over loopback and a real headless browser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.parse

import pytest

from conftest import FIXTURE, ROOT, load_events, scalars
from tbkit.testing import get, launch_chromium, subprocess_env, tensorboard_server

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
    return root


@pytest.fixture(scope="module")
def server(logdir):
    def has_the_runs(base):
        return {"fx/train", "fx/validation", "fx/test"} <= set(get(base + "/data/runs", timeout=5))

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
    """The Custom Scalars layout: one chart per layer, serving its gradient norms and
    update ratios; the Text dashboard: one `health` text per validation."""
    layout = get(server + "/data/plugin/custom_scalars/layout")
    [category] = layout["category"]
    charts = {c["title"]: c["multiline"]["tag"][0] for c in category["chart"]}
    assert list(charts) == [*LAYERS, "model"]
    query = urllib.parse.urlencode({"run": "fx/train", "tag": charts["layer_fc1"]})
    data = get(server + "/data/plugin/custom_scalars/scalars?" + query)
    series = data["tag_to_events"]
    assert data["regex_valid"] and set(series) == {
        f"layer_fc1/{v}/{s}"
        for v in ("weights", "biases")
        for s in ("gradient_norm", "update_ratio")
    }
    assert [e[1] for e in series["layer_fc1/weights/gradient_norm"]] == list(range(10, 61, 10))
    assert all(e[2] > 0 for events in series.values() for e in events)
    assert get(server + "/data/plugin/text/tags")["fx/train"] == ["health"]
    query = urllib.parse.urlencode({"run": "fx/train", "tag": "health"})
    texts = get(server + "/data/plugin/text/text?" + query)
    assert [t["step"] for t in texts] == list(range(10, 61, 10))
    assert all("no findings" in t["text"] for t in texts)


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
