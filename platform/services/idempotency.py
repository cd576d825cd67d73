"""Idempotency keys (`Idempotency-Key` header) on submissions: a retried POST creates nothing new.

The key is scoped to the caller and remembered for a day with a hash of the route and
the body. The same key with the same request answers with what the first request
created; with a different request it is refused (422); two requests racing with one
key conflict on the key's row, and the loser is told to retry (409), which then
replays the winner's answer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aitb.services.authz import Principal
from aitb.services.errors import Conflict, Invalid
from aitb.store.submissions import find_key, store_key

HEADER = "Idempotency-Key"
MAX_KEY = 255


def request_hash(route: str, body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{route}\n{canonical}".encode()).hexdigest()


def check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY or not all(32 < ord(c) < 127 for c in key):
        raise Invalid(f"{HEADER} must be 1-{MAX_KEY} printable ASCII characters without spaces")


def once(
    session: Session,
    who: Principal,
    key: str | None,
    route: str,
    body: Callable[[], Any],
    create: Callable[[], dict[str, Any]],
) -> tuple[dict[str, Any], bool]:
    """(result, replayed): ``create()`` runs only if ``key`` is new for this caller; its result
    (ids of what it created) is remembered in the same transaction. ``body()`` gives the
    request's JSON (only called when there is a key)."""
    if key is None:
        return create(), False
    check_key(key)
    digest = request_hash(route, body())
    row = find_key(session, who.name, key)
    if row is not None:
        if row.request_hash != digest:
            raise Invalid(f"{HEADER} {key!r} was already used for a different request; use a new key")
        return dict(row.result), True
    result = create()
    try:
        store_key(session, who.name, key, digest, result)
    except IntegrityError:
        raise Conflict(f"another request with {HEADER} {key!r} was stored first; retry to get its answer") from None
    return result, False
