"""The store tests' database: partner volvo with its project vision."""

from __future__ import annotations

import pytest

from tests.support.store import seeded


@pytest.fixture
def db(database_url):
    database = seeded(database_url, {"vision": "volvo"})
    yield database
    database.dispose()
