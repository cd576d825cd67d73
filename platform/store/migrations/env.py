"""Alembic environment: runs migrations on the URL the caller configured."""

from alembic import context
from sqlalchemy import create_engine, event, pool

import aitb.store.tables  # noqa: F401  (registers the tables)
from aitb.store.base import Base

try:  # tables owned by the tracking outbox
    import aitb.store.outbox  # noqa: F401
except ImportError:  # pragma: no cover
    pass
import aitb.store.submissions  # noqa: F401,E402  (sweeps, idempotency keys)
import aitb.store.usage  # noqa: F401,E402  (the accounting tables)

config = context.config
MIGRATION_LOCK_KEY = 0x61697462  # "aitb"
target_metadata = Base.metadata


def _sqlite_manual_transactions(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None
    dbapi_conn.execute("PRAGMA foreign_keys=OFF")
    dbapi_conn.execute("PRAGMA busy_timeout=120000")


def run_migrations() -> None:
    url = config.get_main_option("sqlalchemy.url")
    connectable = create_engine(url, poolclass=pool.NullPool)
    if connectable.dialect.name == "sqlite":
        # pysqlite's own transaction handling skips DDL; issue BEGIN ourselves so a
        # migration is all-or-nothing, and keep foreign keys off while batch mode
        # copies tables (ON would cascade deletes during the copy).
        event.listen(connectable, "connect", _sqlite_manual_transactions)
        # IMMEDIATE, and one transaction for the whole upgrade (transactional_ddl below;
        # alembic would otherwise commit after each revision): a second process migrating at
        # the same moment (API workers, replicas) waits here for the first to commit, then
        # finds the schema at head.
        event.listen(connectable, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    with connectable.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            transactional_ddl=True,  # SQLite's DDL is transactional once BEGIN is ours
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # the same for PostgreSQL: one migrator at a time, the lock ends with the transaction
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
            context.run_migrations()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations()
