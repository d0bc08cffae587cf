"""Alembic's migrations (migrations/) produce exactly the models' schema, on a fresh SQLite
file and a fresh PostgreSQL database, and go back down to nothing.

When a table or column is added to records/tables.py without a revision, the first test
fails and names the difference: add one with
`alembic -x url=sqlite:////tmp/new.db revision --autogenerate -m "what changed"` after
`alembic -x url=sqlite:////tmp/new.db upgrade head`, and review it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect
from sqlmodel import SQLModel

from config import ROOT
from records.db import init_db, make_engine
from records.schema import (
    BASELINE,
    SchemaNotReady,
    alembic_config,
    current_revisions,
    head_revision,
    migrate,
)
from tests.postgres import PgCluster


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no table at all."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    name = cluster.create_database(empty=True)
    yield cluster.url(name)
    cluster.drop_database(name)


@pytest.fixture
def empty_engine(empty_url: str) -> Iterator[Engine]:
    engine = make_engine(empty_url)
    yield engine
    engine.dispose()


def differences(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, SQLModel.metadata))


def tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_head_is_the_models_schema_and_downgrade_undoes_it(
    empty_url: str, empty_engine: Engine,
) -> None:
    cfg = alembic_config(empty_url)
    command.upgrade(cfg, "head")
    assert differences(empty_engine) == []
    with empty_engine.connect() as conn:
        assert current_revisions(conn) == (head_revision(),)
    assert tables(empty_engine) == set(SQLModel.metadata.tables)

    command.downgrade(cfg, "base")
    assert tables(empty_engine) == set()
    command.upgrade(cfg, "head")  # nothing left behind (PostgreSQL's enum types) blocks it
    assert differences(empty_engine) == []


def test_processes_refuse_a_server_database_that_is_not_migrated(empty_url: str,
                                                                  empty_engine: Engine) -> None:
    if empty_engine.dialect.name == "sqlite":
        init_db(empty_engine)  # the embedded default creates it, at the head revision
        assert differences(empty_engine) == []
        with empty_engine.connect() as conn:
            assert current_revisions(conn) == (head_revision(),)
        return
    with pytest.raises(SchemaNotReady, match="make migrate"):
        init_db(empty_engine)
    assert tables(empty_engine) == set()  # checked, not changed
    migrate(empty_url)
    init_db(empty_engine)


@pytest.mark.sqlite_only
def test_a_sqlite_file_from_before_migrations_is_adopted(tmp_path: Path) -> None:
    """A database created by `create_all` before migrations existed has BASELINE's tables
    and no revision: `make run` (migrate) and `init_db` record it and carry on."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    try:
        # The tables as BASELINE made them, with no record of a revision.
        command.upgrade(alembic_config(url), BASELINE)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE alembic_version")
        migrate(url)
        with engine.connect() as conn:
            assert current_revisions(conn) == (head_revision(),)
        assert differences(engine) == []
        command.downgrade(alembic_config(url), BASELINE)
        init_db(engine)  # from an older revision: migrated on the spot
        with engine.connect() as conn:
            assert current_revisions(conn) == (head_revision(),)
    finally:
        engine.dispose()


@pytest.mark.sqlite_only
def test_make_migrate_uses_the_settings_database(tmp_path: Path) -> None:
    """`make migrate` is `alembic upgrade head`: the database comes from
    INVITES_DATABASE_URL (or INVITES_DATA_DIR), whatever the working directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVITES_")}
    env["INVITES_DATA_DIR"] = str(tmp_path / "data")
    alembic = str(Path(sys.executable).parent / "alembic")
    done = subprocess.run([alembic, "-c", str(ROOT / "alembic.ini"), "upgrade", "head"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'platform.db'}")
    try:
        assert differences(engine) == []
    finally:
        engine.dispose()


# Each process connects when told to and says so, then waits for "go" before init_db:
# the test releases them together, as a barrier would. The one that creates the schema
# holds its transaction 0.3 s longer (a slow disk), so that the others surely begin
# theirs meanwhile.
_START = """
import sys, time
from records import schema
from records.db import init_db, make_engine

create = schema.create_schema_at_head
def slowly(conn):
    create(conn)
    time.sleep(0.3)
schema.create_schema_at_head = slowly
engine = make_engine(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
with engine.connect():  # kept in the pool: init_db reuses it
    pass
print("connected", flush=True)
sys.stdin.readline()
init_db(engine)
"""


def _tell(proc: subprocess.Popen[bytes], line: bytes, answer: bytes | None = None) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line)
    proc.stdin.flush()
    if answer is not None:
        assert proc.stdout.readline() == answer


@pytest.mark.sqlite_only
def test_processes_starting_together_on_a_fresh_sqlite_file_create_it_once(
    tmp_path: Path,
) -> None:
    """Three processes started at once on a new file (a worker, the link handler and the
    admin app, run by hand without `make run`'s migration first) find it empty: one
    creates the schema, the others wait for its lock and find it made. Every one starts;
    the file is at head, recorded once. (Begun DEFERRED, the others would read "no
    schema" and then be refused their own creation.)

    Their first connections are made at once too: two made at the same instant to a new
    file meet each other's switch to WAL, which SQLite refuses at once ("database is
    locked", about 1 start in 40 before records/db.py `_switch_to_wal` retried it)."""
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVITES_")}
    env["PYTHONPATH"] = str(ROOT)
    procs = [subprocess.Popen([sys.executable, "-c", _START, url], cwd=ROOT, env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(3)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline() == b"ready\n"
        for p in procs:  # first connections at once: they meet each other's switch to WAL
            _tell(p, b"connect\n")
        for p in procs:
            assert p.stdout is not None and p.stdout.readline() == b"connected\n"
        for p in procs:
            _tell(p, b"go\n")
        for p in procs:
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, err.decode()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    engine = make_engine(url)
    try:
        assert differences(engine) == []
        with engine.connect() as conn:
            assert current_revisions(conn) == (head_revision(),)
            assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1
    finally:
        engine.dispose()
