"""bypass from Python against a second process (tests/peer.py) over memif."""

import io
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import bypass

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer import pattern  # noqa: E402

SIZES = [1, 64, 1400, 9000, 65536, 1 << 20]


def connect(client, peer, *args, **kw):
    p = peer(*args)
    stack = client(p.path, **kw)
    sock = client.track(stack.connect(timeout=20))
    return p, stack, sock


@pytest.mark.parametrize("spin", [False, True])
def test_echo_every_buffer_kind(client, peer, spin):
    """Both waiting policies: sleeping once idle (the default) and spinning."""
    p, stack, sock = connect(client, peer, "echo", spin=spin)
    with sock:
        for n in SIZES:
            data = pattern(n, n)
            kinds = [
                data,
                bytearray(data),
                memoryview(data),
                np.frombuffer(data, dtype=np.uint8),
            ]
            if n % 4 == 0:
                kinds.append(np.frombuffer(data, dtype=np.float32))
            for obj in kinds:
                sock.send(obj)
                mv = sock.recv()
                assert isinstance(mv, memoryview)
                assert mv.readonly
                assert len(mv) == n
                assert mv == data, f"{type(obj).__name__} of {n} bytes"
                mv.release()
    p.wait()


@pytest.mark.parametrize("ordered", [False, True])
def test_recv_into_numpy_lands_whole_and_never_late(client, peer, ordered):
    """recv_into fills caller buffers (uint8 and float32 arrays, bytearray); a buffer is not
    written after its call returned, even though the next messages are posted into others.
    Messages come in completion order unless the stack is `ordered`."""
    count, size = 24, 1 << 20
    p, stack, sock = connect(client, peer, "stream", str(count), str(size), ordered=ordered)
    bufs = [np.zeros(size, np.uint8), np.zeros(size // 4, np.float32), bytearray(size)]
    snapshots = []
    seen = []
    for k in range(count):
        buf = bufs[k % 3]
        n = sock.recv_into(buf)
        assert n == size
        got = bytes(memoryview(buf).cast("B"))
        which = got[0] // 7  # message j starts with byte 7 * j (j < 36)
        seen.append(which)
        assert got == pattern(which, size), f"message {k} (as {which})"
        snapshots.append((buf, got))
        # Every buffer holds the last message it was given, untouched since.
        for b, want in snapshots[-3:]:
            assert bytes(memoryview(b).cast("B")) == want
    assert sorted(seen) == list(range(count))
    if ordered:
        assert seen == list(range(count))
    sock.close()
    p.wait()


def test_recv_into_too_small_keeps_the_message(client, peer):
    p, stack, sock = connect(client, peer, "echo")
    with sock:
        for n in (1000, 1 << 20):
            data = pattern(3, n)
            sock.send(data)
            with pytest.raises(bypass.BufferTooSmall) as e:
                sock.recv_into(bytearray(10))
            assert e.value.needed == n
            assert str(n) in str(e.value)
            # Still there: for a big enough buffer...
            big = np.empty(n + 5, np.uint8)
            assert sock.recv_into(big) == n
            assert big[:n].tobytes() == data
            # ...or for recv().
            sock.send(data)
            with pytest.raises(bypass.BufferTooSmall):
                sock.recv_into(np.empty(n - 1, np.uint8))
            assert sock.recv() == data
    p.wait()


def test_message_release_rules(client, peer):
    p, stack, sock = connect(client, peer, "echo")
    with sock:
        sock.send(b"x" * 5000)
        m = sock.recv_message()
        assert len(m) == 5000 and not m.released
        mv = memoryview(m)
        with pytest.raises(BufferError, match="still viewed"):
            m.release()
        arr = np.frombuffer(m, dtype=np.uint8)  # a second export
        assert arr.sum() == ord("x") * 5000
        mv.release()
        mv.release()  # Python's own rule: releasing a memoryview twice is a no-op
        with pytest.raises(ValueError):
            bytes(mv)  # a released memoryview cannot be read
        with pytest.raises(BufferError):
            m.release()  # numpy still holds it
        del arr
        m.release()
        assert m.released
        with pytest.raises(bypass.Released):
            m.release()
        with pytest.raises(bypass.Released):
            memoryview(m)
        # A received message is read-only: no writable view of it.
        sock.send(b"y")
        with sock.recv_message() as m2:
            assert memoryview(m2).readonly
            # readinto asks for a writable buffer; our refusal surfaces as its TypeError.
            with pytest.raises(TypeError, match="read-write"):
                io.BytesIO(b"abc").readinto(m2)
            assert bytes(m2) == b"y"
    p.wait()


def test_closed_socket(client, peer):
    p, stack, sock = connect(client, peer, "echo")
    sock.close()
    assert sock.closed
    sock.close()  # closing again does nothing
    for call in (lambda: sock.send(b"a"), sock.recv, lambda: sock.recv_into(bytearray(8))):
        with pytest.raises(bypass.Closed, match="closed"):
            call()
    p.wait()


def test_peer_close_is_closed(client, peer):
    p, stack, sock = connect(client, peer, "close")
    with pytest.raises(bypass.Closed):
        sock.recv()
    p.wait()


def test_message_too_large(client, peer):
    p, stack, sock = connect(client, peer, "echo", max_message=4096)
    with sock:
        with pytest.raises(bypass.MessageTooLarge, match="4096"):
            sock.send(bytes(8192))
        sock.send(bytes(4096))  # at the limit: fine
        assert len(sock.recv()) == 4096
    p.wait()


def test_bad_buffers(client, peer):
    p, stack, sock = connect(client, peer, "echo")
    with sock:
        a = np.arange(64, dtype=np.uint8)
        with pytest.raises(BufferError, match="contiguous"):
            sock.send(a[::2])
        with pytest.raises(TypeError, match="writable"):
            sock.recv_into(b"read-only bytes")
        with pytest.raises(TypeError):
            sock.send(12345)
    p.wait()


def test_timeout(client, peer):
    p, stack, sock = connect(client, peer, "echo")
    with sock:
        sock.timeout = 0.2
        t0 = time.monotonic()
        with pytest.raises(bypass.Timeout):
            sock.recv()
        assert 0.15 < time.monotonic() - t0 < 2.0
        with pytest.raises(ValueError):
            sock.timeout = -1
        # Huge but finite: as good as forever (it used to panic in Duration::from_secs_f64).
        sock.timeout = 1e300
        assert sock.timeout > 1e9
        sock.timeout = 0.2
    p.wait()


def test_gil_released_while_waiting(client, peer):
    """Another Python thread runs while recv waits (the peer answers after 0.5 s)."""
    p, stack, sock = connect(client, peer, "echo", "--delay", "0.5")
    ticks = 0
    stop = threading.Event()

    def count():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    with sock:
        sock.send(b"ping")
        t = threading.Thread(target=count)
        t.start()
        t0 = time.monotonic()
        assert sock.recv() == b"ping"
        waited = time.monotonic() - t0
        stop.set()
        t.join()
    assert waited >= 0.4
    # A pure-Python loop does millions of ticks a second with the GIL; held by recv it would
    # have done none until recv returned.
    assert ticks > 10_000, ticks
    p.wait()


def test_socket_belongs_to_its_thread(client, peer):
    p, stack, sock = connect(client, peer, "echo")
    errs = []

    def other():
        try:
            sock.send(b"from another thread")
        except BaseException as e:  # noqa: B036
            errs.append(e)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    # pyo3 refuses an `unsendable` object on another thread with a PanicException (a
    # BaseException), before any of our code runs.
    assert errs and "unsendable, but sent to another thread" in str(errs[0])
    sock.close()
    p.wait()


def test_stack_options_checked():
    with pytest.raises(ValueError, match="role"):
        bypass.Stack("/tmp/x.sock", "neither")
    with pytest.raises(ValueError, match="IPv4"):
        bypass.Stack("/tmp/x.sock", "client", ip="10.0.0")
    with pytest.raises(ValueError, match="Ethernet"):
        bypass.Stack("/tmp/x.sock", "client", mac="02:00")
    with pytest.raises(bypass.StartError, match="link"):
        bypass.Stack("/tmp/bypass-pytest-nobody-there.sock", "client", link_timeout=0.2)


def test_exception_hierarchy():
    for name in ("Timeout", "Closed", "ConnectionReset", "ConnectionLost", "PeerUnreachable",
                 "MessageTooLarge", "BufferTooSmall", "Released", "PoolExhausted", "StartError"):
        assert issubclass(getattr(bypass, name), bypass.Error), name
    assert issubclass(bypass.Error, Exception)
