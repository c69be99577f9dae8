"""The other process of the tests: a bypass memif server that plays one role.

    python peer.py SOCKET echo [--delay SECONDS]   echo every message until the client closes
    python peer.py SOCKET stream COUNT SIZE         send COUNT messages of SIZE bytes, then wait
                                                    for the client to close
    python peer.py SOCKET close                     accept, then close at once
    python peer.py SOCKET samples                   examples/sample_server.rs's protocol: a
                                                    request (count, size), then the records

Any mode takes `--secret S`: the server's memif secret (`memif_secret`).
Message k of `stream` is bytes((k * 7 + i) % 251 for i in range(SIZE)): see `pattern`.
Exits 0 when its client closed as expected, 1 otherwise.
"""

import sys
import time

import bypass


def pattern(k: int, size: int) -> bytes:
    base = bytes((i % 251) for i in range(251 * 2))
    off = (k * 7) % 251
    reps = (size + 251) // 251 + 1
    return (base[off:off + 251] * reps)[:size]


def main() -> int:
    path, mode, *rest = sys.argv[1:]
    delay = 0.0
    if "--delay" in rest:
        i = rest.index("--delay")
        delay = float(rest[i + 1])
        del rest[i:i + 2]
    limits = {}
    if "--secret" in rest:
        i = rest.index("--secret")
        limits["memif_secret"] = rest[i + 1]
        del rest[i:i + 2]
    # samples: the link of examples/python/loader.py (LINK there).
    link = dict(mtu=65000, ring_log2=6, pool_buffers=512, omit_checksums=True,
                idle_timeout=60.0, max_probes=300) if mode == "samples" else {}
    with bypass.Stack(path, "server", link_timeout=60, max_message=1 << 30, **link,
                      **limits) as stack:
        sock = stack.listen().accept(timeout=60)
        sock.timeout = None
        if mode == "echo":
            try:
                while True:
                    m = sock.recv()
                    if delay:
                        time.sleep(delay)
                    sock.send(m)
                    m.release()
            except bypass.Closed:
                return 0
        if mode == "stream":
            count, size = int(rest[0]), int(rest[1])
            for k in range(count):
                sock.send(pattern(k, size))
            try:
                m = sock.recv()  # the client closes when done
                print(f"peer: unexpected message of {len(m)} bytes", file=sys.stderr)
                return 1
            except bypass.Closed:
                return 0
        if mode == "samples":
            import struct

            import numpy as np

            count, size = struct.unpack("<QQ", sock.recv())
            j = np.arange(size, dtype=np.int64)
            slots = [(((s * 7 + j) % 251).astype(np.uint8)) for s in range(min(count, 16))]
            for k in range(count):
                rec = slots[k % 16]
                rec[:16] = np.frombuffer(struct.pack("<QQ", k, k % 10), np.uint8)
                sock.send(rec)  # copied: rec may change at once
            try:
                sock.recv()
                return 1
            except bypass.Closed:
                return 0
        if mode == "close":
            sock.close()
            return 0
    print(f"peer: unknown mode {mode}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
