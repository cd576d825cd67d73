"""Code packages built in memory for tests (any content, valid or not)."""

from __future__ import annotations

import io
import zipfile


def zip_bytes(entries: dict[str, bytes | str]) -> bytes:
    """A zip file holding ``entries`` (name -> content), as the CLI would upload it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()
