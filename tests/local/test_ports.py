"""Free-port allocation: distinct, bindable, never a reserved default."""

from __future__ import annotations

import socket

from aitb.local.ports import RESERVED, free_port_range, free_ports, port_open


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(12)
    assert len(set(ports)) == 12
    assert not set(ports) & RESERVED
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_free_port_range_is_contiguous_and_avoids_given_ports() -> None:
    low, high = free_port_range(32, avoid={25000})
    assert high - low == 31
    assert not (low <= 25000 <= high)


def test_port_open_sees_a_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_open(port)
    assert not port_open(port)
