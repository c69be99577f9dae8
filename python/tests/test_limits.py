"""The limits against hostile peers (issue 18) as `bypass.Stack` keywords: each is taken, a
value that makes no sense raises naming the setting, and the memif secret reaches both
ends."""

import os
import sys
import time
from pathlib import Path

import pytest

import bypass

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import sock_path  # noqa: E402

# Every limit that is not memif's, each away from its default.
TRANSPORT = dict(
    rx_budget=64 << 20,
    max_connections_per_source=8,
    max_rx_slots=32,
    rx_pool_reserve=0.5,
    stateless_queue=8,
    arp=dict(capacity=64, pending_dests=4, queue_per_dest=8, max_tries=3, retry=0.1, ttl=30.0),
)


def test_a_server_takes_every_limit():
    path = sock_path()
    with bypass.Stack(
        path,
        "server",
        memif_copy_rx=True,
        memif_require_sealed_regions=True,
        memif_max_peer_region_bytes=64 << 20,
        memif_max_pending_handshakes=4,
        memif_allowed_uid=os.getuid(),
        memif_handshake_timeout=2.0,
        memif_wedge_timeout=0.5,
        memif_secret="s3cret",
        **TRANSPORT,
    ) as stack:
        assert stack.connections == 0
        assert os.path.exists(path), "the server listens"


@pytest.mark.parametrize(
    "role, kw, what",
    [
        ("server", dict(stateless_queue=0), "stateless_queue"),
        ("server", dict(memif_secret="x" * 24), "memif_secret"),
        ("server", dict(memif_wedge_timeout=0), "memif_wedge_timeout"),
        ("client", dict(memif_handshake_timeout=0), "memif_handshake_timeout"),
        ("server", dict(rx_budget=0), "rx_budget"),
        ("server", dict(max_connections_per_source=0), "max_connections_per_source"),
        ("server", dict(rx_pool_reserve=float("nan")), "rx_pool_reserve"),
        ("server", dict(arp=dict(pending_dests=0)), "arp"),
        ("client", dict(arp=dict(ttl=0)), "arp"),
        ("server", dict(memif_max_pending_handshakes=0), "memif_max_pending_handshakes"),
        ("server", dict(memif_max_peer_region_bytes=4096), "memif_max_peer_region_bytes"),
        # A server's settings on a client.
        ("client", dict(memif_allowed_uid=0), "memif_allowed_uid"),
        ("client", dict(memif_require_sealed_regions=True), "memif_require_sealed_regions"),
    ],
)
def test_nonsensical_limits_raise_naming_the_setting(role, kw, what):
    path = sock_path()
    with pytest.raises(bypass.Error, match=f"^{what}: ") as e:
        bypass.Stack(path, role, link_timeout=1, **kw)
    # The builder's refusal, not a failure to start.
    assert not isinstance(e.value, bypass.StartError), e.value
    assert not os.path.exists(path), "refused before the memif socket opened"


@pytest.mark.parametrize(
    "kw, what",
    [
        (dict(memif_wedge_timeout=-1), "memif_wedge_timeout"),
        (dict(memif_handshake_timeout=float("inf")), "memif_handshake_timeout"),
        (dict(arp=dict(bogus=1)), "arp"),
        (dict(arp=dict(capacity=-1)), "arp: capacity"),
        (dict(arp=dict(retry="soon")), "arp: retry"),
    ],
)
def test_values_python_gets_wrong_raise_value_error(kw, what):
    with pytest.raises(ValueError, match=f"^{what}"):
        bypass.Stack(sock_path(), "server", **kw)


def test_memif_secret_reaches_both_ends(client, peer):
    """As the Rust API's memif_secret_reaches_both_ends: a server with a secret refuses a
    client without it and one with another; with it (and the other limits a client takes)
    the client connects and exchanges a message."""
    p = peer("echo", "--secret", "s3cret")
    # The refused clients wait a short link timeout: let the server listen first.
    deadline = time.monotonic() + 30
    while not os.path.exists(p.path) and time.monotonic() < deadline:
        time.sleep(0.05)
    for kw in ({}, {"memif_secret": "guess"}):
        with pytest.raises(bypass.StartError, match="secret"):
            client(p.path, **kw, link_timeout=5)
    stack = client(
        p.path,
        memif_secret="s3cret",
        memif_copy_rx=True,
        memif_handshake_timeout=2.0,
        memif_wedge_timeout=0.5,
        **TRANSPORT,
    )
    with client.track(stack.connect(timeout=20)) as sock:
        sock.send(b"through the secret")
        assert sock.recv() == b"through the secret"
    p.wait()


@pytest.mark.parametrize("kw", [dict(stateless_queue=-1), dict(rx_budget="lots")])
def test_a_value_of_the_wrong_type_names_its_keyword(kw):
    """pyo3's own conversion errors (OverflowError, TypeError) carry a note naming the
    keyword (shown under the traceback's last line)."""
    (what,) = kw
    with pytest.raises((OverflowError, TypeError)) as e:
        bypass.Stack(sock_path(), "server", **kw)
    assert f"'{what}'" in " ".join(getattr(e.value, "__notes__", [])), e.value
