"""Helpers for tests, benchmarks and the screenshot script (one home, no copies).

A real `tensorboard` server on a free loopback port, the environment for child
Python processes, and the flags headless Chromium needs on a machine without
internet access. Not part of the public API (`tbkit.__all__`).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator

#: Headless Chromium on a machine with a closed network: without the
#: background-networking flags it keeps trying (and failing) to reach Google's hosts.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
)


def free_ports(n: int = 1) -> list[int]:
    """`n` distinct TCP ports that are free on 127.0.0.1 right now."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python process: quiet TensorFlow, unbuffered output."""
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", **extra)


def get(url: str, data: dict | None = None, timeout: float = 20):
    """GET (or POST `data` as JSON) and return the decoded JSON, or the raw bytes."""
    body = None if data is None else json.dumps(data).encode()
    headers = {"Content-Type": "application/json"} if body else {}
    with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers),
                                timeout=timeout) as r:  # fmt: skip
        raw = r.read()
        if r.headers.get("Content-Encoding") == "gzip":  # the profile plugin compresses
            raw = gzip.decompress(raw)
        return json.loads(raw) if "json" in r.headers.get("Content-Type", "") else raw


@contextlib.contextmanager
def tensorboard_server(
    logdir: str,
    *,
    ready: Callable[[str], bool] | None = None,
    timeout: float = 90,
    reload_interval: float | None = None,
    extra: list[str] | None = None,
) -> Iterator[str]:
    """Runs `tensorboard --logdir LOGDIR` on a free loopback port; yields its base URL.

    Waits until the server answers and `ready(base_url)` (if given) is true;
    the server is always stopped on exit.

    Raises:
      RuntimeError: it exited or was not ready within `timeout` seconds (with its output).
    """
    [port] = free_ports(1)
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
           "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    if reload_interval is not None:
        cmd += ["--reload_interval", str(reload_interval)]
    cmd += extra or []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, ValueError):
                get(base + "/data/runs", timeout=5)
                if ready is None or ready(base):
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(
                    f"tensorboard did not come up within {timeout:.0f} s:\n{proc.communicate()[0][-2000:]}"
                )
            time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_workers(command: list[str], n: int = 2, cwd: str | None = None) -> list[subprocess.Popen]:
    """Starts `n` MultiWorkerMirroredStrategy workers of `command` on fresh loopback ports.

    Each gets its own `TF_CONFIG` (worker 0 is the chief); output is piped as text.
    """
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(n)]}
    procs = []
    for index in range(n):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, cwd=cwd, env=subprocess_env(TF_CONFIG=tf_config)))  # fmt: skip
    return procs


def wait_all(procs: list[subprocess.Popen], timeout: float = 300) -> list[tuple[str, str]]:
    """`(stdout, stderr)` of each process once all have ended; kills the rest on a timeout."""
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=timeout))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return outputs


def launch_chromium(playwright, profile_dir: str, executable: str = "/usr/bin/chromium", **kwargs):
    """A Playwright persistent context on Debian's Chromium with `CHROMIUM_FLAGS`."""
    kwargs.setdefault("viewport", {"width": 1400, "height": 1000})
    return playwright.chromium.launch_persistent_context(
        str(profile_dir), executable_path=executable, headless=True,
        args=list(CHROMIUM_FLAGS), **kwargs,
    )  # fmt: skip


def person_made(image, rng) -> tuple[bytes, str]:
    """A picture of an MNIST digit the way a person makes one: dark ink on light paper, larger,
    off-centre on a bigger page, as a JPEG (or a PNG with a transparent background)."""
    import io

    import numpy as np
    from PIL import Image

    k = int(rng.integers(3, 9))
    big = Image.fromarray(255 - image).resize((28 * k, 28 * k), Image.Resampling.BICUBIC)
    page = Image.new("L", (28 * k + int(rng.integers(10, 150)), 28 * k + int(rng.integers(10, 150))),
                     int(rng.integers(200, 256)))  # fmt: skip
    page.paste(big, (int(rng.integers(0, page.size[0] - 28 * k)),
                     int(rng.integers(0, page.size[1] - 28 * k))))  # fmt: skip
    buf = io.BytesIO()
    if rng.random() < 0.2:  # ink on a transparent background
        ink = np.asarray(page, np.float32)
        rgba = np.zeros((*ink.shape, 4), np.uint8)
        rgba[..., 3] = np.clip((ink.max() - ink) * 1.2, 0, 255).astype(np.uint8)
        Image.fromarray(rgba, "RGBA").save(buf, "PNG")
        return buf.getvalue(), "png"
    tint = np.array([1.0, 0.95, 0.85]) if rng.random() < 0.5 else np.ones(3)
    rgb = (np.asarray(page, np.float32)[..., None] * tint).clip(0, 255).astype(np.uint8)
    Image.fromarray(rgb, "RGB").save(buf, "JPEG", quality=int(rng.integers(60, 95)))
    return buf.getvalue(), "jpg"


def readme_block(marker: str) -> str:
    """The python block of the README under `<!-- MARKER ... -->` (the examples tests run)."""
    import re

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "README.md")) as f:
        text = f.read()
    block = re.search(rf"<!-- {marker}[^\n]*\n```python\n(.*?)```", text, re.S)
    assert block, f"the README lost its {marker} block"
    return block[1]
