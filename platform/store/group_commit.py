"""Group commit: small write transactions that arrive together share one.

Why: a submission's own writes are a few rows, but its transaction costs more (SQLite's
write turn and commit; on PostgreSQL the round trips of BEGIN and COMMIT and the audit
chain's lock and head). Requests that arrive while a group is being written wait for it
and go together into the next one; one request's refusal (403, 404, 409, 422) undoes its
own writes only. A lone request is written alone,
without a savepoint, and waits for nothing. If the shared transaction fails as a whole
(a lost connection, a deadlock), every request of the group runs again in its own.
Refusals are rare, so a group is first written without savepoints and, only if one of its
requests is refused, written again without that one, each of the others in a savepoint.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import Session

from aitb.store import audit_head

T = TypeVar("T")
MAX_GROUP = 64


class _Ticket(Generic[T]):
    __slots__ = ("work", "done", "value", "error")

    def __init__(self, work: Callable[[Session], T]) -> None:
        self.work = work
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value


class GroupCommit:
    """``run(work)`` calls ``work(session)`` in a transaction it may share with other
    threads' work, and returns once that transaction has committed (or raises what ``work``
    raised). ``refusals`` are the errors that refuse one request and not its group."""

    def __init__(self, transaction: Callable[[], Any], refusals: tuple[type[BaseException], ...],
                 max_group: int = MAX_GROUP) -> None:
        self.transaction = transaction  # e.g. Database.session
        self.refusals = refusals
        self.max_group = max_group
        self._turn = threading.Lock()  # held by the thread writing a group
        self._queue_lock = threading.Lock()
        self._queue: list[_Ticket] = []

    def run(self, work: Callable[[Session], T]) -> T:
        ticket: _Ticket[T] = _Ticket(work)
        with self._queue_lock:
            self._queue.append(ticket)
        while not ticket.done:
            with self._turn:  # whoever gets the turn writes everything queued by then
                if ticket.done:
                    break
                with self._queue_lock:
                    group, self._queue = self._queue[:self.max_group], self._queue[self.max_group:]
                self._write(group)
        return ticket.outcome()

    def _write(self, group: list[_Ticket]) -> None:
        try:
            if len(group) == 1:
                self._alone(group[0])
            else:
                self._together(group)
        finally:
            for ticket in group:
                ticket.done = True

    def _alone(self, ticket: _Ticket) -> None:
        """Its own transaction; what an earlier, rolled-back try left on the ticket goes."""
        try:
            with self.transaction() as session:
                ticket.value, ticket.error = ticket.work(session), None
        except BaseException as exc:  # noqa: BLE001 - handed to the ticket's own thread
            ticket.value, ticket.error = None, exc

    def _together(self, group: list[_Ticket]) -> None:
        """First without savepoints (refusals are rare and a savepoint costs two round trips
        on PostgreSQL); after a refusal, which may have written before it refused, the group
        again without it, each request in a savepoint."""
        refused = self._shared(group, savepoints=False)
        if refused is not None:  # the others' values of the rolled-back try are overwritten
            self._shared([t for t in group if t is not refused], savepoints=True)

    def _shared(self, group: list[_Ticket], savepoints: bool) -> _Ticket | None:
        """Write the group in one transaction; without savepoints, stop at the first refusal
        (rolled back, returned)."""
        try:
            with self.transaction() as session:
                for ticket in group:
                    try:
                        if savepoints:
                            with audit_head.savepoint(session):
                                ticket.value = ticket.work(session)
                        else:
                            ticket.value = ticket.work(session)
                    except self.refusals as exc:
                        ticket.error = exc
                        if not savepoints:
                            raise _Refused(ticket) from exc
        except _Refused as refusal:
            return refusal.ticket
        except Exception:  # the shared transaction failed: each request on its own
            for ticket in group:
                self._alone(ticket)
        return None


class _Refused(Exception):
    def __init__(self, ticket: _Ticket) -> None:
        super().__init__()
        self.ticket = ticket
