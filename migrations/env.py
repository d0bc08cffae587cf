"""Alembic environment: which database, which metadata, how to render new revisions.

The URL is, first found: `alembic -x url=...`, `sqlalchemy.url` set by the caller
(records.schema.alembic_config), the settings' `database_url` (INVITES_DATABASE_URL).
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlmodel import SQLModel

import records.tables  # noqa: F401  (registers every table on SQLModel.metadata)
from config import Settings
from records.db import make_engine, write_transaction
from records.types import UTCDateTime

config = context.config
if config.config_file_name and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name)

target_metadata = SQLModel.metadata


def database_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") \
        or config.get_main_option("sqlalchemy.url")
    return url or Settings().database_url


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    # Revisions spell out plain SQLAlchemy types, so they do not depend on our module.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations_offline() -> None:
    url = database_url()
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=url.startswith("sqlite"), render_item=render_item)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    # Foreign keys off on SQLite: batch mode copies tables that others reference.
    engine = make_engine(database_url(), foreign_keys=False)
    try:
        # One transaction for the whole upgrade (SQLite and PostgreSQL have transactional
        # DDL): a failed migration leaves the previous schema. IMMEDIATE on SQLite, so
        # processes migrating one file at once do it in turn.
        with write_transaction(engine) as conn:
            context.configure(
                connection=conn, target_metadata=target_metadata, compare_type=True,
                render_as_batch=conn.dialect.name == "sqlite", render_item=render_item,
                transactional_ddl=True,  # our BEGIN covers SQLite's DDL too (records/db.py)
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
