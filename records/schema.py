"""The schema's history: Alembic migrations in migrations/, one revision per change of
records/tables.py (tests/test_migrations.py fails when one is missing).

Who changes a schema:
- PostgreSQL (and any server database): migrations only, `make migrate` (`alembic upgrade
  head`) once per deploy, before the new code starts. Processes only check the revision
  (`check_at_head`) and refuse to start on an older or newer schema.
- SQLite (the embedded default): `make run` migrates at start-up (`migrate`); a process
  that finds an empty database creates the models' schema and records it as the head
  revision (`ensure_sqlite_schema`, what `init_db` does), so a bare `python worker.py`
  or a test just works.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect
from sqlmodel import SQLModel

from records.db import make_engine, write_transaction

ROOT = Path(__file__).resolve().parent.parent
# The revision that created the tables as they were before migrations existed: a SQLite
# database made by `create_all` back then has exactly its schema.
BASELINE = "0001"


class SchemaNotReady(RuntimeError):
    """The database is not at the revision this code expects."""


def alembic_config(url: str | None = None) -> Config:
    """The alembic.ini configuration, usable from any working directory. `url` overrides
    the settings' database URL (migrations/env.py)."""
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False  # keep the calling process's logging
    return cfg


@lru_cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    heads = _scripts().get_heads()
    if len(heads) != 1:
        raise SchemaNotReady(f"migrations/ has {len(heads)} heads {heads}: merge them")
    return heads[0]


def current_revisions(conn: Connection) -> tuple[str, ...]:
    return tuple(MigrationContext.configure(conn).get_current_heads())


def check_at_head(engine: Engine) -> None:
    with engine.connect() as conn:
        current = current_revisions(conn)
    if current != (head_revision(),):
        raise SchemaNotReady(
            f"database {engine.url.render_as_string(hide_password=True)} is at revision "
            f"{', '.join(current) or 'none (no schema)'}, this code expects "
            f"{head_revision()}: run `make migrate` (alembic upgrade head) first")


def create_schema_at_head(conn: Connection) -> None:
    """The models' tables, recorded as the head revision: what `alembic upgrade head`
    produces (tests/test_migrations.py), in one statement per table."""
    SQLModel.metadata.create_all(conn)
    MigrationContext.configure(conn).stamp(_scripts(), "head")


def _our_tables(conn: Connection) -> list[str]:
    return [t for t in inspect(conn).get_table_names() if t != "alembic_version"]


def ensure_sqlite_schema(engine: Engine) -> None:
    # IMMEDIATE: processes starting together on one fresh file create it once, in turn
    # (tests/test_migrations.py).
    with write_transaction(engine) as conn:
        current = current_revisions(conn)
        if current == (head_revision(),):
            return
        if not current:
            if not _our_tables(conn):
                create_schema_at_head(conn)
                return
            MigrationContext.configure(conn).stamp(_scripts(), BASELINE)
    if engine.url.database in (None, "", ":memory:"):
        raise SchemaNotReady("an in-memory database cannot be migrated")
    migrate(engine.url.render_as_string(hide_password=False))


def migrate(url: str) -> None:
    """`alembic upgrade head` on `url`. A SQLite file created before migrations existed
    (tables, no revision) is first recorded at BASELINE."""
    if url.startswith("sqlite"):
        engine = make_engine(url)
        try:
            with write_transaction(engine) as conn:
                if not current_revisions(conn) and _our_tables(conn):
                    MigrationContext.configure(conn).stamp(_scripts(), BASELINE)
        finally:
            engine.dispose()
    command.upgrade(alembic_config(url), "head")
