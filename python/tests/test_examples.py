"""examples/python/echo_client.py against the Rust examples/echo_server, two real processes
(when scripts/test.sh built the Rust examples)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_python_echo_client_against_rust_echo_server():
    d = os.environ.get("BYPASS_EXAMPLES_DIR")
    server = (Path(d) if d else ROOT / "target" / "release" / "examples") / "echo_server"
    if not server.exists():
        pytest.skip(f"{server} not built (scripts/test.sh builds it)")
    path = f"/tmp/bypass-pytest-echo-{os.getpid()}.sock"
    srv = subprocess.Popen([str(server), path, "--once"], stdout=subprocess.PIPE, text=True)
    try:
        out = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "python" / "echo_client.py"), path, "3"],
            capture_output=True, text=True, timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert re.match(
            r"echo_client: 18 messages \(3371307 bytes\) echoed intact; round trip median \S+, "
            r"worst \S+ \(sizes 1 B to 1 MiB\)$", out.stdout.strip()), out.stdout
        srv_out, _ = srv.communicate(timeout=30)
        assert srv.returncode == 0
        assert "closed after 18 messages (3371307 bytes) echoed" in srv_out
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
    assert not os.path.exists(path)


def test_echo_client_usage():
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "python" / "echo_client.py")],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "usage: echo_client.py SOCKET_PATH [ROUNDS]" in out.stderr
