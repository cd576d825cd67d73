"""Waking the leading control loop from another process of the same server.

With several API workers (uvicorn processes) one of them leads the control loop; a job
submitted through another would wait for the leader's next interval. Every control plane
listens on a UDP port of the loopback interface; the leader writes its port to a file in the
data directory, and the others send it one empty datagram after a commit that needs the
loop. Loopback only: the datagram carries nothing, and a stray one costs a cycle at most.
Replicas on other hosts (PostgreSQL) keep their interval.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("aitb.control.wake")


class WakeChannel:
    REREAD_S = 1.0  # how long a sender trusts the leader's port it read

    def __init__(self, path: Path, on_wake: Callable[[], None]):
        self.path = path
        self._on_wake = on_wake
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._out.setblocking(False)
        self._target: tuple[int | None, float] = (None, 0.0)
        self._closed = False
        self._thread = threading.Thread(target=self._listen, name="aitb-wake", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._closed:
            try:
                self._sock.recv(16)
            except OSError:
                return
            if not self._closed:
                self._on_wake()

    def publish(self) -> None:
        """Called by the process that has just become leader: senders find it from now on."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        try:
            tmp.write_text(str(self.port))
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot publish the control loop's wake port in %s: %s", self.path, exc)

    def _leader_port(self) -> int | None:
        port, read_at = self._target
        now = time.monotonic()
        if now - read_at > self.REREAD_S:
            try:
                port = int(self.path.read_text().strip())
            except (OSError, ValueError):
                port = None
            self._target = (port, now)
        return port

    def send(self) -> None:
        """Wake the leader (unless it is this process: the caller wakes itself directly)."""
        port = self._leader_port()
        if port is None or port == self.port:
            return
        try:
            self._out.sendto(b"", ("127.0.0.1", port))
        except OSError:  # the leader is gone; its successor publishes a new port
            self._target = (None, 0.0)

    def close(self) -> None:
        self._closed = True
        try:  # wake the listener so that it sees it is closed
            self._out.sendto(b"", ("127.0.0.1", self.port))
        except OSError:
            pass
        self._thread.join(timeout=2)
        for s in (self._sock, self._out):
            try:
                s.close()
            except OSError:
                pass
        try:
            if self.path.read_text().strip() == str(self.port):
                self.path.unlink()
        except (OSError, ValueError):
            pass
