"""Benchmarks of bypass from Python, against Python's own socket module, in one run.

    python python/bench/bench.py [--rounds 2] [--rtt-iters 20000] [--mib 1000]
                                 [--examples target/release/examples] [--cores 0,1]

1. 64 B round trip (ping-pong between two processes pinned to two cores): bypass (memif, both
   sides Python), then Python's socket module over loopback: UDP and TCP (TCP_NODELAY), each
   blocking and busy-polled non-blocking. p50 / p99 / mean of the client's round trips.
2. 1 MiB receive throughput (a sender and a receiver pinned to two cores): the receiver is
   bypass from Python (`recv_into` a numpy array), the same from Rust
   (`sample_server --recv`: the buffer posted as the receive target), and Python over kernel
   TCP (`recv_into` a numpy array with MSG_WAITALL). The bypass rows use the same Rust
   sender (examples/sample_server.rs); the TCP sender is Python `sendall` of a numpy array.

Every configuration runs `--rounds` times, alternated (the core distance on a VM changes
from minute to minute); the table shows each round and the ratios of the goals per round.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PING = 64
RECORD = 1 << 20


def pin(core: int) -> None:
    os.sched_setaffinity(0, {core})


def percentiles(xs):
    xs = sorted(xs)
    return {
        "p50": xs[len(xs) // 2],
        "p99": xs[min(len(xs) - 1, int(len(xs) * 0.99))],
        "mean": statistics.fmean(xs),
    }


# ---- children -------------------------------------------------------------------------------

def child(argv) -> None:
    kind, core = argv[0], int(argv[1])
    pin(core)
    if kind == "bypass-echo":
        import bypass

        with bypass.Stack(argv[2], "server", link_timeout=60, spin=True) as st:
            sock = st.listen().accept(timeout=60)
            sock.timeout = None
            buf = bytearray(PING)
            try:
                while True:
                    n = sock.recv_into(buf)
                    sock.send(memoryview(buf)[:n])
            except bypass.Closed:
                pass
        return
    if kind in ("udp-echo", "udp-echo-busy"):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", int(argv[2])))
        busy = kind.endswith("busy")
        s.setblocking(not busy)
        buf = bytearray(PING)
        while True:
            try:
                n, addr = s.recvfrom_into(buf)
            except BlockingIOError:
                continue
            if n == 1:
                return  # the end
            s.sendto(memoryview(buf)[:n], addr)
    if kind in ("tcp-echo", "tcp-echo-busy"):
        ls = socket.create_server(("127.0.0.1", int(argv[2])))
        c, _ = ls.accept()
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        busy = kind.endswith("busy")
        c.setblocking(not busy)
        buf = bytearray(PING)
        while True:
            try:
                n = c.recv_into(buf)
            except BlockingIOError:
                continue
            if n == 0:
                return
            c.sendall(memoryview(buf)[:n])
    if kind == "tcp-send":
        import numpy as np

        ls = socket.create_server(("127.0.0.1", int(argv[2])))
        c, _ = ls.accept()
        count = int(argv[3])
        rec = np.arange(RECORD, dtype=np.uint32).astype(np.uint8)
        for _ in range(count):
            c.sendall(rec)
        c.recv(1)
        return
    raise SystemExit(f"unknown child {kind}")


def spawn(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "_child", *map(str, args)])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- 64 B round trip ------------------------------------------------------------------------

def rtt_bypass(iters, cores):
    import bypass

    path = f"/tmp/bypass-bench-py-{os.getpid()}.sock"
    srv = spawn("bypass-echo", cores[0], path)
    pin(cores[1])
    try:
        with bypass.Stack(path, "client", link_timeout=30, spin=True) as st:
            sock = st.connect(timeout=20)
            msg = bytes(PING)
            buf = bytearray(PING)
            out = []
            clock = time.perf_counter_ns
            for i in range(iters + iters // 10):
                t0 = clock()
                sock.send(msg)
                sock.recv_into(buf)
                if i >= iters // 10:
                    out.append(clock() - t0)
            sock.close()
        srv.wait(timeout=30)
        return out
    finally:
        if srv.poll() is None:
            srv.kill()


def rtt_udp(iters, cores, busy):
    port = free_port()
    srv = spawn("udp-echo-busy" if busy else "udp-echo", cores[0], port)
    pin(cores[1])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(not busy)
    addr = ("127.0.0.1", port)
    msg = bytes(PING)
    buf = bytearray(PING)
    # Wait for the server.
    s.settimeout(0.2) if not busy else None
    for _ in range(100):
        s.sendto(msg, addr)
        time.sleep(0.05)
        try:
            s.recvfrom_into(buf)
            break
        except (BlockingIOError, TimeoutError, socket.timeout):
            continue
    s.settimeout(None) if not busy else None
    while True:  # drain late echoes of the probing
        try:
            s.setblocking(False)
            s.recvfrom_into(buf)
        except BlockingIOError:
            break
    s.setblocking(not busy)
    out = []
    clock = time.perf_counter_ns
    for i in range(iters + iters // 10):
        t0 = clock()
        s.sendto(msg, addr)
        while True:
            try:
                s.recvfrom_into(buf)
                break
            except BlockingIOError:
                continue
        if i >= iters // 10:
            out.append(clock() - t0)
    s.sendto(b"x", addr)
    srv.wait(timeout=30)
    return out


def rtt_tcp(iters, cores, busy):
    port = free_port()
    srv = spawn("tcp-echo-busy" if busy else "tcp-echo", cores[0], port)
    pin(cores[1])
    for _ in range(200):
        try:
            s = socket.create_connection(("127.0.0.1", port))
            break
        except ConnectionRefusedError:
            time.sleep(0.05)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setblocking(not busy)
    msg = bytes(PING)
    buf = bytearray(PING)
    out = []
    clock = time.perf_counter_ns
    for i in range(iters + iters // 10):
        t0 = clock()
        s.sendall(msg)
        got = 0
        while got < PING:
            try:
                got += s.recv_into(memoryview(buf)[got:])
            except BlockingIOError:
                continue
        if i >= iters // 10:
            out.append(clock() - t0)
    s.close()
    srv.wait(timeout=30)
    return out


# ---- 1 MiB receive --------------------------------------------------------------------------

def recv_bypass_py(count, cores, examples):
    import numpy as np

    import bypass

    path = f"/tmp/bypass-bench-py-{os.getpid()}.sock"
    size = RECORD
    srv = subprocess.Popen(["taskset", "-c", str(cores[0]), str(examples / "sample_server"),
                            path, "--once"], stdout=subprocess.DEVNULL)
    pin(cores[1])
    try:
        buf = np.empty(size, np.uint8)
        link = dict(mtu=65000, ring_log2=6, pool_buffers=512, omit_checksums=True)
        with bypass.Stack(path, "client", link_timeout=30, spin=True, **link) as st:
            sock = st.connect(timeout=20)
            sock.send(struct.pack("<QQ", count, size))
            sock.recv_into(buf)
            t0 = time.perf_counter()
            for _ in range(count - 1):
                sock.recv_into(buf)
            secs = time.perf_counter() - t0
            sock.close()
        srv.wait(timeout=30)
        return (count - 1) * size / secs / (1 << 20)
    finally:
        if srv.poll() is None:
            srv.kill()


def recv_bypass_rust(count, cores, examples):
    path = f"/tmp/bypass-bench-rs-{os.getpid()}.sock"
    srv = subprocess.Popen(["taskset", "-c", str(cores[0]), str(examples / "sample_server"),
                            path, "--once"], stdout=subprocess.DEVNULL)
    try:
        out = subprocess.run(["taskset", "-c", str(cores[1]), str(examples / "sample_server"),
                              path, "--recv", str(count), str(RECORD)],
                             capture_output=True, text=True, timeout=300, check=True).stdout
        srv.wait(timeout=30)
        # "...; 1234 MiB/s (...)"
        return float(out.split("; ")[1].split(" MiB/s")[0])
    finally:
        if srv.poll() is None:
            srv.kill()


def recv_tcp_py(count, cores):
    import numpy as np

    port = free_port()
    srv = spawn("tcp-send", cores[0], port, count)
    pin(cores[1])
    for _ in range(200):
        try:
            s = socket.create_connection(("127.0.0.1", port))
            break
        except ConnectionRefusedError:
            time.sleep(0.05)
    buf = np.empty(RECORD, np.uint8)

    def one():
        n = s.recv_into(buf, RECORD, socket.MSG_WAITALL)
        assert n == RECORD, n

    one()
    t0 = time.perf_counter()
    for _ in range(count - 1):
        one()
    secs = time.perf_counter() - t0
    s.send(b"x")
    srv.wait(timeout=30)
    s.close()
    return (count - 1) * RECORD / secs / (1 << 20)


# ---- main -----------------------------------------------------------------------------------

def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rtt-iters", type=int, default=20000)
    ap.add_argument("--mib", type=int, default=1000, help="1 MiB records per throughput run")
    ap.add_argument("--examples", type=Path, default=ROOT / "target" / "release" / "examples")
    ap.add_argument("--cores", default="0,1")
    ap.add_argument("--only", default="", help="comma list: rtt,recv")
    a = ap.parse_args()
    cores = [int(c) for c in a.cores.split(",")]
    only = set(filter(None, a.only.split(",")))
    # Each measurement runs in a fresh interpreter so that pinning and stacks do not leak.
    rows = []
    for rnd in range(1, a.rounds + 1):
        if not only or "rtt" in only:
            r = {}
            for name, fn in [
                ("bypass (memif)", lambda: rtt_bypass(a.rtt_iters, cores)),
                ("UDP blocking", lambda: rtt_udp(a.rtt_iters, cores, False)),
                ("UDP busy-poll", lambda: rtt_udp(a.rtt_iters, cores, True)),
                ("TCP blocking", lambda: rtt_tcp(a.rtt_iters, cores, False)),
                ("TCP busy-poll", lambda: rtt_tcp(a.rtt_iters, cores, True)),
            ]:
                p = percentiles(fn())
                r[name] = p
                print(f"round {rnd} rtt64 {name:16} p50 {p['p50'] / 1e3:8.2f} us  "
                      f"p99 {p['p99'] / 1e3:8.2f} us  mean {p['mean'] / 1e3:8.2f} us",
                      flush=True)
            best = min((v["p50"], k) for k, v in r.items() if k != "bypass (memif)")
            print(f"round {rnd} rtt64 ratio bypass/{best[1]} p50 = "
                  f"{r['bypass (memif)']['p50'] / best[0]:.3f}", flush=True)
            rows.append(("rtt", rnd, r))
        if not only or "recv" in only:
            r = {
                "bypass Python recv_into numpy": recv_bypass_py(a.mib, cores, a.examples),
                "bypass Rust (posted target)": recv_bypass_rust(a.mib, cores, a.examples),
                "Python kernel TCP recv_into numpy": recv_tcp_py(a.mib, cores),
            }
            for k, v in r.items():
                print(f"round {rnd} recv1m {k:34} {v:8.0f} MiB/s", flush=True)
            py = r["bypass Python recv_into numpy"]
            print(f"round {rnd} recv1m ratio python/rust = {py / r['bypass Rust (posted target)']:.3f}"
                  f", python/tcp = {py / r['Python kernel TCP recv_into numpy']:.3f}", flush=True)
            rows.append(("recv", rnd, r))


if __name__ == "__main__":
    main()
