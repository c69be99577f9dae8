import gc
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
_seq = itertools.count()


def sock_path() -> str:
    """A memif socket path no other test (or helper running tests) uses."""
    return f"/tmp/bypass-pytest-{os.getpid()}-{next(_seq)}.sock"


class Peer:
    """tests/peer.py in its own process, killed if the test does not end it."""

    def __init__(self, *args: str):
        self.path = sock_path()
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "peer.py"), self.path, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait(self, timeout: float = 30.0) -> int:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"peer did not exit: {err}")
        if self.proc.returncode != 0:
            raise AssertionError(f"peer exited {self.proc.returncode}: {out}{err}")
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


@pytest.fixture
def peer():
    made = []

    def start(*args: str) -> Peer:
        p = Peer(*args)
        made.append(p)
        return p

    yield start
    for p in made:
        p.kill()


class Clients:
    """Client stacks and their sockets, all closed when the test ends (passed or failed): a
    thread runs one stack at a time, and a failed test's traceback would keep its stack
    alive into the next test."""

    def __init__(self):
        self.stacks = []
        self.socks = []

    def __call__(self, path: str, **kw):
        import bypass

        kw.setdefault("link_timeout", 30)
        s = bypass.Stack(path, "client", **kw)
        self.stacks.append(s)
        return s

    def track(self, sock):
        self.socks.append(sock)
        return sock

    def close(self):
        import bypass

        for s in self.socks:
            try:
                s.close()
            except bypass.Error:
                pass
        for s in self.stacks:
            s.close()
        gc.collect()


@pytest.fixture
def client():
    c = Clients()
    yield c
    c.close()
