"""Regenerates the README's TensorBoard pictures from a real run.

Usage: python docs/make_screenshots.py --logdir logs [--run NAME] [--out docs]

Starts `tensorboard --logdir LOGDIR` on a free loopback port, drives Debian's
headless Chromium with Playwright, and saves one small PNG per view:

  docs/scalars.png        train vs validation accuracy on one chart
  docs/distributions.png  the distribution of layer_fc1's weights over time
  docs/filters.png        the layer_conv1 filter grid
  docs/confusion.png      the test-set confusion matrix of the best checkpoint

Needs `chromium` (apt-get install chromium) and `playwright` (the test extra).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def tensorboard(logdir: str):
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            logdir,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(base + "/data/runs", timeout=5).read()
                break
            time.sleep(0.5)
        else:
            raise SystemExit("TensorBoard did not start")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _filter_tags(page, pattern: str) -> None:
    box = page.locator("tf-tag-filterer input").locator("visible=true").first
    box.fill(pattern)
    page.wait_for_timeout(1500)


def _only_run(page, run: str) -> None:
    box = (
        page.get_by_role("textbox", name="Write a regex to filter runs")
        .locator("visible=true")
        .first
    )
    box.fill(run)
    page.wait_for_timeout(1500)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="logs")
    parser.add_argument("--run", default=None, help="run name (default: the last one in --logdir)")
    parser.add_argument("--out", default="docs")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    runs = sorted(
        d for d in os.listdir(args.logdir) if os.path.isdir(os.path.join(args.logdir, d, "train"))
    )
    if not runs:
        raise SystemExit(
            f"no runs in {args.logdir}: run train_mnist.py --logdir {args.logdir} first"
        )
    run = args.run or runs[-1]
    os.makedirs(args.out, exist_ok=True)
    with (
        tensorboard(args.logdir) as base,
        sync_playwright() as p,
        tempfile.TemporaryDirectory() as profile,
    ):
        ctx = p.chromium.launch_persistent_context(
            profile,
            executable_path=args.chromium,
            headless=True,
            args=FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        page = ctx.new_page()

        def card(hash_: str, run_regex: str, tag_regex: str, element: str, text: str, name: str):
            page.goto(f"{base}/#{hash_}", wait_until="networkidle")
            _only_run(page, run_regex)
            _filter_tags(page, tag_regex)
            target = page.locator(element).filter(has=page.get_by_text(text, exact=True)).first
            target.wait_for(timeout=30_000)
            page.wait_for_timeout(2500)  # let charts and images finish drawing
            path = os.path.join(args.out, name)
            target.screenshot(path=path)
            print(f"wrote {path}")

        card(
            "scalars",
            f"^{run}/(train|validation)$",
            "^accuracy$",
            "tf-scalar-card",
            "tag: accuracy",
            "scalars.png",
        )
        card(
            "distributions",
            f"^{run}/train$",
            "^layer_fc1/weights/histogram$",
            "tf-distribution-loader",
            "layer_fc1/weights/histogram",
            "distributions.png",
        )
        card(
            "images",
            f"^{run}/train$",
            "^layer_conv1/filters$",
            "tf-image-loader",
            "tag: layer_conv1/filters",
            "filters.png",
        )
        card(
            "images",
            f"^{run}/test$",
            "^confusion_matrix$",
            "tf-image-loader",
            "tag: confusion_matrix",
            "confusion.png",
        )
        ctx.close()


if __name__ == "__main__":
    main()
