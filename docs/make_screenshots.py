"""Regenerates the README's TensorBoard pictures from a real run.

Usage: python docs/make_screenshots.py --logdir logs [--run NAME] [--out docs]

Starts `tensorboard --logdir LOGDIR` on a free loopback port, drives Debian's
headless Chromium with Playwright, and saves one small PNG per view:

  docs/scalars.png        train vs validation accuracy on one chart
  docs/distributions.png  the distribution of layer_fc1's weights over time
  docs/filters.png        the layer_conv1 filter grid
  docs/confusion.png      the test-set confusion matrix of the best checkpoint
  docs/dynamics.png       Custom Scalars: every layer's update ratio on one chart (one scale)
  docs/pr_curves.png      the validation PR curve of one digit at the last validation
  docs/projector.png      the Projector: layer_fc1 of the best checkpoint on 1,000
                          validation digits (PCA), their images as sprites, coloured by label
  docs/hparams.png        the HParams tab's parallel coordinates of a search (--search DIR:
                          its own TensorBoard, only that picture)
  docs/health.png         the `health` text of --broken-run (e.g. one trained with
                          --learning-rate 1.0), if given

Needs `chromium` (apt-get install chromium) and `playwright` (the test extra).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

# The test and tool helpers live with the tests (not in the installed library).
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
)
from helpers import launch_chromium, tensorboard_server  # noqa: E402


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


def _projector(page, base: str, run: str, path: str) -> None:
    page.goto(f"{base}/#projector", wait_until="networkidle")
    # The projector is a plugin page inside a plugin page (two iframes).
    frame = page.frame_locator("iframe").first.frame_locator("iframe").first
    frame.get_by_text("Dimension").first.wait_for(timeout=60_000)
    menus = frame.locator("paper-dropdown-menu")
    found = menus.evaluate_all("els => els.map(e => [e.label || '', e.value])")
    runs = [i for i, (label, _) in enumerate(found) if label.endswith("runs found")]
    if runs and found[runs[0]][1] != run:  # (one run: no runs menu at all)
        menus.nth(runs[0]).click()
        frame.locator("paper-item").filter(has_text=run).locator("visible=true").first.click()
        page.wait_for_timeout(5000)
    frame.locator("paper-dropdown-menu").filter(has_text="Color by").first.click()
    frame.locator("paper-item").filter(has_text="label").locator("visible=true").first.click()
    page.wait_for_timeout(5000)  # PCA and the sprites
    page.screenshot(path=path, clip={"x": 0, "y": 64, "width": 1100, "height": 836})
    print(f"wrote {path}")


def _hparams(search_dir: str, path: str, chromium: str) -> None:
    """The HParams tab of a search: every trial a line across its settings and metrics."""
    from playwright.sync_api import sync_playwright

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with (
        tensorboard_server(search_dir) as base,
        sync_playwright() as p,
        tempfile.TemporaryDirectory() as profile,
    ):
        ctx = launch_chromium(p, profile, chromium, viewport={"width": 1400, "height": 900})
        page = ctx.new_page()
        page.goto(f"{base}/#hparams", wait_until="networkidle")
        # The tab shows the first hparams only: the status and the steps on, the long
        # reason text off (it is in the table view and the report).
        for label in ("status", "steps reached", "pruned or failed because"):
            page.get_by_text(label, exact=True).first.click()
            page.wait_for_timeout(500)
        page.get_by_text("Parallel Coordinates View", exact=False).first.click()
        page.wait_for_timeout(4000)
        page.screenshot(path=path, clip={"x": 0, "y": 64, "width": 1400, "height": 760})
        print(f"wrote {path}")
        ctx.close()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="logs")
    parser.add_argument("--run", default=None, help="run name (default: the last one in --logdir)")
    parser.add_argument("--out", default="docs")
    parser.add_argument("--broken-run", default=None, help="a run whose health text to picture")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--search", default=None,
                        help="a search directory: take only its HParams picture")  # fmt: skip
    args = parser.parse_args(argv)
    if args.search:
        _hparams(args.search, os.path.join(args.out, "hparams.png"), args.chromium)
        return

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
        tensorboard_server(args.logdir) as base,
        sync_playwright() as p,
        tempfile.TemporaryDirectory() as profile,
    ):
        ctx = launch_chromium(p, profile, args.chromium, viewport={"width": 1280, "height": 900})
        page = ctx.new_page()

        def card(hash_: str, run_regex: str, tag_regex: str | None, element: str, text: str,
                 name: str, expand: bool = False):  # fmt: skip
            page.goto(f"{base}/#{hash_}", wait_until="networkidle")
            _only_run(page, run_regex)
            if tag_regex is not None:
                _filter_tags(page, tag_regex)
            target = page.locator(element).filter(has=page.get_by_text(text, exact=True)).first
            target.wait_for(timeout=30_000)
            if expand:  # the card's first button enlarges its chart
                target.locator("paper-icon-button, button").first.click()
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
        card(
            "custom_scalars",
            f"^{run}/train$",
            None,
            "tf-custom-scalar-multi-line-chart-card",
            "update ratios",
            "dynamics.png",
            expand=True,
        )
        card(
            "pr_curves",
            f"^{run}/validation$",
            "^pr_curves/9$",
            "tf-pr-curve-card",
            "tag: pr_curves/9",
            "pr_curves.png",
        )
        _projector(page, base, f"{run}/validation", os.path.join(args.out, "projector.png"))
        if args.broken_run:
            card(
                "text",
                f"^{args.broken_run}/train$",
                "^health$",
                "tf-text-loader",
                "health",
                "health.png",
            )
        ctx.close()


if __name__ == "__main__":
    main()
