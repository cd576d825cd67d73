"""A counter of committed changes to who may do what (users, tokens, partners, projects,
memberships) in this process.

Caches of authenticated callers compare it to drop what a commit made stale at once; a
change committed by another process (a second worker or replica) is only seen when the
cached entry's time is up, so such caches keep entries for seconds.
"""

from __future__ import annotations

import itertools
import threading

from sqlalchemy import event
from sqlalchemy.orm import Session

from aitb.store.tables import MembershipRow, PartnerRow, ProjectRow, UserRow

_WATCHED = (UserRow, MembershipRow, PartnerRow, ProjectRow)
_FLAG = "aitb_accounts_changed"
_counter = itertools.count(1)
_lock = threading.Lock()
_generation = 0


def generation() -> int:
    """Changes to accounts committed in this process so far."""
    return _generation


def _bump() -> None:
    global _generation
    with _lock:
        _generation = next(_counter)


@event.listens_for(Session, "after_flush")
def _note_changes(session: Session, _context) -> None:
    if session.info.get(_FLAG):
        return
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, _WATCHED):
            session.info[_FLAG] = True
            return


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.info.pop(_FLAG, False):
        _bump()


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_FLAG, None)
