"""The control plane's store: two partners' projects sharing one node's GPUs."""

from __future__ import annotations

import pytest

from aitb.domain.models import Quota
from tests.support.store import seeded


@pytest.fixture
def db(database_url):
    """volvo's `borrower` and saab's `owner` each own 2 of lund's 4 GPUs; the borrower may
    take 2 more while they are idle."""
    database = seeded(database_url, {"borrower": "volvo", "owner": "saab"}, [
        Quota(project="borrower", node="lund", nominal={"gpu": 2}, borrowing_limit={"gpu": 2}),
        Quota(project="owner", node="lund", nominal={"gpu": 2}),
    ])
    yield database
    database.dispose()
