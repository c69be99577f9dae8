"""A data loader over bypass: labelled records from a sample server, received with
`recv_into` straight into preallocated numpy arrays, yielded as numpy arrays, or as torch
tensors (no copy: `torch.from_numpy`) through a `torch.utils.data.IterableDataset` when torch
is installed.

    cargo run --release --example sample_server -- /tmp/samples.sock
    python examples/python/loader.py /tmp/samples.sock [--count N] [--size BYTES] [--no-torch]

The protocol is examples/sample_server.rs's: one request (count, size: two little-endian
u64), then `count` records of `size` bytes: `index: u64`, `label: u64`, then the sample's
bytes (byte j of the record is ((index % 16) * 7 + j) % 251).

Buffers: the stream cycles through `depth` preallocated arrays (default 2), so a yielded
sample is valid until `depth` more samples were taken; copy it (or raise `depth`) to keep it
longer. A multi-packet record is written once, by the stack, into the array (its memory is
posted as the receive target while `recv_into` waits).

Threads: the bypass stack is made inside `__iter__`, on the thread (or DataLoader worker
process) that iterates, and belongs to it.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from typing import Iterator, Optional, Tuple

import numpy as np

import bypass

HEADER = 16
# The memif link for bulk transfer, as examples/sample_server.rs sets up its end (both ends of
# a memif link use the same MTU): 64 KiB frames in 64-descriptor rings, pool buffers beyond
# the rings, no UDP checksums between the two stacks.
LINK = dict(mtu=65000, ring_log2=6, pool_buffers=512, omit_checksums=True)
# The stack only runs inside bypass calls (the iterating thread is its poll loop): while the
# consumer works on a sample (a training step, torch's first-use set-up), nobody answers the
# server's probes. Give the connection a minute before it counts the peer as gone (the Rust
# defaults, 5 s idle and 12 probes of at most 200 ms, suit request/response services).
PATIENCE = dict(idle_timeout=60.0, max_probes=300)


def expected(index: int, size: int) -> np.ndarray:
    """The record the protocol defines (for checks)."""
    j = np.arange(size, dtype=np.int64)
    rec = (((index % 16) * 7 + j) % 251).astype(np.uint8)
    rec[:HEADER] = np.frombuffer(struct.pack("<QQ", index, index % 10), np.uint8)
    return rec


class SampleStream:
    """An iterable of (sample, label): sample a numpy uint8 array of size - 16 bytes, a view
    into one of `depth` preallocated receive buffers. Needs no torch."""

    def __init__(self, socket_path: str, count: int, size: int, *, depth: int = 2,
                 check: bool = False, connect_timeout: float = 20.0):
        if size < HEADER:
            raise ValueError(f"size must be at least {HEADER} bytes")
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self.socket_path = socket_path
        self.count = count
        self.size = size
        self.depth = depth
        self.check = check
        self.connect_timeout = connect_timeout
        self.stats = {"samples": 0, "bytes": 0, "seconds": 0.0}

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Tuple[np.ndarray, int]]:
        bufs = [np.empty(self.size, np.uint8) for _ in range(self.depth)]
        with bypass.Stack(self.socket_path, "client", link_timeout=self.connect_timeout,
                          **LINK, **PATIENCE) as st:
            with st.connect(timeout=self.connect_timeout) as sock:
                sock.send(struct.pack("<QQ", self.count, self.size))
                t0 = None
                for k in range(self.count):
                    buf = bufs[k % self.depth]
                    n = sock.recv_into(buf)
                    now = time.perf_counter()
                    if t0 is None:
                        t0 = now  # the first record starts the clock
                    if n != self.size:
                        raise bypass.Error(f"record {k}: {n} bytes, expected {self.size}")
                    # Records come in completion order, not necessarily in index order.
                    index, label = struct.unpack_from("<QQ", buf)
                    if index >= self.count or label != index % 10:
                        raise bypass.Error(f"record {k}: bad header ({index}, {label})")
                    if self.check and not np.array_equal(buf, expected(index, self.size)):
                        raise bypass.Error(f"record {index}: content differs")
                    self.stats["samples"] += 1
                    self.stats["bytes"] += n
                    self.stats["seconds"] = now - t0
                    yield buf[HEADER:], label


def dataset(socket_path: str, count: int, size: int, *, use_torch: Optional[bool] = None,
            **kw):
    """The stream as a `torch.utils.data.IterableDataset` yielding (uint8 tensor, label) when
    torch can be imported (or `use_torch`), else the plain `SampleStream`. torch is imported
    here, not when this module is."""
    stream = SampleStream(socket_path, count, size, **kw)
    if use_torch is False:
        return stream
    try:
        import torch
        from torch.utils.data import IterableDataset
    except ImportError:
        if use_torch:
            raise
        return stream

    class TorchSamples(IterableDataset):
        def __init__(self, s: SampleStream):
            super().__init__()
            self.stream = s

        def __len__(self) -> int:
            return len(self.stream)

        def __iter__(self):
            for arr, label in self.stream:
                yield torch.from_numpy(arr), label

    return TorchSamples(stream)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("socket")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--size", type=int, default=(1 << 20) + HEADER,
                    help="record bytes, header included (default 1 MiB of sample + 16)")
    ap.add_argument("--no-torch", action="store_true", help="plain numpy even if torch is there")
    ap.add_argument("--check", action="store_true", help="compare every record's bytes")
    a = ap.parse_args()

    ds = dataset(a.socket, a.count, a.size, use_torch=False if a.no_torch else None,
                 check=a.check)
    stream = getattr(ds, "stream", ds)
    kind = "numpy"
    it = ds
    if stream is not ds:
        from torch.utils.data import DataLoader

        # batch_size=None: the dataset yields samples one by one; the loader runs it in this
        # process (num_workers=0), where its bypass stack lives.
        it = DataLoader(ds, batch_size=None, num_workers=0)
        kind = "torch"
    labels = [0] * 10
    total = 0
    for sample, label in it:
        labels[int(label)] += 1
        total += int(sample[0]) + int(sample[-1])  # touch the sample, as a consumer would
    s = stream.stats
    secs = max(s["seconds"], 1e-9)
    # The first record starts the clock: samples - 1 in `seconds`.
    n = max(s["samples"] - 1, 0)
    print(
        f"loader: {s['samples']} samples of {a.size - HEADER} bytes as {kind}; "
        f"{n / secs:.0f} samples/s, {n * a.size / secs / (1 << 20):.0f} MiB/s; "
        f"labels {labels}"
    )


if __name__ == "__main__":
    try:
        main()
    except bypass.Error as e:
        print(f"loader: {e}", file=sys.stderr)
        sys.exit(1)
