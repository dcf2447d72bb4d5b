"""Alembic environment of the divergence store.

Migrations always run on a connection the caller opened and handed over in
``config.attributes["connection"]`` (see :func:`service.store.upgrade`): the
store's own engine, with its SQLite pragmas and ``BEGIN IMMEDIATE``, so that
two processes opening a new file at once migrate it once, one after the
other.  There is no ``alembic.ini`` and no offline (SQL script) mode.
"""

from __future__ import annotations

from alembic import context

from service.errors import MigrationError
from service.models import Base, in_models


def run_migrations() -> None:
    connection = context.config.attributes["connection"]
    # Batch mode lets later migrations ALTER tables on SQLite, which cannot
    # drop or change a column in place.
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite",
                      include_name=in_models)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise MigrationError("offline")
run_migrations()
