"""examples/python/loader.py's logic, without torch: against a Python sample server (always)
and against the Rust examples/sample_server (when scripts/test.sh built it)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "python"))
import loader  # noqa: E402


def examples_dir():
    d = os.environ.get("BYPASS_EXAMPLES_DIR")
    return Path(d) if d else ROOT / "target" / "release" / "examples"


def test_stream_yields_checked_numpy_samples(peer):
    p = peer("samples")
    count, size = 40, (256 << 10) + loader.HEADER
    ds = loader.dataset(p.path, count, size, use_torch=False, depth=3, check=True)
    assert isinstance(ds, loader.SampleStream)
    seen = []
    for sample, label in ds:  # check=True: each record's bytes are compared to its index's
        assert isinstance(sample, np.ndarray) and sample.dtype == np.uint8
        assert len(sample) == size - loader.HEADER
        # The sample's first byte names its prepared slot (index % 16).
        slot = (int(sample[0]) - loader.HEADER) % 251 // 7
        assert slot < 16
        seen.append(label)
    # Records come in completion order: the labels, not their order, are fixed.
    assert sorted(seen) == sorted(k % 10 for k in range(count))
    assert ds.stats["samples"] == count
    p.wait()


def test_without_torch_falls_back(monkeypatch, peer):
    # Hide torch even where it is installed: the plain iterable comes back.
    monkeypatch.setitem(sys.modules, "torch", None)
    p = peer("samples")
    ds = loader.dataset(p.path, 3, 64, use_torch=None)
    assert isinstance(ds, loader.SampleStream)
    assert sorted(label for _, label in ds) == [0, 1, 2]
    p.wait()


def test_loader_cli_against_rust_sample_server(tmp_path):
    server = examples_dir() / "sample_server"
    if not server.exists():
        pytest.skip(f"{server} not built (scripts/test.sh builds it)")
    path = f"/tmp/bypass-pytest-samples-{os.getpid()}.sock"
    srv = subprocess.Popen([str(server), path, "--once"], stdout=subprocess.PIPE, text=True)
    try:
        out = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "python" / "loader.py"), path,
             "--count", "50", "--size", str((1 << 20) + 16), "--no-torch", "--check"],
            capture_output=True, text=True, timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert "loader: 50 samples of 1048576 bytes as numpy" in out.stdout
        assert "labels [5, 5, 5, 5, 5, 5, 5, 5, 5, 5]" in out.stdout
        assert srv.wait(timeout=30) == 0
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
