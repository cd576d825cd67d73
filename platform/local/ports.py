"""Free TCP ports on loopback, several at once, never Ray's or well-known defaults.

A port is "free" when we can bind it now; another process may take it before
our child binds it, so callers check health after start rather than trusting this.
"""

from __future__ import annotations

import random
import socket
from contextlib import ExitStack

# Ports other services on this kind of machine already use, and Ray's defaults
# (GCS 6379, dashboard 8265, client 10001, worker range 10002-19999).
RESERVED = frozenset({1883, 3306, 4222, 5432, 5672, 6379, 8265, 8600, 10001})
# Ranges are drawn below the kernel's ephemeral range (32768-60999 on Linux), so
# ports the kernel hands out to port-0 binds and outgoing connections never land in them.
RANGE_LOW, RANGE_HIGH = 20000, 32000


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports that were all bindable at the same moment."""
    with ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < count:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            port = sock.getsockname()[1]
            if port not in RESERVED:
                ports.append(port)
        return ports


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def free_port_range(
    size: int, host: str = "127.0.0.1", avoid: set[int] | None = None, attempts: int = 200
) -> tuple[int, int]:
    """A contiguous block [low, high] of `size` bindable ports (for Ray's worker ports)."""
    avoid = set(avoid or ()) | RESERVED
    rng = random.SystemRandom()
    for _ in range(attempts):
        low = rng.randrange(RANGE_LOW, RANGE_HIGH - size)
        block = range(low, low + size)
        if avoid.intersection(block):
            continue
        if all(_bindable(port, host) for port in block):
            return low, low + size - 1
    raise RuntimeError(f"no free block of {size} ports in {RANGE_LOW}-{RANGE_HIGH}")


def _bindable(port: int, host: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when something accepts connections on the port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
