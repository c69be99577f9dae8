"""Echo client over memif, from Python: connects to the Rust `echo_server` (another process)
and checks that every message comes back unchanged. The same protocol and output as
examples/echo_client.rs.

    cargo run --release --example echo_server -- /tmp/echo.sock
    python examples/python/echo_client.py /tmp/echo.sock [ROUNDS]

Each round sends messages of 1 B, 64 B, 1400 B, 8 KiB, 64 KiB and 1 MiB (single-packet and
multi-packet messages), waits for each echo and compares it byte for byte. It prints the
number of messages and bytes echoed and the median and worst round trip, and exits with
status 1 on any difference.
"""

import sys
import time

import bypass

SIZES = [1, 64, 1400, 8 << 10, 64 << 10, 1 << 20]


def usage():
    print("usage: echo_client.py SOCKET_PATH [ROUNDS]", file=sys.stderr)
    sys.exit(2)


def message(length: int, seed: int) -> bytes:
    # Byte i is i * 131 + seed (mod 256), as the Rust client makes it.
    row = bytes(((i * 131) + seed) & 0xFF for i in range(256))
    return (row * (length // 256 + 1))[:length]


def fmt(seconds: float) -> str:
    """A duration as Rust's `Debug` prints it: ns, µs, ms or s, trailing zeros trimmed."""
    ns = round(seconds * 1e9)

    def trim(x: float, dec: int) -> str:
        return f"{x:.{dec}f}".rstrip("0").rstrip(".")

    if ns < 1_000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return trim(ns / 1e3, 3) + "µs"
    if ns < 1_000_000_000:
        return trim(ns / 1e6, 6) + "ms"
    return trim(ns / 1e9, 9) + "s"


def run(path: str, rounds: int) -> None:
    # Role client; the default addresses are the Rust examples' (10.77.0.2 -> 10.77.0.1:7200).
    with bypass.Stack(path, "client", link_timeout=20) as stack:
        sock = stack.connect(timeout=10)
        rtts = []
        msgs = total = 0
        buf = bytearray(max(SIZES))
        for rnd in range(rounds):
            for k, length in enumerate(SIZES):
                seed = (rnd * len(SIZES) + k) & 0xFF
                msg = message(length, seed)
                t0 = time.perf_counter()
                sock.send(msg)
                n = sock.recv_into(buf)
                rtts.append(time.perf_counter() - t0)
                if n != length or buf[:n] != msg:
                    raise RuntimeError(f"echo of {length} bytes differs (got {n} bytes back)")
                msgs += 1
                total += length
        sock.close()
    rtts.sort()
    median = rtts[len(rtts) // 2] if rtts else 0.0
    worst = rtts[-1] if rtts else 0.0
    print(
        f"echo_client: {msgs} messages ({total} bytes) echoed intact; round trip median "
        f"{fmt(median)}, worst {fmt(worst)} (sizes 1 B to 1 MiB)"
    )


def main() -> None:
    args = sys.argv[1:]
    if len(args) == 1:
        path, rounds = args[0], 10
    elif len(args) == 2:
        try:
            path, rounds = args[0], int(args[1])
        except ValueError:
            usage()
        if rounds < 0:
            usage()
    else:
        usage()
    try:
        run(path, rounds)
    except (bypass.Error, RuntimeError) as e:
        print(f"echo_client: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
