"""Two things several launchers do on this machine, written once: keep a secret in a file
only its owner can read, and start a process that outlives its parent with its own log."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


def secret_file(path: Path, generate: Callable[[], str] = lambda: secrets.token_urlsafe(24)) -> str:
    """The secret kept in ``path``, made with ``generate`` the first time.

    The file is created with mode 0600 from the start (never readable by others, not even
    briefly) and appears whole: written under a temporary name, then linked into place, so
    of two processes racing, both read the one secret that won."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = generate()
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(value + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:  # another process was first: its secret counts
            return path.read_text().strip()
    finally:
        tmp.unlink(missing_ok=True)
    return value


def spawn_detached(
    command: Sequence[str], log_path: Path, *, env: Mapping[str, str] | None = None, cwd: Path | str | None = None,
    user: int | None = None, group: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` in a session of its own (a Ctrl-C here does not reach it), stdin
    closed, stdout and stderr appended to ``log_path``; as ``user``/``group`` (uid/gid, no
    supplementary groups) when given, which needs root."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    identity: dict[str, object] = {}
    if user is not None:
        identity = {"user": user, "group": group if group is not None else user, "extra_groups": []}
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            **identity,  # type: ignore[arg-type]
        )
