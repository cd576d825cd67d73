"""Group commit on a real database: requests that queue behind a transaction share the next
one, a refusal undoes only its own writes, and a failed group loses nobody's request."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from sqlalchemy import select

from aitb.services.errors import Conflict, ServiceError
from aitb.store import audit
from aitb.store.db import Database
from aitb.store.group_commit import GroupCommit
from aitb.store.tables import AuditRow


@pytest.fixture
def db(database_url):
    database = Database(database_url)
    yield database
    database.dispose()


class Counted:
    """Database.session, counting the transactions opened."""

    def __init__(self, db: Database) -> None:
        self.db, self.opened = db, 0

    def __call__(self):
        self.opened += 1
        return self.db.session()


def append(name: str) -> Callable:
    def work(session) -> str:
        audit.append(session, name, "test.write", f"thing/{name}", {"name": name})
        return name
    return work


def refuse_after_writing(name: str) -> Callable:
    def work(session) -> int:
        audit.append(session, name, "test.write", f"thing/{name}", {"name": name})
        raise Conflict(f"{name} is refused after it wrote")
    return work


def crash(session) -> int:
    raise RuntimeError("a bug, not a refusal")


def queue_behind_a_held_group(group: GroupCommit, works: list[Callable]) -> list[object]:
    """Run ``works`` from threads while a first request holds the group's turn, so that all
    of them queue and are written together once it lets go; their outcomes in order."""
    holding, release = threading.Event(), threading.Event()

    def hold(session):
        holding.set()
        assert release.wait(30)
        return 0

    outcomes: list[object] = [None] * len(works)

    def call(i: int) -> None:
        try:
            outcomes[i] = group.run(works[i])
        except BaseException as exc:  # noqa: BLE001 - the outcome under test
            outcomes[i] = exc

    first = threading.Thread(target=group.run, args=(hold,))
    first.start()
    assert holding.wait(30)
    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(works))]
    for t in threads:
        t.start()
    while len(group._queue) < len(works):  # every request waits behind the held one
        threading.Event().wait(0.01)
    release.set()
    for t in [first, *threads]:
        t.join(30)
    return outcomes


def chain(db: Database) -> list[str]:
    with db.session() as s:
        assert audit.verify(s).ok
        return list(s.scalars(select(AuditRow.actor).order_by(AuditRow.seq)))


def test_requests_that_queue_share_one_transaction(db):
    opened = Counted(db)
    group = GroupCommit(opened, refusals=(ServiceError,))
    names = [f"r{i}" for i in range(12)]
    outcomes = queue_behind_a_held_group(group, [append(n) for n in names])
    assert outcomes == names  # each request gets its own answer
    assert opened.opened == 2  # the held request's, then one for all twelve
    assert sorted(chain(db)) == sorted(names)


def test_a_refusal_undoes_only_its_own_writes(db):
    opened = Counted(db)
    group = GroupCommit(opened, refusals=(ServiceError,))
    works = [append("a"), append("b"), refuse_after_writing("x"), append("c"), refuse_after_writing("y"),
             append("d")]
    outcomes = queue_behind_a_held_group(group, works)
    assert isinstance(outcomes[2], Conflict) and isinstance(outcomes[4], Conflict)
    assert [o for i, o in enumerate(outcomes) if i not in (2, 4)] == ["a", "b", "c", "d"]
    assert chain(db) == ["a", "b", "c", "d"]  # no gap, no refused entry: the chain verifies


def test_a_failed_group_runs_each_request_alone(db):
    group = GroupCommit(db.session, refusals=(ServiceError,))
    outcomes = queue_behind_a_held_group(group, [append("a"), crash, append("b")])
    assert isinstance(outcomes[1], RuntimeError)
    assert [outcomes[0], outcomes[2]] == ["a", "b"]
    assert chain(db) == ["a", "b"]


def test_a_lone_request_gets_its_own_transaction_and_its_error(db):
    opened = Counted(db)
    group = GroupCommit(opened, refusals=(ServiceError,))
    assert group.run(append("solo")) == "solo"
    with pytest.raises(Conflict):
        group.run(refuse_after_writing("refused"))
    assert opened.opened == 2
    assert chain(db) == ["solo"]
